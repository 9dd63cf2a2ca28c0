"""Multi-head attention (Vaswani et al., 2017), in ``torch.nn.MultiheadAttention``'s form."""

from __future__ import annotations

from typing import Literal

from ..shapes import ShapeFail, TensorType, dadd, dmul, need_float, need_rank
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
    def lower(cls, p: AttentionParams, ins, out, low, node):
        from tinygrad import Tensor

        from ..backend.tinygrad import fan_in_uniform, xavier_uniform

        d = ins[0].shape[2]
        layer = AttentionLayer(p)
        layer.in_proj_weight = xavier_uniform((3 * d, d))
        layer.out_proj = _Linear(fan_in_uniform((d, d), d))
        if p.bias:
            layer.in_proj_bias = Tensor.zeros(3 * d)
            layer.out_proj.bias = Tensor.zeros(d)
        return layer

    @classmethod
    def summary(cls, p: AttentionParams, dims: int = 2) -> list[str]:
        return [f"attention {p.heads} heads"] + (["causal"] if p.causal else []) + ([f"mask {p.mask}"] if p.mask else [])


class _Linear:
    def __init__(self, weight):
        self.weight = weight


class AttentionLayer:
    """``torch.nn.MultiheadAttention`` (batch first): ``in_proj_weight`` (3D, D) = [W_q; W_k; W_v],
    ``in_proj_bias`` (3D), ``out_proj.weight`` (D, D), ``out_proj.bias`` (D).
    ``(N, T_q, D)[, (N, T_k, D)][, mask] → (N, T_q, D)``."""

    def __init__(self, p: AttentionParams):
        self._p = (p,)

    def __call__(self, q, *rest):
        from tinygrad import Tensor
        from tinygrad.helpers import TRAINING

        (p,) = self._p
        mask = rest[-1] if p.mask else None
        kv = rest[0] if len(rest) - (1 if p.mask else 0) == 1 else q
        n, tq, d = q.shape
        tk = kv.shape[1]
        h = p.heads
        wq, wk, wv = self.in_proj_weight.chunk(3, dim=0)
        bq = bk = bv = None
        if hasattr(self, "in_proj_bias"):
            bq, bk, bv = self.in_proj_bias.chunk(3, dim=0)

        def heads(x, w, b, t):
            return x.linear(w.T, b).reshape(n, t, h, d // h).transpose(1, 2)

        qh, kh, vh = heads(q, wq, bq, tq), heads(kv, wk, bk, tk), heads(kv, wv, bv, tk)
        keep = None
        if p.causal:
            # query i sees keys 0..i (PyTorch's scaled_dot_product_attention(is_causal=True), top-left aligned)
            keep = Tensor.ones(tq, tk, device=q.device, dtype="bool").tril(0)
        seen = None
        if mask is not None:
            m = mask.cast("bool").reshape(n, *([1] * (4 - mask.ndim)), *mask.shape[1:])
            keep = m if keep is None else keep & m
            # a query with every key masked: output 0 as PyTorch's scaled_dot_product_attention,
            # not the NaN of a softmax over −∞ alone (which would spread to the loss and gradients)
            seen = keep.any(-1, keepdim=True)
            keep = keep | seen.logical_not()
        att = qh.scaled_dot_product_attention(kh, vh, attn_mask=keep, dropout_p=p.dropout if TRAINING else 0.0)
        if seen is not None:
            att = seen.where(att, 0)
        y = att.transpose(1, 2).reshape(n, tq, d)
        return y.linear(self.out_proj.weight.T, getattr(self.out_proj, "bias", None))
