"""Dropout (regularisation)."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams
from .types import Rate


class DropoutParams(OpParams):
    op: Literal["dropout"] = "dropout"
    rate: Rate = 0.5


class Dropout(Op):
    """``dropout 0.5``: zeroes each element with probability ``rate`` in training and scales the rest
    by ``1/(1−rate)``; identity in eval. Shape unchanged. No params."""

    name = "dropout"
    Params = DropoutParams
    positional = ("rate",)
    key_aliases = {"p": "rate"}
    category = "regularisation"
    keeps_field = True

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return [f"dropout {p.rate:g}"]


class DropPathParams(OpParams):
    op: Literal["droppath"] = "droppath"
    rate: Rate


class DropPath(Op):
    """``droppath 0.1``: stochastic depth (Huang et al., 2016), as timm's ``DropPath``: in
    training each sample's whole tensor is zeroed with probability ``rate`` and the others are
    scaled by ``1/(1−rate)``; identity in eval. Put it on a residual branch before the add.
    Shape unchanged. No params."""

    name = "droppath"
    Params = DropPathParams
    positional = ("rate",)
    key_aliases = {"p": "rate", "drop_prob": "rate"}
    category = "regularisation"
    keeps_field = True

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return [f"droppath {p.rate:g}"]
