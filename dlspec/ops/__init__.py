"""The op catalogue: every layer kind, each defined once in its module here."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from . import (
    activation,
    attention,
    conv,
    dense,
    dropout,
    embedding,
    merge,
    norm,
    pad,
    pool,
    position,
    recurrent,
    reduce,
    reshape,
    sample,
    structure,
    tensor,
    tiling,
)
from .base import Op, OpParams

_MODULES = (dense, conv, pool, pad, reshape, norm, dropout, embedding, activation, attention, recurrent, merge, sample, structure)
_MODULES += (tensor, reduce)
_MODULES += (tiling,)
_MODULES += (position,)


def _collect() -> dict[str, type[Op]]:
    found: dict[str, type[Op]] = {}
    for mod in _MODULES:
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Op) and "name" in vars(obj):
                found[obj.name] = obj
    return found


CATALOGUE: dict[str, type[Op]] = _collect()
#: ops users may write (internal ones are created by the compiler)
INTERNAL = frozenset({"input", "cell", "step_in", "arith"})
#: made by the expander from the spec's own syntax: subscripts `x[:, 0]` and `param` statements
INTERNAL = INTERNAL | {"slice", "param"}
USER_OPS = sorted(k for k in CATALOGUE if k not in INTERNAL)

AnyParams = Annotated[Union[tuple(op.Params for op in CATALOGUE.values())], Field(discriminator="op")]


def get(name: str) -> type[Op]:
    return CATALOGUE[name]


def words(op: str, params: OpParams, out: object = None) -> list[str]:
    """``op``'s summary words; ``out`` (the layer's output type, if known) sets how many spatial
    dims a window has: ``(N, C, L)`` → 1 (``kernel 3`` reads ``3``), ``(N, C, H, W)`` → 2 (``3×3``)."""
    shape = getattr(out, "shape", None)
    dims = len(shape) - 2 if shape is not None and len(shape) > 2 else 2
    return CATALOGUE[op].summary(params, dims=dims)


__all__ = ["CATALOGUE", "USER_OPS", "AnyParams", "Op", "OpParams", "get", "words"]
