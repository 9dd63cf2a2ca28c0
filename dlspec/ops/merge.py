"""Merging tensors: concat, add (residual), multiply, and elementwise arithmetic."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams


class ConcatParams(OpParams):
    op: Literal["concat"] = "concat"
    axis: int = 1


class Concat(Op):
    """``concat [axis 1]``: joins its inputs along ``axis`` (channels by default).
    Every other dim must be equal. No params."""

    name = "concat"
    Params = ConcatParams
    key_aliases = {"dim": "axis"}
    category = "merge"
    arity = (1, None)


class AddParams(OpParams):
    op: Literal["add"] = "add"
    #: drawn as a residual connection
    residual: bool = False


class Add(Op):
    """``add``: elementwise sum of its inputs (equal shapes or broadcastable). No params."""

    name = "add"
    Params = AddParams
    category = "merge"
    arity = (1, None)


class MultiplyParams(OpParams):
    op: Literal["multiply"] = "multiply"


class Multiply(Op):
    """``multiply``: elementwise product of its inputs (equal or broadcastable). No params."""

    name = "multiply"
    Params = MultiplyParams
    category = "merge"
    arity = (1, None)


class ArithParams(OpParams):
    op: Literal["arith"] = "arith"
    fn: Literal["add", "sub", "mul", "div", "pow"]
    #: a number on the left (``1 - z``) or right (``z * 2``) instead of a tensor
    left: float | None = None
    right: float | None = None


class Arith(Op):
    """Arithmetic written in a spec (``(1 - z) * h + z * n``): broadcast elementwise. No params."""

    name = "arith"
    Params = ArithParams
    category = "elementwise"
    arity = (1, 2)
