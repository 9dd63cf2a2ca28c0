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
    #: a row that starts at zero and is never trained (``torch.nn.Embedding``'s ``padding_idx``;
    #: negative counts from the end)
    padding_idx: int | None = None


class Embedding(Op):
    """``embedding dim [vocab V] [padding_idx P]``: a lookup table. Shape ``(N, *) int → (N, *, dim)``;
    params ``V·dim``. With ``padding_idx``, row ``P`` starts at zero and gets no gradient (as
    ``torch.nn.Embedding``): the id ``P`` marks padding."""

    name = "embedding"
    Params = EmbeddingParams
    positional = ("dim",)
    key_aliases = {"vocabulary": "vocab", "size": "dim", "padding": "padding_idx"}
    category = "embedding"

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        if x.is_float() or x.dtype == "bool":
            raise ShapeFail(
                f"{ctx.name()} needs integer token ids but gets {x.dtype} from {ctx.source()}",
                help="declare the input as integers: 'input tokens: [T] int vocab 10000'",
            )
        vocab = cls.vocab(p, x, ctx)
        if p.padding_idx is not None and not -vocab <= p.padding_idx < vocab:
            raise ShapeFail(
                f"{ctx.name()} padding_idx {p.padding_idx} is past its vocabulary of {vocab} (ids 0 to {vocab - 1}"
                + (f", or −{vocab} to −1 from the end)" if p.padding_idx < 0 else ")"),
                help=f"a padding id lies in the vocabulary: 0 to {vocab - 1} (−1 is the last, {vocab - 1})",
            )
        return TensorType(x.shape + (p.dim,), "float32")

    @classmethod
    def padding_row(cls, p, vocab: int) -> int | None:
        """The padding row counted from 0 (``padding_idx`` −1 is row ``vocab − 1``), or None."""
        if p.padding_idx is None:
            return None
        return p.padding_idx + vocab if p.padding_idx < 0 else p.padding_idx

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
        row = cls.padding_row(p, vocab)
        if row is not None:  # N(0, 1) with the padding row zeroed, as PyTorch
            return (Slot("weight", (vocab, p.dim), ("normal_zero_row", 1.0, row)),)
        return (Slot("weight", (vocab, p.dim), ("normal", 1.0)),)  # N(0, 1) as PyTorch

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        pad = [f"padding_idx {p.padding_idx}"] if p.padding_idx is not None else []
        return [f"embedding {p.dim}"] + ([f"vocab {p.vocab}"] if p.vocab else []) + pad


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
