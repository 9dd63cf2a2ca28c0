"""Tiling and circular shifts: ``tile`` (repeat along axes, or broadcast to a shape) and ``roll``.

Neither touches the batch axis 0; neither has params or MACs (they move values, computing none).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..dims import ShapeFail, TensorType, dmul
from ..errors import Diagnostic
from .base import Op, OpParams, _BindError
from .tensor import feature_axis
from .types import Pos

#: ``-1`` keeps an axis as it is (``tile to [-1, 8, 8]``)
Target = Annotated[int, Field(ge=-1)]


def _show(xs: tuple) -> str:
    return "[" + ", ".join(map(str, xs)) + "]"


class TileParams(OpParams):
    op: Literal["tile"] = "tile"
    #: how many copies along each axis of a sample (axes 1 onwards), as ``x.repeat(1, *reps)``
    reps: tuple[Pos, ...] | None = None
    #: or the size to reach on each axis of a sample (-1 keeps it): a multiple of the axis' size
    #: (1 broadcasts, as ``expand``)
    to: tuple[Target, ...] | None = None


class Tile(Op):
    """``tile [1, 2, 2]``: copies of the tensor side by side along each axis of a sample (axes 1
    onwards, the batch N kept), as ``torch.Tensor.repeat(1, *reps)`` and ``numpy.tile``;
    ``tile to [64, 8, 8]``: repeated up to the sizes given (each a multiple of the axis' size,
    ``-1`` keeps an axis; from size 1 it is a broadcast, as ``expand``). One count or size per axis
    of a sample. No params."""

    name = "tile"
    Params = TileParams
    positional = ("reps",)
    key_aliases = {"repeats": "reps", "counts": "reps", "shape": "to", "size": "to"}
    category = "reshape"

    @classmethod
    def infer(cls, p: TileParams, ins, ctx):
        (x,) = ins
        if (p.reps is None) == (p.to is None):
            raise ShapeFail(
                f"{ctx.name()} needs counts or a target shape (one of them)",
                help="write 'tile [1, 2, 2]' (copies per axis) or 'tile to [64, 8, 8]' (sizes to reach)",
            )
        given = p.reps if p.reps is not None else p.to
        what = "counts" if p.reps is not None else "sizes"
        axes = x.rank - 1
        if len(given) != axes:
            raise ShapeFail(
                f"{ctx.name()} has {len(given)} {what} {_show(given)} but its input {x.show(True)} has {axes} "
                f"ax{'is' if axes == 1 else 'es'} after the batch N",
                help=f"give one per axis of a sample ({axes}); 1 keeps an axis" if p.reps is not None else "-1 keeps an axis",
            )
        shape = [x.shape[0]]
        for k, (d, g) in enumerate(zip(x.shape[1:], given), start=1):
            if p.reps is not None:
                shape.append(dmul(d, g))
                continue
            if g == -1 or g == d:
                shape.append(d)
                continue
            if g == 0:
                raise ShapeFail(f"{ctx.name()}: size 0 on axis {k} would make an empty tensor", help="-1 keeps the axis")
            if not isinstance(d, int):
                raise ShapeFail(
                    f"{ctx.name()} cannot tile axis {k} of size {d} to {g}: the size is known only at run time",
                    help="write -1 to keep the axis",
                )
            if g % d:
                raise ShapeFail(
                    f"{ctx.name()} cannot tile axis {k} of size {d} to {g}: {g} is not a multiple of {d} ({g} = {d}·{g // d} + {g % d})",
                    help=f"a size that is a multiple of {d}: {d * max(1, g // d)} or {d * (g // d + 1)}",
                )
            shape.append(g)
        return TensorType(tuple(shape), x.dtype, x.vocab)

    @classmethod
    def summary(cls, p: TileParams, dims: int = 2) -> list[str]:
        if p.reps is not None:
            return ["tile ×" + _show(p.reps)]
        return ["tile to " + _show(p.to or ())]


def reps(x: TensorType, out: TensorType) -> tuple[int, ...]:
    """The copies along each axis (the batch's 1 first) that take ``x`` to ``out`` (1 where a size
    is known only at run time: such an axis is never tiled by a target shape)."""
    return tuple(o // d if isinstance(o, int) and isinstance(d, int) else 1 for d, o in zip(x.shape, out.shape))


class RollParams(OpParams):
    op: Literal["roll"] = "roll"
    #: positions each axis moves forward (negative: backward); one per axis
    shifts: int | tuple[int, ...]
    axis: int | tuple[int, ...]


class Roll(Op):
    """``roll 1 axis 2``, ``roll(x, [1, -2], axis = [2, 3])``: circular shifts, as ``torch.roll``:
    the values that move past an axis' end come back at its start. One shift per axis; the batch
    axis cannot be rolled. Shape kept. No params."""

    name = "roll"
    Params = RollParams
    positional = ("shifts", "axis")
    key_aliases = {"shift": "shifts", "dims": "axis", "dim": "axis"}
    category = "reshape"

    @classmethod
    def axes(cls, p: RollParams, x: TensorType, ctx) -> list[tuple[int, int]]:
        """``(shift, axis from 0)`` pairs, checked."""
        shifts = p.shifts if isinstance(p.shifts, tuple) else (p.shifts,)
        axes = p.axis if isinstance(p.axis, tuple) else (p.axis,)
        if len(shifts) != len(axes):
            raise ShapeFail(
                f"{ctx.name()} has {len(shifts)} shift{'s' if len(shifts) != 1 else ''} {_show(shifts)} for "
                f"{len(axes)} ax{'is' if len(axes) == 1 else 'es'} {_show(axes)}",
                help="give one shift per axis, e.g. 'roll [1, 1] axis [2, 3]'",
            )
        out = []
        for s, a in zip(shifts, axes):
            k = feature_axis(ctx, x, a, "rolled")
            if any(k == kk for _, kk in out):
                raise ShapeFail(f"{ctx.name()} names axis {k} twice", help="give the sum of the shifts once")
            out.append((s, k))
        return out

    @classmethod
    def build(cls, values, spans, where):
        if "axis" not in values and "shifts" in values:  # torch.roll without dims flattens: not a sample's axes
            raise _BindError(
                [
                    Diagnostic(
                        "roll needs 'axis': the axis (or axes) to shift along",
                        where,
                        help="write 'roll SHIFT axis K', e.g. 'roll 1 axis 2'",
                    )
                ]
            )
        return super().build(values, spans, where)

    @classmethod
    def infer(cls, p: RollParams, ins, ctx):
        (x,) = ins
        cls.axes(p, x, ctx)
        return x

    @classmethod
    def summary(cls, p: RollParams, dims: int = 2) -> list[str]:
        shifts = _show(p.shifts) if isinstance(p.shifts, tuple) else str(p.shifts)
        axes = _show(p.axis) if isinstance(p.axis, tuple) else str(p.axis)
        return [f"roll {shifts}", f"axis {axes}"]
