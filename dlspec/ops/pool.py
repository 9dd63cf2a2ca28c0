"""Pooling: windowed max/avg, global and adaptive."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams
from .types import Padding, Size


class PoolParams(OpParams):
    op: Literal["pool"] = "pool"
    kind: Literal["max", "avg"] = "max"
    scope: Literal["window", "global", "adaptive"] = "window"
    kernel: Size | None = None
    stride: Size | None = None
    padding: Padding = 0
    dilation: Size = 1
    ceil: bool = False
    count_include_pad: bool = True
    #: output size of adaptive pooling
    size: Size | None = None


class Pool(Op):
    """``pool max|avg kernel k [stride s] [padding p] [ceil true]``, ``pool global avg``,
    ``pool adaptive avg size 7``.

    Shape: window ``(N, C, *S) → (N, C, *S')`` with
    ``S' = floor_or_ceil((S + 2p − d·(k − 1) − 1) / s) + 1`` (stride defaults to the kernel);
    global ``(N, C, *S) → (N, C, 1, …)``; adaptive ``(N, C, *S) → (N, C, *size)``. No params."""

    name = "pool"
    Params = PoolParams
    key_aliases = {"kernel_size": "kernel", "output": "size", "ceil_mode": "ceil"}
    category = "pooling"
