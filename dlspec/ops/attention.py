"""Multi-head attention (Vaswani et al., 2017), in ``torch.nn.MultiheadAttention``'s form."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams
from .types import Pos, Rate


class AttentionParams(OpParams):
    op: Literal["attention"] = "attention"
    heads: Pos
    causal: bool = False
    dropout: Rate = 0.0
    bias: bool = True
    #: name of a boolean mask tensor (True = attend), broadcast to (N, heads, T_q, T_k)
    mask: str | None = None


class Attention(Op):
    """``attention heads [causal] [dropout p] [mask m]``; self-attention on one input
    ``(N, T, D)``, cross-attention on ``(query, memory)``.

    Shape: ``(N, T_q, D), (N, T_k, D) → (N, T_q, D)``, ``D % heads == 0``.
    Params ``4·D² + 4·D`` (Q, K, V and output projections with biases).
    MACs per sample ``4·T·D² + 2·T_q·T_k·D`` (projections, Q·Kᵀ, A·V)."""

    name = "attention"
    Params = AttentionParams
    positional = ("heads",)
    key_aliases = {"num_heads": "heads"}
    category = "attention"
    arity = (1, 2)
    tensor_params = ("mask",)
