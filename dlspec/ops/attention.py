"""Multi-head attention (Vaswani et al., 2017), in ``torch.nn.MultiheadAttention``'s form."""

from __future__ import annotations

from typing import Literal

from ..dims import ShapeFail, TensorType, dadd, dmul, need_float, need_rank
from .base import Op, OpParams, Slot, fan_in
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
    def count(cls, p: AttentionParams, ins, out, ctx):
        d = ins[0].shape[2]
        return 4 * d * d + (4 * d if p.bias else 0), 0

    @classmethod
    def macs(cls, p: AttentionParams, ins, out, ctx):
        n_main = len(ins) - (1 if p.mask else 0)
        q = ins[0]
        kv = ins[1] if n_main == 2 else q
        tq, tk, d = q.shape[1], kv.shape[1], q.shape[2]
        proj = dmul(dadd(dmul(tq, 2), dmul(tk, 2)), d * d)  # Q and output on T_q, K and V on T_k
        return dadd(proj, dmul(dmul(tq, tk), 2 * d))  # Q·Kᵀ and A·V

    @classmethod
    def state(cls, p: AttentionParams, ins):
        d = ins[0].shape[2]
        slots = (
            Slot("in_proj_weight", (3 * d, d), ("uniform", (6.0 / (d + 3 * d)) ** 0.5)),  # Xavier, as PyTorch
            fan_in((d, d), d, "out_proj.weight"),
        )
        if p.bias:
            slots += (Slot("in_proj_bias", (3 * d,), ("full", 0.0)), Slot("out_proj.bias", (d,), ("full", 0.0)))
        return slots

    @classmethod
    def summary(cls, p: AttentionParams, dims: int = 2) -> list[str]:
        return [f"attention {p.heads} heads"] + (["causal"] if p.causal else []) + ([f"mask {p.mask}"] if p.mask else [])
