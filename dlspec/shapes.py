"""Stage 3: static shape inference and costs over the graph IR.

Every tensor gets a :class:`~dlspec.dims.TensorType` (shape with the batch ``N`` first, dtype).
Each op's rule lives on its class in :mod:`dlspec.ops` (``infer``, ``count``, ``macs``,
``geometry``); this module runs them in graph order, collects every shape error of a model in
one run, adds up costs, and keeps each windowed layer's resolved per-dimension geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ops
from .dims import (  # re-exported: the types the pass's results are made of
    MAX_INT,
    Ctx,
    Dim,
    N,
    ShapeFail,
    Sym,
    TensorType,
    broadcast,
    check_sizes,
    dadd,
    dceildiv,
    dfloordiv,
    dim_json,
    dmul,
    dsub,
    dvalue,
    elements,
    free_names,
    macs_value,
    need_float,
    need_rank,
    prod,
)
from .errors import Diagnostic, Note, ShapeError, Span
from .ir import Graph, Node
from .ops.window import Window

__all__ = [
    "MAX_INT",
    "N",
    "Costs",
    "Ctx",
    "Dim",
    "ShapeFail",
    "Shapes",
    "Sym",
    "TensorType",
    "Window",
    "broadcast",
    "check_sizes",
    "dadd",
    "dceildiv",
    "dfloordiv",
    "dim_json",
    "dmul",
    "dsub",
    "dvalue",
    "elements",
    "free_names",
    "infer",
    "macs_value",
    "need_float",
    "need_rank",
    "prod",
    "run_body",
]

# ---- the pass -----------------------------------------------------------------------------


@dataclass
class Costs:
    params: int = 0
    buffers: int = 0
    macs: Dim = 0


@dataclass
class Shapes:
    """The result of shape inference on one model."""

    graph: Graph
    types: dict[str, TensorType]
    #: per top-level node (a cell's costs include its step's)
    costs: dict[str, Costs]
    warnings: list[Diagnostic]
    #: resolved kernel, stride, dilation and padding per spatial dim of every windowed layer
    #: (conv, deconv, window pooling), computed once here for the targets and the drawing
    windows: dict[str, Window] = field(default_factory=dict)
    #: costs of the nodes of cells' steps (per step), by path
    step_costs: dict[str, Costs] = field(default_factory=dict)

    def symbols(self) -> set[str]:
        """The symbolic sizes the model's tensors have (``N``, ``T``, …)."""
        return {n for t in self.types.values() for d in t.shape for n in free_names(d)}

    def bind(self, env: dict[str, int]) -> "Shapes":
        """These shapes with symbolic sizes fixed (``{"N": 1, "T": 128}``): every dim whose symbols
        are all bound becomes a number; the rest stay symbolic."""
        unknown = sorted(set(env) - self.symbols())
        if unknown:
            from .errors import UsageError

            have = ", ".join(sorted(self.symbols())) or "none"
            raise UsageError(f"{self.graph.name} has no symbolic size {', '.join(unknown)} (its symbolic sizes: {have})")

        def one(d: Dim) -> Dim:
            if isinstance(d, int):
                return d
            v = dvalue(d, env) if free_names(d) <= set(env) else None
            return d if v is None else v

        types = {p: TensorType(tuple(one(d) for d in t.shape), t.dtype, t.vocab) for p, t in self.types.items()}
        return Shapes(self.graph, types, self.costs, self.warnings, self.windows, self.step_costs)

    def __getitem__(self, path: str) -> TensorType:
        return self.types[path]

    def output_types(self) -> list[tuple[str, TensorType]]:
        return [(o.name, self.types[o.node]) for o in self.graph.outputs]

    def input_types(self) -> list[tuple[str, TensorType]]:
        return [(p, self.types[p]) for p in self.graph.inputs]


def infer(graph: Graph) -> Shapes:
    """Infer every tensor's type and every node's costs; raises :class:`ShapeError`
    with all the model's shape errors."""
    types: dict[str, TensorType] = {}
    costs: dict[str, Costs] = {}
    diags: list[Diagnostic] = []
    warnings: list[Diagnostic] = list(graph.__dict__.get("_expand_warnings", ()))  # the expander's, first
    index = {n.path: n for n in graph.nodes}
    bad: set[str] = set()
    windows: dict[str, Window] = {}
    step_costs: dict[str, Costs] = {}

    def body(ctx: Ctx, paths: tuple[str, ...], seed: dict[str, TensorType]) -> dict[str, Costs]:
        costs = run_body(graph, paths, types, seed, ctx, windows)
        step_costs.update(costs)
        return costs

    def run(node: Node) -> None:
        if bad and not bad.isdisjoint(node.inputs):
            bad.add(node.path)
            return
        ins = [types[i] for i in node.inputs]
        op = catalogue[node.op]
        ctx = Ctx(graph, node, [index[i] for i in node.inputs], types, body=body)
        try:
            out = op.infer(node.params, ins, ctx)
            win = op.geometry(node.params, ins)
            params, buffers = op.count(node.params, ins, out, ctx)
            if node.shares is not None:
                params, buffers = 0, 0
            macs = op.macs(node.params, ins, out, ctx)
            check_sizes(ctx, out, params, buffers, macs)
        except ShapeFail as f:
            bad.add(node.path)
            d = _diag(f, node)
            if not any(o.span == d.span and o.message == d.message for o in diags[-8:]):  # the pieces of one split
                diags.append(d)
            return
        for w in ctx.warnings:
            warnings.append(_diag(w, node))
        types[node.path] = out
        costs[node.path] = Costs(params, buffers, macs)
        if win is not None:
            windows[node.path] = win

    catalogue = ops.CATALOGUE
    for node in graph.nodes:
        if node.in_cell is not None:
            continue  # run by its cell
        run(node)
    if diags:
        raise ShapeError(diags)
    return Shapes(graph, types, costs, _silence(warnings, graph.__dict__.get("_silenced", {})), windows, step_costs)


def _silence(warnings: list[Diagnostic], silenced: dict) -> list[Diagnostic]:
    """The warnings that no ``ok NAME`` at their layer silences (keyed by the layer's span), and a
    warning for each ``ok NAME`` that silenced nothing."""
    if not silenced:
        return warnings
    used: set[tuple] = set()
    kept = []
    for w in warnings:
        names = silenced.get(w.span)
        if names is not None and w.kind in names:
            used.add((w.span, w.kind))
            continue
        kept.append(w)
    for span, names in silenced.items():
        for name, at in names.items():
            if (span, name) not in used:
                kept.append(
                    Diagnostic(
                        f"'ok {name}' silences nothing here: this layer gives no {name} warning", at, severity="warning", help="remove it"
                    )
                )
    return kept


def run_body(
    graph: Graph, body: tuple[str, ...], types: dict[str, TensorType], seed: dict[str, TensorType], ctx: Ctx, windows: dict[str, Window]
) -> dict[str, Costs]:
    """Infer the nodes of a cell's step (the ``cell`` op's rule calls it through ``ctx.body``)."""
    index = {n.path: n for n in graph.nodes}
    costs: dict[str, Costs] = {}
    types.update(seed)
    for path in body:
        node = index[path]
        if path in seed:
            costs[path] = Costs()
            continue
        ins = [types[i] for i in node.inputs]
        op = ops.get(node.op)
        sub = Ctx(graph, node, [index[i] for i in node.inputs], types, ctx.warnings, ctx.body)
        try:
            out = op.infer(node.params, ins, sub)
            win = op.geometry(node.params, ins)
            p, b = op.count(node.params, ins, out, sub)
            m = op.macs(node.params, ins, out, sub)
            check_sizes(sub, out, p, b, m)
        except ShapeFail as f:
            raise _Nested(f, node) from None
        types[path] = out
        costs[path] = Costs(p, b, m)
        if win is not None:
            windows[path] = win
    return costs


class _Nested(ShapeFail):
    def __init__(self, f: ShapeFail, node: Node):
        super().__init__(f.message, f.help)
        self.node = node


def _diag(f: ShapeFail, node: Node) -> Diagnostic:
    span: Span = node.span
    if isinstance(f, _Nested):
        span = f.node.span
    notes = [
        Note(f"in {fr.block}({', '.join(f'{k}={v}' for k, v in fr.args.items())}) called at {fr.span}", fr.span)
        for fr in reversed(node.stack)
    ]
    return Diagnostic(f.message, span, severity=f.severity, help=f.help, notes=notes, kind=getattr(f, "kind", None))
