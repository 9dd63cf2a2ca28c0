"""Multi-head attention (Vaswani et al., 2017), in ``torch.nn.MultiheadAttention``'s form; with
grouped key/value heads (``kv_heads``, Ainslie et al., 2023) and rotary position embedding on
the queries and keys (``rope``, as LLaMA) in HuggingFace ``LlamaAttention``'s form."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..dims import ShapeFail, TensorType, dadd, dmul, need_float, need_rank
from .base import Op, OpParams, Slot, fan_in
from .types import Pos, Rate


class AttentionParams(OpParams):
    op: Literal["attention"] = "attention"
    heads: Pos
    #: key/value heads, each shared by ``heads / kv_heads`` query heads (grouped-query attention);
    #: none: one per query head
    kv_heads: Pos | None = None
    causal: bool = False
    dropout: Rate = 0.0
    bias: bool = True
    #: name of a boolean mask tensor (True = attend), broadcast to (N, heads, T_q, T_k)
    mask: str | None = None
    #: rotary position embedding of the queries and keys (positions 0, 1, … of each sequence)
    rope: bool = False
    rope_base: Annotated[float, Field(gt=1)] = 10000.0

    def separate(self) -> bool:
        """Whether the projections are separate (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, as
        HuggingFace's LlamaAttention) rather than packed as ``nn.MultiheadAttention``'s."""
        return self.kv_heads is not None or self.rope

    def groups(self) -> int:
        """The number of key/value heads."""
        return self.kv_heads if self.kv_heads is not None else self.heads


class Attention(Op):
    """``attention heads [kv_heads g] [causal] [rope] [dropout p] [mask m]``; self-attention on one
    input ``(N, T, D)``, cross-attention on ``(query, memory)``.

    Shape: ``(N, T_q, D), (N, T_k, D) → (N, T_q, D)``, ``D % heads == 0``, ``heads % kv_heads == 0``.
    Params ``2·D² + 2·D·D_kv`` (Q, K, V and output projections; ``D_kv = kv_heads·D/heads``, ``D``
    without ``kv_heads``) and ``2·D + 2·D_kv`` biases: ``4·D² + 4·D`` for plain multi-head attention.
    MACs per sample ``2·T_q·D² + 2·T_k·D·D_kv + 2·T_q·T_k·D`` (projections, Q·Kᵀ, A·V).

    State: ``in_proj_weight`` (3D, D), ``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias`` as
    ``nn.MultiheadAttention``; with ``kv_heads`` or ``rope``, separate ``q_proj``, ``k_proj``,
    ``v_proj``, ``o_proj`` (``.weight``, ``.bias``) as HuggingFace's ``LlamaAttention``."""

    name = "attention"
    Params = AttentionParams
    positional = ("heads",)
    key_aliases = {"num_heads": "heads", "num_key_value_heads": "kv_heads", "rope_theta": "rope_base"}
    category = "attention"
    concat_axis = -1
    arity = (1, 2)
    tensor_params = ("mask",)

    @classmethod
    def infer(cls, p: AttentionParams, ins, ctx):
        n_main = len(ins) - (1 if p.mask else 0)
        q = ins[0]
        kv = ins[1] if n_main == 2 else q
        for i, t in enumerate(ins[:n_main]):
            need_float(ctx, t, i)
            need_rank(ctx, t, (3,), "(T, D)", i)
        d = q.shape[2]
        if not isinstance(d, int):
            raise ShapeFail(f"{ctx.name()} needs a known model dimension, got {d}")
        if kv.shape[2] != d:
            raise ShapeFail(f"{ctx.name()}: the query has dimension {d} but the keys/values have {kv.shape[2]}")
        if d % p.heads:
            raise ShapeFail(f"{ctx.name()}: {d} is not divisible by heads {p.heads}", help=f"use a number of heads that divides {d}")
        if p.heads % p.groups():
            fits = [k for k in range(1, p.heads + 1) if p.heads % k == 0]
            raise ShapeFail(
                f"{ctx.name()}: heads {p.heads} is not divisible by kv_heads {p.kv_heads}"
                f" ({p.heads} / {p.kv_heads} = {p.heads / p.kv_heads:g}): each key/value head serves a whole group of query heads",
                help=f"use kv_heads {', '.join(map(str, fits[:-1]))} or {fits[-1]}",
            )
        if p.rope and (d // p.heads) % 2:
            fits = [k for k in range(1, d + 1) if d % k == 0 and (d // k) % 2 == 0 and k % (p.kv_heads or 1) == 0]
            raise ShapeFail(
                f"{ctx.name()}: rope rotates pairs of each head's features, but a head has {d} / {p.heads} = {d // p.heads} (odd)",
                help=f"use heads {', '.join(map(str, fits[:-1]))} or {fits[-1]} (an even head size)"
                if len(fits) > 1
                else "use a model dimension that gives an even head size",
            )
        if p.mask:
            m = ins[-1]
            want = (p.heads, q.shape[1], kv.shape[1])  # the mask's sample dims align on the right
            ms = m.sample
            if len(ms) > 3 or any(a != b and a != 1 for a, b in zip(reversed(ms), reversed(want))):
                raise ShapeFail(
                    f"{ctx.name()} mask {m.show()} does not broadcast to (heads, T_q, T_k) = ({p.heads}, {q.shape[1]}, {kv.shape[1]})",
                    help="give it as (T_k) for key padding, (T_q, T_k), or (heads, T_q, T_k); true = attend",
                )
        return TensorType(q.shape, q.dtype)

    @classmethod
    def kv_dim(cls, p: AttentionParams, d: int) -> int:
        """The width of the key and value projections: ``kv_heads · D / heads``."""
        return p.groups() * (d // p.heads)

    @classmethod
    def count(cls, p: AttentionParams, ins, out, ctx):
        d = ins[0].shape[2]
        dkv = cls.kv_dim(p, d)
        return 2 * d * d + 2 * d * dkv + ((2 * d + 2 * dkv) if p.bias else 0), 0

    @classmethod
    def macs(cls, p: AttentionParams, ins, out, ctx):
        n_main = len(ins) - (1 if p.mask else 0)
        q = ins[0]
        kv = ins[1] if n_main == 2 else q
        tq, tk, d = q.shape[1], kv.shape[1], q.shape[2]
        dkv = cls.kv_dim(p, d)
        proj = dadd(dmul(tq, 2 * d * d), dmul(tk, 2 * d * dkv))  # Q and output on T_q, K and V on T_k
        return dadd(proj, dmul(dmul(tq, tk), 2 * d))  # Q·Kᵀ and A·V

    @classmethod
    def state(cls, p: AttentionParams, ins):
        d = ins[0].shape[2]
        if p.separate():  # nn.Linear's defaults, weight then bias per projection
            dkv = cls.kv_dim(p, d)
            slots: tuple[Slot, ...] = ()
            for name, rows in (("q_proj", d), ("k_proj", dkv), ("v_proj", dkv), ("o_proj", d)):
                slots += (fan_in((rows, d), d, f"{name}.weight"),)
                if p.bias:
                    slots += (fan_in((rows,), d, f"{name}.bias"),)
            return slots
        slots = (
            Slot("in_proj_weight", (3 * d, d), ("uniform", (6.0 / (d + 3 * d)) ** 0.5)),  # Xavier, as PyTorch
            fan_in((d, d), d, "out_proj.weight"),
        )
        if p.bias:
            slots += (Slot("in_proj_bias", (3 * d,), ("full", 0.0)), Slot("out_proj.bias", (d,), ("full", 0.0)))
        return slots

    @classmethod
    def summary(cls, p: AttentionParams, dims: int = 2) -> list[str]:
        words = [f"attention {p.heads} heads"] + ([f"{p.kv_heads} kv heads"] if p.kv_heads is not None else [])
        return words + (["causal"] if p.causal else []) + (["rope"] if p.rope else []) + ([f"mask {p.mask}"] if p.mask else [])
