"""Reductions over axes (``mean``, ``sum``, ``max``, ``min``), ``matmul`` and ``transpose``.

None of them touches the batch axis 0. MACs per sample: a ``sum`` or ``mean`` accumulates each
input element once (so ``sum(alpha * h, axis = 1)`` costs what the matmul it stands for costs);
``max`` and ``min`` compare and count none; ``matmul`` counts ``n·k·m`` per matrix product.
"""

from __future__ import annotations

from typing import Any, Literal

from ..dims import ShapeFail, TensorType, broadcast, dmul, elements, need_float
from .base import Op, OpParams
from .tensor import feature_axis

Axes = int | tuple[int, ...] | None


def reduced_axes(ctx, x: TensorType, axis: Axes) -> list[int]:
    """The axes ``axis`` names, from 0 (default: every axis but the batch)."""
    if axis is None:
        if x.rank < 2:
            raise ShapeFail(f"{ctx.name()} has nothing to reduce: its input {x.show()} is one value per sample")
        return list(range(1, x.rank))
    axes = [feature_axis(ctx, x, a, "reduced") for a in (axis if isinstance(axis, tuple) else (axis,))]
    if len(set(axes)) != len(axes):
        raise ShapeFail(f"{ctx.name()} names axis {next(a for a in axes if axes.count(a) > 1)} twice")
    return sorted(axes)


class _Reduce(Op):
    """``mean(x, axis = 1)``, ``x -> sum axis [2, 3] keepdim``: over the axes given (default:
    every axis of a sample), dropping them or keeping them as size 1 (``keepdim``), as PyTorch."""

    positional = ("axis",)
    key_aliases = {"dim": "axis", "keepdims": "keepdim"}
    category = "elementwise"

    @classmethod
    def infer(cls, p: Any, ins, ctx):
        (x,) = ins
        if cls.name == "mean":
            need_float(ctx, x)
        axes = reduced_axes(ctx, x, p.axis)
        shape = tuple((1 if k in axes else d) for k, d in enumerate(x.shape) if p.keepdim or k not in axes)
        dtype = x.dtype
        if cls.name == "sum" and not x.is_float():
            dtype = "int64"  # PyTorch sums integers and booleans as int64
        return TensorType(shape, dtype)

    @classmethod
    def macs(cls, p: Any, ins, out, ctx):
        return elements(ins[0].sample) if cls.name in ("sum", "mean") else 0

    @classmethod
    def summary(cls, p: Any, dims: int = 2) -> list[str]:
        axis = "" if p.axis is None else f" axis {list(p.axis) if isinstance(p.axis, tuple) else p.axis}"
        return [f"{cls.name}{axis}"] + (["keepdim"] if p.keepdim else [])


class MeanParams(OpParams):
    op: Literal["mean"] = "mean"
    axis: Axes = None
    keepdim: bool = False


class Mean(_Reduce):
    __doc__ = "``mean``: the average over axes. " + (_Reduce.__doc__ or "")
    name = "mean"
    Params = MeanParams


class SumParams(OpParams):
    op: Literal["sum"] = "sum"
    axis: Axes = None
    keepdim: bool = False


class Sum(_Reduce):
    __doc__ = "``sum``: the sum over axes (integers give int64). " + (_Reduce.__doc__ or "")
    name = "sum"
    Params = SumParams


class MaxParams(OpParams):
    op: Literal["max"] = "max"
    axis: Axes = None
    keepdim: bool = False


class Max(_Reduce):
    __doc__ = "``max``: the largest value over axes (``max(a, b)`` of numbers is the number function). " + (_Reduce.__doc__ or "")
    name = "max"
    Params = MaxParams


class MinParams(OpParams):
    op: Literal["min"] = "min"
    axis: Axes = None
    keepdim: bool = False


class Min(_Reduce):
    __doc__ = "``min``: the smallest value over axes. " + (_Reduce.__doc__ or "")
    name = "min"
    Params = MinParams


# ---- matmul, transpose ----------------------------------------------------------------------------


class MatmulParams(OpParams):
    op: Literal["matmul"] = "matmul"


class Matmul(Op):
    """``matmul(a, b)`` or ``a @ b``: ``torch.matmul`` on each sample (``torch.vmap(torch.matmul)``):
    the batch axes broadcast together (a learned tensor's 1 with ``N``), and the samples' other
    leading axes broadcast as NumPy's, right-aligned: ``(N, *, n, k) @ (N, *, k, m) → (N, *, n, m)``;
    a sample that is a vector ``(N, k)`` is a row on the left (``(k) @ (k, m) → (m)``) and a column
    on the right. MACs per sample ``n·k·m`` per product. No params."""

    name = "matmul"
    Params = MatmulParams
    category = "dense"
    arity = (2, 2)

    @classmethod
    def parts(cls, ctx, a: TensorType, b: TensorType) -> tuple[tuple, Any, Any, Any, bool, bool]:
        """(broadcast leading shape with N, n, k, m, a is a vector, b is a vector)."""
        for i, t in enumerate((a, b)):
            need_float(ctx, t, i)
            if t.rank < 2:
                raise ShapeFail(f"{ctx.name()} multiplies vectors or matrices but input {i + 1} is one value per sample {t.show()}")
        va, vb = a.rank == 2, b.rank == 2
        n, k1 = (1, a.shape[1]) if va else a.shape[-2:]
        k2, m = (b.shape[1], 1) if vb else b.shape[-2:]
        if k1 != k2:
            raise ShapeFail(
                f"{ctx.name()}: {a.show()} @ {b.show()}: the inner sizes differ ({k1} vs {k2})",
                help="the last axis of the left operand must equal the second-to-last of the right one; 'transpose' swaps them",
            )
        # per sample: the batch axes broadcast together, and the samples' other leading axes (right-aligned)
        what = f"{ctx.name()}: {a.show()} @ {b.show()}"
        batch = broadcast(ctx, [TensorType(a.shape[:1]), TensorType(b.shape[:1])], what).shape
        lead = broadcast(
            ctx, [TensorType(() if va else a.shape[1:-2]), TensorType(() if vb else b.shape[1:-2])], what + ", leading axes"
        ).shape
        return batch + lead, n, k1, m, va, vb

    @classmethod
    def infer(cls, p, ins, ctx):
        a, b = ins
        lead, n, _k, m, va, vb = cls.parts(ctx, a, b)
        return TensorType(lead + (() if va else (n,)) + (() if vb else (m,)), a.dtype)

    @classmethod
    def macs(cls, p, ins, out, ctx):
        lead, n, k, m, _va, _vb = cls.parts(ctx, *ins)
        return dmul(elements(lead[1:]), dmul(dmul(n, k), m))

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return ["matmul"]


class TransposeParams(OpParams):
    op: Literal["transpose"] = "transpose"
    dim0: int = -2
    dim1: int = -1


class Transpose(Op):
    """``transpose(x, 1, 2)``: swaps two non-batch axes, as ``torch.transpose`` (default the last
    two): ``(N, A, B) → (N, B, A)``. No params."""

    name = "transpose"
    Params = TransposeParams
    positional = ("dim0", "dim1")
    category = "reshape"

    @classmethod
    def infer(cls, p: TransposeParams, ins, ctx):
        (x,) = ins
        if x.rank < 3:
            raise ShapeFail(f"{ctx.name()} swaps two axes of a sample but gets {x.show()} from {ctx.source()}")
        a, b = feature_axis(ctx, x, p.dim0, "swapped"), feature_axis(ctx, x, p.dim1, "swapped")
        shape = list(x.shape)
        shape[a], shape[b] = shape[b], shape[a]
        return TensorType(tuple(shape), x.dtype, x.vocab)

    @classmethod
    def summary(cls, p: TransposeParams, dims: int = 2) -> list[str]:
        return [f"transpose {p.dim0} {p.dim1}"]
