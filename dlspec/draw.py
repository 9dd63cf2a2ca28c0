"""``dlspec draw``: Graphviz diagrams of a model with shapes, blocks and costs.

One node per layer, labelled with its path and its op's ``summary`` (the key params in
glossary words) and coloured by the op's ``category``; edges carry the tensor's static
shape (``N×64×56×56``); each block call is a cluster labelled ``Basic(128, stride=2)``.
Everything an op contributes (category, summary) lives with the op in :mod:`dlspec.ops`;
this module owns only the palette and the layout rules.

The ``graphviz`` package is imported only when a diagram is built, and the system ``dot``
only when one is rendered to svg/png/pdf (DOT source needs neither).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import Diagnostic, DlspecError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import graphviz

    from .ir import Frame, Graph, Node
    from .report import Report
    from .shapes import Shapes, TensorType

FORMATS = ("svg", "png", "pdf", "dot")
#: the keyword options of :func:`draw` (the others given to ``Program.draw`` are model arguments)
OPTIONS = ("depth", "rankdir", "activations", "fold_repeats", "cells", "phase")

#: category → (fill, border); one palette for every diagram
PALETTE: dict[str, tuple[str, str]] = {
    "io": ("#ffffff", "#5f6b7a"),
    "convolution": ("#cfe3fb", "#4a7fc1"),
    "pooling": ("#d4f0dc", "#4f9a66"),
    "dense": ("#ffe2bf", "#d08a2e"),
    "normalisation": ("#e7dcf7", "#8a6cc4"),
    "activation": ("#fff4b8", "#c9a826"),
    "recurrent": ("#f9d3e3", "#c2527f"),
    "attention": ("#fbd0cc", "#c9574c"),
    "merge": ("#e3e6ea", "#6d7884"),
    "embedding": ("#cdeeee", "#3f9a9a"),
    "reshape": ("#f4f5f7", "#9aa3ad"),
    "regularisation": ("#f0e9df", "#a58a68"),
    "elementwise": ("#e4e9f7", "#6b7bb0"),
    "sampling": ("#e4f2cf", "#7ba23f"),
    "block": ("#f6f7f9", "#37414d"),
    "other": ("#ffffff", "#9aa3ad"),
}
#: legend wording of the categories
CATEGORY_WORDS = {
    "io": "input/output",
    "block": "block (collapsed)",
    "normalisation": "normalisation",
}
GATE_COLOR = "#b0185a"
SHORTCUT_COLOR = "#2e7d4f"
SHARE_COLOR = "#9c5d00"
TIED_COLOR = "#7b3fa0"
FONT = "Helvetica,Arial,sans-serif"


class DrawError(DlspecError):
    """A diagram that cannot be rendered (no Graphviz ``dot``, an unwritable file)."""

    stage = "draw"


@dataclass
class Options:
    depth: int | None = None
    rankdir: str = "TB"
    activations: bool = False
    fold_repeats: bool = False
    cells: bool = False
    phase: str = "train"


@dataclass
class Item:
    """One drawn node: a layer (with the activations merged into it), a collapsed block,
    an output, or a piece of a recurrent cell's inside."""

    id: str
    path: str
    kind: str  # layer | block | output | cell-part
    category: str
    words: list[str]
    shape: Any = None
    params: int = 0
    chain: tuple[str, ...] = ()  # keys of the clusters it sits in, outermost first
    node: Any = None
    acts: list[str] = field(default_factory=list)
    last: str = ""  # the original node whose tensor leaves this item
    title: str | None = None
    gate: str | None = None
    shares: str | None = None
    badge: int = 1
    note: str | None = None
    compact: bool = False  # a small circle (arithmetic)
    multiline: bool = False  # words one per line (cell equations)
    state: bool = False


@dataclass
class Edge:
    src: str
    dst: str
    label: str = ""
    kind: str = "data"  # data | shortcut | shares | tied | state
    orig: tuple[str, str] = ("", "")


@dataclass
class Cluster:
    key: str
    label: str
    sub: str = ""
    kind: str = "block"  # block | cell | repeat
    prefix: str = ""  # the path prefix its nodes share (shown in the label, not in each node)


class _Drawing:
    def __init__(self, report: Report, opts: Options):
        self.opts = opts
        self.graph: Graph = report.graph
        self.shapes: Shapes = report.shapes
        self.report = report
        self.items: dict[str, Item] = {}
        self.order: list[str] = []
        self.rep: dict[str, str] = {}  # original node path → item id
        self.edges: list[Edge] = []
        self.clusters: dict[str, Cluster] = {}
        self.ranks: list[list[str]] = []  # groups of item ids drawn side by side
        self.index = {n.path: n for n in self.graph.nodes}
        self.consumers: dict[str, int] = {}
        for n in self.graph.nodes:
            for i in n.inputs:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        for o in self.graph.outputs:
            self.consumers[o.node] = self.consumers.get(o.node, 0) + 1

    # ---- building ------------------------------------------------------------------

    def build(self) -> None:
        from . import ops

        g, opts = self.graph, self.opts
        cells: list[Node] = []
        for n in g.top_level():
            op = ops.get(n.op)
            if opts.phase == "eval" and n.op in ("dropout", "droppath") and n.inputs:
                self.rep[n.path] = self.rep[n.inputs[0]]
                continue
            if opts.depth is not None and len(n.stack) > opts.depth:
                self._collapse(n)
                continue
            self._frames(n.stack)
            if self._merge_activation(n, op):
                continue
            it = self._layer(n, op, tuple(f.path for f in n.stack))
            if n.op in ("cell", "lstm", "gru", "rnn"):
                cells.append(n)
            self._add(it)
        for n in g.top_level():
            self._edges_of(n)
        for o in g.outputs:
            oid = self._fresh(o.name)
            it = Item(oid, o.name, "output", "io", ["output"], shape=self.shapes.types[o.node], title=o.name)
            self._add(it)
            self.edges.append(Edge(self.rep[o.node], oid, shape_words(self.shapes.types[o.node]), orig=(o.node, "")))
        self._shares()
        if opts.fold_repeats:
            self._fold()
        if opts.cells:
            for n in cells:
                if n.path in self.items and self.items[n.path].kind == "layer":
                    (self._user_cell if n.op == "cell" else self._builtin_cell)(n)
        self._dedupe_edges()

    def _fresh(self, want: str) -> str:
        key, k = want, 2
        while key in self.items or key in self.index:
            key, k = f"{want} {k}", k + 1
        return key

    def _add(self, it: Item) -> None:
        self.items[it.id] = it
        self.order.append(it.id)

    def _frames(self, stack: tuple[Frame, ...]) -> None:
        for f in stack:
            if f.path not in self.clusters:
                sub = f.path
                if "@" in f.path.rsplit(".", 1)[-1]:
                    sub += f" · shares the weights of {f.path.rsplit('@', 1)[0]}"
                self.clusters[f.path] = Cluster(f.path, self.call_label(f), sub)

    def call_label(self, f: Frame) -> str:
        return f.call()

    def _layer(self, n: Node, op: Any, chain: tuple[str, ...]) -> Item:
        from . import ops

        cost = self.shapes.costs.get(n.path)
        words = ops.words(n.op, n.params, self.shapes.types.get(n.path))
        it = Item(
            n.path,
            n.path,
            "layer",
            op.category if op.category in PALETTE else "other",
            words,
            shape=self.shapes.types.get(n.path),
            params=cost.params if cost else 0,
            chain=chain,
            node=n,
            last=n.path,
            shares=n.shares if n.shares and self._weighted(n.shares) else None,
        )
        if n.op == "arith":
            it.compact = True
        if n.op == "input":
            it.title = n.path
            it.words = ["input"]
        self.rep[n.path] = it.id
        return it

    def _weighted(self, path: str) -> bool:
        cost = self.shapes.costs.get(path)
        return bool(cost and cost.params)

    def _merge_activation(self, n: Node, op: Any) -> bool:
        """Merge an activation into the layer it follows (``conv 64 · 3×3 + relu``)."""
        from . import ops

        if self.opts.activations or not op.activation or len(n.inputs) != 1:
            return False
        src = n.inputs[0]
        it = self.items.get(self.rep.get(src, ""))
        if it is None or it.kind not in ("layer", "cell-part") or it.last != src or it.compact or it.node.op in ("input", "step_in"):
            return False
        if self.consumers.get(src, 0) != 1 or it.node.stack != n.stack or it.node.in_cell != n.in_cell:
            return False
        it.acts.append(" ".join(ops.words(n.op, n.params, self.shapes.types.get(n.path))))
        it.last = n.path
        it.shape = self.shapes.types.get(n.path, it.shape)
        if n.tensor and n.in_cell:
            it.gate = it.gate or (n.tensor if n.gate else None)
            it.title = n.tensor
        self.rep[n.path] = it.id
        return True

    def _collapse(self, n: Node) -> None:
        f = n.stack[self.opts.depth]
        self._frames(n.stack[: self.opts.depth])
        it = self.items.get(f.path)
        if it is None:
            it = Item(
                self._fresh(f.path) if f.path in self.index else f.path,
                f.path,
                "block",
                "block",
                [self.call_label(f)],
                chain=tuple(x.path for x in n.stack[: self.opts.depth]),
                title=f.path,
            )
            self._add(it)
        cost = self.shapes.costs[n.path]
        if n.op == "add" and getattr(n.params, "residual", False):
            it.note = "residual"
        it.params += cost.params
        it.shape = self.shapes.types[n.path]
        it.last = n.path
        if n.shares and it.shares is None and self._weighted(n.shares):
            it.shares = self.rep.get(n.shares, n.shares)
        self.rep[n.path] = it.id

    def _edges_of(self, n: Node) -> None:
        dst = self.rep.get(n.path)
        for k, i in enumerate(n.inputs):
            src = self.rep.get(i)
            if src is None or dst is None or src == dst:
                continue
            if self.opts.phase == "eval" and n.op in ("dropout", "droppath"):
                continue
            kind = "data"
            if n.op == "add" and getattr(n.params, "residual", False) and len(n.inputs) > 1 and k == len(n.inputs) - 1:
                kind = "shortcut" if self.items[dst].kind != "block" else "data"
            elif "shortcut" in n.path.split(".") and self.items[dst].kind != "block":
                kind = "to-shortcut"  # a projection shortcut's own layers
            self.edges.append(Edge(src, dst, shape_words(self.shapes.types[i]), kind, orig=(i, n.path)))
        tied = getattr(n.params, "tied", None)
        if tied and dst is not None:
            emb = self.index.get(tied)
            if emb is not None and emb.path in self.rep and self.rep[emb.path] != dst:
                self.edges.append(Edge(dst, self.rep[emb.path], "tied (Wᵀ)", "tied"))

    def _shares(self) -> None:
        for n in self.graph.top_level():
            if n.shares is None or n.shares not in self.rep or n.path not in self.rep:
                continue
            if not self._weighted(n.shares):
                continue  # only weights are shared; a relu "shares" nothing worth an edge
            a, b = self.rep[n.path], self.rep[n.shares]
            if a != b:
                self.edges.append(Edge(a, b, "shared weights", "shares"))

    # ---- repeats -----------------------------------------------------------------------

    def _fold(self) -> None:
        """Show runs of identical repeat iterations once, with a ``×N`` badge."""
        groups: dict[str, dict[int, list[str]]] = {}
        for iid in self.order:
            it = self.items[iid]
            if it.kind == "output":
                continue
            segs = it.path.split(".")
            for k in range(1, len(segs)):
                if segs[k].isdigit():
                    groups.setdefault(".".join(segs[:k]), {}).setdefault(int(segs[k]), []).append(iid)
        hidden: dict[str, tuple[str, int, int, int]] = {}  # id → (prefix, run start, iteration, run end)
        mapped: dict[str, str] = {}
        for prefix in sorted(groups, key=lambda p: p.count(".")):
            iters = groups[prefix]
            idx = sorted(iters)
            if len(idx) < 2 or idx != list(range(len(idx))):
                continue
            if any(i in hidden for ids in iters.values() for i in ids):
                continue
            sigs = [self._signature(f"{prefix}.{i}", iters[i]) for i in idx]
            a = 0
            while a < len(idx):
                b = a
                while b + 1 < len(idx) and sigs[b + 1] == sigs[a]:
                    b += 1
                if b > a:
                    head = f"{prefix}.{a}"
                    for j in range(a, b + 1):
                        for iid in iters[j]:
                            hidden[iid] = (prefix, a, j, b)
                            if j != a:
                                mapped[iid] = iid.replace(f"{prefix}.{j}", head, 1)
                    self._badge(head, iters[a], b - a + 1, prefix)
                a = b + 1
        if not mapped:
            return
        kept: list[Edge] = []
        for e in self.edges:
            hs, hd = hidden.get(e.src), hidden.get(e.dst)
            if hs and hd and hs[:2] == hd[:2] and hs[2] != hd[2]:
                continue  # from one folded iteration to the next
            e.src, e.dst = mapped.get(e.src, e.src), mapped.get(e.dst, e.dst)
            if e.src != e.dst:
                kept.append(e)
        self.edges = kept
        for iid in mapped:
            del self.items[iid]
        self.order = [i for i in self.order if i in self.items]
        self.rep = {k: mapped.get(v, v) for k, v in self.rep.items()}

    def _signature(self, head: str, ids: list[str]) -> tuple:
        ids_set = set(ids)
        rel = lambda s: s[len(head) :] if s.startswith(head + ".") or s == head else None  # noqa: E731
        parts = []
        for iid in ids:
            it = self.items[iid]
            ins = tuple(sorted((rel(e.src) if e.src in ids_set else "ext", e.kind) for e in self.edges if e.dst == iid))
            chain = tuple((rel(k), self.clusters[k].label) for k in it.chain if k in self.clusters and rel(k) is not None)
            shape = tuple(map(str, it.shape.shape)) if it.shape is not None else ()
            parts.append((rel(iid), it.kind, it.category, tuple(it.words), tuple(it.acts), shape, it.params, chain, ins, it.shares is None))
        return tuple(parts)

    def _badge(self, head: str, ids: list[str], count: int, prefix: str) -> None:
        last = f"{prefix}.{int(head.rsplit('.', 1)[1]) + count - 1}"
        if head in self.clusters:
            self.clusters[head].sub = f"{head} … {last}: {count} identical calls"
            self.clusters[head].label += f"  ×{count}"
            self.clusters[head].kind = "repeat"
            return
        if len(ids) == 1 and self.items[ids[0]].path == head:
            self.items[ids[0]].badge = count
            return
        key = f"{head} (repeat)"
        self.clusters[key] = Cluster(key, f"×{count}", f"{head} … {last}: {count} identical iterations", "repeat", head)
        for iid in ids:
            it = self.items[iid]
            pos = max((k + 1 for k, c in enumerate(it.chain) if head.startswith(c + ".") or head == c), default=0)
            it.chain = it.chain[:pos] + (key,) + it.chain[pos:]

    # ---- recurrent cells ---------------------------------------------------------------

    def _replace_cell_item(self, n: Node, label: str, sub: str) -> tuple[str, ...]:
        """Drop the cell's own node (its edges are rewired by the caller); return the chain
        the cell's inside is drawn in."""
        it = self.items.pop(n.path)
        pos = self.order.index(n.path)
        self.order.pop(pos)
        self.__dict__["_insert_at"] = pos
        self.clusters[n.path] = Cluster(n.path, label, sub, "cell")
        return it.chain + (n.path,)

    def _insert(self, it: Item) -> None:
        pos = self.__dict__["_insert_at"]
        self.items[it.id] = it
        self.order.insert(pos, it.id)
        self.__dict__["_insert_at"] = pos + 1

    def _rewire(self, cell_id: str, entry: str, exit_: str, contexts: dict[str, str] | None = None) -> None:
        """Edges of the cell's node now enter at its step input (a context's at its node inside)
        and leave from its step output."""
        for e in self.edges:
            if e.dst == cell_id:
                data = e.kind not in ("shares", "tied")
                ctx = (contexts or {}).get(e.orig[0]) if data else None
                if ctx is not None:
                    e.dst = ctx
                    continue
                e.dst = entry if data else exit_
                if data and e.label:
                    e.label += " (a step at a time)"
            if e.src == cell_id:
                e.src = exit_

    def _cell_label(self, n: Node, what: str) -> tuple[str, str]:
        from . import ops

        cost = self.shapes.costs.get(n.path)
        words = " · ".join(ops.words(n.op, n.params, self.shapes.types.get(n.path)))
        params = f" · {cost.params:,} params" if cost and cost.params else ""
        return f"{what}, one step", f"{n.path} · {words}{params}"

    def _user_cell(self, n: Node) -> None:
        from . import ops
        from .shapes import Ctx

        p = n.params
        frame = next((f for f in self.index[p.body[0]].stack if f.path == n.path), None)
        label, sub = self._cell_label(n, self.call_label(frame) if frame else f"cell {p.cell}")
        outer = self._replace_cell_item(n, label, sub)
        types = self.shapes.types
        state_of = {st.node: st.name for st in p.states}
        body = [self.index[b] for b in p.body]
        for b in body:
            op = ops.get(b.op)
            chain = outer + tuple(f.path for f in b.stack if f.path not in outer and f.path != n.path)
            self._frames(tuple(f for f in b.stack if f.path != n.path and f.path not in self.clusters))
            if self._merge_activation(b, op):
                continue
            it = self._layer(b, op, chain)
            it.kind = "cell-part"
            if b.op == "step_in":
                it.category = "io"
                if b.path == p.step_input:
                    it.title, it.words = "x", ["step input xₜ"]
                elif b.path in p.contexts:
                    it.title, it.words = b.tensor or "context", ["context (every step)"]
                else:
                    it.title, it.words, it.state = state_of.get(b.path, b.tensor or "state"), ["state (previous step)"], True
            else:
                try:
                    ins = [types[i] for i in b.inputs]
                    ctx = Ctx(self.graph, b, [self.index[i] for i in b.inputs], types)
                    it.params = op.count(b.params, ins, types[b.path], ctx)[0]
                except Exception:  # noqa: BLE001 - params are decoration here
                    it.params = 0
                if b.tensor:
                    it.title = b.tensor
                if any(st.update == b.path for st in p.states):
                    it.title = "new " + ", ".join(st.name for st in p.states if st.update == b.path)
                if b.gate:
                    it.gate = b.tensor
            self._insert(it)
        for b in body:
            dst = self.rep[b.path]
            for i in b.inputs:
                src = self.rep.get(i)
                if src is not None and src != dst:
                    self.edges.append(Edge(src, dst, shape_words(types[i]), orig=(i, b.path)))
        for st in p.states:
            self.edges.append(Edge(self.rep[st.update], self.rep[st.node], f"new {st.name} → next step", "state"))
        self._rewire(n.path, self.rep[p.step_input], self.rep[p.step_output], {o: self.rep[c] for o, c in zip(n.inputs[1:], p.contexts)})

    def _builtin_cell(self, n: Node) -> None:
        """LSTM / GRU / RNN drawn as its gates, state and update equations."""
        p = n.params
        x = self.shapes.types[n.inputs[0]]
        hshape = f"N×{p.hidden}"
        xshape = f"N×{x.shape[2]}"
        what = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[n.op]
        extra = []
        if p.layers > 1:
            extra.append(f"layer 1 of {p.layers}")
        if p.bidirectional:
            extra.append("each direction")
        label, sub = self._cell_label(n, f"{what} cell" + (f" ({', '.join(extra)})" if extra else ""))
        outer = self._replace_cell_item(n, label, sub)
        ids: dict[str, str] = {}
        hidden, feats = p.hidden, x.shape[2]
        hshape, xshape, xhshape = f"N×{hidden}", f"N×{feats}", f"N×{feats + hidden}"

        def part(key: str, title: str, words: list[str], *, gate: bool = False, state: bool = False, cat: str = "recurrent") -> None:
            iid = f"{n.path}/{key}"
            ids[key] = iid
            it = Item(iid, iid, "cell-part", cat, words, chain=outer, title=title, gate=title if gate else None, state=state)
            it.multiline = True
            self._insert(it)

        def edge(a: str, b: str, label: str, kind: str = "data") -> None:
            self.edges.append(Edge(ids[a], ids[b], label, kind))

        def same_rank(*keys: str) -> None:
            self.ranks.append([ids[k] for k in keys])

        part("x", "xₜ", ["step input"], cat="io")
        part("h", "h", ["hidden state", "(previous step)"], state=True, cat="io")
        part("xh", "[x, h]", ["concat"], cat="merge")
        edge("x", "xh", xshape)
        edge("h", "xh", hshape)
        if n.op == "lstm":
            part("c", "c", ["cell state", "(previous step)"], state=True, cat="io")
            same_rank("x", "h", "c")
            for k, name, fn in (
                ("i", "input gate", "σ"),
                ("f", "forget gate", "σ"),
                ("g", "cell candidate", "tanh"),
                ("o", "output gate", "σ"),
            ):
                part(k, k, [name, f"{k} = {fn}(W_{k}·[x, h] + b_{k})"], gate=k != "g")
                edge("xh", k, xhshape)
            same_rank("i", "f", "g", "o")
            part("c'", "c'", ["new cell state", "c' = f⊙c + i⊙g"], cat="elementwise")
            part("h'", "h'", ["new hidden state", "h' = o⊙tanh(c')"], cat="elementwise")
            for k in "fig":
                edge(k, "c'", hshape)
            edge("c", "c'", hshape)
            edge("c'", "h'", hshape)
            edge("o", "h'", hshape)
            edge("c'", "c", "new c, next step", "state")
        elif n.op == "gru":
            same_rank("x", "h")
            part("r", "r", ["reset gate", "r = σ(W_r·[x, h] + b_r)"], gate=True)
            part("z", "z", ["update gate", "z = σ(W_z·[x, h] + b_z)"], gate=True)
            edge("xh", "r", xhshape)
            edge("xh", "z", xhshape)
            same_rank("r", "z")
            part("n", "n", ["new gate", "n = tanh(W_in·x + b_in", "+ r⊙(W_hn·h + b_hn))"])
            part("h'", "h'", ["new hidden state", "h' = (1 − z)⊙n + z⊙h"], cat="elementwise")
            edge("x", "n", xshape)
            edge("h", "n", hshape)
            edge("r", "n", hshape)
            edge("z", "h'", hshape)
            edge("n", "h'", hshape)
            edge("h", "h'", hshape)
        else:
            same_rank("x", "h")
            part("h'", "h'", ["new hidden state", f"h' = {p.nonlinearity}(W·[x, h] + b)"])
            edge("xh", "h'", xhshape)
        edge("h'", "h", "new h, next step", "state")
        self._rewire(n.path, ids["x"], ids["h'"])
        if p.bidirectional or p.layers > 1:
            what = "both directions" if p.bidirectional else f"of layer {p.layers}"
            for e in self.edges:
                if e.src == ids["h'"] and e.kind == "data":
                    e.label += f" ({what})"

    def _dedupe_edges(self) -> None:
        seen, out = set(), []
        for e in self.edges:
            key = (e.src, e.dst, "data" if e.kind in ("shortcut", "to-shortcut") else e.kind)
            if key in seen or e.src not in self.items or e.dst not in self.items:
                continue
            seen.add(key)
            out.append(e)
        self.edges = out

    # ---- DOT -----------------------------------------------------------------------

    def digraph(self) -> graphviz.Digraph:
        graphviz = _graphviz()
        g = graphviz.Digraph(self.graph.name, strict=False)
        g.attr(
            rankdir=self.opts.rankdir,
            fontname=FONT,
            labelloc="t",
            labeljust="l",
            nodesep="0.25",
            ranksep="0.35",
            newrank="true",
            label=self.title(),
        )
        g.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize="10", margin="0.12,0.05", penwidth="1.2")
        g.attr("edge", fontname=FONT, fontsize="8", fontcolor="#4a5560", color="#6d7884", arrowsize="0.6", penwidth="1.0")
        tree: dict[tuple[str, ...], list[str]] = {}
        for iid in self.order:
            tree.setdefault(self.items[iid].chain, []).append(iid)
        self._emit(g, (), tree)
        for e in self.edges:
            g.edge(e.src, e.dst, **self._edge_attrs(e))
        return g

    def _emit(self, g: Any, chain: tuple[str, ...], tree: dict[tuple[str, ...], list[str]]) -> None:
        children: list[str] = []
        for key in tree:
            if len(key) > len(chain) and key[: len(chain)] == chain and key[len(chain)] not in children:
                children.append(key[len(chain)])
        # nodes and sub-clusters in drawing order
        done: set[str] = set()
        for iid in self.order:
            it = self.items[iid]
            if it.chain == chain:
                g.node(iid, **self._node_attrs(it))
            elif len(it.chain) > len(chain) and it.chain[: len(chain)] == chain:
                c = it.chain[len(chain)]
                if c in done:
                    continue
                done.add(c)
                cl = self.clusters.get(c) or Cluster(c, c)
                with g.subgraph(name=f"cluster_{c}") as sg:
                    style = {"block": ("rounded,dashed", "#8795a3", "#ffffff"), "repeat": ("rounded,bold", "#37414d", "#fafbfc")}
                    st, color, bg = style.get(cl.kind, ("rounded,filled", "#c2527f", "#fdf3f7"))
                    sg.attr(style=st, color=color, fillcolor=bg, fontname=FONT, fontsize="10", labeljust="l", margin="10")
                    sub = f'  <font point-size="8" color="#5f6b7a">{_esc(cl.sub)}</font>' if cl.sub else ""
                    sg.attr(label=_html(f"<b>{_esc(cl.label)}</b>{sub}"))
                    self._emit(sg, chain + (c,), tree)
        for group in self.ranks:
            if group and self.items[group[0]].chain == chain:
                with g.subgraph() as r:
                    r.attr(rank="same")
                    for iid in group:
                        r.node(iid)

    def _node_attrs(self, it: Item) -> dict[str, str]:
        fill, border = PALETTE.get(it.category, PALETTE["other"])
        attrs: dict[str, str] = {"fillcolor": fill, "color": border}
        tooltip = it.path
        if it.compact:
            sym = it.words[0] if it.words else "?"
            if len(sym) <= 3:
                attrs.update(
                    shape="circle", label=sym, width="0.35", height="0.35", fixedsize="true", fontsize="11", margin="0", tooltip=tooltip
                )
            else:
                attrs.update(shape="ellipse", style="filled", label=sym, height="0.35", fontsize="10", margin="0.04,0.02", tooltip=tooltip)
            if it.title:
                attrs.update(xlabel=it.title, fontcolor="#000000")
            return attrs
        lines: list[str] = []
        name = self._short(it)
        title = it.title if it.title is not None else name
        head = f"<b>{_esc(title)}</b>"
        if it.gate:
            head = f'<font color="{GATE_COLOR}"><b>gate {_esc(it.gate)}</b></font>'
        if it.badge > 1:
            head += f'  <font color="#b03a2e"><b>×{it.badge}</b></font>'
        if title != name and it.kind in ("layer", "cell-part") and "/" not in it.path:
            head += f' <font point-size="8" color="#5f6b7a">{_esc(name)}</font>'
        lines.append(head)
        words = " · ".join(it.words)
        if it.acts:
            words += " + " + " + ".join(it.acts)
        if it.kind == "output":
            words = "output" if it.title != "output" else ""
        if it.multiline:
            lines.extend(_esc(w) for w in it.words)
        elif words:
            lines.append(_esc(words))
        if it.kind == "block":
            if it.shape is not None:
                lines.append(_esc("→ " + shape_words(it.shape)))
        small = []
        if it.shares:
            small.append(f"shares {it.shares}")
        elif it.params:
            small.append(f"{it.params:,} params")
        if it.note:
            small.append(it.note)
        if small:
            lines.append(f'<font point-size="8" color="#5f6b7a">{_esc(" · ".join(small))}</font>')
        attrs["label"] = _html("<br/>".join(lines))
        attrs["tooltip"] = tooltip
        if it.kind == "output" or (it.node is not None and it.node.op == "input"):
            attrs["style"] = "rounded,filled,bold"
        if it.kind == "block":
            attrs["style"] = "rounded,filled,bold"
            attrs["penwidth"] = "1.6"
        if it.gate:
            attrs.update(color=GATE_COLOR, penwidth="2.2")
        if it.state:
            attrs["style"] = "rounded,filled,dashed"
        if it.shares:
            attrs["style"] = "rounded,filled,dashed"
        return attrs

    def _short(self, it: Item) -> str:
        """The path inside its innermost block cluster (the cluster's label shows the rest)."""
        for key in reversed(it.chain):
            cl = self.clusters.get(key)
            prefix = cl.prefix or cl.key if cl else key
            if it.path.startswith(prefix + "."):
                return it.path[len(prefix) + 1 :]
        return it.path

    def _edge_attrs(self, e: Edge) -> dict[str, str]:
        attrs: dict[str, str] = {}
        if e.label:
            attrs["label"] = f" {e.label} "
        if e.kind == "shortcut":
            attrs.update(color=SHORTCUT_COLOR, fontcolor=SHORTCUT_COLOR, penwidth="1.6", label=f" shortcut · {e.label} ")
        elif e.kind == "to-shortcut":
            attrs.update(color=SHORTCUT_COLOR, fontcolor=SHORTCUT_COLOR, penwidth="1.6")
        elif e.kind == "shares":
            attrs.update(style="dashed", color=SHARE_COLOR, fontcolor=SHARE_COLOR, dir="none", constraint="false")
        elif e.kind == "tied":
            attrs.update(style="dashed", color=TIED_COLOR, fontcolor=TIED_COLOR, constraint="false")
        elif e.kind == "state":
            attrs.update(style="dashed", color=GATE_COLOR, fontcolor=GATE_COLOR, constraint="false")
        return attrs

    def title(self) -> str:
        from .report import human

        rep = self.report
        macs = rep.macs()
        syms = sorted(rep.symbols())
        per = f" per step ({', '.join(f'{s}=1' for s in syms)})" if syms else ""
        stats = f"   {rep.params:,} params ({human(rep.params)}) · {human(macs)} MACs{per}" + (
            " · eval (no dropout)" if self.opts.phase == "eval" else ""
        )
        head = f'<font point-size="16"><b>{_esc(self.graph.name)}</b></font><font point-size="10" color="#4a5560">{_esc(stats)}</font>'
        used: list[str] = []
        for iid in self.order:
            c = self.items[iid].category
            if c not in used:
                used.append(c)
        used.sort(key=list(PALETTE).index)
        words = [CATEGORY_WORDS.get(c, c) for c in used]
        cells = "".join(
            f'<td bgcolor="{PALETTE[c][0]}" border="1" color="{PALETTE[c][1]}" width="9" height="9" fixedsize="true"></td>'
            f'<td align="left"><font point-size="8" color="#37414d">{_esc(w)}  </font></td>'
            for c, w in zip(used, words)
        )
        # Graphviz spreads spare width over a row's cells: a filler cell takes it instead
        # (text widths estimated for Helvetica; a rough filler only leaves some white space)
        title_w = 9.6 * len(self.graph.name) + 5.4 * len(stats)
        legend_w = sum(12 + 4.0 * (len(w) + 2) for w in words)
        filler = f'<td width="{max(1, int(title_w - legend_w))}"></td>'
        return (
            '<<table border="0" cellborder="0" cellspacing="1" cellpadding="1">'
            f'<tr><td align="left" colspan="{2 * len(used) + 1}">{head}</td></tr>'
            f"<tr>{cells}{filler}</tr></table>>"
        )


def _graphviz():
    try:
        import graphviz
    except ImportError:  # pragma: no cover - a declared dependency
        raise DrawError(Diagnostic("drawing needs the 'graphviz' Python package", None, help="pip install graphviz")) from None
    return graphviz


def _esc(s: str) -> str:
    return html.escape(str(s), quote=False)


def _html(s: str) -> str:
    return f"<{s}>"


def shape_words(t: TensorType | None) -> str:
    """``N×64×56×56`` (with the dtype for integer tensors: ``N×T int64``)."""
    if t is None:
        return ""
    s = "×".join(str(d) for d in t.shape)
    return s if t.is_float() else f"{s} {t.dtype}"


def draw(report: Report, *, depth: int | None = None, rankdir: str = "TB", activations: bool = False,
         fold_repeats: bool = False, cells: bool = False, phase: str = "train") -> graphviz.Digraph:  # fmt: skip
    """The diagram of a model (its IR, shapes and costs: a :class:`~dlspec.report.Report`) as a
    :class:`graphviz.Digraph` (``.source`` is the DOT text). Reads the IR only, never the AST."""
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise UsageError(f"rankdir must be TB or LR, got {rankdir!r}")
    if phase not in ("train", "eval"):
        raise UsageError(f"phase must be train or eval, got {phase!r}")
    if depth is not None and depth < 0:
        raise UsageError(f"depth must be 0 or more, got {depth}")
    d = _Drawing(report, Options(depth, rankdir, activations, fold_repeats, cells, phase))
    d.build()
    return d.digraph()


def render(dg: graphviz.Digraph, fmt: str) -> bytes:
    """The diagram as ``fmt`` bytes; svg/png/pdf run Graphviz's ``dot``."""
    if fmt == "dot":
        return dg.source.encode("utf-8")
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}")
    graphviz = _graphviz()
    try:
        return dg.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise DrawError(
            Diagnostic(
                f"drawing {fmt} needs Graphviz's 'dot' program, which is not installed (or not on PATH)",
                None,
                help="install Graphviz: 'apt-get install graphviz' (Debian/Ubuntu) or 'brew install graphviz' (macOS); "
                "'--format dot' writes the DOT source without it",
            )
        ) from None
    except graphviz.CalledProcessError as e:  # pragma: no cover - dot rejected our own source
        msg = (e.stderr or b"").decode("utf-8", "replace").strip()
        raise DrawError(f"Graphviz 'dot' failed: {msg or e}") from None
