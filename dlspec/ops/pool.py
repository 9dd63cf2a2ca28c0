"""Pooling: windowed max/avg, global and adaptive."""

from __future__ import annotations

from typing import Literal

from ..dims import ShapeFail, TensorType, need_float, need_rank
from .base import Op, OpParams
from .types import Padding, Size
from .window import AXES, check_fits, dropped, per_dim, resolve, show_arith, window_out


class PoolParams(OpParams):
    op: Literal["pool"] = "pool"
    kind: Literal["max", "avg"] = "max"
    scope: Literal["window", "global", "adaptive"] = "window"
    kernel: Size | None = None
    stride: Size | None = None
    padding: Padding = 0
    dilation: Size = 1
    ceil: bool = False
    #: average pooling divides by the padded window (PyTorch); unset: true, except with
    #: ``padding same``, which averages the real values only (TensorFlow/Keras)
    count_include_pad: bool | None = None
    #: output size of adaptive pooling
    size: Size | None = None


class Pool(Op):
    """``pool max|avg kernel k [stride s] [padding p] [ceil true]``, ``pool global avg``,
    ``pool adaptive avg size 7``.

    Shape: window ``(N, C, *S) → (N, C, *S')`` with
    ``S' = floor_or_ceil((S + 2p − d·(k − 1) − 1) / s) + 1`` (stride defaults to the kernel);
    global ``(N, C, *S) → (N, C, 1, …)``; adaptive ``(N, C, *S) → (N, C, *size)``. No params."""

    name = "pool"
    Params = PoolParams
    key_aliases = {"kernel_size": "kernel", "output_size": "size", "ceil_mode": "ceil"}
    category = "pooling"
    field_window = True

    @classmethod
    def infer(cls, p: PoolParams, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        need_rank(ctx, x, (3, 4, 5), "(C, L), (C, H, W) or (C, D, H, W)")
        n = x.rank - 2
        sizes = x.shape[2:]
        if p.scope != "window":
            given = [k for k in ("kernel", "stride", "padding", "ceil") if k in p.model_fields_set]
            if given:
                raise ShapeFail(
                    f"{ctx.name()} {p.scope} pooling takes no '{given[0]}'",
                    help=f"{'the output size is given with size N' if p.scope == 'adaptive' else 'it pools the whole map'}; remove '{given[0]}'",
                )
        if p.scope == "global":
            return TensorType(x.shape[:2] + (1,) * n, x.dtype)
        if p.scope == "adaptive":
            if p.size is None:
                raise ShapeFail(f"{ctx.name()} adaptive pooling needs its output 'size'", help="e.g. 'pool adaptive avg size 7'")
            size = per_dim(p.size, n, "size", ctx.name())
            for axis, s_in, s_out in zip(AXES[n], sizes, size):
                if isinstance(s_in, int) and s_in % s_out:
                    raise ShapeFail(
                        f"{ctx.name()} adaptive pooling from {axis} {s_in} to {s_out}: {s_in} is not a multiple of {s_out}",
                        help="dlspec pools adaptively where the sizes divide; use a window pool with kernel and stride instead",
                    )
            return TensorType(x.shape[:2] + tuple(size), x.dtype)
        if p.kernel is None:
            raise ShapeFail(f"{ctx.name()} needs a 'kernel'", help="e.g. 'pool max kernel 2', or 'pool global avg'")
        k = per_dim(p.kernel, n, "kernel", ctx.name())
        s = per_dim(p.stride if p.stride is not None else p.kernel, n, "stride", ctx.name())
        d = per_dim(p.dilation, n, "dilation", ctx.name())
        padding = cls.geometry(p, ins).pads
        out = []
        for axis, size, kk, ss, dd, (pb, pa) in zip(AXES[n], sizes, k, s, d, padding):
            k_eff = dd * (kk - 1) + 1
            if max(pb, pa) * 2 > kk:
                raise ShapeFail(
                    f"{ctx.name()} padding {max(pb, pa)} is more than half its kernel {kk}", help="PyTorch allows at most kernel // 2"
                )
            o = window_out(size, kk, ss, dd, pb, pa, p.ceil)
            if not p.ceil or (isinstance(o, int) and o < 1):
                # ceil mode lets the one window overhang a too-small input, as PyTorch does
                check_fits(ctx.name(), axis, size, k_eff, pb, pa)
            if not p.ceil and dropped(size, k_eff, ss, pb, pa, o):
                exact = (size + pb + pa - k_eff) / ss + 1
                raise ShapeFail(
                    f"{ctx.name()} output {axis} {show_arith(size, k_eff, ss, pb, pa)} = {exact:g} is not a whole number",
                    help=_fix(size, kk, ss, dd, pb, pa),
                )
            out.append(o)
        return TensorType(x.shape[:2] + tuple(out), x.dtype)

    @classmethod
    def summary(cls, p: PoolParams, dims: int = 2) -> list[str]:
        if p.scope == "global":
            return [f"pool global {p.kind}"]
        if p.scope == "adaptive":
            return [f"pool adaptive {p.kind}", f"→ {'×'.join(map(str, p.size)) if isinstance(p.size, tuple) else p.size}"]
        k = p.kernel if isinstance(p.kernel, tuple) else (p.kernel,) * dims
        words = [f"pool {p.kind}", "×".join(map(str, k))]
        stride = p.stride if p.stride is not None else p.kernel
        if stride != 1:
            words.append(f"/{'×'.join(map(str, stride)) if isinstance(stride, tuple) else stride}")
        if p.padding:
            words.append(f"pad {p.padding}" if not isinstance(p.padding, tuple) else f"pad {list(p.padding)}".replace(" ", ""))
        if p.ceil:
            words.append("ceil")
        return words

    @classmethod
    def geometry(cls, p: PoolParams, ins):
        if p.scope != "window" or p.kernel is None:
            return None
        return resolve(p.kernel, p.stride if p.stride is not None else p.kernel, p.dilation, p.padding, ins[0].shape[2:], "pool")


def _fix(size: int, k: int, s: int, d: int, pb: int, pa: int) -> str:
    """The smallest symmetric padding that lets the windows cover the input, or ceil mode."""
    k_eff = d * (k - 1) + 1
    for extra in range(1, k // 2 + 1):
        p2 = max(pb, pa, extra)
        o = window_out(size, k, s, d, p2, p2)
        if not dropped(size, k_eff, s, p2, p2, o):
            return f"use padding {p2}, or ceil true"
    return "use ceil true, or a kernel and stride that divide the input"
