"""Parameter types shared by ops (sizes, paddings, axes)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

Pos = Annotated[int, Field(gt=0)]
NonNeg = Annotated[int, Field(ge=0)]
#: one size for every spatial dim, or one per dim
Size = Annotated[Pos | tuple[Pos, ...], "a positive whole number or a list of them"]
#: ``padding 1``, ``padding [1, 2]`` (per dim), ``padding [[0, 1], [1, 2]]`` (before, after per dim), ``same``, ``valid``
Padding = Annotated[
    NonNeg | tuple[NonNeg | tuple[NonNeg, NonNeg], ...] | Literal["same", "valid"],
    "a whole number ≥ 0, a list of them (one per dim) or of [before, after] pairs, 'same' or 'valid'",
]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
Dim = Annotated[int | str, "a whole number or a symbolic name"]
