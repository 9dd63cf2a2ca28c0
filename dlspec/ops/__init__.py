"""The op catalogue: every layer kind, each defined once in its module here."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from . import activation, attention, conv, dense, dropout, embedding, merge, norm, pad, pool, recurrent, reshape, sample, structure
from .base import Op, OpParams

_MODULES = (dense, conv, pool, pad, reshape, norm, dropout, embedding, activation, attention, recurrent, merge, sample, structure)


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
USER_OPS = sorted(k for k in CATALOGUE if k not in INTERNAL)

AnyParams = Annotated[Union[tuple(op.Params for op in CATALOGUE.values())], Field(discriminator="op")]


def get(name: str) -> type[Op]:
    return CATALOGUE[name]


__all__ = ["CATALOGUE", "USER_OPS", "AnyParams", "Op", "OpParams", "get"]
