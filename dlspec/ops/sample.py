"""The VAE sampling step (Kingma & Welling, 2014)."""

from __future__ import annotations

from typing import Literal

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
