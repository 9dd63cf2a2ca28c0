"""Token embedding and learned positional embedding."""

from __future__ import annotations

from typing import Literal

from ..shapes import ShapeFail, TensorType, need_float, need_rank
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
    def summary(cls, p, dims: int = 2) -> list[str]:
        return [f"embedding {p.dim}"] + ([f"vocab {p.vocab}"] if p.vocab else [])

    @classmethod
    def lower(cls, p, ins, out, low, node):
        from ..backend.tinygrad import normal

        return EmbeddingLayer(normal((cls.vocab(p, ins[0], None), p.dim)))  # N(0, 1) as PyTorch


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
    def summary(cls, p, dims: int = 2) -> list[str]:
        return [f"posembed {p.length}"]

    @classmethod
    def lower(cls, p, ins, out, low, node):
        from ..backend.tinygrad import normal

        return PosEmbedLayer(normal((p.length, ins[0].shape[2]), 0.02))  # N(0, 0.02²) as GPT-2


class EmbeddingLayer:
    """``(N, *) int → (N, *, dim)``: rows of ``weight`` (vocab, dim)."""

    def __init__(self, weight):
        self.weight = weight

    def __call__(self, idx):
        from tinygrad import Tensor

        vocab, dim = self.weight.shape
        big = (*idx.shape, vocab, dim)  # a fused select-and-sum: nothing of this size is materialised
        rows = Tensor.arange(vocab, dtype=idx.dtype).to(idx.device).reshape(vocab, 1).expand(big)  # arange takes no device
        return (rows == idx.reshape(*idx.shape, 1, 1).expand(big)).where(self.weight.expand(big), 0).sum(-2)


class PosEmbedLayer:
    """``(N, T, D) → (N, T, D)``: adds ``weight[:T]`` (length, D)."""

    def __init__(self, weight):
        self.weight = weight

    def __call__(self, x):
        if x.shape[1] > self.weight.shape[0]:
            from ..errors import UsageError

            raise UsageError(f"posembed encodes at most {self.weight.shape[0]} positions but the sequence has {x.shape[1]}")
        return x + self.weight[: x.shape[1]]
