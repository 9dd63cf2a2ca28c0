"""Layout ops: flatten, reshape, permute, upsample."""

from __future__ import annotations

from typing import Literal

from ..dims import ShapeFail, Sym, TensorType, dfloordiv, dmul, elements, need_rank
from .base import Op, OpParams
from .types import Dim, Pos, Size


class FlattenParams(OpParams):
    op: Literal["flatten"] = "flatten"
    #: first axis to flatten (1 = everything but N)
    start: Pos = 1


class Flatten(Op):
    """``flatten``: ``(N, d1, d2, …) → (N, d1·d2·…)``. No params."""

    name = "flatten"
    Params = FlattenParams
    category = "reshape"

    @classmethod
    def infer(cls, p: FlattenParams, ins, ctx):
        (x,) = ins
        if p.start >= x.rank:
            raise ShapeFail(f"{ctx.name()} starts at axis {p.start} but its input {x.show()} has only {x.rank} axes (N included)")
        return TensorType(x.shape[: p.start] + (elements(x.shape[p.start :]),), x.dtype, x.vocab)


class ReshapeParams(OpParams):
    op: Literal["reshape"] = "reshape"
    shape: tuple[Dim, ...]


class Reshape(Op):
    """``reshape [d1, d2, …]`` (one ``-1`` allowed): ``(N, *) → (N, d1, d2, …)``, N kept. No params."""

    name = "reshape"
    Params = ReshapeParams
    positional = ("shape",)
    category = "reshape"

    @classmethod
    def infer(cls, p: ReshapeParams, ins, ctx):
        (x,) = ins
        total = elements(x.sample)
        dims = [Sym.of(d) if isinstance(d, str) else d for d in p.shape]
        if sum(1 for d in dims if d == -1) > 1:
            raise ShapeFail(f"{ctx.name()} has more than one -1")
        for d in dims:
            if isinstance(d, int) and d != -1 and d <= 0:
                raise ShapeFail(f"{ctx.name()} dimension {d} must be positive (or -1, once)")
        known = 1
        for d in dims:
            if d != -1:
                known = dmul(known, d)
        shown = "[" + ", ".join(map(str, p.shape)) + "]"
        if -1 in dims:
            if isinstance(known, int) and isinstance(total, int):
                if total % known:
                    raise ShapeFail(
                        f"{ctx.name()} cannot reshape {x.show()} ({total} values) to {shown}: {total} is not a multiple of {known}"
                    )
                fill = total // known
            elif isinstance(known, int):
                fill = dfloordiv(total, known)
                if isinstance(fill, Sym) and any(n.startswith("⌊") for n in fill.names()):
                    raise ShapeFail(f"{ctx.name()} cannot tell whether {total} values divide by {known}")
            else:
                raise ShapeFail(f"{ctx.name()} cannot infer -1 with symbolic sizes in {shown}")
            dims = [fill if d == -1 else d for d in dims]
        elif known != total:
            raise ShapeFail(f"{ctx.name()} cannot reshape {x.show()} ({total} values) to {shown} ({known} values)")
        return TensorType((x.shape[0], *dims), x.dtype, x.vocab)


class PermuteParams(OpParams):
    op: Literal["permute"] = "permute"
    #: a permutation of 1..rank−1 (N stays first), as Keras' Permute
    dims: tuple[Pos, ...]


class Permute(Op):
    """``permute [2, 1]``: reorders the non-batch axes (1-based, N fixed): ``(N, A, B) → (N, B, A)``."""

    name = "permute"
    Params = PermuteParams
    positional = ("dims",)
    category = "reshape"

    @classmethod
    def infer(cls, p: PermuteParams, ins, ctx):
        (x,) = ins
        if sorted(p.dims) != list(range(1, x.rank)):
            raise ShapeFail(
                f"{ctx.name()} dims {list(p.dims)} must be a permutation of {list(range(1, x.rank))} for its input {x.show()}",
                help="axes are counted from 1 without the batch N, as in Keras' Permute",
            )
        return TensorType((x.shape[0], *(x.shape[d] for d in p.dims)), x.dtype, x.vocab)


class UpsampleParams(OpParams):
    op: Literal["upsample"] = "upsample"
    scale: Size = 2
    #: nearest: each value repeated; linear: (bi/tri)linear over every spatial axis; bilinear: the same, 2-D only
    mode: Literal["nearest", "linear", "bilinear"] = "nearest"
    #: linear modes: the corner pixels' centres stay aligned (``F.interpolate``'s ``align_corners``)
    align_corners: bool = False


class Upsample(Op):
    """``upsample 2 [nearest|linear|bilinear] [align_corners]``: ``(N, C, *S) → (N, C, *(S·scale))``,
    as ``torch.nn.functional.interpolate(scale_factor=…)``: ``linear`` interpolates along every
    spatial axis (PyTorch's linear, bilinear or trilinear for 1, 2 or 3 of them), ``bilinear``
    needs 2; ``align_corners`` maps the corners' centres onto each other (output ``i`` reads input
    ``i·(S − 1)/(S' − 1)``), else pixel areas line up (``(i + ½)/scale − ½``). No params."""

    name = "upsample"
    Params = UpsampleParams
    positional = ("scale",)
    key_aliases = {"factor": "scale"}
    category = "reshape"

    @classmethod
    def infer(cls, p: UpsampleParams, ins, ctx):
        (x,) = ins
        need_rank(ctx, x, (3, 4, 5), "(C, L), (C, H, W) or (C, D, H, W)")
        n = x.rank - 2
        scale = p.scale if isinstance(p.scale, tuple) else (p.scale,) * n
        if len(scale) != n:
            raise ShapeFail(f"{ctx.name()} 'scale' has {len(scale)} values but the input has {n} spatial dims")
        if p.mode == "bilinear" and n != 2:
            raise ShapeFail(
                f"{ctx.name()} bilinear needs 2 spatial axes, (N, C, H, W), but gets {x.show(True)} ({n} spatial ax{'is' if n == 1 else 'es'})",
                help="'linear' interpolates along any number of spatial axes",
            )
        if p.align_corners and p.mode == "nearest":
            raise ShapeFail(
                f"{ctx.name()} align_corners is for the linear modes, not nearest (as in PyTorch)",
                help="write 'upsample … bilinear align_corners' or 'upsample … linear align_corners'",
            )
        return TensorType(x.shape[:2] + tuple(dmul(d, s) for d, s in zip(x.shape[2:], scale)), x.dtype)

    @classmethod
    def summary(cls, p: UpsampleParams, dims: int = 2) -> list[str]:
        return ["upsample", f"×{p.scale}", p.mode] + (["align_corners"] if p.align_corners else [])
