"""Stage 2: AST → graph IR. Expands blocks, repeats, conditionals, merges and cells,
resolves names, binds each layer's written arguments to its op's typed params.

Errors are collected per statement (a failed statement poisons its result, which
silences follow-on errors), so one run reports every independent mistake.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

from . import ast as A
from . import ops
from .bounds import MAX_CALLS, MAX_ITERATIONS, MAX_LAYERS, number_problem, pow_problem
from .errors import Diagnostic, Note, ResolveError, Span, suggest
from .ir import Frame, Graph, Node, Output
from .limits import MAX_BLOCK_DEPTH, stack_depth, too_deep
from .ops.base import Op, _BindError, _literals, _show

# the limits live in dlspec.bounds (values, work) and dlspec.limits (nesting); docs/language.md, "Limits"

RESERVED_CELL_KWARGS = ("sequences",)
STRUCTURAL = {"residual", "shortcut", "concat", "add", "multiply", "branch", "repeat", "group"}


class Fail(Exception):
    """One diagnostic, raised inside the expander and collected per statement."""

    def __init__(self, message: str, span: Span | None, help: str | None = None, notes: list[Note] | None = None):
        self.diag = Diagnostic(message, span, help=help, notes=list(notes or []))


@dataclass(frozen=True)
class Tensor:
    path: str
    span: Span


class _Poison:
    """The value of something that failed; any use of it fails silently."""

    def __repr__(self) -> str:
        return "<poison>"


POISON = _Poison()


class _Silent(Exception):
    """Raised when a poisoned value is used: the real error was already reported."""


@dataclass
class LayerV:
    """An op with bound params, not yet applied to its input."""

    op: type[Op]
    params: Any
    extra: tuple[Tensor, ...]
    name: str | None
    span: Span


@dataclass
class BlockCall:
    """``Block(args)`` (a block, model or cell), not yet applied."""

    defn: A.Def
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    arg_spans: dict[str, Span]
    name: str | None
    span: Span
    #: a cell's ``sequences = false`` (the last step only)
    sequences: bool = True
    #: a cell's contexts given by keyword (``Decoder(64, memory = enc)``): name → (tensor, span)
    contexts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Instance:
    """``tower = Encoder()``: one set of weights; every call after the first shares it."""

    call: BlockCall
    var: str
    first_prefix: str | None = None
    calls: int = 0


@dataclass
class Scope:
    prefix: str
    names: dict[str, Any]
    stack: tuple[Frame, ...]
    current: Any = None
    counters: dict[str, int] = field(default_factory=dict)
    used: dict[str, Span] = field(default_factory=dict)
    outputs: list[tuple[str, Any, Span]] = field(default_factory=list)
    cell: str | None = None  # path of the cell being built, if inside one
    states: dict[str, Any] | None = None
    inputs_left: list[Any] | None = None  # a block's inputs for its `input` statements
    is_model: bool = False

    def child(self, prefix: str, **kw) -> "Scope":
        return Scope(prefix=prefix, names=dict(self.names), stack=self.stack, cell=self.cell, **kw)

    def auto(self, base: str) -> str:
        n = self.counters.get(base, 0)
        while True:
            n += 1
            if f"{base}{n}" not in self.used:
                self.counters[base] = n
                return f"{base}{n}"


class Program:
    """Definitions of one file and its imports (see :mod:`dlspec.api` for the public class)."""

    def __init__(self, defs: dict[str, A.Def], trains: list[A.Train], file: str):
        self.defs = defs
        self.trains = trains
        self.file = file


class Expander:
    def __init__(self, defs: dict[str, A.Def], defaults: dict[tuple[str, str], Any] | None = None):
        self.defs = defs
        #: (definition, parameter) → the value the parameter takes where a call gives none
        #: (:meth:`dlspec.api.Program.bind`), instead of its written default
        self.defaults = dict(defaults or {})
        self.nodes: list[Node] = []
        self.paths: dict[str, Span] = {}
        self.diags: list[Diagnostic] = []
        self.seen: set[tuple] = set()
        self.share: list[tuple[str, str]] = []  # (new prefix, owner prefix)
        self.calls: list[str] = []  # blocks being expanded, for recursion
        self.sym_dims: dict[str, str] = {}  # symbolic input sizes (``T``) → the input declaring them
        self.depth = 0  # bodies being expanded, through block calls (dlspec.limits.MAX_BLOCK_DEPTH)
        self.base = stack_depth()  # the Python stack's depth where expansion starts
        # work done so far, against dlspec.bounds: layers (a recurrent op counts its stacked
        # layers), repeat iterations, block calls
        self.layers = 0
        self.iterations = 0
        self.block_calls = 0
        self.warnings: list[Diagnostic] = []
        #: ``ok NAME`` at a layer: the layer's span → {warning name: the name's span}
        self.silenced: dict[Span, dict[str, Span]] = {}
        self.typer: _Typer | None = None  # the static types so far, made at the first shape query
        #: a cell's step inputs: step_in path → ("x", the cell input's path) or ("state", dims)
        self.step_seeds: dict[str, tuple] = {}
        #: the span of the split that `a, b = split(…)` (or `h = split(…)`) evaluates, and the names
        #: its pieces take (or the one name their paths start with)
        self.piece_names: tuple[Span, tuple[str, ...] | str] | None = None

    # ---- entry --------------------------------------------------------------

    def model(self, defn: A.Def, overrides: dict[str, Any] | None = None) -> Graph:
        scope = Scope(prefix="", names={}, stack=(), is_model=True)
        try:
            args = self.bind_params(defn, (), dict(overrides or {}), {}, defn.name_span, scope)
        except Fail as f:  # a bad default (or override) of the model's own parameters
            self.report(f)
            raise ResolveError(self.diags) from None
        except _Silent:  # pragma: no cover - parameters are never poisoned
            raise ResolveError(self.diags) from None
        scope.names.update(args)
        self.body(defn.body, scope)
        inputs = tuple(n.path for n in self.nodes if n.op == "input" and n.in_cell is None)
        if not inputs and not self.diags:
            self.report(Fail(f"model '{defn.name}' has no input", defn.name_span, help="declare one: 'input x: [3, 32, 32]'"))
        outs = self.outputs(scope, defn)
        if self.diags:
            raise ResolveError(self.diags)
        graph = Graph(
            name=defn.name,
            file=defn.span.file,
            args={k: _plain(v) for k, v in args.items()},
            inputs=inputs,
            outputs=outs,
            nodes=_resolve_ties(self.nodes),
            span=defn.span,
        )
        # the expander's warnings travel with the graph (not a field: the IR's JSON is unchanged);
        # the shape pass reports them first, with its own
        object.__setattr__(graph, "_expand_warnings", tuple(self.warnings))
        object.__setattr__(graph, "_silenced", self.silenced)
        return graph

    def outputs(self, scope: Scope, defn: A.Def) -> tuple[Output, ...]:
        if scope.outputs:
            res = []
            for name, v, span in scope.outputs:
                if isinstance(v, Tensor):
                    res.append(Output(name=name, node=v.path))
                elif v is not POISON:
                    self.report(Fail(f"output '{name}' is not a tensor", span))
            return tuple(res)
        if isinstance(scope.current, Tensor):
            return (Output(name="output", node=scope.current.path),)
        if isinstance(scope.current, tuple) and all(isinstance(t, Tensor) for t in scope.current):
            return tuple(Output(name=f"output{i}", node=t.path) for i, t in enumerate(scope.current))
        return ()

    def warn(self, message: str, span: Span, scope: Scope, help: str | None = None, kind: str | None = None) -> None:
        """A warning at ``span`` (once per place and message), with the block calls that lead there;
        ``kind``: its name in dlspec.silence.WARNINGS, which ``ok KIND`` at the layer silences."""
        if any(w.span == span and w.message == message for w in self.warnings):
            return
        notes = [
            Note(f"in {fr.block}({', '.join(f'{k}={v}' for k, v in fr.args.items())}) called at {fr.span}", fr.span)
            for fr in reversed(scope.stack)
        ]
        if len(self.warnings) < 200:
            if kind is not None:
                from .silence import hint

                help = f"{help}, {hint(kind)}" if help else hint(kind)
            self.warnings.append(Diagnostic(message, span, severity="warning", help=help, notes=notes, kind=kind))

    def report(self, f: Fail) -> None:
        key = (f.diag.span, f.diag.message)
        if key not in self.seen:
            self.seen.add(key)
            if len(self.diags) < 200:
                self.diags.append(f.diag)

    # ---- statements -----------------------------------------------------------

    def body(self, body: A.Body, scope: Scope) -> None:
        self.depth += 1
        try:
            if self.depth > MAX_BLOCK_DEPTH or too_deep(self.base):
                raise self.nesting_fail(
                    Span(file=body.span.file, line=body.span.line, col=body.span.col, end_line=body.span.line, end_col=body.span.col + 1)
                )
            for st in body.stmts:
                try:
                    self.stmt(st, scope)
                except Fail as f:
                    self.report(f)
                    scope.current = POISON
                except _Silent:
                    scope.current = POISON
        finally:
            self.depth -= 1

    def nesting_fail(self, span: Span) -> Fail:
        """Bodies nested past dlspec.limits.MAX_BLOCK_DEPTH, counting the bodies of the blocks called."""
        calls = self.calls if len(self.calls) <= 6 else [*self.calls[:3], "…", *self.calls[-2:]]
        through = f" through block calls {' → '.join(calls)}" if self.calls else ""
        if self.depth <= MAX_BLOCK_DEPTH:  # the stack backstop: block calls inside deep expressions
            return Fail(
                f"blocks, block calls and expressions nested too deeply{through}", span, help="move inner parts into blocks of their own"
            )
        return Fail(
            f"blocks nested {self.depth} deep{through}; the limit is {MAX_BLOCK_DEPTH}",
            span,
            help="a body counts once, and so does each block called inside it; call fewer blocks inside each other",
        )

    def stmt(self, st: A.Stmt, scope: Scope) -> None:
        if isinstance(st, A.ChainStmt):
            declared = _context_decl(st, scope)
            if declared is not None:  # `context memory`: a cell's tensor seen at every step
                self.context(st, declared, scope)
                return
            scope.current = self.chain(st.chain, scope)
        elif isinstance(st, A.AssignStmt):
            self.assign(st, scope)
        elif isinstance(st, A.ParamStmt):
            try:
                self.param(st, scope)
            except (Fail, _Silent):
                scope.names.setdefault(st.name, POISON)
                raise
        elif isinstance(st, (A.InputStmt, A.StateStmt)):
            try:
                (self.input if isinstance(st, A.InputStmt) else self.state)(st, scope)
            except (Fail, _Silent):
                scope.names.setdefault(st.name, POISON)  # later uses of the name fail silently
                raise
        elif isinstance(st, A.OutputStmt):
            self.output(st, scope)
        elif isinstance(st, A.IfStmt):
            for cond, body in st.branches:
                if self.truth(cond, scope):
                    self.body(body, scope)
                    return
            if st.orelse is not None:
                self.body(st.orelse, scope)
        elif isinstance(st, A.CompoundStmt):
            self.compound(st, scope)
        else:  # pragma: no cover - the parser builds no other statement
            raise Fail("unsupported statement", st.span)

    def assign(self, st: A.AssignStmt, scope: Scope) -> None:
        if st.gate and scope.cell is None:
            raise Fail("'gate' is only meaningful inside a cell", st.span, help="remove 'gate', or move this into a 'cell'")
        targets = st.targets
        seen: dict[str, Span] = {}
        for name, span in targets:
            if name in seen:
                raise Fail(f"'{name}' appears twice on the left of '='", span, notes=[Note("first here", seen[name])])
            seen[name] = span
        if st.compound is not None:  # `h = repeat 3 { … }`: the compound statement's result
            try:
                self.compound(st.compound, scope)
                value = scope.current
                if value is None:
                    raise Fail(f"'{st.compound.parts[0].word}' gives no tensor to bind", st.compound.span)
                if value is POISON:
                    raise _Silent()
            except (Fail, _Silent):
                for name, _ in targets:
                    scope.names[name] = POISON
                raise
        else:
            stages = st.chain.stages
            applied = None
            # `tower = Encoder()`: an instance, applied later with tower(x)
            if (
                len(targets) == 1
                and len(stages) == 1
                and isinstance(stages[0], A.Call)
                and stages[0].func in self.defs
                and stages[0].func not in scope.names
            ):
                try:
                    call = self.eval(stages[0], scope)
                except (Fail, _Silent):
                    scope.names[st.name] = POISON
                    raise
                if isinstance(call, BlockCall) and call.defn.kind != "cell":
                    scope.names[st.name] = Instance(call=call, var=st.name)
                    return
                if not isinstance(call, BlockCall):  # `h = Encoder(x)`: applied already
                    applied = (call,)
            self.piece_names = (stages[-1].span, tuple(n for n, _ in targets) if len(targets) > 1 else st.name)
            try:
                value = applied[0] if applied else self.chain(st.chain, scope, name=st.name if len(targets) == 1 else None, values_ok=True)
            except (Fail, _Silent):
                for name, _ in targets:
                    scope.names[name] = POISON
                raise
            finally:
                self.piece_names = None
        if len(targets) > 1:
            self.unpack(value, st, scope)
            return
        if _is_value(value):  # `w = int(planes * (base_width / 64)) * groups`: a number, not a tensor
            scope.names[st.name] = value
            return
        self.name_tensor(value, st.name, gate=st.gate)
        if scope.states is not None and st.name in scope.states:
            scope.states[st.name] = value
        scope.names[st.name] = value
        scope.current = value

    def unpack(self, value: Any, st: A.AssignStmt, scope: Scope) -> None:
        """``a, b = …``: one name per tensor (or value) of a tuple; the count must match."""
        targets = st.targets
        names = ", ".join(n for n, _ in targets)
        if isinstance(value, tuple):
            items = value
        elif isinstance(value, (Tensor, LayerV, BlockCall, Instance)) or _is_value(value):
            items = (value,)
        else:  # pragma: no cover - every value is one of the above
            raise Fail(f"cannot unpack {_show_value(value)}", st.span)
        if len(items) != len(targets):
            kind = "tensor" if all(isinstance(v, Tensor) for v in items) else "value"
            got = f"{len(items)} {kind}{'s' * (len(items) != 1)}" if isinstance(value, tuple) else f"one {kind}, {_show_value(value)}"
            for name, _ in targets:
                scope.names[name] = POISON
            raise Fail(
                f"{len(targets)} names ({names}) but the right-hand side gives {got}",
                st.span,
                help=f"write as many names as it gives ({len(items)})" if isinstance(value, tuple) else "a single tensor binds to one name",
            )
        for (name, _span), v in zip(targets, items):
            if isinstance(v, (LayerV, BlockCall, Instance)):
                raise Fail(f"'{name}' would be {_show_value(v)}, not a tensor or a value", st.span)
            scope.names[name] = v
            if scope.states is not None and name in scope.states:
                scope.states[name] = v
        if _is_tensorish(value):
            scope.current = value

    def param(self, st: A.ParamStmt, scope: Scope) -> None:
        """``param NAME: [d1, …] init …``: a learned tensor, named by its path; the chain goes on
        from the tensor before it."""
        dims = []
        for k, d in enumerate(st.shape.items, start=1):
            if isinstance(d, A.Name) and d.id not in scope.names:
                raise Fail(
                    f"param '{st.name}' dimension {k} is '{d.id}', not a number: a learned tensor has a fixed shape",
                    d.span,
                    help="give the size as a number or a parameter of the block",
                )
            v = self.value(d, scope)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                shown = "" if isinstance(d, A.Num) else f" ('{_source_text(d.span)}' is {_show(v)})"
                fix = "round it: 'int(…)' or '… // …'" if isinstance(v, float) and v >= 1 else "give it a size of 1 or more"
                raise Fail(f"param '{st.name}' dimension {k} must be a positive whole number, got {_show(v)}", d.span, help=f"{fix}{shown}")
            dims.append(v)
        if not dims:
            raise Fail(f"param '{st.name}' needs a shape", st.shape.span, help=f"write 'param {st.name}: [64] init zeros'")
        op = ops.get("param")
        kw = self.bind_settings([a for g in st.groups for a in g], scope, op, fixed={"shape": tuple(dims)})
        params = self.build_params(op, kw, {}, st.span)
        t = self.emit(scope, "param", params, (), st.span, name=st.name, explicit=True, tensor=st.name)
        scope.names[st.name] = t

    def input(self, st: A.InputStmt, scope: Scope) -> None:
        if scope.inputs_left is None and scope.cell is not None:  # the cell's own `input`
            raise Fail(
                "a cell's step input is 'x'; a cell declares no 'input'",
                st.span,
                help=f"for a tensor the cell reads whole at every step (an encoder's outputs), write 'context {st.name}'",
            )
        if scope.inputs_left is not None:  # a model/block used inside another: bind the next input
            if not scope.inputs_left:
                raise Fail(f"'{st.name}' has no tensor to bind: the call gives fewer inputs", st.span)
            value = scope.inputs_left.pop(0)
            scope.names[st.name] = value
            scope.current = value
            return
        if not scope.is_model:
            raise Fail("'input' is only allowed in a model", st.span)
        dims = []
        for d in st.shape.items:
            if isinstance(d, A.Name) and d.id not in scope.names:
                dims.append(d.id)
                self.sym_dims.setdefault(d.id, st.name)
                continue
            v = self.value(d, scope)
            if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, int) and v <= 0):
                raise Fail(f"input dimension must be a positive whole number or a symbolic name, got {_show(v)}", d.span)
            dims.append(v)
        op = ops.get("input")
        kw = self.bind_settings([a for g in st.groups for a in g], scope, op, fixed={"shape": tuple(dims)})
        if "dtype" in kw:
            kw["dtype"] = STRUCTURE_DTYPE_WORDS.get(kw["dtype"], kw["dtype"])
        params = self.build_params(op, kw, {}, st.span)
        t = self.emit(scope, "input", params, (), st.span, name=st.name, explicit=True, tensor=st.name)
        scope.names[st.name] = t
        scope.current = t

    def context(self, st: A.ChainStmt, declared: tuple[tuple[str, Span], ...], scope: Scope) -> None:
        """``context memory``: the next tensor the cell is given after its sequence (or the one given
        by keyword, ``memory = enc``), read whole at every step: a ``step_in`` node of the body."""
        if scope.states is None:
            if scope.cell is not None:
                raise Fail("'context' belongs in the cell's own body, not in a block it calls", st.span)
            raise Fail(
                "'context NAME' is only allowed in a cell",
                st.span,
                help="a block or model takes further tensors with 'input NAME: [shape]'",
            )
        given = scope.__dict__["context_given"]
        cell, call = scope.__dict__["context_call"]
        for name, span in declared:
            if name in scope.names or name == "x":
                raise Fail(f"'{name}' is already a name in cell '{cell}'", span, help="give the context another name")
            if name in given["keyword"]:
                t = given["keyword"].pop(name)[0]
            elif given["positional"]:
                t = given["positional"].pop(0)
            else:
                raise Fail(
                    f"cell '{cell}' reads the context '{name}' but its call gives no tensor for it",
                    span,
                    help=f"pass it after the sequence, '(seq, {name}) -> {cell}(…)', or by name, '{cell}(…, {name} = enc)'",
                )
            if t is POISON:
                scope.names[name] = POISON
                raise _Silent()
            node = self.emit(scope, "step_in", ops.get("step_in").Params(role=name), (), span, name=name, explicit=True, tensor=name)
            self.step_seeds[node.path] = ("context", t.path)
            scope.names[name] = node
            scope.__dict__.setdefault("context_decls", []).append((node.path, t.path))
            scope.__dict__.setdefault("context_decls_by_name", {})[name] = node.path

    def state(self, st: A.StateStmt, scope: Scope) -> None:
        if scope.cell is None or scope.states is None:
            raise Fail("'state' is only allowed in a cell", st.span)
        dims = tuple(self.dim(d, scope) for d in st.shape.items)
        init = None
        args = [a for g in st.groups for a in g]
        if args:  # `state memory: [128, 20] init memory0`: a context is the value before the first step
            contexts = dict(scope.__dict__.get("context_decls_by_name", {}))
            if len(args) != 2 or not isinstance(args[0], A.Name) or args[0].id != "init" or not isinstance(args[1], A.Name):
                raise Fail(
                    f"state '{st.name}' takes only 'init NAME', a context the cell is given",
                    args[0].span,
                    help=f"write 'context {st.name}0' and 'state {st.name}: [...] init {st.name}0'",
                )
            if args[1].id not in contexts:
                raise Fail(
                    f"the initial value of state '{st.name}' must be one of the cell's contexts, not '{args[1].id}'"
                    + suggest(args[1].id, list(contexts)),
                    args[1].span,
                    help=f"declare it before the state: 'context {args[1].id}'",
                )
            init = contexts[args[1].id]
        params = ops.get("step_in").Params(role=st.name)
        t = self.emit(scope, "step_in", params, (), st.span, name=f"{st.name}_prev", explicit=True, tensor=st.name)
        self.step_seeds[t.path] = ("state", dims)
        scope.names[st.name] = t
        scope.states[st.name] = t
        scope.__dict__.setdefault("state_decls", []).append((st.name, dims, t.path, st.span, init))

    def dim(self, d: A.Expr, scope: Scope) -> int | str:
        if isinstance(d, A.Name) and d.id not in scope.names:
            return d.id
        v = self.value(d, scope)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise Fail(f"a dimension must be a positive whole number, got {_show(v)}", d.span)
        return v

    def output(self, st: A.OutputStmt, scope: Scope) -> None:
        if st.chain is not None:
            self.new_output(scope, st.names[0], st.name_spans[0])
            value = self.chain(st.chain, scope, name=st.names[0])
            self.name_tensor(value, st.names[0])
            scope.names[st.names[0]] = value
            scope.current = value
            scope.outputs.append((st.names[0], value, st.name_spans[0]))
            return
        for name, span in zip(st.names, st.name_spans):
            if name not in scope.names:
                raise Fail(f"unknown tensor '{name}'{suggest(name, self.tensor_names(scope))}", span)
            self.new_output(scope, name, span)
            scope.outputs.append((name, scope.names[name], span))

    def new_output(self, scope: Scope, name: str, span: Span) -> None:
        """Fail when ``name`` is already an output of this model or block."""
        first = next((sp for n, _, sp in scope.outputs if n == name), None)
        if first is not None:
            raise Fail(
                f"output '{name}' is declared twice",
                span,
                notes=[Note("first declared here", first)],
                help="give every output its own name",
            )

    def name_tensor(self, value: Any, name: str, gate: bool = False) -> None:
        """``s = a + b``, ``d = abs(…)``: the node just made for a statement carries its tensor name
        (and, for ``gate f = …`` in a cell, the gate flag)."""
        last = self.nodes[-1] if self.nodes else None
        if isinstance(value, Tensor) and last is not None and last.path == value.path:
            update = {"tensor": name} if last.tensor is None else {}
            if gate and last.tensor in (None, name):
                update["gate"] = True
            if update:
                self.nodes[-1] = last.model_copy(update=update)

    def tensor_names(self, scope: Scope) -> list[str]:
        return [k for k, v in scope.names.items() if isinstance(v, Tensor)]

    # ---- compound statements ---------------------------------------------------

    def compound(self, st: A.CompoundStmt, scope: Scope) -> None:
        head = st.parts[0]
        word = head.word
        handler: Callable | None = {
            "residual": self.residual,
            "concat": self.merge,
            "add": self.merge,
            "multiply": self.merge,
            "repeat": self.repeat,
            "group": self.group,
        }.get(word)
        for p in st.parts:
            if p.when is not None and p.word != "shortcut":
                raise Fail(
                    f"'when' applies only to 'shortcut', not to '{p.word}'", p.when.span, help="for a conditional write 'if COND { … }'"
                )
        if handler is None:
            if word in ("shortcut", "branch"):
                where = "a 'residual'" if word == "shortcut" else "'concat', 'add' or 'multiply'"
                raise Fail(f"'{word}' must follow {where}", head.word_span)
            known = ["residual", "concat", "add", "multiply", "repeat", "group"]
            raise Fail(
                f"unknown block statement '{word}'{suggest(word, known)}",
                head.word_span,
                help="these take a '{ … }' body: " + ", ".join(known),
            )
        handler(st, scope)

    def residual(self, st: A.CompoundStmt, scope: Scope) -> None:
        res, *rest = st.parts
        if res.args or res.when is not None:
            raise Fail("'residual' takes no arguments", res.args[0].span if res.args else res.when.span)
        if len(rest) > 1 or (rest and rest[0].word != "shortcut"):
            bad = rest[1] if len(rest) > 1 and rest[0].word == "shortcut" else rest[0]
            raise Fail(f"after 'residual {{ … }}' only 'shortcut {{ … }}' may follow, got '{bad.word}'", bad.word_span)
        inp = self.need_current(scope, res.word_span, "residual")
        main = self.sub_body(res.body, scope, scope.prefix, inp)
        short = inp
        if rest:
            sc = rest[0]
            if sc.args:
                raise Fail("'shortcut' takes no arguments; a condition is written 'shortcut when COND { … }'", sc.args[0].span)
            if sc.when is None or self.truth(sc.when, scope):
                short = self.sub_body(sc.body, scope, scope.prefix + scope.auto("shortcut").removesuffix("1") + ".", inp, scope_name=True)
        params = ops.get("add").Params(residual=True)
        scope.current = self.emit(scope, "add", params, _flat([main, short], res.span), res.word_span)

    def merge(self, st: A.CompoundStmt, scope: Scope) -> None:
        part = st.parts[0]
        if len(st.parts) > 1:
            raise Fail(f"'{part.word} {{ … }}' takes no '{st.parts[1].word}' part", st.parts[1].word_span)
        op = ops.get(part.word)
        kw = self.bind_settings(list(part.args), scope, op)
        inp = self.need_current(scope, part.word_span, part.word)
        outs = []
        # `branch { … } branch { … }` on one line is one compound statement of several parts
        branches = [br for inner in part.body.stmts for br in (inner.parts if isinstance(inner, A.CompoundStmt) else (inner,))]
        for br in branches:
            if not (isinstance(br, A.Part) and br.word == "branch"):
                raise Fail(f"inside '{part.word}' every statement is a 'branch {{ … }}'", br.span)
            if br.args:
                raise Fail("'branch' takes no arguments", br.args[0].span)
            prefix = scope.prefix + scope.auto("branch") + "."
            try:
                outs.append(self.sub_body(br.body, scope, prefix, inp, scope_name=True))
            except (Fail, _Silent) as e:
                if isinstance(e, Fail):
                    self.report(e)
                outs.append(POISON)
        if not outs:
            raise Fail(f"'{part.word}' needs at least one 'branch {{ … }}'", part.span)
        params = self.build_params(op, kw, {}, part.word_span)
        scope.current = self.emit(scope, part.word, params, _flat(outs, part.span), part.word_span)

    def repeat(self, st: A.CompoundStmt, scope: Scope) -> None:
        part = st.parts[0]
        if len(st.parts) > 1:
            raise Fail(f"'repeat {{ … }}' takes no '{st.parts[1].word}' part", st.parts[1].word_span)
        args = list(part.args)
        if not args:
            raise Fail("'repeat' needs a count: 'repeat 3 { … }'", part.word_span)
        count = self.value(args.pop(0), scope)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise Fail(f"repeat count must be a whole number ≥ 0, got {_show(count)}", part.args[0].span)
        if self.iterations + count > MAX_ITERATIONS:
            raise Fail(
                f"repeat {count} is too many iterations: the model's repeats would run {self.iterations + count:,} in all, "
                f"more than the limit of {MAX_ITERATIONS:,}",
                part.args[0].span,
            )
        self.iterations += count
        name, index = None, "i"
        while args:
            a = args.pop(0)
            if not (isinstance(a, A.Name) and a.id in ("as", "index")):
                raise Fail("after 'repeat N' only 'as NAME' and 'index NAME' may follow", a.span)
            if not args or not isinstance(args[0], A.Name):
                raise Fail(f"'{a.id}' needs a name after it", a.span)
            val = args.pop(0).id
            if a.id == "as":
                name = val
            else:
                index = val
        if name is None and getattr(scope, "sole", False):
            base = scope.prefix  # a block that is only this repeat: iterations are `block.0`, `block.1`…
        else:
            if name is None:
                name = scope.auto("repeat")
            elif name in scope.used:
                raise Fail(f"name '{name}' is already used", part.word_span)
            scope.used[name] = part.span
            base = f"{scope.prefix}{name}."
        single = _single_call(part.body)
        before = (self.layers, self.iterations, self.block_calls)
        for i in range(count):
            if i == 1:  # one iteration done: what the others will make, checked before making it
                self.repeat_budget(count, before, part.args[0].span)
            prefix = f"{base}{i}."
            sub = scope.child(prefix, current=scope.current, states=scope.states)
            sub.names[index] = i
            if single is not None:
                sub.__dict__["collapse"] = True
            self.body(part.body, sub)
            self.carry_back(sub, scope)
            scope.current = sub.current

    def repeat_budget(self, count: int, before: tuple[int, int, int], span: Span) -> None:
        """Fail when ``count`` iterations like the first one would pass a limit of dlspec.bounds."""
        now = (self.layers, self.iterations, self.block_calls)
        for what, limit, b, n in zip(("layers", "repeat iterations", "block calls"), (MAX_LAYERS, MAX_ITERATIONS, MAX_CALLS), before, now):
            total = n + (n - b) * (count - 1)
            if total > limit:
                raise Fail(
                    f"repeat {count} would make about {total:,} {what} in the model ({count:,} iterations × {n - b:,} each), "
                    f"more than the limit of {limit:,}",
                    span,
                )

    def group(self, st: A.CompoundStmt, scope: Scope) -> None:
        part = st.parts[0]
        if len(part.args) != 1 or not isinstance(part.args[0], A.Name):
            raise Fail("'group' needs a name: 'group layer1 { … }'", part.word_span)
        name = part.args[0].id
        if name in scope.used:
            raise Fail(f"name '{name}' is already used", part.args[0].span)
        scope.used[name] = part.span
        sub = scope.child(f"{scope.prefix}{name}.", current=scope.current, states=scope.states)
        if _single_call(part.body) is not None:
            sub.__dict__["collapse"] = True
        self.body(part.body, sub)
        self.carry_back(sub, scope)
        scope.current = sub.current

    def carry_back(self, sub: Scope, scope: Scope) -> None:
        """Tensors named inside a repeat/group stay visible after it (like Python loops)."""
        for k, v in sub.names.items():
            if isinstance(v, (Tensor, Instance)) and k not in scope.names or isinstance(scope.names.get(k), Tensor):
                if isinstance(v, (Tensor, Instance)):
                    scope.names[k] = v
        for name, v, span in sub.outputs:
            try:
                self.new_output(scope, name, span)
            except Fail as f:
                self.report(f)
                continue
            scope.outputs.append((name, v, span))

    def sub_body(self, body: A.Body, scope: Scope, prefix: str, inp: Any, scope_name: bool = False) -> Any:
        sub = scope.child(prefix, current=inp, states=scope.states)
        if not scope_name:  # same scope: share counters and names
            sub.counters, sub.used = scope.counters, scope.used
        self.body(body, sub)
        for k, v in sub.names.items():
            if isinstance(v, Tensor) and (k not in scope.names or isinstance(scope.names[k], Tensor)):
                scope.names[k] = v
        if sub.current is POISON:
            raise _Silent()
        return sub.current

    def need_current(self, scope: Scope, span: Span, what: str) -> Any:
        if scope.current is None:
            raise Fail(f"'{what}' has no input: nothing comes before it", span, help="declare an input first: 'input x: [1, 28, 28]'")
        if scope.current is POISON:
            raise _Silent()
        return scope.current

    # ---- chains and application -------------------------------------------------

    def chain(self, chain: A.Chain, scope: Scope, name: str | None = None, values_ok: bool = False) -> Any:
        """The chain's result; with ``values_ok``, a chain that is one plain value (``w = c * 2``) is that value."""
        stages = list(chain.stages)
        first = self.eval(stages[0], scope)
        written = False  # a tuple written here, `(a, b) -> dense`: its concatenation is intended
        if values_ok and len(stages) == 1 and _is_value(first):
            return first
        if _is_tensorish(first):
            value = first
            stages = stages[1:]
            appl = []
            written = isinstance(_unparen(chain.stages[0]), A.TupleE)
        else:
            try:
                value = self.need_current(scope, stages[0].span, _stage_word(stages[0]))
            except _Silent:
                # the input failed earlier; still report mistakes that do not depend on it
                for v in [first] + [self.eval(s, scope) for s in stages[1:]]:
                    if isinstance(v, BlockCall):
                        self.bind_params(v.defn, v.args, v.kwargs, v.arg_spans, v.span, scope)
                raise
            appl = [first]
        # evaluate the remaining stages (each an applicable)
        for s in stages[len(appl) :]:
            v = self.eval(s, scope)
            if _is_tensorish(v):
                raise Fail(
                    f"{_stage_desc(s)} is a tensor, not a layer; it cannot follow '->'",
                    s.span,
                    help="to combine tensors use arithmetic or 'concat(a, b)'",
                )
            appl.append(v)
        n_layers = len(appl)
        for v, s in zip(appl, stages):
            nm = name if (n_layers == 1 and name is not None) else None
            value = self.apply(v, value, scope, s.span, name_hint=nm, tensor=name if v is appl[-1] else None, written=written)
            written = False
        return value

    def apply(
        self, fn: Any, inp: Any, scope: Scope, span: Span, name_hint: str | None = None, tensor: str | None = None, written: bool = False
    ) -> Any:
        if inp is POISON or fn is POISON:
            raise _Silent()
        if isinstance(fn, LayerV):
            return self.apply_op(fn, inp, scope, name_hint, tensor, written=written)
        if isinstance(fn, BlockCall):
            return self.expand_call(fn, inp, scope, fn.name or name_hint, span)
        if isinstance(fn, Instance):
            return self.call_instance(fn, inp, scope, span)
        raise Fail(f"{_show_value(fn)} is not a layer", span)

    def apply_op(self, lv: LayerV, inp: Any, scope: Scope, name_hint: str | None, tensor: str | None, written: bool = True) -> Any:
        inputs = list(_flat([inp], lv.span))
        op = lv.op
        lo, hi = op.arity
        if hi == 1 and len(inputs) > 1:
            if not written:  # several tensors from a block's outputs, a split, a tuple bound earlier
                shown = ", ".join(f"'{t.path}'" for t in inputs[:4]) + (", …" if len(inputs) > 4 else "")
                self.warn(
                    f"{op.name} takes one tensor but is given {len(inputs)} ({shown}); they are concatenated on axis {op.concat_axis}",
                    lv.span,
                    scope,
                    help=f"write the concatenation, 'concat(…, axis = {op.concat_axis}) -> {op.name}', or take the tensors apart: 'a, b = …'",
                    kind="tuple_concat",
                )
            cat = ops.get("concat").Params(axis=op.concat_axis)
            inputs = [self.emit(scope, "concat", cat, tuple(inputs), lv.span)]
        if len(inputs) < lo:
            raise Fail(f"{op.name} needs {lo} inputs, got {len(inputs)}", lv.span, help="give them as a tuple: '(a, b) -> " + op.name + "'")
        if hi is not None and len(inputs) > hi:
            raise Fail(f"{op.name} takes at most {hi} inputs, got {len(inputs)}", lv.span)
        pieces = op.pieces(lv.params) if hasattr(op, "pieces") else None
        if pieces is not None:  # `split`, `chunk`: one node per piece, a tuple of them
            return self.pieces(lv, pieces, tuple(inputs), scope, name_hint)
        return self.emit(
            scope,
            op.name,
            lv.params,
            tuple(inputs) + lv.extra,
            lv.span,
            name=lv.name or name_hint,
            explicit=lv.name is not None,
            tensor=tensor,
        )

    def pieces(self, lv: LayerV, count: int, inputs: tuple, scope: Scope, name_hint: str | None) -> tuple[Tensor, ...]:
        """The nodes of a split: named after the names of ``a, b = split(…)``, else ``split1.0``, ``split1.1``…"""
        if self.layers + count > MAX_LAYERS:  # checked before anything of that size is made
            raise Fail(f"{lv.op.name} into {count:,} pieces would pass the limit of {MAX_LAYERS:,} layers in a model", lv.span)
        names = None
        if self.piece_names is not None and self.piece_names[0] == lv.span:
            given = self.piece_names[1]
            if isinstance(given, str):
                name_hint = name_hint or given  # `halves = chunk(x, 3)`: halves.0, halves.1, halves.2
            elif len(given) == count:
                names = given
            self.piece_names = None
        tensors: list[str | None] = list(names) if names else [None] * count
        if names is None:
            base = lv.name or name_hint
            if base is None:
                base = scope.auto(lv.op.name)
            elif base in scope.used:
                raise Fail(f"name '{base}' is already used in this scope", lv.span, notes=[Note("first used here", scope.used[base])])
            scope.used[base] = lv.span
            names = tuple(f"{base}.{i}" for i in range(count))
        outs = []
        for i, (name, tensor) in enumerate(zip(names, tensors)):
            params = lv.params.model_copy(update={"piece": i})
            outs.append(self.emit(scope, lv.op.name, params, inputs + lv.extra, lv.span, name=name, tensor=tensor))
        return tuple(outs)

    def emit(
        self,
        scope: Scope,
        op: str,
        params: Any,
        inputs: tuple,
        span: Span,
        name: str | None = None,
        explicit: bool = False,
        tensor: str | None = None,
    ) -> Tensor:
        if name is None:
            name = scope.auto(op + "_" if op[-1:].isdigit() else op)  # relu6_1, not relu61
        elif name in scope.used:
            if explicit:
                raise Fail(f"name '{name}' is already used in this scope", span, notes=[Note("first used here", scope.used[name])])
            name = scope.auto(name + "_")
        scope.used[name] = span
        path = scope.prefix + name
        if path in self.paths:  # a collapsed scope can meet its parent's names
            path = scope.prefix + scope.auto(name + "_")
        size = ops.get(op).layer_count(params)
        if self.layers + size > MAX_LAYERS:
            raise Fail(f"the model has more than {MAX_LAYERS:,} layers, the limit", span)
        self.layers += size
        self.paths[path] = span
        shares = None
        for new, owner in reversed(self.share):
            if path.startswith(new):
                shares = owner + path[len(new) :]
                break
        ins = tuple(t.path for t in inputs)
        self.nodes.append(
            Node(
                path=path, op=op, params=params, inputs=ins, span=span, stack=scope.stack, shares=shares, in_cell=scope.cell, tensor=tensor
            )
        )
        return Tensor(path, span)

    # ---- blocks, instances, cells -------------------------------------------------

    def bind_params(
        self, defn: A.Def, args: tuple, kwargs: dict[str, Any], spans: dict[str, Span], call_span: Span, scope: Scope
    ) -> dict[str, Any]:
        params = defn.params or ()
        names = [p.name for p in params]
        if len(args) > len(params):
            raise Fail(
                f"{defn.kind} '{defn.name}' takes {len(params)} argument{'s' * (len(params) != 1)}, got {len(args)}",
                call_span,
                notes=[Note(f"'{defn.name}' is defined here", defn.name_span)],
            )
        bound: dict[str, Any] = {}
        for p, v in zip(params, args):
            bound[p.name] = v
        for k, v in kwargs.items():
            if k not in names:
                raise Fail(
                    f"{defn.kind} '{defn.name}' has no parameter '{k}'{suggest(k, names)}",
                    spans.get(k, call_span),
                    notes=[Note(f"'{defn.name}' is defined here", defn.name_span)],
                )
            if k in bound:
                raise Fail(f"parameter '{k}' of '{defn.name}' is given twice", spans.get(k, call_span))
            bound[k] = v
        env = Scope(prefix="", names={}, stack=())
        for p in params:
            if p.name not in bound and (defn.name, p.name) in self.defaults:
                bound[p.name] = self.defaults[(defn.name, p.name)]
            elif p.name not in bound:
                if p.default is None:
                    raise Fail(
                        f"{defn.kind} '{defn.name}' needs a value for '{p.name}'",
                        call_span,
                        notes=[Note(f"'{defn.name}' is defined here", defn.name_span)],
                    )
                env.names.update(bound)
                bound[p.name] = self.value(p.default, env)
            env.names[p.name] = bound[p.name]
        return {p.name: bound[p.name] for p in params}

    def expand_call(
        self, call: BlockCall, inp: Any, scope: Scope, name: str | None, span: Span, shares: str | None = None, prefix: str | None = None
    ) -> Any:
        defn = call.defn
        if defn.name in self.calls:
            chain = " → ".join(self.calls[self.calls.index(defn.name) :] + [defn.name])
            raise Fail(
                f"{defn.kind} '{defn.name}' calls itself ({chain})",
                call.span,
                help="recursion is not allowed; use 'repeat' for repeated structure",
            )
        if self.depth >= MAX_BLOCK_DEPTH:  # the block's body would be one level too deep
            self.depth += 1
            try:
                raise self.nesting_fail(call.span)
            finally:
                self.depth -= 1
        self.block_calls += 1
        if self.block_calls > MAX_CALLS:
            raise Fail(f"the model makes more than {MAX_CALLS:,} block calls, the limit", call.span)
        args = self.bind_params(defn, call.args, call.kwargs, call.arg_spans, call.span, scope)
        if defn.kind == "cell":
            return self.expand_cell(call, args, inp, scope, name, span)
        if prefix is None:
            if getattr(scope, "collapse", False) and name is None:
                scope.__dict__["collapse"] = False
                prefix = scope.prefix
            else:
                local = name or scope.auto(defn.name.lower())
                if local in scope.used and name is not None:
                    raise Fail(
                        f"name '{local}' is already used in this scope", call.span, notes=[Note("first used here", scope.used[local])]
                    )
                scope.used[local] = call.span
                prefix = f"{scope.prefix}{local}."
        frame = Frame(
            block=defn.name, path=prefix.rstrip("."), args={k: _plain(v) for k, v in args.items()}, span=call.span, required=_required(defn)
        )
        names = dict(args)
        sub = Scope(prefix=prefix, names=names, stack=scope.stack + (frame,), current=inp, cell=scope.cell)
        sub.__dict__["sole"] = len(defn.body.stmts) == 1 and isinstance(defn.body.stmts[0], A.CompoundStmt)
        has_inputs = any(isinstance(s, A.InputStmt) for s in defn.body.stmts)
        if has_inputs:
            sub.inputs_left = list(inp) if isinstance(inp, tuple) else [inp]
        elif "x" not in names:
            names["x"] = inp
        self.calls.append(defn.name)
        n_before = len(self.diags)
        try:
            self.body(defn.body, sub)
        finally:
            self.calls.pop()
        if len(self.diags) > n_before:
            for d in self.diags[n_before:]:
                d.notes.append(Note(f"in {defn.kind} '{defn.name}' called at {call.span}", call.span))  # a backtrace, innermost first
            raise _Silent()
        if sub.outputs:
            vals = tuple(v for _, v, _ in sub.outputs)
            return vals[0] if len(vals) == 1 else vals
        if sub.current is POISON:
            raise _Silent()
        return sub.current

    def call_instance(self, inst: Instance, inp: Any, scope: Scope, span: Span) -> Any:
        inst.calls += 1
        if inst.first_prefix is None:
            local = inst.var
            if local in scope.used:
                raise Fail(f"name '{local}' is already used in this scope", span)
            scope.used[local] = span
            inst.first_prefix = f"{scope.prefix}{local}."
            return self.expand_call(inst.call, inp, scope, local, span, prefix=inst.first_prefix)
        prefix = f"{scope.prefix}{inst.var}@{inst.calls}."
        self.share.append((prefix, inst.first_prefix))
        try:
            return self.expand_call(inst.call, inp, scope, None, span, prefix=prefix)
        finally:
            self.share.pop()

    def expand_cell(self, call: BlockCall, args: dict[str, Any], inp: Any, scope: Scope, name: str | None, span: Span) -> Tensor:
        defn = call.defn
        rest: list[Any] = []
        if isinstance(inp, tuple):  # `(seq, memory) -> Decoder(64)`: the sequence, then the contexts
            if not inp:
                raise Fail(f"cell '{defn.name}' takes a sequence, got an empty tuple", call.span)
            inp, *rest = inp
            if isinstance(inp, tuple) or any(isinstance(t, tuple) for t in rest):
                raise Fail(f"cell '{defn.name}' takes a sequence and its contexts, one tensor each, not nested tuples", call.span)
        if inp is POISON or any(t is POISON for t in rest):
            raise _Silent()  # reported where it failed
        if not isinstance(inp, Tensor) or not all(isinstance(t, Tensor) for t in rest):
            bad = next(t for t in (inp, *rest) if not isinstance(t, Tensor))
            raise Fail(f"cell '{defn.name}' runs over tensors, got {_show_value(bad)}", call.span)
        if scope.cell is not None:
            raise Fail("a cell cannot run inside another cell", call.span)
        local = name or scope.auto(defn.name.lower())
        if local in scope.used:
            raise Fail(f"name '{local}' is already used in this scope", call.span)
        scope.used[local] = call.span
        path = scope.prefix + local
        frame = Frame(block=defn.name, path=path, args={k: _plain(v) for k, v in args.items()}, span=call.span, required=_required(defn))
        sub = Scope(prefix=path + ".", names=dict(args), stack=scope.stack + (frame,), cell=path, states={})
        given = {"positional": list(rest), "keyword": dict(call.contexts)}
        sub.__dict__["context_given"] = given
        sub.__dict__["context_call"] = (defn.name, call)
        first = len(self.nodes)
        x = self.emit(sub, "step_in", ops.get("step_in").Params(role="x"), (), defn.name_span, name="x", explicit=True, tensor="x")
        self.step_seeds[x.path] = ("x", inp.path if isinstance(inp, Tensor) else None)
        sub.names["x"] = x
        sub.current = x
        self.calls.append(defn.name)
        n_before = len(self.diags)
        try:
            self.body(defn.body, sub)
        finally:
            self.calls.pop()
        if len(self.diags) > n_before:
            for d in self.diags[n_before:]:
                d.notes.append(Note(f"in cell '{defn.name}' called at {call.span}", call.span))
            raise _Silent()
        extra = len(given["positional"]) + len(given["keyword"])
        if extra:
            declared = [n for n, _ in _cell_contexts(defn).items()]
            what = f"its context{'s' * (len(declared) != 1)} ({', '.join(declared)})" if declared else "no context"
            unknown = [k for k in given["keyword"]]
            raise Fail(
                f"cell '{defn.name}' takes a sequence and {what}, but is given {extra} tensor{'s' * (extra != 1)} more"
                + (f" ('{unknown[0]}' is not one of its contexts)" if unknown else ""),
                given["keyword"][unknown[0]][1] if unknown else call.span,
                notes=[Note(f"'{defn.name}' is defined here", defn.name_span)],
                help="declare each tensor the cell reads at every step in it: 'context memory'",
            )
        contexts = sub.__dict__.get("context_decls", [])
        decls = sub.__dict__.get("state_decls", [])
        if not decls:
            raise Fail(f"cell '{defn.name}' declares no state", defn.name_span, help="add one: 'state h: [hidden]'")
        from .ops.structure import StateSpec

        states = []
        for sname, dims, node, sspan, init in decls:
            upd = sub.states.get(sname)
            if not isinstance(upd, Tensor) or upd.path == node:
                raise Fail(f"state '{sname}' of cell '{defn.name}' is never updated", sspan, help=f"assign it: '{sname} = …'")
            states.append(StateSpec(name=sname, shape=dims, node=node, update=upd.path, init=init))
        if sub.outputs:
            out = sub.outputs[0][1]
            if not isinstance(out, Tensor):
                raise _Silent()
        else:
            out = Tensor(states[0].update, span)
        body = tuple(n.path for n in self.nodes[first:])
        seq = call.sequences
        params = ops.get("cell").Params(
            cell=defn.name,
            states=tuple(states),
            step_input=x.path,
            step_output=out.path,
            body=body,
            sequences=bool(seq),
            contexts=tuple(node for node, _ in contexts),
        )
        self.paths.pop(path, None)
        ins = (inp.path, *(outer for _, outer in contexts))
        self.nodes.append(Node(path=path, op="cell", params=params, inputs=ins, span=call.span, stack=scope.stack, in_cell=None))
        self.paths[path] = call.span
        return Tensor(path, call.span)

    # ---- expressions ----------------------------------------------------------------

    def value(self, e: A.Expr, scope: Scope) -> Any:
        """Evaluate an expression that must be a plain value (not a tensor or layer)."""
        v = self.eval(e, scope)
        if v is POISON:
            raise _Silent()
        if isinstance(v, (Tensor, LayerV, BlockCall, Instance)):
            raise Fail(f"expected a value here, got {_show_value(v)}", e.span)
        return v

    def truth(self, e: A.Expr, scope: Scope) -> bool:
        v = self.value(e, scope)
        if not isinstance(v, bool):
            raise Fail(f"a condition must be true or false, got {_show(v)}", e.span)
        return v

    def eval(self, e: A.Expr, scope: Scope) -> Any:
        if isinstance(e, A.Num):
            return e.value
        if isinstance(e, (A.Str, A.Bool)):
            return e.value
        if isinstance(e, A.Name):
            return self.name(e, scope)
        if isinstance(e, A.Paren):
            return self.eval(e.expr, scope)
        if isinstance(e, A.ListE):
            return tuple([self.eval(x, scope) for x in e.items])  # a list: no C frame per nesting level
        if isinstance(e, A.TupleE):
            return tuple([self.eval(x, scope) for x in e.items])  # a list: no C frame per nesting level
        if isinstance(e, A.Call):
            return self.call(e, scope)
        if isinstance(e, A.Apply):
            return self.application(e, scope)
        if isinstance(e, A.Index):
            return self.subscript(e, scope)
        if isinstance(e, A.BinOp):
            return self.binop(e, scope)
        if isinstance(e, A.UnOp):
            v = self.eval(e.operand, scope)
            if isinstance(v, Tensor):
                if e.op == "+":
                    return v
                return self.emit(scope, "neg", ops.get("neg").Params(), (v,), e.span)
            v = self.plain(v, e.operand.span)
            if not _is_num(v):
                raise Fail(f"'{e.op}' needs a number, got {_show(v)}", e.operand.span)
            return -v if e.op == "-" else v
        if isinstance(e, A.Not):
            return not self.truth(e.operand, scope)
        if isinstance(e, A.BoolOp):
            if e.op == "and":
                return all(self.truth(v, scope) for v in e.values)
            return any(self.truth(v, scope) for v in e.values)
        if isinstance(e, A.Ternary):
            return self.eval(e.then if self.truth(e.cond, scope) else e.orelse, scope)
        raise Fail("unsupported expression", e.span)  # pragma: no cover

    def plain(self, v: Any, span: Span) -> Any:
        if v is POISON:
            raise _Silent()
        if isinstance(v, (LayerV, BlockCall, Instance)):
            raise Fail(f"expected a value here, got {_show_value(v)}", span)
        return v

    def name(self, e: A.Name, scope: Scope) -> Any:
        if e.id in scope.names:
            return scope.names[e.id]
        if e.id in ops.CATALOGUE and e.id not in ops.INTERNAL:
            return self.layer(ops.get(e.id), (), scope, e.span)
        if e.id in self.defs:
            return BlockCall(self.defs[e.id], (), {}, {}, None, e.span)
        if e.id in self.sym_dims:  # `reshape [T, 4, 8]`
            raise Fail(
                f"'{e.id}' is a symbolic size of input '{self.sym_dims[e.id]}', known only at run time, not a value",
                e.span,
                help="in 'reshape', write -1 for the one size to infer: 'reshape [-1, 4, 8]'",
            )
        raise Fail(self.unknown(e.id, scope), e.span)

    def unknown(self, word: str, scope: Scope) -> str:
        pool = list(scope.names) + ops.USER_OPS + list(self.defs)
        kind = "name"
        return f"unknown {kind} '{word}'{suggest(word, pool)}"

    def call(self, e: A.Call, scope: Scope) -> Any:
        f = e.func
        if f in scope.names:
            target = scope.names[f]
            if isinstance(target, Instance):
                if e.kwargs:
                    raise Fail(f"instance '{f}' is called with tensors only", e.kwargs[0].span)
                args = tuple(self.eval(a, scope) for a in e.args)
                inp = args[0] if len(args) == 1 else args
                return self.call_instance(target, inp, scope, e.span)
            if target is POISON:
                raise _Silent()
            raise Fail(f"'{f}' is {_show_value(target)}, it cannot be called", e.func_span)
        if f in self.defs:
            bc, inp = self.block_call(e, scope)
            return bc if inp is None else self.apply(bc, inp, scope, e.span)  # `Encoder(x)`: applied to x
        if f in SHAPE_QUERIES:
            return self.shape_query(e, scope)
        if f in ops.CATALOGUE and f not in ops.INTERNAL:
            op = ops.get(f)
            tensors, others = [], []
            for a in e.args:
                v = self.eval(a, scope)
                if v is POISON:
                    raise _Silent()
                (tensors if _is_tensorish(v) else others).append((v, a))
            if not tensors and not e.kwargs and f in BUILTINS:  # `max(a, b)` of numbers: the function
                return self.builtin(e, [v for v, _ in others])
            lv = self.layer(op, tuple(a for _, a in others), scope, e.span, kwargs=e.kwargs)
            if op.arity[1] == 0:  # `zeros([4, 4])`, `arange(8)`: a tensor made here, from no input
                if tensors:
                    raise Fail(f"{f} takes no tensor, got {_show_value(tensors[0][0])}", tensors[0][1].span)
                return self.emit(scope, op.name, lv.params, lv.extra, e.span, name=lv.name, explicit=lv.name is not None)
            if not tensors:
                return lv
            inp = tensors[0][0] if len(tensors) == 1 else tuple(t for t, _ in tensors)
            return self.apply_op(lv, inp, scope, None, None)
        if f in BUILTINS:
            return self.builtin(e, [self.value(a, scope) for a in e.args])
        # a call is most often a block's: suggest blocks first, then ops, functions and names
        hint = suggest(f, list(self.defs)) or suggest(f, ops.USER_OPS + list(BUILTINS) + list(SHAPE_QUERIES) + list(scope.names))
        raise Fail(f"unknown block or function '{f}'{hint}", e.func_span)

    def block_call(self, e: A.Call, scope: Scope) -> tuple[BlockCall, Any]:
        """``Block(64, stride = 2)``, and the tensors among its positional arguments (``Encoder(x)``
        applies the block to ``x``; ``Pair(a, b)`` to the tuple), or None."""
        defn = self.defs[e.func]
        args, tensors = [], []
        for a in e.args:
            v = self.eval(a, scope)
            if v is POISON:
                raise _Silent()
            if _is_tensorish(v):
                tensors.append(v)
            else:
                args.append(self.plain(v, a.span))
        kwargs: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        contexts: dict[str, Any] = {}
        for kw in e.kwargs:
            if defn.kind == "cell" and kw.name in RESERVED_CELL_KWARGS and kw.name not in [p.name for p in defn.params or ()]:
                kwargs["__sequences"] = self.truth(kw.value, scope)
                continue
            if kw.name in kwargs or kw.name in contexts:
                raise Fail(f"argument '{kw.name}' is given twice", kw.span)
            pnames = [p.name for p in defn.params or ()]
            if defn.kind == "cell" and kw.name not in pnames and _cell_contexts(defn):
                declared = list(_cell_contexts(defn))
                if kw.name not in declared:
                    raise Fail(
                        f"cell '{defn.name}' has no parameter or context '{kw.name}'{suggest(kw.name, pnames + declared)}",
                        kw.span,
                        notes=[Note(f"'{defn.name}' is defined here", defn.name_span)],
                    )
                t = self.eval(kw.value, scope)  # `Decoder(64, memory = enc)`: a context, by name
                if t is POISON:
                    raise _Silent()
                if not isinstance(t, Tensor):
                    raise Fail(f"context '{kw.name}' of cell '{defn.name}' must be a tensor, got {_show_value(t)}", kw.value.span)
                contexts[kw.name] = (t, kw.span)
                continue
            kwargs[kw.name] = self.value(kw.value, scope)
            spans[kw.name] = kw.span
        seq = kwargs.pop("__sequences", True)
        bc = BlockCall(defn, tuple(args), kwargs, spans, None, e.span, sequences=seq, contexts=contexts)
        inp = None if not tensors else tensors[0] if len(tensors) == 1 else tuple(tensors)
        return bc, inp

    def builtin(self, e: A.Call, args: list) -> Any:
        """``min``, ``max``, ``int``, … of plain values."""
        f = e.func
        if e.kwargs:
            raise Fail(f"{f}() takes no keyword arguments", e.kwargs[0].span)
        for a, v in zip(e.args, args):
            if isinstance(v, (Tensor, LayerV, BlockCall, Instance)):
                raise Fail(f"expected a value here, got {_show_value(v)}", a.span)
        try:
            out = BUILTINS[f](*args)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as ex:
            raise Fail(f"{f}({', '.join(map(_show, args))}): {ex}", e.span) from None
        problem = number_problem(out)  # int(1e300): the value rule holds for results of functions too
        if problem is not None:
            raise Fail(f"{f}({', '.join(map(_show, args))}) {problem}", e.span)
        return out

    # ---- subscripts and shape queries ---------------------------------------------------

    def subscript(self, e: A.Index, scope: Scope) -> Any:
        """``x[:, 0]`` (a ``slice`` node), ``cfg[i]`` (an item of a list), ``pair[1]`` (of a tuple of tensors)."""
        v = e.value
        if isinstance(v, A.Name) and v.id not in scope.names and (v.id in ops.CATALOGUE or v.id in self.defs):
            raise Fail(
                f"'{v.id}' is a layer, not a tensor or a list: it cannot be indexed",
                e.span,
                help=f"a '[' right after a word is a subscript; to give a layer a list, put a space before it: '{v.id} [8, -1]'",
            )
        base = self.eval(v, scope)
        if base is POISON:
            raise _Silent()
        if isinstance(base, Tensor):
            items = tuple(self.tensor_index(it, scope) for it in e.items)
            return self.emit(scope, "slice", ops.get("slice").Params(items=items), (base,), e.span)
        if isinstance(base, tuple):
            what = f"'{e.value.id}'" if isinstance(e.value, A.Name) else "the list"
            if len(e.items) != 1:
                raise Fail(f"a list takes one index at a time: write '{_unparse_name(e.value)}[i][j]'", e.items[1].span)
            it = e.items[0]
            if isinstance(it, A.EllipsisE):
                raise Fail("'...' stands for axes of a tensor; a list takes an index or a slice", it.span)
            if isinstance(it, A.SliceE):
                start, stop, step = (None if x is None else self.index_number(x, scope) for x in (it.start, it.stop, it.step))
                if step == 0:
                    raise Fail("a slice step cannot be 0", it.step.span)
                return base[start:stop:step]
            i = self.index_number(it, scope)
            if not -len(base) <= i < len(base):
                end = f"0 to {len(base) - 1} (or −{len(base)} to −1 from its end)" if base else "nowhere: it is empty"
                raise Fail(
                    f"index {i} is past the end of {what}, which has {len(base)} item{'s' * (len(base) != 1)}",
                    it.span,
                    help=f"its indices run from {end}",
                )
            return base[i]
        if isinstance(base, (LayerV, BlockCall, Instance)):
            raise Fail(
                f"{_show_value(base)} cannot be indexed",
                e.span,
                help="a '[' right after a word is a subscript; to give a layer a list, put a space before it: 'reshape [8, -1]'",
            )
        raise Fail(f"{_show(base)} cannot be indexed: it is neither a tensor nor a list", e.span)

    def index_number(self, e: A.Expr, scope: Scope, v: Any = None) -> int:
        v = self.value(e, scope) if v is None else v
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise Fail(f"an index must be a whole number, got {_show_value(v)}", e.span)
        return v

    def tensor_index(self, it: Any, scope: Scope) -> Any:
        """One item of a tensor's subscript: an index, ``(start, stop, step)`` or ``'...'``."""
        if isinstance(it, A.EllipsisE):
            return "..."
        if isinstance(it, A.SliceE):
            parts = tuple(None if x is None else self.index_number(x, scope) for x in (it.start, it.stop, it.step))
            if parts[2] == 0:
                raise Fail("a slice step cannot be 0", it.step.span)
            return parts
        v = self.eval(it, scope)
        if v is POISON:
            raise _Silent()
        if isinstance(v, Tensor):
            raise Fail("indexing with a tensor is not supported; an index is a whole number", it.span)
        return self.index_number(it, scope, v)

    def shape_query(self, e: A.Call, scope: Scope) -> int:
        """``size(x, axis)`` and ``channels(x)`` (``size(x, 1)``): a static size as a number."""
        f = e.func
        usage = "size(x, axis)" if f == "size" else f"{f}(x)"
        if e.kwargs:
            raise Fail(f"{f}() takes no keyword arguments: '{usage}'", e.kwargs[0].span)
        if len(e.args) != (2 if f == "size" else 1):
            raise Fail(f"{f}() takes {'a tensor and an axis' if f == 'size' else 'one tensor'}: '{usage}'", e.span)
        t = self.eval(e.args[0], scope)
        if t is POISON:
            raise _Silent()
        if not isinstance(t, Tensor):
            raise Fail(f"{f}() asks a tensor for a size, got {_show_value(t)}", e.args[0].span)
        axis = self.index_number(e.args[1], scope) if f == "size" else SHAPE_QUERIES[f]
        shown = e.args[0].id if isinstance(e.args[0], A.Name) else t.path
        typ = self.type_of(t, shown, e.span)
        k = axis + typ.rank if axis < 0 else axis
        if not 0 <= k < typ.rank:
            raise Fail(f"axis {axis} is past the last axis of '{shown}' {typ.show()} ({typ.rank} axes with N, 0 to {typ.rank - 1})", e.span)
        if k == 0:
            raise Fail(f"axis 0 of '{shown}' is the batch N, known only at run time", e.span, help="ask for a sample's axis, 1 onwards")
        d = typ.shape[k]
        if not isinstance(d, int):
            raise Fail(
                f"axis {k} of '{shown}' {typ.show()} has the symbolic size {d}, known only at run time, not a number",
                e.span,
                help="a shape query needs a fixed size: pass the size as a parameter instead",
            )
        return d

    def type_of(self, t: Tensor, shown: str, span: Span) -> Any:
        """The static type of a tensor made so far (the shape rules of the nodes before it run once)."""
        if self.typer is None:
            self.typer = _Typer(self)
        self.typer.advance()
        typ = self.typer.types.get(t.path)
        if typ is not None:
            return typ
        bad = self.typer.failed.get(t.path)
        if bad is not None:  # the shape error on the way to it, reported where it is
            f = Fail(bad.message, bad.span, bad.help, bad.notes)
            raise f
        raise Fail(f"the shape of '{shown}' is not known here", span, help="a shape query inside a cell needs the cell's input shape")

    def application(self, e: A.Apply, scope: Scope) -> Any:
        head = e.head
        if isinstance(head, A.Call):
            if head.func in self.defs and head.func not in scope.names:  # `Encoder(x) as enc`
                bc, inp = self.block_call(head, scope)
                bc.name = self.as_name(e.args, e.span)
                return bc if inp is None else self.apply(bc, inp, scope, e.span)
            target = self.eval(head, scope)
            name = self.as_name(e.args, e.span)
            if isinstance(target, BlockCall):
                target.name = name
                return target
            raise Fail(f"only 'as NAME' may follow {_show_value(target)}", e.args[0].span)
        word = head.id
        if word in scope.names:
            v = scope.names[word]
            if v is POISON:
                raise _Silent()
            if isinstance(v, Tensor):
                raise Fail(f"'{word}' is a tensor, not a layer; did you forget '->' after it?", head.span)
            raise Fail(f"'{word}' is {_show_value(v)}; it takes no arguments here", e.args[0].span)
        if word in ops.CATALOGUE and word not in ops.INTERNAL and ops.get(word).arity[1] == 0:  # `zeros [4, 4]`
            lv = self.layer(ops.get(word), e.args, scope, e.span)
            return self.emit(scope, word, lv.params, lv.extra, e.span, name=lv.name, explicit=lv.name is not None)
        if word in ops.CATALOGUE and word not in ops.INTERNAL:
            op = ops.get(word)
            tensors = []
            plain = []
            keys = set(op.keys()) | set(op.key_aliases)
            for k, a in enumerate(e.args):
                # `mask m`: a tensor after a tensor-valued key is that key's value; a key followed by a value is a key
                prev, last = (e.args[k - 1] if k else None), k == len(e.args) - 1
                # a name right after a key is that key's value (`tied e`, `mask m`), never the layer's input
                after_key = isinstance(prev, A.Name) and prev.id not in scope.names and prev.id in keys
                is_key = isinstance(a, A.Name) and a.id in keys and not last
                if not after_key and not is_key and isinstance(a, (A.TupleE, A.Name, A.Paren, A.Index)) and _refers_to_tensor(a, scope):
                    tensors.append(self.eval(a, scope))
                else:
                    plain.append(a)
            lv = self.layer(op, tuple(plain), scope, e.span)
            if tensors:
                inp = tensors[0] if len(tensors) == 1 else tuple(tensors)
                return self.apply_op(lv, inp, scope, None, None)
            return lv
        if word in self.defs:
            raise Fail(f"call {self.defs[word].kind} '{word}' with parentheses: '{word}(…)'", head.span)
        raise Fail(f"unknown op '{word}'{suggest(word, ops.USER_OPS + list(self.defs) + list(scope.names))}", head.span)

    def as_name(self, args: tuple, span: Span) -> str:
        if len(args) == 2 and isinstance(args[0], A.Name) and args[0].id == "as" and isinstance(args[1], A.Name):
            return args[1].id
        raise Fail("only 'as NAME' may follow a block call", args[0].span if args else span)

    def layer(self, op: type[Op], args: tuple, scope: Scope, span: Span, kwargs: tuple = ()) -> LayerV:
        args = self.silences(op, args, scope, span)
        values, spans, name, extra = self.bind(op, list(args), scope, span)
        for kw in kwargs:
            key = op.key_aliases.get(kw.name, kw.name)
            if key not in op.keys():
                raise Fail(op.unknown_key_message(kw.name, list(scope.names)), kw.span)
            if key in values:
                raise Fail(f"{op.name} '{key}' is given twice", kw.span)
            values[key] = self.key_value(op, key, kw.value, scope)
            spans[key] = kw.span
        extra_t = []
        for tp in op.tensor_params:
            if tp in values:
                t = values[tp]
                if not isinstance(t, Tensor):
                    raise Fail(f"{op.name} '{tp}' must name a tensor, got {_show(t)}", spans[tp])
                values[tp] = t.path
                extra_t.append(t)
        params = self.build_params(op, values, spans, span)
        return LayerV(op, params, tuple(extra_t), name, span)

    def silences(self, op: type[Op], args: tuple, scope: Scope, span: Span) -> tuple:
        """``…, ok drop_border`` (or ``ok [a, b]``): the warnings of this layer that are meant,
        recorded by the layer's span for the shape pass; the other arguments are returned."""
        from .silence import WARNINGS

        if "ok" in op.keys() or "ok" in scope.names:
            return args
        out, k = [], 0
        while k < len(args):
            a = args[k]
            if isinstance(a, A.Name) and a.id == "ok":
                if k + 1 >= len(args):
                    raise Fail("'ok' needs the name of the warning it silences", a.span, help=f"one of: {', '.join(WARNINGS)}")
                v = args[k + 1]
                names = v.items if isinstance(v, A.ListE) else (v,)
                silenced = self.silenced.setdefault(span, {})
                for n in names:
                    if not isinstance(n, A.Name) or n.id not in WARNINGS:
                        word = n.id if isinstance(n, A.Name) else _unparse_name(n)
                        raise Fail(
                            f"'ok' takes a warning's name, and '{word}' is none{suggest(word, list(WARNINGS))}",
                            n.span,
                            help=f"one of: {', '.join(WARNINGS)}",
                        )
                    silenced.setdefault(n.id, n.span)
                k += 2
                continue
            out.append(a)
            k += 1
        return tuple(out)

    def build_params(self, op: type[Op], values: dict, spans: dict, span: Span) -> Any:
        try:
            return op.build(values, spans, span)
        except _BindError as b:
            for d in b.diags[1:]:
                self.report(Fail(d.message, d.span, d.help))
            d = b.diags[0]
            raise Fail(d.message, d.span, d.help) from None

    def bind(self, op: type[Op], args: list, scope: Scope, span: Span) -> tuple[dict, dict, str | None, list]:
        """Bind written arguments to ``op``'s fields: keys, bare words, then positionals."""
        keys = set(op.keys())
        words = op.words()
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        positional: list[tuple[Any, Span]] = []
        name = None
        i = 0

        def is_keyword(a: Any) -> bool:
            return (
                isinstance(a, A.Name)
                and a.id not in scope.names
                and (a.id in keys or a.id in op.key_aliases or a.id in words or a.id == "as")
            )

        def set_field(key: str, v: Any, sp: Span) -> None:
            if key in values:
                raise Fail(f"{op.name} '{key}' is given twice", sp, notes=[Note("first given here", spans[key])])
            values[key] = v
            spans[key] = sp

        while i < len(args):
            a = args[i]
            if isinstance(a, A.Name):
                w = a.id
                if w == "as":
                    if i + 1 >= len(args) or not isinstance(args[i + 1], A.Name):
                        raise Fail("'as' needs a layer name after it", a.span)
                    name = args[i + 1].id
                    i += 2
                    continue
                key = op.key_aliases.get(w, w) if (w in keys or w in op.key_aliases) else None
                if key is not None:
                    nxt = args[i + 1] if i + 1 < len(args) else None
                    own_word = isinstance(nxt, A.Name) and nxt.id not in scope.names and op.literal_ok(key, nxt.id)  # `dtype bool`
                    if nxt is None or (is_keyword(nxt) and not own_word):
                        if op.is_bool_field(key):
                            set_field(key, True, a.span)
                            i += 1
                            continue
                        if w in scope.names:  # a parameter that happens to share a key's name
                            positional.append((self.value(a, scope), a.span))
                            i += 1
                            continue
                        raise Fail(f"{op.name} '{w}' needs a value", a.span, help=f"write '{w} VALUE'")
                    if op.is_bool_field(key):
                        v = self.eval(nxt, scope) if not (isinstance(nxt, A.Name) and nxt.id not in scope.names) else None
                        if not isinstance(v, bool):
                            set_field(key, True, a.span)
                            i += 1
                            continue
                        set_field(key, v, a.span.merge(nxt.span))
                        i += 2
                        continue
                    set_field(key, self.key_value(op, key, nxt, scope), nxt.span)
                    i += 2
                    continue
                if w not in scope.names:
                    if w in words:
                        fld, lit = words[w]
                        set_field(fld, lit, a.span)
                        i += 1
                        continue
                    if w in ops.CATALOGUE and w not in ops.INTERNAL or w in self.defs:
                        raise Fail(
                            f"'{w}' is not a parameter of {op.name}; did you forget '->' before it?",
                            a.span,
                            help=f"write '{op.name} … -> {w}'",
                        )
                    if not suggest(w, op.keys() + list(op.key_aliases) + list(words)) and suggest(w, scope.names):
                        raise Fail(f"unknown name '{w}'{suggest(w, scope.names)}", a.span)  # `dense widht`
                    raise Fail(op.unknown_key_message(w, list(scope.names)), a.span)
            v = self.eval(a, scope)
            if v is POISON:
                raise _Silent()
            if isinstance(v, (LayerV, BlockCall, Instance)):
                raise Fail(f"{_show_value(v)} cannot be an argument of {op.name}", a.span, help="chain layers with '->'")
            positional.append((v, a.span))
            i += 1
        free = [p for p in op.positional if p not in values]
        if len(positional) > len(free):
            v, sp = positional[len(free)]
            if not op.positional:
                raise Fail(
                    f"{op.name} takes no positional arguments, got {_show(_plain(v))}",
                    sp,
                    help=f"name it: '{op.name} KEY {_show(_plain(v))}'; keys: {', '.join(op.keys())}",
                )
            raise Fail(
                f"{op.name} takes {len(op.positional)} positional argument{'s' * (len(op.positional) > 1)} ({', '.join(op.positional)}), got one more: {_show(_plain(v))}",
                sp,
            )
        for (v, sp), key in zip(positional, free):
            values[key] = _plain(v)
            spans[key] = sp
        return values, spans, name, []

    def key_value(self, op: type[Op], key: str, e: A.Expr, scope: Scope) -> Any:
        if isinstance(e, A.Name) and e.id not in scope.names:
            if _accepts_str(op, key) and scope.prefix + e.id in self.paths:  # a layer of this scope: `tied wte`
                return scope.prefix + e.id
            if op.literal_ok(key, e.id) or key in op.tensor_params or _accepts_str(op, key):
                if key in op.tensor_params:
                    raise Fail(f"unknown tensor '{e.id}'{suggest(e.id, self.tensor_names(scope))}", e.span)
                return e.id
            words = _literals(op.Params.model_fields[key].annotation)
            if words and e.id not in self.defs and e.id not in ops.CATALOGUE:  # `dtype flot`, `mode bilinear`
                raise Fail(f"{op.name} '{key}' must be one of {', '.join(words)}, got '{e.id}'{suggest(e.id, words)}", e.span)
        v = self.eval(e, scope)
        if isinstance(v, Tensor) and key in op.tensor_params:
            return v
        if isinstance(v, Tensor) and _accepts_str(op, key):  # `tied e` with `e = embedding 16`: its layer
            return v.path
        return _plain(self.plain(v, e.span))

    def bind_settings(self, args: list, scope: Scope, op: type[Op], fixed: dict | None = None) -> dict:
        """Bind arguments of a structural statement (``concat axis 1``, ``input … int``)."""
        span = args[0].span if args else None
        values, _, name, _ = self.bind(op, args, scope, span)
        if name is not None:
            raise Fail("'as' does not apply here", span)
        values.update(fixed or {})
        return values

    def binop(self, e: A.BinOp, scope: Scope) -> Any:
        left = self.eval(e.left, scope)
        right = self.eval(e.right, scope)
        if left is POISON or right is POISON:
            raise _Silent()
        for v, sp in ((left, e.left.span), (right, e.right.span)):
            if isinstance(v, (LayerV, BlockCall)):
                raise Fail(
                    f"'{e.op}' cannot apply to {_show_value(v)}",
                    sp,
                    help="a layer's arguments are single values: wrap arithmetic in parentheses, e.g. 'dense (n - 1)'",
                )
        if e.op == "@":  # matrix product of two tensors
            for v, sp in ((left, e.left.span), (right, e.right.span)):
                if not isinstance(v, Tensor):
                    raise Fail(f"'@' multiplies two tensors (matmul), got {_show_value(v)}", sp, help="numbers multiply with '*'")
            return self.emit(scope, "matmul", ops.get("matmul").Params(), (left, right), e.span)
        if isinstance(left, Tensor) or isinstance(right, Tensor):
            fn = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow"}.get(e.op)
            if fn is None:
                raise Fail(f"'{e.op}' is not defined between tensors", e.span)
            kw: dict[str, Any] = {"fn": fn}
            ins = []
            for side, v, sp in (("left", left, e.left.span), ("right", right, e.right.span)):
                if isinstance(v, Tensor):
                    ins.append(v)
                elif _is_num(v):
                    kw[side] = float(v)
                else:
                    raise Fail(f"cannot combine a tensor with {_show_value(v)}", sp)
            return self.emit(scope, "arith", ops.get("arith").Params(**kw), tuple(ins), e.span)
        left, right = self.plain(left, e.left.span), self.plain(right, e.right.span)
        if e.op in ("==", "!="):
            return (left == right) == (e.op == "==")
        if e.op in _ARITH or e.op in ("<", ">", "<=", ">="):
            for v, sp in ((left, e.left.span), (right, e.right.span)):
                if not _is_num(v):
                    raise Fail(f"'{e.op}' needs numbers, got {_show(v)}", sp)
            shown = f"{_show(left)} {e.op} {_show(right)}"
            # the value rule (dlspec.bounds), checked before computing: nothing huge is ever built
            problem = pow_problem(left, right) if e.op == "**" else None
            if problem is not None:
                raise Fail(f"{shown} {problem}", e.span)
            try:
                out = _ARITH[e.op](left, right) if e.op in _ARITH else _CMP[e.op](left, right)
            except ZeroDivisionError:
                raise Fail("division by zero", e.span) from None
            except OverflowError:
                raise Fail(f"{shown} {number_problem(math.inf)}", e.span) from None
            except ValueError as ex:
                raise Fail(f"arithmetic error: {ex}", e.span) from None
            if isinstance(out, complex):
                raise Fail("the result is not a real number", e.span)
            problem = number_problem(out)
            if problem is not None:
                raise Fail(f"{shown} {problem}", e.span)
            return out
        raise Fail(f"unsupported operator '{e.op}'", e.span)  # pragma: no cover


STRUCTURE_DTYPE_WORDS = {"float": "float32", "int": "int64", "long": "int64", "half": "float16"}

_ARITH = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
_CMP = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


#: shape queries: the function and the axis it asks for (``size`` takes it as an argument)
SHAPE_QUERIES: dict[str, int] = {"size": 0, "channels": 1}


def _num_fn(f):
    def g(*a):
        for x in a:
            if not _is_num(x):
                raise TypeError(f"needs numbers, got {_show(x)}")
        return f(*a)

    return g


BUILTINS: dict[str, Callable] = {
    "min": _num_fn(min),
    "max": _num_fn(max),
    "int": _num_fn(int),
    "float": _num_fn(float),
    "round": _num_fn(round),
    "ceil": _num_fn(math.ceil),
    "floor": _num_fn(math.floor),
    "len": lambda x: len(x),
    "sum": lambda *a: _sum_numbers(*a),
}


def _sum_numbers(*args: Any) -> Any:
    """``sum(depths)``, ``sum(depths[:s])``: the sum of a list of numbers (0 for an empty one);
    ``sum`` given a tensor is the reduction."""
    if len(args) != 1:
        raise TypeError(f"takes one list of numbers, got {len(args)} arguments")
    (xs,) = args
    if not isinstance(xs, tuple) or not all(map(_is_num, xs)):
        raise TypeError(f"needs a list of numbers, got {_show(xs)}")
    return sum(xs)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_value(v: Any) -> bool:
    """A plain value (a number, a bool, a string, a list of them): what ``w = …`` may bind."""
    if isinstance(v, (int, float, str)):
        return True
    return isinstance(v, tuple) and all(_is_value(x) for x in v)


def _unparen(e: A.Expr) -> A.Expr:
    while isinstance(e, A.Paren):
        e = e.expr
    return e


def _unparse_name(e: A.Expr) -> str:
    return e.id if isinstance(e, A.Name) else "list"


def _is_tensorish(v: Any) -> bool:
    if isinstance(v, Tensor) or v is POISON:
        return True
    return isinstance(v, tuple) and len(v) > 0 and all(isinstance(x, Tensor) or x is POISON for x in v)


def _flat(vals: list, span: Span) -> tuple[Tensor, ...]:
    out: list[Tensor] = []
    for v in vals:
        if v is POISON:
            raise _Silent()
        if isinstance(v, Tensor):
            out.append(v)
        elif isinstance(v, tuple):
            out.extend(_flat(list(v), span))
        else:
            raise Fail(f"expected a tensor, got {_show_value(v)}", span)
    return tuple(out)


def _refers_to_tensor(e: A.Expr, scope: Scope) -> bool:
    if isinstance(e, A.Name):
        return isinstance(scope.names.get(e.id), Tensor)
    if isinstance(e, A.Paren):
        return _refers_to_tensor(e.expr, scope)
    if isinstance(e, A.TupleE):
        return any(_refers_to_tensor(x, scope) for x in e.items)
    if isinstance(e, A.Index):  # `dense 4 x[:, 0]`
        return _refers_to_tensor(e.value, scope)
    return False


def _accepts_str(op: type[Op], key: str) -> bool:
    import types as _t
    from typing import Union, get_args, get_origin

    ann = op.Params.model_fields[key].annotation
    if ann is str:
        return True
    return get_origin(ann) in (Union, _t.UnionType) and str in get_args(ann)


def _plain(v: Any) -> Any:
    if isinstance(v, list):
        v = tuple(v)
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    return v


def _show_value(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"tensor '{v.path}'"
    if isinstance(v, LayerV):
        return f"a '{v.op.name}' layer"
    if isinstance(v, BlockCall):
        return f"{v.defn.kind} '{v.defn.name}'"
    if isinstance(v, Instance):
        return f"instance '{v.var}'"
    return _show(v)


def _stage_word(e: A.Expr) -> str:
    if isinstance(e, A.Apply):
        return e.head.id if isinstance(e.head, A.Name) else e.head.func
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Call):
        return e.func
    return "layer"


def _stage_desc(e: A.Expr) -> str:
    return f"'{e.id}'" if isinstance(e, A.Name) else "this"


def _single_call(body: A.Body) -> A.Call | None:
    """The block call if ``body`` is exactly one statement calling one block."""
    if len(body.stmts) != 1 or not isinstance(body.stmts[0], A.ChainStmt):
        return None
    stages = body.stmts[0].chain.stages
    if len(stages) == 1 and isinstance(stages[0], A.Call):
        return stages[0]
    return None


class _Nodes:
    """What a shape rule reads of its graph (``ctx.graph.nodes``), over the nodes made so far."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes


class _Typer:
    """The static types of the nodes made so far, for shape queries (``channels(x)``) while the
    model is still being expanded: each node's rule runs once, in order, as the shape pass runs
    it; a node whose inputs are not known (a cell's step before its input) is skipped."""

    def __init__(self, expander: Expander):
        self.ex = expander
        self.types: dict[str, Any] = {}
        self.failed: dict[str, Diagnostic] = {}
        self.index: dict[str, Node] = {}
        self.done = 0

    def advance(self) -> None:
        from .dims import Ctx, N, ShapeFail, Sym, TensorType
        from .shapes import _diag, run_body

        nodes = self.ex.nodes
        graph = _Nodes(nodes)

        def body(ctx: Any, paths: tuple[str, ...], seed: dict) -> dict:
            return run_body(graph, paths, self.types, seed, ctx, {})  # type: ignore[arg-type]

        while self.done < len(nodes):
            node = nodes[self.done]
            self.done += 1
            self.index[node.path] = node
            if node.op == "step_in":
                seed = self.ex.step_seeds.get(node.path)
                if seed is not None and seed[0] == "state":
                    self.types[node.path] = TensorType((N, *(Sym.of(d) if isinstance(d, str) else d for d in seed[1])))
                elif seed is not None and seed[0] == "context":
                    if seed[1] in self.types:
                        self.types[node.path] = self.types[seed[1]]
                elif seed is not None and seed[1] in self.types and self.types[seed[1]].rank == 3:
                    t = self.types[seed[1]]
                    self.types[node.path] = TensorType((t.shape[0], t.shape[2]), t.dtype)
                continue
            failed = next((self.failed[i] for i in node.inputs if i in self.failed), None)
            if failed is not None:
                self.failed[node.path] = failed
                continue
            if any(i not in self.types for i in node.inputs):
                continue
            op = ops.get(node.op)
            ctx = Ctx(graph, node, [self.index[i] for i in node.inputs], self.types, [], body)  # type: ignore[arg-type]
            try:
                self.types[node.path] = op.infer(node.params, [self.types[i] for i in node.inputs], ctx)
            except ShapeFail as f:
                self.failed[node.path] = _diag(f, node)


def _resolve_ties(nodes: list[Node]) -> tuple[Node, ...]:
    """A tied ``dense`` names its embedding by path (``tied wte``) or by its last path part from
    inside a block (``tied "wte"``): store the embedding's full path, so that later stages never
    look it up by suffix. A name that is no embedding stays as written (the shape rule says so)."""
    paths = {n.path: n for n in nodes}
    out = []
    for n in nodes:
        tied = getattr(n.params, "tied", None) if n.op == "dense" else None
        if tied is not None and tied not in paths:
            found = [m.path for m in nodes if m.op == "embedding" and m.path.endswith("." + tied)]
            if len(found) == 1:
                n = n.model_copy(update={"params": n.params.model_copy(update={"tied": found[0]})})
        out.append(n)
    return tuple(out)


def _source_text(span: Span) -> str:
    """The spec's text at a one-line ``span`` (for a help that quotes an expression)."""
    from .errors import SOURCES

    line = SOURCES.line(span.file, span.line)
    if line is None or span.line != span.end_line:
        return "…"
    return line[span.col - 1 : span.end_col - 1]


def _context_decl(st: A.ChainStmt, scope: Scope) -> tuple[tuple[str, Span], ...] | None:
    """The names of ``context memory`` (``context a, b``), or None for any other statement.
    ``context`` is no reserved word: a statement of the word and names only, where ``context``
    names nothing (a model's ``context = 512`` stays a parameter)."""
    stages = st.chain.stages
    if len(stages) != 1 or not isinstance(stages[0], A.Apply) or "context" in scope.names:
        return None
    head = stages[0].head
    if not isinstance(head, A.Name) or head.id != "context" or not stages[0].args:
        return None
    if not all(isinstance(a, A.Name) for a in stages[0].args):
        return None
    return tuple((a.id, a.span) for a in stages[0].args)


def _cell_contexts(defn: A.Def) -> dict[str, Span]:
    """The contexts a cell declares (its body and the ``if`` bodies in it), in order."""
    found: dict[str, Span] = {}

    def walk(body: A.Body) -> None:
        for st in body.stmts:
            if isinstance(st, A.ChainStmt):
                stages = st.chain.stages
                if len(stages) == 1 and isinstance(stages[0], A.Apply) and isinstance(stages[0].head, A.Name):
                    if stages[0].head.id == "context" and stages[0].args and all(isinstance(a, A.Name) for a in stages[0].args):
                        for a in stages[0].args:
                            found.setdefault(a.id, a.span)
            elif isinstance(st, A.IfStmt):
                for _, b in st.branches:
                    walk(b)
                if st.orelse is not None:
                    walk(st.orelse)

    if defn.kind == "cell":
        walk(defn.body)
    return found


def _required(defn: A.Def) -> tuple[str, ...]:
    """The block's parameters without a default (drawn by position in a call's label)."""
    return tuple(p.name for p in (defn.params or ()) if p.default is None)
