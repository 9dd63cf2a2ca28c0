"""Fully connected (dense / linear) layer."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams
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
