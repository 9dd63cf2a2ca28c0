"""Convolution and transposed convolution (1-D, 2-D, 3-D from the input's rank)."""

from __future__ import annotations

from typing import Literal

from ..dims import ShapeFail, TensorType, dmul, elements, need_float, need_rank
from .base import Op, OpParams, fan_in
from .types import NonNeg, Padding, Pos, Size
from .window import AXES, check_fits, dropped, per_dim, resolve, show_arith, upsampled, window_out


class ConvParams(OpParams):
    op: Literal["conv"] = "conv"
    filters: Pos
    kernel: Size
    stride: Size = 1
    padding: Padding = 0
    dilation: Size = 1
    groups: Pos = 1
    bias: bool = True


class Conv(Op):
    """``conv filters kernel k [stride s] [padding p] [dilation d] [groups g] [bias b]``.

    Shape: ``(N, C_in, *S) → (N, filters, *S')`` with, per spatial dim,
    ``S' = floor((S + p_before + p_after − d·(k − 1) − 1) / s) + 1`` (PyTorch's arithmetic);
    ``same`` pads ``d·(k−1)`` in total (the extra one after, as TensorFlow) and gives ``ceil(S / s)``.
    Params: ``filters·(C_in/groups)·∏k + filters`` (bias)."""

    name = "conv"
    Params = ConvParams
    positional = ("filters",)
    key_aliases = {"kernel_size": "kernel", "channels": "filters", "out": "filters"}
    category = "convolution"
    field_window = True

    @classmethod
    def infer(cls, p: ConvParams, ins, ctx):
        x, n, k, s, d = _spatial(cls, p, ins, ctx)
        c = x.shape[1]
        _groups(ctx, p, c)
        sizes = x.shape[2:]
        padding = resolve(p.kernel, p.stride, p.dilation, p.padding, sizes, ctx.name()).pads
        out = []
        for axis, size, kk, ss, dd, (pb, pa) in zip(AXES[n], sizes, k, s, d, padding):
            k_eff = dd * (kk - 1) + 1
            check_fits(f"{ctx.name()}", axis, size, k_eff, pb, pa)
            o = window_out(size, kk, ss, dd, pb, pa)
            if dropped(size, k_eff, ss, pb, pa, o):
                ctx.warn(
                    f"{ctx.name()} output {axis} {show_arith(size, k_eff, ss, pb, pa)} = {(size + pb + pa - k_eff) / ss + 1:g} "
                    f"is rounded down: the last {pb + size - ((o - 1) * ss + k_eff)} input row(s) are never seen",
                    help="pad the input so the windows cover it (PyTorch silently drops them)",
                    kind="drop_border",
                )
            out.append(o)
        return TensorType((x.shape[0], p.filters, *out), x.dtype)

    @classmethod
    def count(cls, p: ConvParams, ins, out, ctx):
        c = ins[0].shape[1]
        k = per_dim(p.kernel, ins[0].rank - 2, "kernel", "conv")
        w = p.filters * (c // p.groups)
        for kk in k:
            w *= kk
        return w + (p.filters if p.bias else 0), 0

    @classmethod
    def state(cls, p: ConvParams, ins):
        c = ins[0].shape[1] // p.groups
        k = per_dim(p.kernel, ins[0].rank - 2, "kernel", "conv")
        fan = c
        for kk in k:
            fan *= kk
        return (fan_in((p.filters, c, *k), fan, "weight"),) + ((fan_in((p.filters,), fan, "bias"),) if p.bias else ())

    @classmethod
    def geometry(cls, p: ConvParams, ins):
        return resolve(p.kernel, p.stride, p.dilation, p.padding, ins[0].shape[2:], "conv")

    @classmethod
    def macs(cls, p: ConvParams, ins, out, ctx):
        c = ins[0].shape[1]
        k = per_dim(p.kernel, ins[0].rank - 2, "kernel", "conv")
        per = c // p.groups
        for kk in k:
            per *= kk
        return dmul(elements(out.sample), per)

    @classmethod
    def summary(cls, p: ConvParams, dims: int = 2) -> list[str]:
        return [f"conv {p.filters}"] + _window_words(p, dims)


class DeconvParams(OpParams):
    op: Literal["deconv"] = "deconv"
    filters: Pos
    kernel: Size
    stride: Size = 1
    padding: Padding = 0
    output_padding: NonNeg | tuple[NonNeg, ...] = 0
    dilation: Size = 1
    groups: Pos = 1
    bias: bool = True


class Deconv(Op):
    """``deconv filters kernel k [stride s] [padding p] [output_padding o]``: transposed convolution.

    Shape: ``(N, C_in, *S) → (N, filters, *S')`` with
    ``S' = (S − 1)·s − p_before − p_after + d·(k − 1) + o + 1`` (PyTorch's ``ConvTranspose``).
    Params: ``C_in·(filters/groups)·∏k + filters``."""

    name = "deconv"
    Params = DeconvParams
    positional = ("filters",)
    key_aliases = {"kernel_size": "kernel", "channels": "filters"}
    category = "convolution"

    @classmethod
    def infer(cls, p: DeconvParams, ins, ctx):
        x, n, k, s, d = _spatial(cls, p, ins, ctx)
        c = x.shape[1]
        _groups(ctx, p, c)
        if p.padding == "same":
            raise ShapeFail(
                f"{ctx.name()} does not support padding 'same'", help="give the padding as numbers, as PyTorch's ConvTranspose does"
            )
        win = resolve(p.kernel, p.stride, p.dilation, p.padding, x.shape[2:], ctx.name(), p.output_padding)
        out = []
        for axis, size, kk, ss, dd, (pb, pa), op in zip(AXES[n], x.shape[2:], k, s, d, win.pads, win.output_padding):
            if op >= max(ss, dd):
                raise ShapeFail(f"{ctx.name()} output_padding {op} must be smaller than the stride {ss} or the dilation {dd}")
            o = upsampled(size, kk, ss, dd, pb, pa, op)
            if isinstance(o, int) and o < 1:
                raise ShapeFail(f"{ctx.name()} output {axis} is {o}: the padding is larger than the upsampled input")
            out.append(o)
        return TensorType((x.shape[0], p.filters, *out), x.dtype)

    @classmethod
    def count(cls, p: DeconvParams, ins, out, ctx):
        c = ins[0].shape[1]
        w = c * (p.filters // p.groups)
        for kk in per_dim(p.kernel, ins[0].rank - 2, "kernel", "deconv"):
            w *= kk
        return w + (p.filters if p.bias else 0), 0

    @classmethod
    def state(cls, p: DeconvParams, ins):
        k = per_dim(p.kernel, ins[0].rank - 2, "kernel", "deconv")
        fan = p.filters // p.groups  # PyTorch computes ConvTranspose's fan-in from weight.size(1)
        for kk in k:
            fan *= kk
        weight = fan_in((ins[0].shape[1], p.filters // p.groups, *k), fan, "weight")
        return (weight,) + ((fan_in((p.filters,), fan, "bias"),) if p.bias else ())

    @classmethod
    def geometry(cls, p: DeconvParams, ins):
        return resolve(p.kernel, p.stride, p.dilation, p.padding, ins[0].shape[2:], "deconv", p.output_padding)

    @classmethod
    def macs(cls, p: DeconvParams, ins, out, ctx):
        x = ins[0]
        per = p.filters // p.groups
        for kk in per_dim(p.kernel, x.rank - 2, "kernel", "deconv"):
            per *= kk
        return dmul(elements(x.sample), per)

    @classmethod
    def summary(cls, p: DeconvParams, dims: int = 2) -> list[str]:
        return [f"deconv {p.filters}"] + _window_words(p, dims) + ([f"+{_size(p.output_padding)}"] if p.output_padding else [])


def _size(v) -> str:
    return "×".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _window_words(p, dims: int) -> list[str]:
    k = p.kernel if isinstance(p.kernel, tuple) else (p.kernel,) * dims
    words = ["×".join(map(str, k))]
    if p.stride != 1:
        words.append(f"/{_size(p.stride)}")
    if p.dilation != 1:
        words.append(f"dil {_size(p.dilation)}")
    if isinstance(p.padding, str):
        words.append(p.padding)
    elif p.padding:
        words.append(f"pad {_size(p.padding) if not isinstance(p.padding, tuple) else str(list(p.padding)).replace(' ', '')}")
    if p.groups != 1:
        words.append(f"groups {p.groups}")
    if not p.bias:
        words.append("no bias")
    return words


def _spatial(cls, p, ins, ctx):
    (x,) = ins
    need_float(ctx, x)
    need_rank(ctx, x, (3, 4, 5), "(C, L), (C, H, W) or (C, D, H, W)")
    n = x.rank - 2
    k = per_dim(p.kernel, n, "kernel", ctx.name())
    s = per_dim(p.stride, n, "stride", ctx.name())
    d = per_dim(p.dilation, n, "dilation", ctx.name())
    return x, n, k, s, d


def _groups(ctx, p, c) -> None:
    if not isinstance(c, int):
        raise ShapeFail(f"{ctx.name()} needs a known number of input channels, got {c}")
    if c % p.groups:
        raise ShapeFail(f"{ctx.name()} groups {p.groups} does not divide its {c} input channels")
    if p.filters % p.groups:
        raise ShapeFail(f"{ctx.name()} groups {p.groups} does not divide its {p.filters} filters")
