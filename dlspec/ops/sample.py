"""The VAE sampling step (Kingma & Welling, 2014)."""

from __future__ import annotations

from typing import Literal

from ..dims import ShapeFail, need_float
from .base import Op, OpParams


class SampleParams(OpParams):
    op: Literal["sample"] = "sample"


class Sample(Op):
    """``(mu, logvar) -> sample``: ``z = mu + exp(logvar / 2)·ε``, ``ε ~ N(0, I)`` in training
    (the reparameterisation trick); ``z = mu`` in eval. Shape ``(N, D), (N, D) → (N, D)``."""

    name = "sample"
    Params = SampleParams
    category = "sampling"
    arity = (2, 2)

    @classmethod
    def infer(cls, p, ins, ctx):
        mu, logvar = ins
        need_float(ctx, mu)
        if mu.shape != logvar.shape:
            raise ShapeFail(f"{ctx.name()}: mu {mu.show()} and logvar {logvar.show()} must have the same shape")
        return mu
