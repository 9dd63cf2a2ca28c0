"""Tensor surgery and tensors that are not computed from an input.

- ``slice``: a subscript ``x[:, 0]``, ``x[..., 1:5:2]`` (made by the expander, never written as a word);
- ``split`` and ``chunk``: one node per piece (the expander makes them, ``piece`` says which);
- ``crop``: a centre crop of the spatial axes, to a size or to another tensor's size;
- ``param``: a learned tensor of a block or model (``param NAME: [shape] init …``; its one
  state-dict entry is named by its path);
- ``zeros``, ``ones``, ``full``, ``arange``: constant tensors; ``tril``, ``triu``: triangles.

A learned or constant tensor has a batch axis of size 1 that broadcasts over ``N``: ``param cls:
[1, 768]`` is ``(1, 1, 768)``, and adds to, multiplies or is concatenated with ``(N, T, 768)``.
Axis 0 (the batch) is never indexed, split, cropped or reduced.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from ..dims import ShapeFail, TensorType, dadd, dceildiv, dsub
from .base import Op, OpParams, Slot
from .structure import DTYPE_WORDS
from .types import NonNeg, Pos, Size

#: one axis of a subscript: an index, ``(start, stop, step)`` (None where omitted), or ``...``
SliceItem = int | tuple[int | None, int | None, int | None] | Literal["..."]
DType = Literal["float32", "float16", "bfloat16", "int32", "int64", "bool", "float", "int", "long", "half"]


def feature_axis(ctx, x: TensorType, axis: int, verb: str, who: str | None = None) -> int:
    """``axis`` of ``x`` counted from 0 (negative from the end); axis 0, the batch, is refused.
    ``who`` names the op in messages (default: the node)."""
    who = ctx.name() if who is None else who
    k = axis + x.rank if axis < 0 else axis
    if not 0 <= k < x.rank:
        raise ShapeFail(f"{who}: axis {axis} is past the last axis of {x.show()} ({x.rank} axes with N, 0 to {x.rank - 1})")
    if k == 0:
        raise ShapeFail(
            f"{who}: axis {axis} is the batch N, which cannot be {verb}",
            help="axes count from 0 with the batch N first: a sample's axes are 1 onwards (or −1 from the end)",
        )
    return k


# ---- subscripts ---------------------------------------------------------------------------------


class SliceParams(OpParams):
    op: Literal["slice"] = "slice"
    #: the subscript as written, from axis 0: an index, (start, stop, step) or '...'
    items: tuple[SliceItem, ...]


def show_items(items: tuple) -> str:
    """``[:, 0]``: a subscript back in the spec's words."""

    def one(it: Any) -> str:
        if it == "...":
            return "..."
        if isinstance(it, int):
            return str(it)
        a, b, c = it
        text = f"{'' if a is None else a}:{'' if b is None else b}"
        return text + (f":{c}" if c is not None else "")

    return "[" + ", ".join(one(i) for i in items) + "]"


def resolve_items(items: tuple, rank: int, where: str) -> list:
    """The subscript with ``...`` expanded and full slices added: one item per axis."""
    n_ell = sum(1 for it in items if it == "...")
    if n_ell > 1:
        raise ShapeFail(f"{where}: a subscript has at most one '...', got {n_ell}")
    explicit = len(items) - n_ell
    if explicit > rank:
        raise ShapeFail(f"{where}: {explicit} subscripts for a tensor of {rank} axes (N included)")
    full = (None, None, None)
    out: list = []
    for it in items:
        if it == "...":
            out.extend([full] * (rank - explicit))
        else:
            out.append(it)
    out.extend([full] * (rank - len(out)))
    return out


def slice_bounds(size: Any, start: int | None, stop: int | None, step: int) -> tuple[Any, Any, Any]:
    """``(start, stop, length)`` of ``start:stop:step`` on an axis of ``size`` (Python's rule for a
    known size; for a symbolic one the bounds are taken to lie inside the axis)."""
    if isinstance(size, int):
        a, b, s = slice(start, stop, step).indices(size)
        return a, b, len(range(a, b, s))
    a = 0 if start is None else (start if start >= 0 else dadd(size, start))
    b = size if stop is None else (stop if stop >= 0 else dadd(size, stop))
    return a, b, dceildiv(dsub(b, a), step)


class Slice(Op):
    """``x[:, 0]``, ``x[:, 1:5:2]``, ``x[..., -1]``: indexing and slicing of any non-batch axis,
    as NumPy and PyTorch do (an index drops its axis; a slice keeps it; ``...`` stands for every
    axis not written; missing trailing axes are whole). Axis 0, the batch N, must be ``:``. No params."""

    name = "slice"
    Params = SliceParams
    category = "reshape"

    @classmethod
    def infer(cls, p: SliceParams, ins, ctx):
        (x,) = ins
        items = resolve_items(p.items, x.rank, f"{ctx.name()} {show_items(p.items)} of {x.show()}")
        first = items[0]
        if isinstance(first, int) or first[0] not in (None, 0) or first[1] is not None or first[2] not in (None, 1):
            raise ShapeFail(
                f"{ctx.name()}: axis 0 is the batch N and cannot be indexed ({show_items(p.items)})",
                help="write ':' for the batch first: 'x[:, 0]' takes index 0 of axis 1 in every sample",
            )
        shape = [x.shape[0]]
        for k, (it, d) in enumerate(zip(items[1:], x.shape[1:]), start=1):
            if isinstance(it, int):
                if isinstance(d, int) and not -d <= it < d:
                    raise ShapeFail(
                        f"{ctx.name()}: index {it} is past axis {k} of size {d}" + ("" if it >= 0 else f" ({it} < -{d})"),
                        help=f"indices of axis {k} run from 0 to {d - 1} (or −{d} to −1 from its end)",
                    )
                continue
            start, stop, step = it
            step = 1 if step is None else step
            if step <= 0:
                raise ShapeFail(f"{ctx.name()}: slice step {step} on axis {k} must be positive (as in PyTorch)")
            _, _, length = slice_bounds(d, start, stop, step)
            if isinstance(length, int) and length <= 0:
                shown = show_items((it,))[1:-1]
                raise ShapeFail(
                    f"{ctx.name()}: slice {shown} of axis {k} (size {d}) is empty", help="a slice must keep at least one element"
                )
            shape.append(length)
        return TensorType(tuple(shape), x.dtype, x.vocab)

    @classmethod
    def summary(cls, p: SliceParams, dims: int = 2) -> list[str]:
        return [f"slice {show_items(p.items)}"]


# ---- split, chunk --------------------------------------------------------------------------------


class _Pieces(Op):
    """Base of the ops that cut a tensor into pieces along an axis, one node per piece."""

    category = "reshape"

    @classmethod
    def pieces(cls, p: Any) -> int | None:
        """How many outputs the written op has (None: one, the given ``piece``)."""
        raise NotImplementedError

    @classmethod
    def piece_bounds(cls, p: Any, size: int, who: str | None = None) -> tuple[int, int, int]:
        """``(pieces, start, stop)``: how many pieces an axis of ``size`` is cut into, and where
        ``p.piece`` lies (computed for that piece alone: a node per piece, each O(1)); ``who``
        names the op in errors (the same for every piece, so that a bad split is reported once)."""
        raise NotImplementedError

    @classmethod
    def bounds(cls, p: Any, size: int, who: str | None = None) -> list[tuple[int, int]]:
        """Every piece's ``(start, stop)`` on an axis of ``size``, in order (``bounds(…)[p.piece]``
        is this node's)."""
        n, _, _ = cls.piece_bounds(p.model_copy(update={"piece": 0}), size, who)
        return [cls.piece_bounds(p.model_copy(update={"piece": i}), size, who)[1:] for i in range(n)]

    @classmethod
    def infer(cls, p: Any, ins, ctx):
        (x,) = ins
        who = f"{cls.name} of {ctx.source()}"  # the same for every piece: a bad split is reported once
        k = feature_axis(ctx, x, p.axis, "cut", who)
        d = x.shape[k]
        if not isinstance(d, int):
            raise ShapeFail(f"{who} cannot cut axis {k} of {x.show()}: its size {d} is known only at run time")
        _n, a, b = cls.piece_bounds(p, d, who)
        shape = list(x.shape)
        shape[k] = b - a
        return TensorType(tuple(shape), x.dtype, x.vocab)

    @classmethod
    def summary(cls, p: Any, dims: int = 2) -> list[str]:
        count = getattr(p, "chunks", None) or getattr(p, "sections", None)
        what = _short(count) if isinstance(count, tuple) else str(count)
        return [f"{cls.name} {what}", f"piece {p.piece}"] + ([f"axis {p.axis}"] if p.axis != 1 else [])


def _short(xs: tuple) -> str:
    return "[" + ", ".join(map(str, xs[:8])) + (", …" if len(xs) > 8 else "") + "]"


@lru_cache(maxsize=64)
def _starts(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The start of each piece of a split into ``sizes`` (and the total, last)."""
    out, at = [0], 0
    for s in sizes:
        at += s
        out.append(at)
    return tuple(out)


class SplitParams(OpParams):
    op: Literal["split"] = "split"
    #: the number of equal pieces, or the size of each piece
    sections: Pos | tuple[Pos, ...]
    axis: int = 1
    #: which piece (the expander makes one node per piece; written, it keeps only that one)
    piece: NonNeg | None = None


class Split(_Pieces):
    """``a, b = split(x, 2, axis 1)``: ``k`` equal pieces (``k`` must divide the axis), or pieces
    of the sizes listed (``split(x, [16, 48])``, which must add up to the axis), as TensorFlow's
    ``tf.split``. Default axis 1 (channels), as ``concat``. No params."""

    name = "split"
    Params = SplitParams
    positional = ("sections", "axis")
    key_aliases = {"dim": "axis", "num": "sections", "sizes": "sections"}

    @classmethod
    def pieces(cls, p: SplitParams) -> int | None:
        if p.piece is not None:
            return None
        return len(p.sections) if isinstance(p.sections, tuple) else p.sections

    @classmethod
    def piece_bounds(cls, p: SplitParams, size: int, who: str | None = None) -> tuple[int, int, int]:
        who = who or cls.name
        i = p.piece or 0
        if isinstance(p.sections, tuple):
            starts = _starts(p.sections)
            if starts[-1] != size:
                raise ShapeFail(
                    f"{who}: sizes {_short(p.sections)} add up to {starts[-1]} but axis {p.axis} has size {size}",
                    help=f"the sizes must add up to {size}",
                )
            n = len(p.sections)
            if i >= n:
                raise ShapeFail(f"{who}: piece {i} does not exist: the axis is cut into {n} pieces (0 to {n - 1})")
            return n, starts[i], starts[i + 1]
        k = p.sections
        if size % k:
            raise ShapeFail(
                f"{who}: {k} pieces do not divide axis {p.axis} of size {size} ({size} = {k}·{size // k} + {size % k})",
                help=f"use a number of pieces that divides {size}, sizes 'split(x, [a, b, …])', or 'chunk' (the last piece smaller)",
            )
        if i >= k:
            raise ShapeFail(f"{who}: piece {i} does not exist: the axis is cut into {k} pieces (0 to {k - 1})")
        each = size // k
        return k, i * each, (i + 1) * each


class ChunkParams(OpParams):
    op: Literal["chunk"] = "chunk"
    chunks: Pos
    axis: int = 1
    piece: NonNeg | None = None


class Chunk(_Pieces):
    """``chunk(x, 3, axis 1)``: PyTorch's ``torch.chunk``: pieces of ``⌈size / chunks⌉``, the last
    one smaller; it must give exactly ``chunks`` pieces (PyTorch would give fewer). No params."""

    name = "chunk"
    Params = ChunkParams
    positional = ("chunks", "axis")
    key_aliases = {"dim": "axis"}

    @classmethod
    def pieces(cls, p: ChunkParams) -> int | None:
        return None if p.piece is not None else p.chunks

    @classmethod
    def piece_bounds(cls, p: ChunkParams, size: int, who: str | None = None) -> tuple[int, int, int]:
        who = who or cls.name
        each = -(-size // p.chunks)
        n = -(-size // each)
        if n != p.chunks:
            raise ShapeFail(
                f"{who}: axis {p.axis} of size {size} in pieces of ⌈{size}/{p.chunks}⌉ = {each} gives {n} pieces, not {p.chunks}",
                help="PyTorch's chunk would return fewer pieces; use 'split(x, [sizes…])'",
            )
        i = p.piece or 0
        if i >= n:
            raise ShapeFail(f"{who}: piece {i} does not exist: the axis is cut into {n} pieces (0 to {n - 1})")
        return n, i * each, min(size, (i + 1) * each)


# ---- crop ---------------------------------------------------------------------------------------


class CropParams(OpParams):
    op: Literal["crop"] = "crop"
    #: the spatial size to crop to: one number for every spatial axis, or one per axis
    size: Size | None = None
    #: a tensor whose spatial size to crop to
    like: str | None = None


class Crop(Op):
    """``crop(skip, like = up)``, ``crop 64``, ``crop [56, 60]``: the centre of the spatial axes
    (axes 2 onwards) of ``(N, C, *S)``: offset ``⌊(S − S') / 2⌋`` on each, as U-Net's
    crop-and-concat. Never larger than the input. No params."""

    name = "crop"
    Params = CropParams
    positional = ("size",)
    tensor_params = ("like",)
    category = "reshape"

    @classmethod
    def target(cls, p: CropParams, ins, ctx) -> tuple:
        x = ins[0]
        n = x.rank - 2
        if n < 1:
            raise ShapeFail(f"{ctx.name()} crops the spatial axes of (C, *S) but gets {x.show()} from {ctx.source()}")
        if (p.size is None) == (p.like is None):
            raise ShapeFail(f"{ctx.name()} needs a size or 'like' (one of them)", help="write 'crop 64' or 'crop(x, like = y)'")
        if p.like is not None:
            y = ins[1]
            if y.rank != x.rank:
                raise ShapeFail(f"{ctx.name()}: 'like' gives {y.show()} but the input is {x.show()}; they need the same number of axes")
            return tuple(y.shape[2:])
        size = p.size if isinstance(p.size, tuple) else (p.size,) * n
        if len(size) != n:
            raise ShapeFail(f"{ctx.name()} 'size' has {len(size)} values but the input {x.show()} has {n} spatial axes")
        return size

    @classmethod
    def infer(cls, p: CropParams, ins, ctx):
        x = ins[0]
        want = cls.target(p, ins, ctx)
        for k, (d, o) in enumerate(zip(x.shape[2:], want), start=2):
            if d == o:
                continue
            if not (isinstance(d, int) and isinstance(o, int)):
                raise ShapeFail(f"{ctx.name()} cannot crop axis {k} of size {d} to {o}: sizes known only at run time must be equal")
            if o > d:
                shown = "×".join(map(str, want))
                have = "×".join(map(str, x.shape[2:]))
                raise ShapeFail(
                    f"{ctx.name()}: crop to {shown} is larger than its input {have} (axis {k}: {o} > {d})",
                    help="crop only shrinks; to grow a tensor use 'pad'",
                )
        return TensorType(x.shape[:2] + tuple(want), x.dtype, x.vocab)

    @classmethod
    def summary(cls, p: CropParams, dims: int = 2) -> list[str]:
        if p.like is not None:
            return ["crop", f"like {p.like}"]
        return ["crop", "×".join(map(str, p.size)) if isinstance(p.size, tuple) else "×".join([str(p.size)] * dims)]


# ---- learned tensors ------------------------------------------------------------------------------


class ParamParams(OpParams):
    op: Literal["param"] = "param"
    #: the shape as declared (stored so in the state dict); the tensor is (1, *shape)
    shape: tuple[Pos, ...]
    init: Literal["normal", "trunc_normal", "uniform", "zeros", "ones", "constant"] = "normal"
    mean: float = 0.0
    std: Annotated[float, Field(ge=0)] = 1.0
    #: uniform: U(low, high), default 0 and 1; trunc_normal: the cut, default −2 and 2 (absolute, as PyTorch)
    low: float | None = None
    high: float | None = None
    #: the value of 'constant'
    value: float = 0.0

    def range(self) -> tuple[float, float]:
        lo, hi = (-2.0, 2.0) if self.init == "trunc_normal" else (0.0, 1.0)
        return (lo if self.low is None else self.low, hi if self.high is None else self.high)


class Param(Op):
    """``param NAME: [d1, d2, …] init …``: a learned tensor, ``(1, d1, d2, …)``, broadcast over the
    batch. Params ``d1·d2·…``; one state-dict entry, the node's path, of shape ``[d1, d2, …]``.
    Initialisers as ``torch.nn.init``: ``normal`` (mean, std; default N(0, 1) as ``torch.randn``),
    ``trunc_normal`` (mean, std, cut at low/high), ``uniform`` (low, high), ``zeros``, ``ones``,
    ``constant`` (value)."""

    name = "param"
    Params = ParamParams
    category = "embedding"
    arity = (0, 0)
    key_aliases = {"fill": "value", "a": "low", "b": "high"}

    @classmethod
    def infer(cls, p: ParamParams, ins, ctx):
        lo, hi = p.range()
        if p.init in ("uniform", "trunc_normal") and not lo < hi:
            raise ShapeFail(f"{ctx.name()} {p.init} needs low < high, got low {lo:g} and high {hi:g}")
        return TensorType((1, *p.shape), "float32")

    @classmethod
    def count(cls, p: ParamParams, ins, out, ctx):
        return math.prod(p.shape), 0

    @classmethod
    def state(cls, p: ParamParams, ins):
        lo, hi = p.range()
        init: tuple = {
            "normal": ("normal", p.std, p.mean),
            "trunc_normal": ("trunc_normal", p.std, p.mean, lo, hi),
            "uniform": ("uniform_range", lo, hi),
            "zeros": ("full", 0.0),
            "ones": ("full", 1.0),
            "constant": ("full", p.value),
        }[p.init]
        return (Slot("", p.shape, init),)  # named by the node's path alone

    @classmethod
    def summary(cls, p: ParamParams, dims: int = 2) -> list[str]:
        return ["param " + "×".join(map(str, p.shape)), p.init]


# ---- constants ---------------------------------------------------------------------------------------


class _Constant(Op):
    category = "io"
    arity = (0, 0)

    @classmethod
    def dtype(cls, p: Any) -> str:
        return DTYPE_WORDS.get(p.dtype, p.dtype)


class ZerosParams(OpParams):
    op: Literal["zeros"] = "zeros"
    shape: tuple[Pos, ...]
    dtype: DType = "float32"


class Zeros(_Constant):
    """``zeros([d1, …])``: a constant ``(1, d1, …)`` of zeros (``dtype`` float32, or another). No params."""

    name = "zeros"
    Params = ZerosParams
    positional = ("shape", "dtype")

    @classmethod
    def infer(cls, p, ins, ctx):
        return TensorType((1, *p.shape), cls.dtype(p))

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return [f"{cls.name} " + "×".join(map(str, p.shape))]


class OnesParams(OpParams):
    op: Literal["ones"] = "ones"
    shape: tuple[Pos, ...]
    dtype: DType = "float32"


class Ones(Zeros):
    """``ones([d1, …])``: a constant ``(1, d1, …)`` of ones (``dtype bool`` gives an all-true mask). No params."""

    name = "ones"
    Params = OnesParams


class FullParams(OpParams):
    op: Literal["full"] = "full"
    shape: tuple[Pos, ...]
    value: float
    dtype: DType = "float32"


class Full(Zeros):
    """``full([d1, …], 0.5)``: a constant ``(1, d1, …)`` of ``value``. No params."""

    name = "full"
    Params = FullParams
    positional = ("shape", "value", "dtype")
    key_aliases = {"fill": "value"}


class ArangeParams(OpParams):
    op: Literal["arange"] = "arange"
    start: int | float = 0
    stop: int | float
    step: int | float = 1
    #: default: int64 when start, stop and step are whole numbers, else float32 (as PyTorch)
    dtype: DType | None = None

    @field_validator("step")
    @classmethod
    def _step(cls, v: int | float) -> int | float:
        assert v != 0, "'step' must not be 0"
        return v

    def length(self) -> int:
        return max(0, math.ceil((self.stop - self.start) / self.step))


class Arange(_Constant):
    """``arange(n)``, ``arange(start, stop[, step])``: ``(1, L)`` with the values
    ``start, start + step, …`` below ``stop``, as ``torch.arange``; int64 ids carry the vocabulary
    ``stop`` (so ``arange(T) -> embedding D`` needs no ``vocab``). No params."""

    name = "arange"
    Params = ArangeParams
    positional = ("start", "stop", "step")

    @classmethod
    def build(cls, values: dict, spans: dict, where):
        if "stop" not in values and "start" in values:  # arange(n): n is the stop, as in PyTorch
            values = {**values, "stop": values["start"], "start": 0}
            spans = {**spans, "stop": spans.get("start", where)}
        return super().build(values, spans, where)

    @classmethod
    def dtype(cls, p: ArangeParams) -> str:
        if p.dtype is not None:
            return DTYPE_WORDS.get(p.dtype, p.dtype)
        whole = all(isinstance(v, int) for v in (p.start, p.stop, p.step))
        return "int64" if whole else "float32"

    @classmethod
    def infer(cls, p: ArangeParams, ins, ctx):
        n = p.length()
        if n <= 0:
            raise ShapeFail(f"{ctx.name()} from {p.start} to {p.stop} by {p.step} is empty", help="arange needs at least one value")
        dtype = cls.dtype(p)
        vocab = int(max(p.start, p.start + (n - 1) * p.step)) + 1 if dtype.startswith("int") and p.start >= 0 else None
        return TensorType((1, n), dtype, vocab)

    @classmethod
    def summary(cls, p: ArangeParams, dims: int = 2) -> list[str]:
        return [f"arange {p.start}…{p.stop}" + (f" by {p.step}" if p.step != 1 else "")]


# ---- triangles --------------------------------------------------------------------------------------


class TrilParams(OpParams):
    op: Literal["tril"] = "tril"
    #: 0: the main diagonal; k > 0 above it, k < 0 below it
    diagonal: int = 0


class Tril(Op):
    """``tril(x[, k])``: keeps the lower triangle of the last two axes (``j ≤ i + k``), zeros
    (false) elsewhere, as ``torch.tril``; ``tril(ones([T, T], bool))`` is a causal mask. No params."""

    name = "tril"
    Params = TrilParams
    positional = ("diagonal",)
    category = "elementwise"

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        if x.rank < 3:
            raise ShapeFail(f"{ctx.name()} works on the last two axes but gets {x.show()} from {ctx.source()}")
        return x


class TriuParams(OpParams):
    op: Literal["triu"] = "triu"
    diagonal: int = 0


class Triu(Tril):
    """``triu(x[, k])``: keeps the upper triangle of the last two axes (``j ≥ i + k``), as ``torch.triu``. No params."""

    name = "triu"
    Params = TriuParams
