"""Merging tensors: concat, add (residual), multiply, and elementwise arithmetic."""

from __future__ import annotations

from typing import Literal

from ..dims import ShapeFail, TensorType, broadcast, dadd
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
    keeps_field = True

    @classmethod
    def infer(cls, p: ConcatParams, ins, ctx):
        rank = ins[0].rank
        axis = p.axis + rank if p.axis < 0 else p.axis
        if not 0 < axis < rank:
            raise ShapeFail(f"{ctx.name()} axis {p.axis} is not a feature axis of {ins[0].show()} (axis 0 is the batch N)")
        for i, t in enumerate(ins[1:], start=1):
            if t.rank != rank:
                raise ShapeFail(f"{ctx.name()}: {_who(ctx, i)} gives {t.show()} but {_who(ctx, 0)} gives {ins[0].show()}")
            if t.dtype != ins[0].dtype:
                raise ShapeFail(f"{ctx.name()}: {_who(ctx, i)} is {t.dtype} but {_who(ctx, 0)} is {ins[0].dtype}")
            rest = [d for k, d in enumerate(t.shape) if k not in (0, axis)]
            rest0 = [d for k, d in enumerate(ins[0].shape) if k not in (0, axis)]
            if rest != rest0:
                raise ShapeFail(
                    f"concat: {_who(ctx, i)} gives {'×'.join(map(str, rest))} but {_who(ctx, 0)} gives {'×'.join(map(str, rest0))}",
                    help=f"every input must agree on all dims but the concat axis ({axis})",
                )
        total = ins[0].shape[axis]
        for t in ins[1:]:
            total = dadd(total, t.shape[axis])
        shape = list(ins[0].shape)
        shape[axis] = total
        # a learned or constant tensor (batch axis 1) is broadcast over the batch, as PyTorch's `expand`
        shape[0] = next((t.shape[0] for t in ins if t.shape[0] != 1), 1)
        return TensorType(tuple(shape), ins[0].dtype)

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return ["concat"] + ([f"axis {p.axis}"] if p.axis != 1 else [])


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
    keeps_field = True

    @classmethod
    def infer(cls, p: AddParams, ins, ctx):
        try:
            return broadcast(ctx, ins, ctx.name())
        except ShapeFail as f:
            if p.residual:
                a, b = ins[0], ins[-1]
                raise ShapeFail(
                    f"{ctx.name()}: the residual branch gives {a.show()} but the shortcut gives {b.show()}",
                    help="give the residual a projection shortcut: 'shortcut { conv C kernel 1 stride S … }'",
                ) from None
            raise f

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return ["add (residual)" if p.residual else "add"]


class MultiplyParams(OpParams):
    op: Literal["multiply"] = "multiply"


class Multiply(Op):
    """``multiply``: elementwise product of its inputs (equal or broadcastable). No params."""

    name = "multiply"
    Params = MultiplyParams
    category = "merge"
    arity = (1, None)
    keeps_field = True

    @classmethod
    def infer(cls, p, ins, ctx):
        return broadcast(ctx, ins, ctx.name())


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
    keeps_field = True

    @classmethod
    def infer(cls, p, ins, ctx):
        for i, t in enumerate(ins):
            if not t.is_float():
                raise ShapeFail(f"arithmetic needs float tensors but gets {t.dtype} from {ctx.source(i)}")
        return broadcast(ctx, ins, "arithmetic")

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        sym = {"add": "+", "sub": "−", "mul": "×", "div": "÷", "pow": "^"}[p.fn]
        left = f"{p.left:g} " if p.left is not None else ""
        right = f" {p.right:g}" if p.right is not None else ""
        return [f"{left}{sym}{right}".strip()]


def _who(ctx, i: int) -> str:
    """'branch 2' when input i comes from a concat branch, else 'input 2'."""
    path = ctx.inputs[i].path
    # the branch of *this* concat: the first path part below the concat's own prefix
    # (a nested concat's inputs are ``branch2.branch1.…``: branch 1, not branch 2)
    own = ctx.node.path
    prefix = own.rsplit(".", 1)[0] + "." if "." in own else ""
    part = (path[len(prefix) :] if path.startswith(prefix) else path).split(".")[0]
    if part.startswith("branch") and part[6:].isdigit():
        return f"branch {part[6:]}"
    return f"input {i + 1} ('{path}')"
