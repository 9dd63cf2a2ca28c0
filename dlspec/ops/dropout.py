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
