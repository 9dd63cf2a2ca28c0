"""Explicit padding: zeros (or a constant, or the edge) around the spatial dims and the channels."""

from __future__ import annotations

from typing import Annotated, Literal

from ..dims import ShapeFail, TensorType, dadd
from .base import Op, OpParams
from .types import NonNeg
from .window import AXES

#: ``pad 1``, ``pad [1, 2]`` (per spatial dim), ``pad [[0, 1], [1, 2]]`` ([before, after] per dim)
SpatialPadding = Annotated[
    NonNeg | tuple[NonNeg | tuple[NonNeg, NonNeg], ...],
    "a whole number ≥ 0, a list of them (one per spatial dim) or of [before, after] pairs",
]
#: ``channels 8`` (8 before and 8 after) or ``channels [0, 16]``
ChannelPadding = Annotated[NonNeg | tuple[NonNeg, NonNeg], "a whole number ≥ 0 or a [before, after] pair"]


class PadParams(OpParams):
    op: Literal["pad"] = "pad"
    #: spatial padding, as ``nn.ZeroPad2d`` / Keras' ``ZeroPadding2D``
    padding: SpatialPadding = 0
    #: channels (axis 1) added before and after, as ``F.pad(x, (0, 0, 0, 0, c, c))``
    channels: ChannelPadding = 0
    #: what fills the border: a constant ``value``, the mirror image, or the edge element
    mode: Literal["constant", "reflect", "replicate"] = "constant"
    value: float = 0.0


class Pad(Op):
    """``pad p [channels c] [reflect|replicate] [value v]``: pads with zeros (by default).

    ``pad 2`` pads every spatial dim by 2 on both sides, ``pad [1, 2]`` per dim,
    ``pad [[0, 1], [0, 1]]`` with [before, after] per dim (``nn.ZeroPad2d((0, 1, 0, 1))``);
    ``pad channels 8`` adds 8 zero channels on each side (``channels [0, 16]``: after only) —
    the option-A shortcut of a CIFAR ResNet, ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, c, c))``,
    is ``pool max kernel 1 stride 2 -> pad channels c``.

    Shape: ``(N, C, *S) → (N, C + c_before + c_after, *(S + p_before + p_after))``; spatial
    padding needs ``(C, L)``, ``(C, H, W)`` or ``(C, D, H, W)``, channel padding any ``(C, *)``.
    ``reflect`` needs ``p < S`` and, like ``replicate``, pads spatial dims only. No params."""

    name = "pad"
    Params = PadParams
    positional = ("padding",)
    key_aliases = {"size": "padding", "fill": "value"}
    category = "reshape"
    keeps_field = True

    @classmethod
    def infer(cls, p: PadParams, ins, ctx):
        (x,) = ins
        if x.rank < 2:
            raise ShapeFail(f"{ctx.name()} expects channels but gets a scalar per sample from {ctx.source()}")
        spatial = _spatial(p.padding, x.rank - 2, ctx)
        cb, ca = _channels(p.channels)
        if p.mode != "constant":
            if cb or ca:
                raise ShapeFail(f"{ctx.name()} pads channels with zeros only, not with '{p.mode}'", help="drop 'channels', or the mode")
            if p.value:
                raise ShapeFail(f"{ctx.name()} 'value' applies only to constant padding, not to '{p.mode}'")
        if p.mode == "reflect":
            for axis, size, (pb, pa) in zip(AXES.get(x.rank - 2, ()), x.shape[2:], spatial):
                if isinstance(size, int) and max(pb, pa) >= size:
                    raise ShapeFail(
                        f"{ctx.name()} reflect padding {max(pb, pa)} must be smaller than the input {axis} {size}",
                        help="use 'replicate' or constant padding",
                    )
        if not (cb or ca) and not any(pb or pa for pb, pa in spatial):
            ctx.warn(f"{ctx.name()} pads nothing", help="give the padding: 'pad 1' or 'pad channels 8'", kind="pad_nothing")
        shape = [x.shape[0], dadd(x.shape[1], cb + ca)]
        shape += [dadd(size, pb + pa) for size, (pb, pa) in zip(x.shape[2:], spatial)] if spatial else list(x.shape[2:])
        return TensorType(tuple(shape), x.dtype, x.vocab)

    @classmethod
    def summary(cls, p: PadParams, dims: int = 2) -> list[str]:
        words = ["pad"]
        if p.padding:
            words.append(
                str(p.padding) if isinstance(p.padding, int) else str(list(p.padding)).replace(" ", "").replace("(", "[").replace(")", "]")
            )
        cb, ca = _channels(p.channels)
        if cb or ca:
            words.append(f"channels +{cb}" if cb == ca else f"channels +{cb}/+{ca}")
        if p.mode != "constant":
            words.append(p.mode)
        elif p.value:
            words.append(f"value {p.value:g}")
        return words


def pairs(p: PadParams, rank: int) -> tuple[tuple[int, int], ...]:
    """(before, after) for every axis of the input (rank counts N): none on N, the channel
    padding on axis 1, the spatial padding on the rest — what every target pads with."""
    n = rank - 2
    if p.padding == 0:
        spatial = [(0, 0)] * n
    elif isinstance(p.padding, int):
        spatial = [(p.padding, p.padding)] * n
    else:
        spatial = [(q, q) if isinstance(q, int) else (q[0], q[1]) for q in p.padding]
    return ((0, 0), _channels(p.channels), *spatial)


def _channels(c) -> tuple[int, int]:
    return (c, c) if isinstance(c, int) else (c[0], c[1])


def _spatial(padding, n: int, ctx) -> list[tuple[int, int]]:
    """(before, after) per spatial dim; [] when there is no spatial padding."""
    if padding == 0:
        return []
    if n not in (1, 2, 3):
        raise ShapeFail(
            f"{ctx.name()} pads spatial dims but its input {ctx.types[ctx.inputs[0].path].show()} has none",
            help="expects (C, L), (C, H, W) or (C, D, H, W); to pad channels write 'pad channels C'",
        )
    if isinstance(padding, int):
        return [(padding, padding)] * n
    if len(padding) != n:
        raise ShapeFail(f"{ctx.name()} 'padding' has {len(padding)} values but the input has {n} spatial dim{'s' * (n != 1)}")
    return [(q, q) if isinstance(q, int) else (q[0], q[1]) for q in padding]
