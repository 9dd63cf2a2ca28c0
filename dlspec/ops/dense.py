"""Fully connected (dense / linear) layer."""

from __future__ import annotations

from typing import Literal

from ..dims import ShapeFail, TensorType, dmul, elements, need_float
from .base import Op, OpParams, fan_in
from .types import Pos


class DenseParams(OpParams):
    op: Literal["dense"] = "dense"
    units: Pos
    bias: bool = True
    #: path of an embedding whose weight this layer reuses (transposed), e.g. a tied LM head
    tied: str | None = None


class Dense(Op):
    """``dense units``: ``y = x Wᵀ + b`` over the last axis.

    Shape: ``(N, *, F_in) → (N, *, units)``. Several inputs are concatenated on the last axis.
    Params: ``units·F_in + units`` (no weight when ``tied``)."""

    name = "dense"
    Params = DenseParams
    positional = ("units",)
    key_aliases = {"linear": "units", "out": "units"}
    category = "dense"
    concat_axis = -1

    @classmethod
    def infer(cls, p: DenseParams, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        if x.rank < 2:
            raise ShapeFail(f"{ctx.name()} expects features but gets a scalar per sample from {ctx.source()}")
        f = x.shape[-1]
        if not isinstance(f, int):
            raise ShapeFail(f"{ctx.name()} needs a known number of input features, got {f} from {ctx.source()}")
        if p.tied is not None:
            src = next((n for n in ctx.graph.nodes if n.path == p.tied), None)  # the full path (resolved in the IR)
            if src is None or src.op != "embedding":
                raise ShapeFail(f"{ctx.name()} is tied to '{p.tied}', which is not an embedding layer")
            if src.params.dim != f:
                raise ShapeFail(f"{ctx.name()} is tied to embedding '{p.tied}' of dim {src.params.dim} but gets {f} features")
            vocab = _vocab_of(ctx, src)
            if vocab != p.units:
                raise ShapeFail(f"{ctx.name()} is tied to embedding '{p.tied}' with vocab {vocab} but has {p.units} units")
        return TensorType(x.shape[:-1] + (p.units,), x.dtype)

    @classmethod
    def count(cls, p: DenseParams, ins, out, ctx):
        f = ins[0].shape[-1]
        weight = 0 if p.tied else p.units * f
        return weight + (p.units if p.bias else 0), 0

    @classmethod
    def macs(cls, p: DenseParams, ins, out, ctx):
        x = ins[0]
        return dmul(elements(x.sample[:-1]), p.units * x.shape[-1])

    @classmethod
    def state(cls, p: DenseParams, ins):
        f = ins[0].shape[-1]
        weight = () if p.tied else (fan_in((p.units, f), f, "weight"),)
        return weight + ((fan_in((p.units,), f, "bias"),) if p.bias else ())

    @classmethod
    def summary(cls, p: DenseParams, dims: int = 2) -> list[str]:
        return [f"dense {p.units}"] + (["no bias"] if not p.bias else []) + ([f"tied {p.tied}"] if p.tied else [])


def _vocab_of(ctx, emb) -> int:
    """An embedding's vocabulary: its own 'vocab', else its integer input's."""
    if emb.params.vocab is not None:
        return emb.params.vocab
    src = ctx.types.get(emb.inputs[0])
    return src.vocab if src is not None else -1
