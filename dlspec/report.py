"""The model report behind ``dlspec compile``: per-layer shapes, params, MACs, receptive
field; totals; memory; the rich table and the JSON structure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import ops
from .bounds import MAX_INT, MAX_INT_TEXT, size_problem
from .errors import Diagnostic, ShapeError
from .ir import Graph
from .registry import OPTIMIZERS
from .shapes import Dim, Shapes, TensorType, dadd, dvalue, elements, free_names, macs_value

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8, "bool": 1}
#: optimizer state tensors per parameter (:data:`dlspec.registry.OPTIMIZERS`); ``NAME+momentum``
#: for an optimizer whose momentum buffer is extra state
OPTIMIZER_STATE = {
    **{name: e.state for name, e in OPTIMIZERS.items()},
    **{f"{name}+momentum": e.state + e.momentum_state for name, e in OPTIMIZERS.items() if e.momentum_state},
}


@dataclass
class Row:
    path: str
    op: str
    summary: str
    shape: TensorType
    params: int
    buffers: int
    macs: Dim
    line: int
    depth: int
    rf: tuple[int, int] | None = None
    collapsed: bool = False


@dataclass
class Report:
    """Everything ``dlspec compile`` shows about one model."""

    graph: Graph
    shapes: Shapes
    rows: list[Row]
    seq: dict[str, int] = field(default_factory=dict)

    # ---- totals -------------------------------------------------------------------
    @property
    def params(self) -> int:
        return sum(c.params for c in self.shapes.costs.values())

    @property
    def buffers(self) -> int:
        return sum(c.buffers for c in self.shapes.costs.values())

    @property
    def trainable(self) -> int:
        return self.params

    def macs(self) -> int:
        return sum(macs_value(c.macs, self.seq) for c in self.shapes.costs.values())

    def symbols(self) -> set[str]:
        """Symbolic dims other than N that costs or shapes depend on (e.g. T)."""
        out: set[str] = set()
        for c in self.shapes.costs.values():
            out |= free_names(c.macs)
        for t in self.shapes.types.values():
            for d in t.shape:
                out |= free_names(d)
        return out - {"N"}

    def activation_bytes(self) -> int:
        """Bytes of every layer's output for one sample (forward pass)."""
        total = 0
        env = {**{s: 1 for s in self.symbols()}, **self.seq}
        for n in self.graph.top_level():
            t = self.shapes.types[n.path]
            v = dvalue(elements(t.sample), env)
            total += max(v or 0, 0) * DTYPE_BYTES.get(t.dtype, 4)  # T−2 at T = 1 counts as empty
        return total

    def param_bytes(self) -> int:
        return (self.params + self.buffers) * 4

    def training_bytes(self, batch: int, optimizer: str = "adam") -> int:
        """params + grads + optimizer state + activations for a batch (estimate)."""
        state = OPTIMIZER_STATE.get(optimizer, 2)
        return self.param_bytes() + self.params * 4 * (1 + state) + self.activation_bytes() * batch

    def field(self) -> tuple[int, int] | None:
        """Receptive field and effective stride of the last spatial layer."""
        last = None
        for r in self.rows:
            if r.rf is not None:
                last = r.rf
        return last

    # ---- JSON ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        g, s = self.graph, self.shapes
        return {
            "name": g.name,
            "inputs": [{"name": p, "shape": s[p].json(), "dtype": s[p].dtype} for p in g.inputs],
            "outputs": [{"name": o.name, "shape": s[o.node].json(), "dtype": s[o.node].dtype} for o in g.outputs],
            "params": self.params,
            "trainable_params": self.trainable,
            "buffers": self.buffers,
            "macs": self.macs(),
            "layers": [
                {
                    "path": r.path,
                    "op": r.op,
                    "output_shape": r.shape.json(),
                    "params": r.params,
                    "macs": macs_value(r.macs, self.seq),
                    "line": r.line,
                }
                for r in self.rows
            ],
        }


def build(graph: Graph, shapes: Shapes, depth: int | None = None, seq: dict[str, int] | None = None) -> Report:
    """Rows for every top-level node, blocks below ``depth`` collapsed into one row each."""
    rf = receptive_fields(graph, shapes)
    rows: list[Row] = []
    groups: dict[str, Row] = {}
    for n in graph.top_level():
        c = shapes.costs[n.path]
        t = shapes.types[n.path]
        if depth is not None and len(n.stack) > depth:
            frame = n.stack[depth]
            row = groups.get(frame.path)
            if row is None:
                row = Row(frame.path, frame.block, frame.label(), t, 0, 0, 0, frame.span.line, depth, collapsed=True)
                groups[frame.path] = row
                rows.append(row)
            row.shape = t  # a block's output is its last node's
            row.params += c.params
            row.buffers += c.buffers
            row.macs = dadd(row.macs, c.macs)
            row.rf = rf.get(n.path)
            continue
        rows.append(
            Row(
                n.path,
                n.op,
                " ".join(ops.words(n.op, n.params, t)),
                t,
                c.params,
                c.buffers,
                c.macs,
                n.span.line,
                len(n.stack),
                rf.get(n.path),
            )
        )
    if seq:
        _check_bound(graph, shapes, dict(seq))
    return Report(graph, shapes, rows, dict(seq or {}))


def _check_bound(graph: Graph, shapes: Shapes, seq: dict[str, int]) -> None:
    """The value rule (dlspec.bounds) for the figures with symbolic sizes bound (``--seq T=…``):
    each layer's MACs and elements per sample at most 2**63 − 1, else a located error."""
    bound = ", ".join(f"{k}={v}" for k, v in seq.items())
    for n in graph.top_level():
        numel = elements(shapes.types[n.path].sample)
        env = {**{s: 1 for s in free_names(numel)}, **seq}
        for what, v in (("MACs per sample", macs_value(shapes.costs[n.path].macs, seq)), ("elements per sample", dvalue(numel, env) or 0)):
            about = size_problem(v)
            if about is not None:
                message = f"{n.op} '{n.path}' has too many {what} at {bound} ({about}; the limit is {MAX_INT_TEXT})"
                raise ShapeError(Diagnostic(message, n.span))


def receptive_fields(graph: Graph, shapes: Shapes) -> dict[str, tuple[int, int]]:
    """Receptive field and effective stride (along the first spatial axis) of every node
    of a convolutional stack; absent after a layer that mixes all positions (dense, flatten)."""
    track: dict[str, tuple[int, int, bool]] = {}
    for n in graph.top_level():
        t = shapes.types[n.path]
        op = ops.get(n.op)
        if n.op == "input":
            if t.rank >= 3:
                track[n.path] = (1, 1, False)
            continue
        ins = [track[i] for i in n.inputs if i in track]
        if not ins or len(ins) != len(n.inputs):
            continue
        if op.keeps_field:
            track[n.path] = max(ins)
            continue
        win = shapes.windows.get(n.path) if op.field_window else None
        if win is None:
            continue
        (r, j, _), k, s = ins[0], win.effective()[0], win.stride[0]
        if max(r + (k - 1) * j, j * s) > MAX_INT:  # past any input's size (the value rule): no meaningful field
            continue
        track[n.path] = (r + (k - 1) * j, j * s, True)
    # only layers that some window (conv, pool) came before have a meaningful field
    return {p: (r, j) for p, (r, j, seen) in track.items() if seen}


# ---- rendering ----------------------------------------------------------------------------


def human(n: int) -> str:
    for unit, k in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= k:
            return f"{n / k:.2f}{unit}"
    return str(n)


def nbytes(n: int) -> str:
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n} B"


def table(rep: Report, file: str, batch: int | None = None, optimizer: str = "adam"):
    """A rich renderable in the style of Keras ``summary`` / torchinfo."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    g = rep.graph
    syms = sorted(rep.symbols())
    seq_note = ""
    if syms:
        bound = {s: rep.seq[s] for s in syms if s in rep.seq}
        unbound = [s for s in syms if s not in rep.seq]
        seq_note = ", ".join(f"{k}={v}" for k, v in bound.items())
        if unbound:
            seq_note += (", " if seq_note else "") + "per step (" + ", ".join(f"{u}=1" for u in unbound) + ")"
    t = Table(title=f"{g.name}  ({file})", box=box.SIMPLE_HEAD, title_justify="left", show_footer=False)
    t.add_column("Layer", no_wrap=True)
    t.add_column("Op", no_wrap=True)
    t.add_column("Output shape", no_wrap=True)
    t.add_column("Params", justify="right")
    t.add_column("MACs" + (f" ({seq_note})" if seq_note else ""), justify="right")
    t.add_column("RF /stride", justify="right")
    for r in rep.rows:
        name = "  " * r.depth + r.path
        op = Text(r.summary, style="bold" if r.collapsed else "")
        params = f"{r.params:,}" if r.params else "–"
        m = macs_value(r.macs, rep.seq)
        t.add_row(name, op, r.shape.show(with_batch=True), params, f"{m:,}" if m else "–", f"{r.rf[0]} /{r.rf[1]}" if r.rf else "")
    lines = [
        f"Params: {rep.params:,} trainable ({human(rep.params)}), {rep.buffers:,} in buffers (batch-norm statistics)",
        f"MACs per sample: {rep.macs():,} ({human(rep.macs())})" + (f", {seq_note}" if seq_note else ""),
        f"Memory: params {nbytes(rep.param_bytes())}; forward activations {nbytes(rep.activation_bytes())} per sample",
    ]
    if batch:
        lines.append(
            f"Training estimate (batch {batch}, {optimizer}): {nbytes(rep.training_bytes(batch, optimizer))} (params + grads + optimizer state + activations)"
        )
    f = rep.field()
    if f:
        lines.append(f"Receptive field of the last spatial layer: {f[0]} px, effective stride {f[1]}")
    return Group(t, Text("\n".join(lines)))
