"""Token embedding and learned positional embedding."""

from __future__ import annotations

from typing import Literal

from ..dims import ShapeFail, TensorType, need_float, need_rank
from .base import Op, OpParams, Slot
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

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        if x.is_float() or x.dtype == "bool":
            raise ShapeFail(
                f"{ctx.name()} needs integer token ids but gets {x.dtype} from {ctx.source()}",
                help="declare the input as integers: 'input tokens: [T] int vocab 10000'",
            )
        cls.vocab(p, x, ctx)
        return TensorType(x.shape + (p.dim,), "float32")

    @classmethod
    def vocab(cls, p, x, ctx) -> int:
        if p.vocab is not None:
            if x.vocab is not None and x.vocab > p.vocab:
                raise ShapeFail(f"{ctx.name()} has vocab {p.vocab} but its input's ids go up to {x.vocab - 1}")
            return p.vocab
        if x.vocab is None:
            raise ShapeFail(f"{ctx.name()} needs a 'vocab' size", help="write 'embedding DIM vocab V', or declare the input with 'vocab V'")
        return x.vocab

    @classmethod
    def count(cls, p, ins, out, ctx):
        return cls.vocab(p, ins[0], ctx) * p.dim, 0

    @classmethod
    def state(cls, p, ins):
        vocab = p.vocab if p.vocab is not None else ins[0].vocab
        return (Slot("weight", (vocab, p.dim), ("normal", 1.0)),)  # N(0, 1) as PyTorch

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return [f"embedding {p.dim}"] + ([f"vocab {p.vocab}"] if p.vocab else [])


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

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        need_rank(ctx, x, (3,), "(T, D)")
        t, d = x.shape[1], x.shape[2]
        if isinstance(t, int) and t > p.length:
            raise ShapeFail(f"{ctx.name()} encodes at most {p.length} positions but the sequence has {t}")
        if not isinstance(d, int):
            raise ShapeFail(f"{ctx.name()} needs a known feature size, got {d}")
        return x

    @classmethod
    def count(cls, p, ins, out, ctx):
        return p.length * ins[0].shape[2], 0

    @classmethod
    def state(cls, p, ins):
        return (Slot("weight", (p.length, ins[0].shape[2]), ("normal", 0.02)),)  # N(0, 0.02²) as GPT-2

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return [f"posembed {p.length}"]
