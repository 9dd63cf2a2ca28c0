"""Graph IR → the source of a standalone PyTorch module.

The graph's nodes are grouped by the block calls they came from (their ``Frame`` stacks) into a
tree of scopes: the model, each block call, each cell. Every scope renders as a class body whose
submodules sit at the spec's layer paths relative to it (so ``state_dict()`` keys are dlspec's);
the calls of one block share a class when their code is the same up to values that are the
block's arguments (or the input's channel/feature count, which becomes one more constructor
argument) — otherwise each distinct expansion gets its own class (``Basic``, ``Basic_2``, …).

Rendering works on templates: literal values are slots (``\\x01n\\x01``) and comments are
markers (``\\x03n\\x03``), so that the calls of a block can be compared (same skeleton) and a
slot whose value differs per call resolved to an argument.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...errors import BackendError, Diagnostic
from .lowerings import HELPERS, STRUCTURAL, Lowered, Site, unsupported

if TYPE_CHECKING:
    from ...ir import Frame, Graph, Node
    from ...shapes import Shapes

SLOT = re.compile("\x01(\\d+)\x01")
COMMENT = re.compile("\x03(\\d+)\x03")
INPUT = re.compile("\x02(\\d+|m|d)\x02")

#: attributes of ``nn.Module`` (torch 2.x): a submodule of one of these names is reached through ``_modules``
MODULE_ATTRS = frozenset(
    "T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double dump_patches eval "
    "extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half ipu load_state_dict modules mtia "
    "named_buffers named_children named_modules named_parameters parameters register_backward_hook register_buffer "
    "register_forward_hook register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook "
    "register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module register_parameter "
    "register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory "
    "state_dict to to_empty train type xpu zero_grad training".split()
)
#: names the generated code uses itself
RESERVED = frozenset({"self", "torch", "nn", "F", "Tensor", "math", "super", "range", "tuple", "float", "int", "bool", "list", "len"})
GENERIC = ("x", "y")


def identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def attr_ok(name: str) -> bool:
    """Whether ``name`` can be a submodule attribute (``self.name``)."""
    return identifier(name) and name not in MODULE_ATTRS and not name.startswith("_")


def py(v: Any) -> str:
    """A Python literal."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return f'float("{v}")'
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list)):
        inner = ", ".join(py(e) for e in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    raise TypeError(f"no literal for {v!r}")


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type (``True`` is not ``1``)."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def span_words(span) -> set[str]:
    """The names written in a span's source text (``conv c kernel 3`` → {conv, c, kernel})."""
    if span is None:
        return set()
    from ...errors import SOURCES

    lines = []
    for k in range(span.line, span.end_line + 1):
        text = SOURCES.line(span.file, k)
        if text is None:
            return set()
        start = span.col - 1 if k == span.line else 0
        end = span.end_col - 1 if k == span.end_line else len(text)
        lines.append(text[start:end])
    return set(re.findall(r"[A-Za-z_]\w*", "\n".join(lines)))


def short_span(span) -> str:
    return f"{Path(span.file).name}:{span.line}:{span.col}" if span is not None else "?"


# ---- scopes -----------------------------------------------------------------------------------------


@dataclass(eq=False)
class Scope:
    """The model, a block call or a cell: a class instance in the generated module."""

    kind: str  # "model" | "block" | "cell"
    block: str
    path: str
    frame: Frame | None
    parent: Scope | None
    items: list = field(default_factory=list)  # Node | Scope, in execution order
    nodes: list = field(default_factory=list)  # every node in the subtree, graph order
    owner: Scope | None = None  # a shared instance called again: the scope whose weights it uses
    cell: Node | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    sharers: list[Scope] = field(default_factory=list)

    def rel(self, path: str) -> str:
        return path[len(self.path) + 1 :] if self.path else path

    def within(self, other: Scope) -> bool:
        s: Scope | None = self
        while s is not None:
            if s is other:
                return True
            s = s.parent
        return False

    def exports(self) -> list[str]:
        """Relative paths of the values the class returns: this call's and its sharers'."""
        out = [self.rel(v) for v in self.outputs]
        for sh in self.sharers:
            out += [r for r in (sh.rel(v) for v in sh.outputs) if r not in out]
        return out


def build_scopes(graph: Graph) -> tuple[Scope, dict[str, Scope]]:
    """The scope tree and each node's scope."""
    root = Scope("model", graph.name, "", None, None)
    by_key: dict[tuple, Scope] = {(): root}
    cells = {n.path: n for n in graph.nodes if n.op == "cell"}
    where: dict[str, Scope] = {}
    for n in graph.nodes:
        key: tuple = ()
        scope = root
        for f in n.stack:
            key = key + ((f.block, f.path),)
            child = by_key.get(key)
            if child is None:
                is_cell = f.path in cells and cells[f.path].params.cell == f.block and n.in_cell == f.path
                child = Scope("cell" if is_cell else "block", f.block, f.path, f, scope)
                by_key[key] = child
                if not is_cell:
                    scope.items.append(child)
            scope = child
        if n.op == "cell":
            cell = by_key.get(key + ((n.params.cell, n.path),))
            if cell is None:  # pragma: no cover - a cell always has its step input
                raise BackendError(Diagnostic(f"export to pytorch: cell '{n.path}' has no body", n.span))
            cell.cell = n
            scope.items.append(cell)
        else:
            scope.items.append(n)
        where[n.path] = scope
        s: Scope | None = scope
        while s is not None:
            s.nodes.append(n)
            s = s.parent
    scopes = list(walk(root))
    # a shared instance called again: every node of the call uses another's weights
    for s in scopes:
        if s.parent is not None and s.parent.owner is None and s.nodes and all(n.shares is not None for n in s.nodes):
            n = s.nodes[0]
            owner_path = n.shares[: len(n.shares) - (len(n.path) - len(s.path))]
            owner = next((o for o in scopes if o.path == owner_path and o.block == s.block and o.owner is None and o is not s), None)
            if owner is None or owner.parent is not s.parent:
                raise unsupported(n, f"the shared instance '{owner_path}' is called from another block than the one that owns it")
            s.owner = owner
            owner.sharers.append(s)
            for d in walk(s):
                if d is not s:
                    d.owner = d  # inside a shared call: never rendered
    for n in graph.nodes:
        if n.shares is not None and not any(sc.owner is not None for sc in _chain(where[n.path])):
            raise unsupported(n, "a layer sharing another's weights outside a shared block instance")
    for s in scopes:
        _wire(s, graph)
    return root, where


def walk(s: Scope):
    yield s
    for it in s.items:
        if isinstance(it, Scope):
            yield from walk(it)


def _chain(s: Scope | None):
    while s is not None:
        yield s
        s = s.parent


def _wire(s: Scope, graph: Graph) -> None:
    """The values a scope takes from outside and gives back, in execution order."""
    if s.kind == "model":
        s.inputs = list(graph.inputs)
        s.outputs = [o.node for o in graph.outputs]
        return
    if s.kind == "cell":
        s.inputs = list(s.cell.inputs)
        s.outputs = [s.cell.path]
        return
    inside = {n.path for n in s.nodes}
    ins: list[str] = []
    for n in s.nodes:
        for i in n.inputs:
            if i not in inside and i not in ins:
                ins.append(i)
    used_outside = {i for n in graph.nodes if n.path not in inside for i in n.inputs} | {o.node for o in graph.outputs}
    outs = [n.path for n in s.nodes if n.path in used_outside]
    if not outs and s.nodes:
        outs = [s.nodes[-1].path]  # a call whose result nothing uses: it still returns its last value
    s.inputs, s.outputs = ins, outs


# ---- statements ------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Stmt:
    """One line of ``forward``: a layer (``node``), a call of a child scope (``child``), or a loop
    over a ModuleList of blocks (``loop``)."""

    uses: list[str]
    defs: list[str]
    node: Node | None = None
    lowered: Lowered | None = None
    child: Scope | None = None
    loop: list[Scope] | None = None
    alias: bool = False


# ---- value naming --------------------------------------------------------------------------------------


def sanitize(name: str, taken: set[str] = frozenset()) -> str:
    name = re.sub(r"\W", "_", name)
    if not name or name[0].isdigit():
        name = "v_" + name
    if keyword.iskeyword(name) or name in RESERVED or name in taken or name in ("l", "O", "I"):
        name += "_"
    return name


def allocate(
    stmts: list[Stmt],
    preset: dict[str, str],
    tensor_names: dict[str, str | None],
    rel: Callable[[str], str],
    reserved: set[str],
    end_uses: list[str],
) -> dict[str, str]:
    """A variable name for every value: its spec name (``z``, ``logvar``) or ``x``/``y`` for a chain,
    a branch's name inside a branch, reused once the value it held is dead."""
    alias: dict[str, str] = {}
    for st in stmts:
        if st.alias:
            alias[st.defs[0]] = st.uses[0]

    def root(v: str) -> str:
        while v in alias:
            v = alias[v]
        return v

    last: dict[str, int] = {}
    for i, st in enumerate(stmts):
        for u in st.uses:
            last[root(u)] = i
    for u in end_uses:
        last[root(u)] = len(stmts)
    names: dict[str, str] = {}
    holders: dict[str, str] = {}  # name → the value it holds now
    generic: set[str] = set()
    for v, name in preset.items():
        names[v] = name
        holders[name] = v
        if name in GENERIC:
            generic.add(name)

    def free(name: str, i: int) -> bool:
        if name in reserved:
            return False
        h = holders.get(name)
        return h is None or last.get(h, -1) <= i

    for i, st in enumerate(stmts):
        if st.alias:
            continue
        this: set[str] = set()
        for v in st.defs:
            if v not in last:
                names[v] = "_"
                continue
            t = tensor_names.get(v)
            cands: list[str] = []
            if t:
                cands.append(sanitize(t))
            else:
                first = root(st.uses[0]) if st.uses else None
                reuse = names.get(first) if first is not None and names.get(first) in generic and last.get(first) == i else None
                parts = rel(v).split(".")
                branch = st.node is not None and len(parts) > 1 and not parts[1].isdigit()
                if branch:
                    cands.append(sanitize(parts[0]))
                    if reuse and reuse == cands[0]:
                        cands.insert(0, reuse)
                else:
                    cands.append("x")
                    if reuse:
                        cands.append(reuse)
                    cands.append("y")
                cands.append(sanitize(parts[-1]))
            base = cands[-1] if t is None else cands[0]
            cands += [f"{base}_{k}" for k in range(2, 1000)]
            for c in cands:
                if c not in this and free(c, i):
                    break
            names[v] = c
            holders[c] = v
            this.add(c)
            if not t:
                generic.add(c)
    for v in alias:
        names[v] = names[root(v)]
    return names


# ---- rendering one scope ---------------------------------------------------------------------------------


@dataclass
class Render:
    """One call's class body as a template (slots and comment markers) and what fills it."""

    init: list[str]  # __init__ body lines after super().__init__()
    forward: list[str]  # forward method lines (with its def)
    slots: dict[int, Any]
    comments: dict[int, str]
    helpers: set[str]
    sequential: list[str] | None = None  # nn.Sequential: the children's constructor expressions
    spans: dict[int, Any] = field(default_factory=dict)  # slot → the span of the layer or call it is in
    kws: dict[int, tuple[str, str, bool]] = field(default_factory=dict)  # keyword slot → (layer, keyword, at its default)
    sizes: set[int] = field(default_factory=set)  # slots that are the size of the block's input

    def text(self) -> str:
        return "\n".join(self.init + ["#"] + self.forward + ["#"] + (self.sequential or []))

    def skeleton(self) -> str:
        return COMMENT.sub("\x03", SLOT.sub("\x01", self.text()))

    def order(self, section: str | None = None) -> list[int]:
        """Slot ids in text order (of one section: 'init' or 'forward')."""
        if section == "init":
            text = "\n".join(self.init + (self.sequential or []))
        elif section == "forward":
            text = "\n".join(self.forward)
        else:
            text = self.text()
        return [int(m.group(1)) for m in SLOT.finditer(text)]


class Context:
    """Everything rendering needs: the graph, shapes, the op table and the resolved child classes."""

    def __init__(self, graph: Graph, shapes: Shapes, transforms: Mapping[str, Callable], where: dict[str, Scope]):
        self.graph = graph
        self.shapes = shapes
        self.transforms = transforms
        self.where = where
        self.index = {n.path: n for n in graph.nodes}
        #: names no variable takes: the classes' and helpers'
        self.reserved = {f.block for n in graph.nodes for f in n.stack} | {graph.name} | set(HELPERS)
        #: scope → (class name, [(constructor parameter, value)])
        self.classes: dict[Scope, tuple[str, list[tuple[str, Any]]]] = {}

    def type_of(self, path: str):
        return self.shapes.types.get(path)


class Renderer:
    """Renders one scope (one call) to a :class:`Render`."""

    def __init__(self, ctx: Context, scope: Scope, explicit: bool, omit: frozenset = frozenset()):
        self.ctx, self.scope, self.explicit, self.omit = ctx, scope, explicit, omit
        self.slots: dict[int, Any] = {}
        self.spans: dict[int, Any] = {}
        self.kws: dict[int, tuple[str, str, bool]] = {}
        self.comments: dict[int, str] = {}
        self.helpers: set[str] = set()
        self.where: Any = None  # the span of what is being rendered (a layer, a call)
        self.node: Node | None = None  # the layer being lowered
        self.sizes: set[int] = set()  # slots that are the size of an input of the block
        self.params: set[str] = set()  # members that are learned tensors (nn.Parameter), by relative path
        self.device_expr = "x.device"  # the device of forward's first input
        self.current = ""  # the layer's path relative to the scope

    def lit(self, v: Any, kw: str | None = None, at_default: bool = False, size: bool = False) -> str:
        k = len(self.slots)
        self.slots[k] = v
        self.spans[k] = self.where
        if size and self.node is not None and self.node.inputs and self.node.inputs[0] in self.scope.inputs:
            self.sizes.add(k)  # the size of the block's own input
        if kw is not None:
            self.kws[k] = (self.current, kw, at_default)
        return f"\x01{k}\x01"

    def write_kw(self, name: str) -> bool:
        """Whether a keyword at its default is written (explicit rendering, unless left out)."""
        return self.explicit and (self.current, name) not in self.omit

    def comment(self, text: str) -> str:
        k = len(self.comments)
        self.comments[k] = text
        return f"\x03{k}\x03"

    # ---- members ----

    def member_access(self, rel: str, holders: dict[str, str]) -> str:
        """``self.layer1[0].conv1`` for a member at ``rel`` (``holders``: holder path → 'list'|'module')."""
        out = "self"
        parts = rel.split(".")
        for k, part in enumerate(parts):
            parent = ".".join(parts[:k])
            if k > 0 and holders.get(parent) == "list":
                out += f"[{part}]"
            elif attr_ok(part):
                out += f".{part}"
            else:
                store = "_parameters" if k == len(parts) - 1 and rel in self.params else "_modules"
                out += f".{store}[{py(part)}]"
        return out

    def tied(self, node: Node, path: str, holders: dict[str, str]) -> str:
        emb = self.ctx.index.get(path) or next(
            (n for n in self.ctx.graph.nodes if n.op == "embedding" and n.path.endswith("." + path)), None
        )
        if emb is None:
            raise unsupported(node, f"its tied embedding '{path}' is not in the model")
        where = self.ctx.where[emb.path]
        if where is self.scope:
            return self.member_access(self.scope.rel(emb.path), holders)
        if where.within(self.scope) and where.owner is None:
            return f"self.get_submodule({py(self.scope.rel(emb.path))})"
        raise unsupported(node, f"its tied embedding '{emb.path}' is outside the block it is in")

    def lower(self, node: Node, holders: dict[str, str]) -> Lowered:
        fn = self.ctx.transforms.get(node.op)
        if fn is None:
            raise unsupported(node)
        windows = self.ctx.shapes.windows
        self.where, self.current, self.node = node.span, self.scope.rel(node.path), node
        site = Site(
            node=node,
            ins=[self.ctx.type_of(i) for i in node.inputs],
            out=self.ctx.type_of(node.path),
            x=[f"\x02{k}\x02" for k in range(len(node.inputs))],
            m="\x02m\x02",
            lit=self.lit,
            size=lambda v: self.lit(v, size=True),
            explicit=self.write_kw,
            ref=lambda path: self.tied(node, path, holders),
            window=windows.get(node.path),
        )
        low = fn(site)
        self.helpers |= site.helpers
        return low

    # ---- the whole body ----

    def statements(self, items: list, holders: dict[str, str]) -> tuple[list[Stmt], dict[str, Lowered]]:
        stmts: list[Stmt] = []
        lowered: dict[str, Lowered] = {}
        for it in items:
            if isinstance(it, Scope):
                owner = it.owner or it
                defs = [it.cell.path] if it.kind == "cell" else [it.path + "." + r for r in owner.exports()]
                stmts.append(Stmt(uses=list(it.inputs), defs=defs, child=it))
                continue
            if it.op in STRUCTURAL:
                continue
            low = self.lower(it, holders)
            lowered[it.path] = low
            alias = low.call == "\x020\x02" and len(it.inputs) >= 1
            stmts.append(Stmt(uses=list(it.inputs), defs=[it.path], node=it, lowered=low, alias=alias))
        return stmts, lowered

    def render(self) -> Render:
        # members: layers with tensors and child instances, at their paths relative to the scope;
        # accesses (``self.h[0]``) depend on the holders they make: lowered again once they are known
        holders: dict[str, str] = {}
        stmts, members = self.lower_all(holders)
        found = holder_kinds([m for m, _ in members])
        if found != holders:
            for d in (self.slots, self.spans, self.kws):
                d.clear()
            self.sizes.clear()
            self.helpers.clear()
            self.params.clear()
            holders.update(found)
            stmts, members = self.lower_all(holders)
        seq = self.sequential(stmts, members)
        if seq is not None:
            return Render(
                [], [], dict(self.slots), dict(self.comments), set(self.helpers), seq, dict(self.spans), dict(self.kws), set(self.sizes)
            )
        init = construct(members, holders, self.slots, self.params)
        stmts = fold_loops(stmts, members, holders, self.ctx, set(self.returned()))
        forward = self.forward(stmts, holders)
        return Render(
            init, forward, dict(self.slots), dict(self.comments), set(self.helpers), None, dict(self.spans), dict(self.kws), set(self.sizes)
        )

    def lower_all(self, holders: dict[str, str]) -> tuple[list[Stmt], list[tuple[str, str]]]:
        """The statements and the members: (relative path, constructor template)."""
        s = self.scope
        stmts, _ = self.statements(s.items, holders)
        members: list[tuple[str, str]] = []
        for st in stmts:
            if st.node is not None and st.lowered.module is not None and st.node.shares is None:
                members.append((s.rel(st.node.path), st.lowered.module))
                if st.lowered.parameter:
                    self.params.add(s.rel(st.node.path))
            elif st.child is not None and st.child.owner is None:
                members.append((s.rel(st.child.path), self.child_ctor(st.child)))
        return stmts, members

    def returned(self) -> list[str]:
        """The values ``forward`` returns (a cell: those its step carries on)."""
        s = self.scope
        if s.kind == "cell":
            return [st.update for st in s.cell.params.states] + [s.cell.params.step_output]
        return s.outputs if s.kind == "model" else [s.path + "." + r for r in s.exports()]

    def child_ctor(self, child: Scope) -> str:
        """``Basic(128, stride=2)``: the leading required parameters by position, the others by name."""
        name, args = self.ctx.classes[child]
        self.where, self.current, self.node = child.frame.span, self.scope.rel(child.path), None
        required = {
            k + ("" if identifier(k) and k not in ("self", "nn", "F", "torch", "Tensor", "math", "super") else "_")
            for k in getattr(child.frame, "required", ())
        }
        parts, positional = [], True
        for k, v in args:
            positional = positional and k in required
            parts.append(self.lit(v) if positional else f"{k}={self.lit(v)}")
        return f"{name}({', '.join(parts)})"

    def sequential(self, stmts: list[Stmt], members: list[tuple[str, str]]) -> list[str] | None:
        """``nn.Sequential`` for a block that only chains child blocks named 0, 1, …"""
        s = self.scope
        if s.kind != "block" or len(s.inputs) != 1 or len(s.outputs) != 1 or not stmts:
            return None
        prev = s.inputs[0]
        for k, st in enumerate(stmts):
            c = st.child
            if c is None or c.owner is not None or s.rel(c.path) != str(k) or c.inputs != [prev] or len(c.exports()) != 1:
                return None
            prev = st.defs[0]
        if s.outputs != [prev]:
            return None
        lines = []
        for (_, ctor), st in zip(members, stmts):
            lines.append(self.comment(self.call_comment(st.child)))
            lines.append(f"{ctor},")
        return lines

    def call_comment(self, c: Scope) -> str:
        if c.kind == "cell":
            return self.node_comment(c.cell)
        f = c.frame
        call = f.call() if hasattr(f, "call") else f.label()
        out = self.ctx.type_of(c.outputs[0]) if c.outputs else None
        return f"{short_span(f.span)}  {call}" + (f" → {out.show()}" if out is not None else "")

    def node_comment(self, node: Node) -> str:
        from ... import ops

        out = self.ctx.type_of(node.path)
        try:
            words = " ".join(ops.words(node.op, node.params, out))
        except Exception:  # noqa: BLE001 - a summary is decoration, never a reason to fail
            words = node.op
        return f"{short_span(node.span)}  {words}" + (f" → {out.show()}" if out is not None else "")

    def forward(self, stmts: list[Stmt], holders: dict[str, str]) -> list[str]:
        s = self.scope
        ctx = self.ctx
        if s.kind == "cell":
            return self.cell_forward(stmts, holders)
        tensor_names: dict[str, str | None] = {}
        returned = set(self.returned()) if s.kind == "block" else set()
        for st in stmts:
            for v in st.defs:
                n = ctx.index.get(v)
                # a block's result may be named by its caller (``grid17 = InceptionC(192)``): not its own name
                tensor_names[v] = n.tensor if n is not None and n.tensor and n.op != "input" and v not in returned else None
        taken = set(RESERVED) | set(ctx.reserved)
        if s.kind == "model":
            preset = {}
            for i in s.inputs:
                preset[i] = sanitize(ctx.index[i].tensor or i, taken | set(preset.values()))
        else:
            preset = {i: ("x" if len(s.inputs) == 1 else f"x{k + 1}") for k, i in enumerate(s.inputs)}
        outs = self.returned()
        if s.inputs:
            self.device_expr = f"{preset[s.inputs[0]]}.device"
        reserved = taken | {"block"}
        names = allocate(stmts, preset, tensor_names, s.rel, reserved, outs)
        args = ", ".join(f"{preset[i]}: Tensor" for i in s.inputs)
        ret = "Tensor" if len(outs) == 1 else "tuple[" + ", ".join("Tensor" for _ in outs) + "]" if len(outs) <= 4 else "tuple[Tensor, ...]"
        lines = [f"def forward(self{', ' if args else ''}{args}) -> {ret}:"]
        lines += ["    " + ln for ln in self.body(stmts, names, holders)]
        lines.append("    return " + ", ".join(names.get(v, "None") for v in outs))
        return lines

    def body(self, stmts: list[Stmt], names: dict[str, str], holders: dict[str, str]) -> list[str]:
        lines: list[str] = []
        for st in stmts:
            if st.loop is not None:
                first, last = st.loop[0], st.loop[-1]
                holder = self.member_access(self.scope.rel(first.path).rsplit(".", 1)[0], holders)
                shown = first.frame.call() if hasattr(first.frame, "call") else first.frame.label()
                note = self.comment(f"{short_span(first.frame.span)}  {shown} ×{len(st.loop)} → {self.ctx.type_of(last.outputs[0]).show()}")
                var, src = names[st.defs[0]], names[st.uses[0]]
                lines.append(note)
                if var != src:
                    lines.append(f"{var} = {src}")
                lines.append(f"for block in {holder}:")
                lines.append(f"    {var} = block({var})")
                continue
            if st.child is not None:
                c = st.child
                target = c.owner or c
                call = self.member_access(self.scope.rel(target.path), holders) + "(" + ", ".join(names[u] for u in st.uses) + ")"
                lhs = ", ".join(names.get(v, "_") for v in st.defs)
                lines.append(self.comment(self.call_comment(c)))
                lines.append(f"{lhs} = {call}")
                continue
            node = st.node
            note = self.comment(self.node_comment(node))
            lines.append(note)
            if st.alias:
                continue
            expr = st.lowered.call
            member = self.member_access(self.scope.rel(node.shares or node.path), holders) if st.lowered.module is not None else None

            def fill(m: re.Match, node: Node = node, member: str | None = member) -> str:
                key = m.group(1)
                if key == "d":
                    return self.device_expr
                if key == "m":
                    if member is None:  # pragma: no cover - a lowering without a module named it
                        raise unsupported(node, "its lowering uses a module it does not construct")
                    return member
                return names[node.inputs[int(key)]]

            lines.append(f"{names[node.path]} = {INPUT.sub(fill, expr)}")
        return lines

    def cell_forward(self, stmts: list[Stmt], holders: dict[str, str]) -> list[str]:
        s = self.scope
        ctx = self.ctx
        p = s.cell.params
        tensor_names: dict[str, str | None] = {}
        for st in stmts:
            for v in st.defs:
                n = ctx.index.get(v)
                tensor_names[v] = n.tensor if n is not None else None
        taken = set(RESERVED) | set(ctx.reserved) | {"seq", "t", "outputs", "block", "last"}
        preset = {p.step_input: "x"}
        for c in p.contexts:  # the cell's contexts: forward's arguments after the sequence, read at every step
            preset[c] = sanitize(ctx.index[c].tensor or s.rel(c), taken | set(preset.values()))
        for st in p.states:
            preset[st.node] = sanitize(st.name, taken | set(preset.values()))
        ends = [st.update for st in p.states] + [p.step_output]
        self.device_expr = "seq.device"
        names = allocate(stmts, preset, tensor_names, s.rel, taken, ends)
        extra = "".join(f", {preset[c]}: Tensor" for c in p.contexts)
        lines = [f"def forward(self, seq: Tensor{extra}) -> Tensor:"]
        for st in p.states:
            if not all(isinstance(d, int) for d in st.shape):
                raise unsupported(s.cell, f"state '{st.name}' has a symbolic shape {st.shape}")
            self.where, self.node = ctx.index[st.node].span, None
            dims = ", ".join(self.lit(d) for d in st.shape)
            if st.init is not None:
                lines.append(f"    {preset[st.node]} = {preset[st.init]}.expand(seq.shape[0], {dims})  # state {st.name}, from its context")
                continue
            lines.append(f"    {preset[st.node]} = seq.new_zeros(seq.shape[0], {dims})  # state {st.name}, zero at the start")
        if p.sequences:
            lines.append("    outputs = []")
        lines.append("    for t in range(seq.shape[1]):")
        lines.append("        x = seq[:, t]")
        lines += ["        " + ln for ln in self.body(stmts, names, holders)]
        out = names[p.step_output]
        olds = [preset[st.node] for st in p.states]
        pairs = [(a, names[st.update]) for a, st in zip(olds, p.states) if a != names[st.update]]
        final = out
        if p.sequences:
            lines.append(f"        outputs.append({out})")
        elif out in [a for a, _ in pairs]:  # the output's variable takes the next state: keep the output
            lines.append(f"        last = {out}")
            final = "last"
        if pairs:
            lines.append(f"        {', '.join(a for a, _ in pairs)} = {', '.join(b for _, b in pairs)}")
        lines.append("    return torch.stack(outputs, dim=1)" if p.sequences else f"    return {final}")
        return lines


def holder_kinds(paths: list[str]) -> dict[str, str]:
    """'list' for a holder whose children are all numbers (an ``nn.ModuleList``), else 'module'."""
    children: dict[str, set[str]] = {}
    for path in paths:
        parts = path.split(".")
        for k in range(1, len(parts)):
            children.setdefault(".".join(parts[:k]), set()).add(parts[k])
    return {h: ("list" if all(c.isdigit() for c in cs) else "module") for h, cs in children.items()}


def construct(members: list[tuple[str, str]], holders: dict[str, str], slots: dict[int, Any], params: set[str] = frozenset()) -> list[str]:
    """``__init__`` lines placing every member at its path: holders (``nn.Module()``,
    ``nn.ModuleList``, ``nn.ParameterList``) first, then the members (``params``: the learned tensors)."""
    tree: dict = {}
    for path, ctor in members:
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = ctor
    lines: list[str] = []

    def filled(t: str) -> str:
        return SLOT.sub(lambda m: py(slots[int(m.group(1))]), t)

    def emit(node: dict, access: str, kind: str, prefix: str, made: bool = False) -> None:
        """``made``: the holders below exist already (a ModuleList of empty modules)."""
        for name, sub in node.items():
            path = f"{prefix}{name}"
            if kind == "list":
                target = f"{access}[{name}]"
            elif attr_ok(name):
                target = f"{access}.{name}"
            else:
                target = f"{access}.{'_parameters' if path in params else '_modules'}[{py(name)}]"
            if isinstance(sub, str):
                lines.append(f"{target} = {sub}")
                continue
            sub_kind = holders.get(path, "module")
            if sub_kind == "list":
                size = max(int(k) for k in sub) + 1
                leaves = [sub.get(str(i)) for i in range(size)]
                kinds = {f"{path}.{k}" in params for k in sub}
                if kinds == {True}:  # learned tensors at 0, 1, …
                    lines.append(f"{target} = nn.ParameterList([{', '.join(v or 'nn.Parameter(torch.empty(0))' for v in leaves)}])")
                    continue
                if True in kinds:
                    raise BackendError(
                        Diagnostic(f"export to pytorch: '{path}' holds both layers and learned tensors at numbered paths", None)
                    )
                if all(isinstance(v, str) for v in leaves):
                    if len({filled(v) for v in leaves}) == 1 and size > 1:
                        lines.append(f"{target} = nn.ModuleList([{leaves[0]} for _ in range({size})])")
                    else:
                        lines.append(f"{target} = nn.ModuleList([{', '.join(v or 'nn.Module()' for v in leaves)}])")
                    continue
                lines.append(f"{target} = nn.ModuleList([nn.Module() for _ in range({size})])")
                emit(sub, target, "list", path + ".", made=True)
            else:
                if not made:
                    lines.append(f"{target} = nn.Module()")
                emit(sub, target, "module", path + ".")

    emit(tree, "self", "module", "")
    return lines


def fold_loops(stmts: list[Stmt], members: list[tuple[str, str]], holders: dict[str, str], ctx: Context, kept: set[str]) -> list[Stmt]:
    """Consecutive calls of the blocks of one ModuleList that chain one value (``x = h[0](x)``,
    ``x = h[1](x)`` …) become ``for block in self.h: x = block(x)``."""
    counts: dict[str, int] = {}  # a ModuleList of blocks only: how many
    children: dict[str, set[str]] = {}
    leaves = {path for path, _ in members}
    for path, _ in members:
        parts = path.split(".")
        for k in range(1, len(parts)):
            children.setdefault(".".join(parts[:k]), set()).add(parts[k])
    for holder, names in children.items():
        if all(f"{holder}.{n}" in leaves for n in names):
            counts[holder] = len(names)
    uses: dict[str, int] = {}
    for st in stmts:
        for u in st.uses:
            uses[u] = uses.get(u, 0) + 1
    out: list[Stmt] = []
    i = 0
    while i < len(stmts):
        st = stmts[i]
        c = st.child
        run = []
        if c is not None and c.owner is None and c.kind == "block" and c.parent is not None:
            rel = c.parent.rel(c.path)
            holder, _, idx = rel.rpartition(".")
            if holder and idx == "0" and holders.get(holder) == "list" and counts.get(holder, 0) > 1:
                n = counts[holder]
                run = stmts[i : i + n]
                ok = len(run) == n
                for k, r in enumerate(run):
                    rc = r.child
                    ok = ok and rc is not None and rc.owner is None and rc.parent.rel(rc.path) == f"{holder}.{k}"
                    ok = ok and len(r.uses) == 1 and len(r.defs) == 1 and ctx.classes.get(rc) is not None
                    ok = ok and ctx.classes[rc][0] == ctx.classes[c][0]
                    if not ok:
                        break
                    if k > 0:
                        v = run[k - 1].defs[0]
                        ok = r.uses[0] == v and uses.get(v, 0) == 1 and v not in kept
                if not ok:
                    run = []
        if run:
            out.append(Stmt(uses=list(run[0].uses), defs=list(run[-1].defs), loop=[r.child for r in run]))
            i += len(run)
            continue
        out.append(st)
        i += 1
    return out
