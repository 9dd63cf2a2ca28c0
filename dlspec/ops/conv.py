"""Convolution and transposed convolution (1-D, 2-D, 3-D from the input's rank)."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams
from .types import NonNeg, Padding, Pos, Size


class ConvParams(OpParams):
    op: Literal["conv"] = "conv"
    filters: Pos
    kernel: Size
    stride: Size = 1
    padding: Padding = 0
    dilation: Size = 1
    groups: Pos = 1
    bias: bool = True


class Conv(Op):
    """``conv filters kernel k [stride s] [padding p] [dilation d] [groups g] [bias b]``.

    Shape: ``(N, C_in, *S) → (N, filters, *S')`` with, per spatial dim,
    ``S' = floor((S + p_before + p_after − d·(k − 1) − 1) / s) + 1`` (PyTorch's arithmetic);
    ``same`` pads ``d·(k−1)`` in total (the extra one after, as TensorFlow) and gives ``ceil(S / s)``.
    Params: ``filters·(C_in/groups)·∏k + filters`` (bias)."""

    name = "conv"
    Params = ConvParams
    positional = ("filters",)
    key_aliases = {"kernel_size": "kernel", "channels": "filters", "out": "filters"}
    category = "convolution"


class DeconvParams(OpParams):
    op: Literal["deconv"] = "deconv"
    filters: Pos
    kernel: Size
    stride: Size = 1
    padding: Padding = 0
    output_padding: NonNeg | tuple[NonNeg, ...] = 0
    dilation: Size = 1
    groups: Pos = 1
    bias: bool = True


class Deconv(Op):
    """``deconv filters kernel k [stride s] [padding p] [output_padding o]``: transposed convolution.

    Shape: ``(N, C_in, *S) → (N, filters, *S')`` with
    ``S' = (S − 1)·s − p_before − p_after + d·(k − 1) + o + 1`` (PyTorch's ``ConvTranspose``).
    Params: ``C_in·(filters/groups)·∏k + filters``."""

    name = "deconv"
    Params = DeconvParams
    positional = ("filters",)
    key_aliases = {"kernel_size": "kernel", "channels": "filters"}
    category = "convolution"
