"""Normalisation: batch norm, layer norm, group norm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..shapes import ShapeFail, need_float
from .base import Op, OpParams
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
    def lower(cls, p, ins, out, low, node):
        from tinygrad import nn

        class CountingBatchNorm(nn.BatchNorm):
            """tinygrad's BatchNorm rebinds ``num_batches_tracked`` (``+= 1``) instead of updating
            it in place, so a TinyJit-replayed training step never counted; this one assigns."""

            def __call__(self, x):
                from tinygrad.helpers import TRAINING

                from ..errors import BackendError, Diagnostic

                if TRAINING and x.numel() <= x.shape[1]:  # the unbiased variance would divide by 0
                    raise BackendError(
                        Diagnostic(
                            f"batchnorm '{node.path}' needs more than 1 value per channel when training, "
                            f"got input of shape {tuple(x.shape)}",
                            node.span,
                            help="train with a batch of 2 or more samples (or evaluate in the eval phase)",
                        )
                    )
                counter = self.num_batches_tracked
                out = super().__call__(x)
                if self.num_batches_tracked is not counter:
                    counter.assign(self.num_batches_tracked)
                    self.num_batches_tracked = counter
                return out

        return CountingBatchNorm(ins[0].shape[1], eps=p.eps, affine=p.affine, track_running_stats=True, momentum=p.momentum)


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
    def lower(cls, p, ins, out, low, node):
        from tinygrad import nn

        return nn.LayerNorm(ins[0].shape[-1], eps=p.eps, elementwise_affine=p.affine)


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
    def lower(cls, p, ins, out, low, node):
        from tinygrad import nn

        return nn.GroupNorm(p.groups, ins[0].shape[1], eps=p.eps, affine=p.affine)


def _known(ctx, x, axis: int, what: str) -> int:
    if x.rank < 2:
        raise ShapeFail(f"{ctx.name()} expects an input with {what} but gets {x.show()} from {ctx.source()}")
    c = x.shape[axis]
    if not isinstance(c, int):
        raise ShapeFail(f"{ctx.name()} needs a known number of {what}, got {c} from {ctx.source()}")
    return c
