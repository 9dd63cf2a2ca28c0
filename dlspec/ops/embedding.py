"""Token embedding and learned positional embedding."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams
from .types import Pos


class EmbeddingParams(OpParams):
    op: Literal["embedding"] = "embedding"
    dim: Pos
    #: vocabulary size; taken from the integer input's ``vocab`` when omitted
    vocab: Pos | None = None


class Embedding(Op):
    """``embedding dim [vocab V]``: a lookup table. Shape ``(N, *) int → (N, *, dim)``; params ``V·dim``."""

    name = "embedding"
    Params = EmbeddingParams
    positional = ("dim",)
    key_aliases = {"vocabulary": "vocab", "size": "dim"}
    category = "embedding"


class PosEmbedParams(OpParams):
    op: Literal["posembed"] = "posembed"
    #: the longest sequence it can encode
    length: Pos


class PosEmbed(Op):
    """``posembed length``: adds a learned position vector to each step.
    Shape ``(N, T, D) → (N, T, D)`` with ``T ≤ length``; params ``length·D``."""

    name = "posembed"
    Params = PosEmbedParams
    positional = ("length",)
    key_aliases = {"max_len": "length"}
    category = "embedding"
