"""Layout ops: flatten, reshape, permute, upsample."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams
from .types import Dim, Pos, Size


class FlattenParams(OpParams):
    op: Literal["flatten"] = "flatten"
    #: first axis to flatten (1 = everything but N)
    start: Pos = 1


class Flatten(Op):
    """``flatten``: ``(N, d1, d2, …) → (N, d1·d2·…)``. No params."""

    name = "flatten"
    Params = FlattenParams
    category = "reshape"


class ReshapeParams(OpParams):
    op: Literal["reshape"] = "reshape"
    shape: tuple[Dim, ...]


class Reshape(Op):
    """``reshape [d1, d2, …]`` (one ``-1`` allowed): ``(N, *) → (N, d1, d2, …)``, N kept. No params."""

    name = "reshape"
    Params = ReshapeParams
    positional = ("shape",)
    category = "reshape"


class PermuteParams(OpParams):
    op: Literal["permute"] = "permute"
    #: a permutation of 1..rank−1 (N stays first), as Keras' Permute
    dims: tuple[Pos, ...]


class Permute(Op):
    """``permute [2, 1]``: reorders the non-batch axes (1-based, N fixed): ``(N, A, B) → (N, B, A)``."""

    name = "permute"
    Params = PermuteParams
    positional = ("dims",)
    category = "reshape"


class UpsampleParams(OpParams):
    op: Literal["upsample"] = "upsample"
    scale: Size = 2
    mode: Literal["nearest", "linear"] = "nearest"


class Upsample(Op):
    """``upsample 2 [nearest|linear]``: ``(N, C, *S) → (N, C, *(S·scale))``. No params."""

    name = "upsample"
    Params = UpsampleParams
    positional = ("scale",)
    key_aliases = {"factor": "scale"}
    category = "reshape"
