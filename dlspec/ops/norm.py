"""Normalisation: batch norm, layer norm, group norm."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

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


class LayerNormParams(OpParams):
    op: Literal["layernorm"] = "layernorm"
    eps: Eps = 1e-5
    affine: bool = True


class LayerNorm(Op):
    """``layernorm``: normalises the last axis. Shape ``(N, *, D) → (N, *, D)``; params ``2D``."""

    name = "layernorm"
    Params = LayerNormParams
    category = "normalisation"


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
