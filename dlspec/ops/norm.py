"""Normalisation: batch norm, layer norm, RMS norm, group norm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..dims import ShapeFail, need_float
from .base import Op, OpParams, Slot
from .types import Pos

Eps = Annotated[float, Field(gt=0)]
Momentum = Annotated[float, Field(ge=0, le=1)]


class BatchNormParams(OpParams):
    op: Literal["batchnorm"] = "batchnorm"
    eps: Eps = 1e-5
    momentum: Momentum = 0.1
    affine: bool = True


class BatchNorm(Op):
    """``batchnorm [eps 1e-5] [momentum 0.1]``: per-channel (axis 1) batch normalisation.

    Shape: ``(N, C, *) → (N, C, *)``. Params ``2C`` (γ, β); buffers ``2C`` (running mean, var)."""

    name = "batchnorm"
    Params = BatchNormParams
    category = "normalisation"
    keeps_field = True

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        _known(ctx, x, 1, "channels")
        return x

    @classmethod
    def count(cls, p, ins, out, ctx):
        c = ins[0].shape[1]
        return (2 * c if p.affine else 0), 2 * c + 1  # running mean, var, num_batches_tracked

    @classmethod
    def state(cls, p, ins):
        c = ins[0].shape[1]
        return _affine(p, (c,)) + (
            Slot("running_mean", (c,), ("full", 0.0), buffer=True),
            Slot("running_var", (c,), ("full", 1.0), buffer=True),
            Slot("num_batches_tracked", (), ("full", 0), buffer=True, dtype="int64"),
        )


class LayerNormParams(OpParams):
    op: Literal["layernorm"] = "layernorm"
    eps: Eps = 1e-5
    affine: bool = True


class LayerNorm(Op):
    """``layernorm``: normalises the last axis. Shape ``(N, *, D) → (N, *, D)``; params ``2D``."""

    name = "layernorm"
    Params = LayerNormParams
    category = "normalisation"
    concat_axis = -1
    keeps_field = True

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        _known(ctx, x, -1, "features")
        return x

    @classmethod
    def count(cls, p, ins, out, ctx):
        return (2 * ins[0].shape[-1] if p.affine else 0), 0

    @classmethod
    def state(cls, p, ins):
        return _affine(p, (ins[0].shape[-1],))


class RmsNormParams(OpParams):
    op: Literal["rmsnorm"] = "rmsnorm"
    eps: Eps = 1e-5
    affine: bool = True


class RmsNorm(LayerNorm):
    """``rmsnorm [eps 1e-5]``: root-mean-square normalisation of the last axis (Zhang & Sennrich,
    2019), as ``torch.nn.RMSNorm`` and LLaMA: ``x / √(mean(x²) + eps) · γ``, no mean subtracted,
    no bias. Shape ``(N, *, D) → (N, *, D)`` (layernorm's rule); params ``D`` (γ, ones), none
    without ``affine``."""

    name = "rmsnorm"
    Params = RmsNormParams

    @classmethod
    def count(cls, p, ins, out, ctx):
        return (ins[0].shape[-1] if p.affine else 0), 0

    @classmethod
    def state(cls, p, ins):
        return (Slot("weight", (ins[0].shape[-1],), ("full", 1.0)),) if p.affine else ()

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return ["rmsnorm"] + ([f"eps {p.eps:g}"] if p.eps != 1e-5 else [])


class GroupNormParams(OpParams):
    op: Literal["groupnorm"] = "groupnorm"
    groups: Pos
    eps: Eps = 1e-5
    affine: bool = True


class GroupNorm(Op):
    """``groupnorm G``: channels (axis 1) in G groups. Shape ``(N, C, *) → (N, C, *)``, ``C % G == 0``;
    params ``2C``."""

    name = "groupnorm"
    Params = GroupNormParams
    positional = ("groups",)
    category = "normalisation"
    keeps_field = True

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        c = _known(ctx, x, 1, "channels")
        if c % p.groups:
            raise ShapeFail(f"{ctx.name()} cannot split {c} channels into {p.groups} groups")
        return x

    @classmethod
    def count(cls, p, ins, out, ctx):
        return (2 * ins[0].shape[1] if p.affine else 0), 0

    @classmethod
    def state(cls, p, ins):
        return _affine(p, (ins[0].shape[1],))


def _affine(p, shape: tuple[int, ...]) -> tuple[Slot, ...]:
    """γ = 1 and β = 0 (PyTorch), when affine."""
    return (Slot("weight", shape, ("full", 1.0)), Slot("bias", shape, ("full", 0.0))) if p.affine else ()


def _known(ctx, x, axis: int, what: str) -> int:
    if x.rank < 2:
        raise ShapeFail(f"{ctx.name()} expects an input with {what} but gets {x.show()} from {ctx.source()}")
    c = x.shape[axis]
    if not isinstance(c, int):
        raise ShapeFail(f"{ctx.name()} needs a known number of {what}, got {c} from {ctx.source()}")
    return c
