"""The tinygrad target's table: op name → lowering, and the layer classes they build.

A lowering is ``fn(node, p, ins, out, low) → callable``: ``p`` the node's params, ``ins``/``out``
its static types, ``low`` the :class:`~dlspec.backends.tinygrad.Lowering` (the node's initial
tensors by slot name — :func:`dlspec.state.initial`, the one naming contract — its resolved
window, the layers built so far). Layers keep their tensors as attributes named after the
state-dict slots, so ``get_state_dict`` gives the spec's keys (``layer1.0.conv1.weight``).
"""

from __future__ import annotations

from typing import Any, Callable

from tinygrad import Tensor, dtypes, nn
from tinygrad.helpers import TRAINING

from ... import ops
from ...errors import BackendError, Diagnostic, UsageError
from ...ops.pad import pairs as pad_pairs
from ...ops.window import Window, window_out
from .tree import Hidden

# ---- activations and elementwise functions ---------------------------------------------------


def _elu(x, alpha: float):
    """As PyTorch, gradient included: ``alpha`` at exactly 0 (tinygrad's ``elu`` gives 0 there).
    The exp sees only the non-positive part, so a large x never overflows into the gradient."""
    neg = (x > 0).where(0, x)
    return (x > 0).where(x, alpha * (neg.exp() - 1))


def _step(x, p):
    hard = (x > p.threshold).cast(x.dtype)
    return x + (hard - x).detach()  # forward: the step; backward: identity (straight-through)


def _relu6(x):
    """``min(max(0, x), 6)`` with PyTorch's gradient (1 strictly between 0 and 6, else 0)."""
    return (x <= 0).where(0, (x >= 6).where(6, x))


def _glu(x, p):
    a, b = x.chunk(2, dim=p.axis)
    return a * b.sigmoid()


def _maxout(x, p):
    c = x.shape[1]
    return x.reshape(x.shape[0], c // p.pieces, p.pieces, *x.shape[2:]).max(axis=2)


FUNCTIONS: dict[str, Callable[[Any, Any], Any]] = {
    "linear": lambda x, p: x,
    "identity": lambda x, p: x,
    "sigmoid": lambda x, p: x.sigmoid(),
    "tanh": lambda x, p: x.tanh(),
    "relu": lambda x, p: x.relu(),
    "silu": lambda x, p: x.silu(),
    "abs": lambda x, p: x.abs(),
    "exp": lambda x, p: x.exp(),
    "log": lambda x, p: x.log(),
    "sqrt": lambda x, p: x.sqrt(),
    "neg": lambda x, p: -x,
    "step": _step,
    "softmax": lambda x, p: x.softmax(axis=p.axis),
    "log_softmax": lambda x, p: x.log_softmax(axis=p.axis),
    "maxout": _maxout,
    "elu": lambda x, p: _elu(x, p.alpha),
    "leaky_relu": lambda x, p: (x > 0).where(x, p.slope * x),
    "gelu": lambda x, p: 0.5 * x * (1 + (x * 0.7071067811865476).erf()) if p.approximate == "none" else x.gelu(),
    "softplus": lambda x, p: x.softplus(beta=p.beta),
    "relu6": lambda x, p: _relu6(x),
    "hardswish": lambda x, p: x * _relu6(x + 3) * (1 / 6),
    "hardsigmoid": lambda x, p: _relu6(x + 3) * (1 / 6),
    "mish": lambda x, p: x * x.softplus().tanh(),
    "sin": lambda x, p: x.sin(),
    "cos": lambda x, p: x.cos(),
    "glu": _glu,
}


def _function(node, p, ins, out, low):
    fn = FUNCTIONS[node.op]
    return lambda x: fn(x, p)


class PreluLayer:
    """``x if x > 0 else a·x`` with ``weight`` a (1 or C,) as PyTorch's PReLU (slope ``a`` at 0)."""

    def __init__(self, weight):
        self.weight = weight

    def __call__(self, x):
        a = self.weight if self.weight.shape[0] == 1 or x.ndim < 2 else self.weight.reshape(1, -1, *([1] * (x.ndim - 2)))
        return (x > 0).where(x, a * x)


# ---- convolution and pooling ------------------------------------------------------------------


class ConvLayer:
    """``(N, C_in, *S) → (N, filters, *S')`` with ``weight`` (filters, C_in/groups, *kernel)."""

    def __init__(self, weight, bias, window: Window, groups: int):
        self.weight = weight
        if bias is not None:
            self.bias = bias
        self._cfg = (window, groups)

    def __call__(self, x):
        w, g = self._cfg
        if w.padded():
            x = x.pad(((0, 0), (0, 0), *w.pads))
        return x.conv2d(self.weight, getattr(self, "bias", None), groups=g, stride=w.stride, dilation=w.dilation, padding=0)


class DeconvLayer:
    """``(N, C_in, *S) → (N, filters, *S')``, weight (C_in, filters/groups, *kernel) as PyTorch."""

    def __init__(self, weight, bias, window: Window, groups: int):
        self.weight = weight
        if bias is not None:
            self.bias = bias
        self._cfg = (window, groups)

    def __call__(self, x):
        w, groups = self._cfg
        y = x.conv_transpose2d(self.weight, None, groups=groups, stride=w.stride, dilation=w.dilation, padding=0)
        # crop the padding (asymmetric allowed) and add output_padding rows at the end
        slices, extra = [], []
        for size, (pb, pa), op in zip(y.shape[2:], w.pads, w.output_padding):
            end = size - pa + op
            slices.append((pb, min(end, size)))
            extra.append((0, max(0, end - size)))
        y = y.shrink(((0, y.shape[0]), (0, y.shape[1]), *slices))
        if any(e for _, e in extra):
            y = y.pad(((0, 0), (0, 0), *extra))
        if hasattr(self, "bias"):
            y = y + self.bias.reshape(1, -1, *([1] * w.dims))
        return y


class PoolLayer:
    """Max/avg pooling over the last ``n`` axes (PyTorch's arithmetic; padding is −∞ for max)."""

    def __init__(self, p, n: int, window: Window | None):
        self._cfg = (p, n, window)

    def __call__(self, x):
        p, n, w = self._cfg
        axes = tuple(range(2, 2 + n))
        if p.scope == "global":
            return x.max(axis=axes, keepdim=True) if p.kind == "max" else x.mean(axis=axes, keepdim=True)
        if p.scope == "adaptive":
            size = p.size if isinstance(p.size, tuple) else (p.size,) * n
            k = tuple(s_in // s_out for s_in, s_out in zip(x.shape[2:], size))
            return x.max_pool2d(kernel_size=k, stride=k) if p.kind == "max" else x.avg_pool2d(kernel_size=k, stride=k)
        k, s, d, pairs = w.kernel, w.stride, w.dilation, w.pads
        if p.ceil:
            # PyTorch's ceil mode: extra windows may hang over the right edge (not counted for avg);
            # computed from the runtime size (a symbolic length has no static overhang)
            extra = []
            for size, kk, ss, dd, (pb, pa) in zip(x.shape[2:], k, s, d, pairs):
                o = window_out(size, kk, ss, dd, pb, pa, True)
                extra.append(max(0, (o - 1) * ss + dd * (kk - 1) + 1 - (size + pb + pa)))
        else:
            extra = [0] * n
        full = [(pb, pa + e) for (pb, pa), e in zip(pairs, extra)]
        if p.kind == "max":
            if any(a or b for a, b in full):
                x = x.pad(((0, 0), (0, 0), *full), value=float("-inf"))
            return x.max_pool2d(kernel_size=k, stride=s, dilation=d)
        # average: divide by the window's size counting padding (count_include_pad) but never the ceil overhang
        include_pad = p.count_include_pad if p.count_include_pad is not None else p.padding != "same"
        xp = x.pad(((0, 0), (0, 0), *full)) if any(a or b for a, b in full) else x
        total = xp.avg_pool2d(kernel_size=k, stride=s, dilation=d)
        if not any(extra) and (include_pad or not w.padded()):
            return total
        ones = Tensor.ones(1, 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        if include_pad:
            ones = ones.pad(((0, 0), (0, 0), *pairs), value=1.0)
            ones = ones.pad(((0, 0), (0, 0), *[(0, e) for e in extra]))
        else:
            ones = ones.pad(((0, 0), (0, 0), *full))
        kprod = 1
        for kk in k:
            kprod *= kk
        counts = ones.avg_pool2d(kernel_size=k, stride=s, dilation=d) * kprod
        return total * kprod / counts


# ---- dense, embeddings, normalisation ------------------------------------------------------------


class DenseLayer:
    """``(N, *, F_in) → (N, *, units)``: ``x Wᵀ + b`` with ``weight`` (units, F_in) as PyTorch's Linear.
    A tied layer holds no weight of its own: it uses its embedding's (vocab, dim) weight."""

    def __init__(self, weight, bias, tied=None):
        if tied is not None:
            self.tied = tied  # a Hidden holding the embedding layer: not walked by get_state_dict
        else:
            self.weight = weight
        if bias is not None:
            self.bias = bias

    def __call__(self, x):
        w = self.tied.value.weight if hasattr(self, "tied") else self.weight
        return x.linear(w.T, getattr(self, "bias", None))


class EmbeddingLayer:
    """``(N, *) int → (N, *, dim)``: rows of ``weight`` (vocab, dim). A ``padding`` row passes no
    gradient to the weight (its value is read as it is, as ``torch.nn.Embedding``'s)."""

    def __init__(self, weight, padding: int | None = None):
        self.weight = weight
        self._padding = (padding,)

    def __call__(self, idx):
        vocab, dim = self.weight.shape
        w = self.weight
        (pad,) = self._padding
        if pad is not None:
            row = Tensor.arange(vocab).to(w.device).reshape(vocab, 1) == pad
            w = row.where(w.detach(), w)
        big = (*idx.shape, vocab, dim)  # a fused select-and-sum: nothing of this size is materialised
        rows = Tensor.arange(vocab, dtype=idx.dtype).to(idx.device).reshape(vocab, 1).expand(big)  # arange takes no device
        return (rows == idx.reshape(*idx.shape, 1, 1).expand(big)).where(w.expand(big), 0).sum(-2)


def _embedding(node, p, ins, out, low):
    from ...ops.embedding import Embedding

    weight = low.arrays(node)["weight"]
    return EmbeddingLayer(weight, Embedding.padding_row(p, weight.shape[0]))


class PosEmbedLayer:
    """``(N, T, D) → (N, T, D)``: adds ``weight[:T]`` (length, D)."""

    def __init__(self, weight):
        self.weight = weight

    def __call__(self, x):
        if x.shape[1] > self.weight.shape[0]:
            raise UsageError(f"posembed encodes at most {self.weight.shape[0]} positions but the sequence has {x.shape[1]}")
        return x + self.weight[: x.shape[1]]


class CountingBatchNorm(nn.BatchNorm):
    """tinygrad's BatchNorm rebinds ``num_batches_tracked`` (``+= 1``) instead of updating it in
    place, so a TinyJit-replayed training step never counted; this one assigns. It refuses a
    training batch with one value per channel (the unbiased variance would divide by 0).

    On a batch split across devices (a net built on several, :func:`dlspec.backends.tinygrad.build`)
    tinygrad's BatchNorm reduces over the whole batch: the statistics of all devices together, as
    PyTorch's ``SyncBatchNorm`` — what ``sync`` (``sync_bn true``) asks for. Without ``sync`` each
    device's share is normalised with its own statistics, as PyTorch's ``DataParallel`` does, and
    the running statistics are updated from the first device's share (``DataParallel`` keeps the
    first replica's; ``DistributedDataParallel`` broadcasts rank 0's)."""

    def __init__(self, node, *args, sync: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._node = (node,)
        self.sync = bool(sync)

    def __call__(self, x):
        devices = x.device if isinstance(x.device, tuple) else ()
        split = bool(TRAINING) and len(devices) > 1 and x.uop.axis == 0 and not self.sync
        share = len(devices) if split else 1
        if TRAINING and x.numel() // share <= x.shape[1]:
            (node,) = self._node
            each = f" on each of {share} devices" if split else ""
            raise BackendError(
                Diagnostic(
                    f"batchnorm '{node.path}' needs more than 1 value per channel{each} when training, got input of shape {tuple(x.shape)}",
                    node.span,
                    help="train with a batch of 2 or more samples per device (or evaluate in the eval phase)",
                )
            )
        counter = self.num_batches_tracked
        out = self._per_device(x, share) if split else super().__call__(x)
        if self.num_batches_tracked is not counter:
            counter.assign(self.num_batches_tracked)
            self.num_batches_tracked = counter
        return out

    def _per_device(self, x, d: int):
        """Training on a batch split across ``d`` devices: each share normalised with its own
        statistics; the running statistics from the first device's share (unbiased variance of
        its ``N/d·H·W`` values per channel)."""
        c = x.shape[1]
        groups = x.reshape(d, x.shape[0] // d, *x.shape[1:])  # one group per device: axis 0 stays the split one
        axes = (1, *range(3, groups.ndim))
        mean = groups.mean(axis=axes, keepdim=True)  # (d, 1, C, 1, …), each on its device
        var = ((groups - mean.detach()) ** 2).mean(axis=axes, keepdim=True)  # d(var)/d(mean) = 0, as tinygrad's
        if self.track_running_stats:
            first = (Tensor.arange(d) == 0).float().reshape(d, 1)  # picks device 0's row (a sum over the devices)
            mean0 = (mean.reshape(d, c).detach() * first).sum(0)
            var0 = (var.reshape(d, c).detach() * first).sum(0)
            m = groups.numel() // (d * c)  # values per channel on one device
            self.running_mean.assign((1 - self.momentum) * self.running_mean + self.momentum * mean0)
            self.running_var.assign((1 - self.momentum) * self.running_var + self.momentum * m / (m - 1) * var0)
            self.num_batches_tracked += 1
        y = ((groups - mean) * (var + self.eps).rsqrt()).reshape(x.shape)
        shape = (1, c, *([1] * (x.ndim - 2)))
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        return y + self.bias.reshape(shape) if self.bias is not None else y


def _adopt(layer, arrays: dict[str, Tensor]):
    """Give a tinygrad ``nn`` layer the initial tensors of its slots (the values it would have
    chosen itself: ones, zeros), keeping the buffers non-trainable."""
    for name, t in arrays.items():
        old = getattr(layer, name, None)
        if old is not None and hasattr(old, "requires_grad") and old.requires_grad is False:
            t.requires_grad = False
        setattr(layer, name, t)
    return layer


# ---- attention and recurrences -------------------------------------------------------------------


class _Linear:
    def __init__(self, weight, bias=None):
        self.weight = weight
        if bias is not None:
            self.bias = bias


class AttentionLayer:
    """``torch.nn.MultiheadAttention`` (batch first): ``in_proj_weight`` (3D, D) = [W_q; W_k; W_v],
    ``in_proj_bias`` (3D), ``out_proj.weight`` (D, D), ``out_proj.bias`` (D).
    ``(N, T_q, D)[, (N, T_k, D)][, mask] → (N, T_q, D)``. With ``kv_heads`` or ``rope``, as
    HuggingFace's LlamaAttention: ``q_proj`` (D, D), ``k_proj`` and ``v_proj`` (kv_heads·D/heads, D),
    ``o_proj`` (D, D); key/value head j serves query heads j·r … j·r + r − 1 (r = heads/kv_heads),
    queries and keys rotated by :func:`rotary` (positions 0, 1, … of each sequence)."""

    def __init__(self, p):
        self._p = (p,)

    def __call__(self, q, *rest):
        (p,) = self._p
        mask = rest[-1] if p.mask else None
        kv = rest[0] if len(rest) - (1 if p.mask else 0) == 1 else q
        n, tq, d = q.shape
        tk = kv.shape[1]
        h = p.heads
        if p.separate():
            g, dh = p.groups(), d // h

            def proj(x, lin, t, k):  # (N, T, k, D/heads)
                return x.linear(lin.weight.T, getattr(lin, "bias", None)).reshape(n, t, k, dh)

            qh, kh, vh = proj(q, self.q_proj, tq, h), proj(kv, self.k_proj, tk, g), proj(kv, self.v_proj, tk, g)
            if p.rope:
                qh, kh = rotary(qh, p.rope_base), rotary(kh, p.rope_base)
            qh, kh, vh = qh.transpose(1, 2), kh.transpose(1, 2), vh.transpose(1, 2)
            if g != h:
                kh, vh = kh.repeat_interleave(h // g, dim=1), vh.repeat_interleave(h // g, dim=1)
            out_proj = self.o_proj
        else:
            wq, wk, wv = self.in_proj_weight.chunk(3, dim=0)
            bq = bk = bv = None
            if hasattr(self, "in_proj_bias"):
                bq, bk, bv = self.in_proj_bias.chunk(3, dim=0)

            def heads(x, w, b, t):
                return x.linear(w.T, b).reshape(n, t, h, d // h).transpose(1, 2)

            qh, kh, vh = heads(q, wq, bq, tq), heads(kv, wk, bk, tk), heads(kv, wv, bv, tk)
            out_proj = self.out_proj
        keep = None
        if p.causal:
            # query i sees keys 0..i (PyTorch's scaled_dot_product_attention(is_causal=True), top-left aligned)
            keep = Tensor.ones(tq, tk, device=q.device, dtype="bool").tril(0)
        seen = None
        if mask is not None:
            m = mask.cast("bool").reshape(mask.shape[0], *([1] * (4 - mask.ndim)), *mask.shape[1:])  # a constant mask: batch 1
            keep = m if keep is None else keep & m
            # a query with every key masked: output 0 as PyTorch's scaled_dot_product_attention,
            # not the NaN of a softmax over −∞ alone (which would spread to the loss and gradients)
            seen = keep.any(-1, keepdim=True)
            keep = keep | seen.logical_not()
        att = qh.scaled_dot_product_attention(kh, vh, attn_mask=keep, dropout_p=p.dropout if TRAINING else 0.0)
        if seen is not None:
            att = seen.where(att, 0)
        y = att.transpose(1, 2).reshape(n, tq, d)
        return y.linear(out_proj.weight.T, getattr(out_proj, "bias", None))


# ---- positions and RMS norm (dlspec/ops/position.py, dlspec/ops/norm.py) -----------------------------


def _angles(t: int, d: int, base: float, device) -> Tensor:
    """``t'·base^(−2j/d)`` for positions ``t' < t`` and pairs ``j < d/2``: (t, d/2), float32."""
    from ...ops.position import frequencies

    pos = Tensor.arange(t).to(device).cast("float32").reshape(t, 1)  # arange takes no device
    return pos * Tensor(frequencies(d, base), device=device, dtype="float32").reshape(1, d // 2)


def rotary(x, base: float):
    """The rotary embedding of ``x`` (N, T, *, D): positions along axis 1, pairs ``(j, j + D/2)`` of
    the last axis rotated by ``t·base^(−2j/D)``: ``x·cos + rotate_half(x)·sin`` (HuggingFace's LLaMA)."""
    t, d = x.shape[1], x.shape[-1]
    a = _angles(t, d, base, x.device)
    a = a.cat(a, dim=-1).reshape(1, t, *([1] * (x.ndim - 3)), d)
    cos, sin = a.cos().cast(x.dtype), a.sin().cast(x.dtype)
    half = d // 2
    rotated = (-x[..., half:]).cat(x[..., :half], dim=-1)
    return x * cos + rotated * sin


def sinusoids(x, base: float):
    """``x`` (N, T, D) plus the Transformer's position encoding: ``sin`` on even features, ``cos`` on odd."""
    t, d = x.shape[1], x.shape[2]
    a = _angles(t, d, base, x.device)
    return x + Tensor.stack(a.sin(), a.cos(), dim=-1).reshape(1, t, d).cast(x.dtype)


class RmsNormLayer:
    """``torch.nn.RMSNorm`` over the last axis: ``x / √(mean(x²) + eps) · weight``."""

    def __init__(self, weight, eps: float):
        if weight is not None:
            self.weight = weight
        self._cfg = (eps,)

    def __call__(self, x):
        (eps,) = self._cfg
        y = x * (x.square().mean(axis=-1, keepdim=True) + eps).rsqrt()
        return y * self.weight if hasattr(self, "weight") else y


class RecurrentLayer:
    """``torch.nn.RNN/LSTM/GRU`` with ``batch_first``: parameters ``weight_ih_l{k}[_reverse]``
    (g·H, F_k), ``weight_hh_l{k}`` (g·H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}``; LSTM gates in the
    order i, f, g, o, GRU r, z, n. ``(N, T, F) → (N, T, D·H)`` or the last step ``(N, D·H)``.

    Compiled as a compiler would: the input projection of every step is one matmul, and each
    step's state is a kernel boundary (``contiguous``) so that every step reuses the same kernels."""

    def __init__(self, kind: str, p):
        self._cfg = (kind, p)

    def _step(self, kind, p, gx, h, c, w_hh, b_hh):
        gh = h.linear(w_hh.T, b_hh)
        if kind == "lstm":
            i, f, g, o = (gx + gh).chunk(4, dim=-1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
        elif kind == "gru":
            xr, xz, xn = gx.chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
            n = (xn + r * hn).tanh()
            h = (1 - z) * n + z * h
        else:
            h = (gx + gh).tanh() if p.nonlinearity == "tanh" else (gx + gh).relu()
        return h, c

    def _scan(self, kind, p, xp, h, c, w_hh, b_hh, reverse):
        """All steps of one layer and direction as :func:`dlspec.backends.tinygrad.scan.scan`: one
        compiled step replayed T times, back-propagation through time one step at a time."""
        from .scan import scan

        def step(gx, st):
            h2, c2 = self._step(kind, p, gx, st[0], st[1] if kind == "lstm" else None, w_hh, b_hh)
            return h2, ((h2, c2) if kind == "lstm" else (h2,))

        init = (h, c) if kind == "lstm" else (h,)
        return scan(step, xp, [w for w in (w_hh, b_hh) if w is not None], init, reverse=reverse)

    def __call__(self, x):
        from . import scan

        kind, p = self._cfg
        n, t = x.shape[0], x.shape[1]
        dirs = 2 if p.bidirectional else 1
        inp = x
        last = []
        for layer_i in range(p.layers):
            outs = []
            last = []
            for d in range(dirs):
                sfx = f"_l{layer_i}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
                b_ih, b_hh = getattr(self, "bias_ih" + sfx, None), getattr(self, "bias_hh" + sfx, None)
                xp = inp.linear(w_ih.T, b_ih)  # (N, T, g·H): all steps in one matmul
                h = Tensor.zeros(n, p.hidden, device=x.device, dtype=x.dtype)
                c = h if kind == "lstm" else None
                if scan.enabled():
                    ys_t = self._scan(kind, p, xp, h, c, w_hh, b_hh, reverse=d == 1)
                    outs.append(ys_t)
                    last.append(ys_t[:, t - 1] if d == 0 else ys_t[:, 0])
                    continue
                ys: list = [None] * t
                for step in range(t) if d == 0 else reversed(range(t)):
                    h, c = self._step(kind, p, xp[:, step].contiguous(), h, c, w_hh, b_hh)
                    h = h.contiguous()
                    if c is not None:
                        c = c.contiguous()
                    ys[step] = h
                outs.append(Tensor.stack(*ys, dim=1))
                last.append(h)
            inp = outs[0] if dirs == 1 else outs[0].cat(outs[1], dim=2)
            if p.dropout and TRAINING and layer_i < p.layers - 1:
                inp = inp.dropout(p.dropout)
        if p.sequences:
            return inp
        return last[0] if dirs == 1 else last[0].cat(last[1], dim=1)


class CellLayer:
    """A user cell run over time: ``(N, T, F) → (N, T, H)`` or ``(N, H)``. Its step's layers are
    attributes named after their paths (placed by the backend); states start at zero and each
    step's new state is a kernel boundary so all steps share compiled kernels. The tensors after
    the sequence are the cell's ``context``s, read whole at every step."""

    def __init__(self, p, body):
        self._cfg = (p, body)

    def __call__(self, x, *contexts):
        from . import scan

        p, hidden = self._cfg
        body, layers = hidden.value
        n, t = x.shape[0], x.shape[1]
        given = dict(zip(p.contexts, contexts))
        init = tuple(
            given[st.init].cast(x.dtype).expand(n, *st.shape)
            if st.init is not None
            else Tensor.zeros(n, *st.shape, device=x.device, dtype=x.dtype)
            for st in p.states
        )

        def step(x_t, states, ctx=contexts):
            vals = {p.step_input: x_t, **dict(zip(p.contexts, ctx))}
            for st, v in zip(p.states, states):
                vals[st.node] = v
            for node in body:
                if node.op == "step_in":
                    continue
                vals[node.path] = layers[node.path](*(vals[i] for i in node.inputs))
            return vals[p.step_output], tuple(vals[st.update] for st in p.states)

        if scan.enabled() and not (TRAINING and _random(body)):
            # one compiled step replayed T times; BPTT one step at a time (dlspec.backends.tinygrad.scan)
            ys = scan.scan(
                step,
                x,
                scan.parameters_of(list(layers.values())),
                init,
                context=contexts,
                init_grad=[st.init is not None for st in p.states],
            )
            return ys if p.sequences else ys[:, t - 1]
        # unrolled: random draws (dropout, sampling) or running statistics in the step must not be
        # recomputed by the step-wise backward
        states, outs = init, []
        for i in range(t):
            y, states = step(x[:, i], states)
            states = tuple(s.contiguous() for s in states)
            outs.append(y)
        return Tensor.stack(*outs, dim=1) if p.sequences else outs[-1]


def _random(body) -> bool:
    """Whether a step draws random numbers or updates running statistics in training."""
    return any(n.op in ("dropout", "sample", "batchnorm") or getattr(n.params, "dropout", 0) or getattr(n.params, "rate", 0) for n in body)


# ---- merges, shape ops, sampling ---------------------------------------------------------------


def _add(*xs):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def _mul(*xs):
    y = xs[0]
    for x in xs[1:]:
        y = y * x
    return y


def _arith(node, p, ins, out, low):
    def arith(*xs):
        it = iter(xs)
        a = p.left if p.left is not None else next(it)
        b = p.right if p.right is not None else next(it)
        if p.fn == "add":
            return a + b
        if p.fn == "sub":
            return a - b
        if p.fn == "mul":
            return a * b
        if p.fn == "div":
            return a / b
        return a**b

    return arith


def _pad(node, p, ins, out, low):
    pairs = pad_pairs(p, ins[0].rank)
    if p.mode == "constant":
        return lambda t: t.pad(pairs, value=p.value)
    return lambda t: t.pad(pairs, mode=p.mode)


def _upsample(node, p, ins, out, low):
    n = ins[0].rank - 2
    scale = p.scale if isinstance(p.scale, tuple) else (p.scale,) * n

    def up(x):
        y = x
        if p.mode == "nearest":  # repeat each element: PyTorch's 'nearest' for integer scales
            for ax, s in enumerate(scale, start=2):
                y = y.repeat_interleave(s, dim=ax)
            return y
        # (bi/tri)linear, one spatial axis at a time (moved last for tinygrad's interpolate); a
        # scale of 1 is the identity in both corner modes
        for ax, s in enumerate(scale, start=2):
            if s != 1:
                moved = y.transpose(ax, -1)
                y = moved.interpolate(size=(moved.shape[-1] * s,), mode="linear", align_corners=p.align_corners).transpose(ax, -1)
        return y

    return up


def sample(mu, logvar):
    """``mu + exp(logvar/2)·ε`` in training (the phase is read when the graph is built); ``mu`` in eval."""
    if not TRAINING:
        return mu
    return mu + (logvar * 0.5).exp() * mu.randn_like(dtype=mu.dtype)  # split across devices as mu is


def _tile(node, p, ins, out, low):
    from ...ops.tiling import reps

    counts = reps(ins[0], out)
    return lambda x: x.repeat(*counts) if any(c != 1 for c in counts) else x


def _roll(node, p, ins, out, low):
    shifts = p.shifts if isinstance(p.shifts, tuple) else (p.shifts,)
    axes = tuple(a + ins[0].rank if a < 0 else a for a in (p.axis if isinstance(p.axis, tuple) else (p.axis,)))
    return lambda x: x.roll(shifts, axes)


def drop_path(x, rate: float):
    """Stochastic depth, as timm's ``drop_path``: in training (read when the graph is built) each
    sample is kept with probability ``1 − rate`` and scaled by ``1/(1 − rate)``, else zeroed."""
    if not TRAINING or rate == 0:
        return x
    keep = 1.0 - rate
    rows = x.shrink(((0, x.shape[0]),) + ((0, 1),) * (x.ndim - 1))  # one value per sample, split across devices as x is
    mask = (rows.rand_like(dtype=dtypes.float32) < keep).cast(x.dtype)
    return x * mask * (1.0 / keep)


def _reshape(node, p, ins, out, low):
    dims = [d if isinstance(d, int) else -1 for d in p.shape]
    return lambda x: x.reshape(x.shape[0], *dims)


# ---- tensors: subscripts, pieces, crops, learned and constant tensors, reductions -------------------


def _batched(xs):
    """Tensors with a batch axis of 1 (learned or constant ones) expanded to the others' batch."""
    n = max(x.shape[0] for x in xs)
    return [x.expand(n, *x.shape[1:]) if x.shape[0] != n else x for x in xs]


def _slice(node, p, ins, out, low):
    from ...ops.tensor import resolve_items, show_items

    items = resolve_items(p.items, ins[0].rank, node.path)
    index = tuple(it if isinstance(it, int) else slice(*it) for it in items)
    # axes whose size is known only at run time: the bounds the static shape assumed must hold
    need = []
    for k, (it, d) in enumerate(zip(items, ins[0].shape)):
        if not isinstance(d, int):
            start, stop = (it, None) if isinstance(it, int) else it[:2]
            least = [start + 1 if start >= 0 else -start] if start is not None else []  # a position inside the axis
            least += [stop if stop >= 0 else 1 - stop] if stop is not None else []  # an end within it
            if least:
                need.append((k, max(least)))

    def run(x):
        for k, n in need:
            if x.shape[k] < n:
                raise UsageError(f"{node.path} {show_items(p.items)} at {node.span} needs axis {k} of size {n} or more, got {x.shape[k]}")
        return x[index]

    return run


def _pieces(node, p, ins, out, low):
    from ... import ops

    op = ops.get(node.op)
    axis = p.axis + ins[0].rank if p.axis < 0 else p.axis

    def run(x):
        _, a, b = op.piece_bounds(p, x.shape[axis])
        return x.shrink(tuple((a, b) if k == axis else (0, d) for k, d in enumerate(x.shape)))

    return run


def _crop(node, p, ins, out, low):
    def run(x, like=None):
        n = x.ndim - 2
        want = like.shape[2:] if like is not None else (p.size if isinstance(p.size, tuple) else (p.size,) * n)
        box = [(0, x.shape[0]), (0, x.shape[1])]
        for d, o in zip(x.shape[2:], want):
            box.append(((d - o) // 2, (d - o) // 2 + o))
        return x.shrink(tuple(box))

    return run


class ParamLayer:
    """A learned tensor (``param``): its one state-dict entry is the layer's path itself (the
    ``_asdict`` that ``get_state_dict`` reads gives it the empty name); called, it is ``(1, *shape)``."""

    def __init__(self, weight):
        self.weight = weight

    def _asdict(self):
        return {"": self.weight}

    def __call__(self):
        return self.weight.reshape(1, *self.weight.shape)


def _param(node, p, ins, out, low):
    if low.init is None:  # the NULL device: nothing drawn
        (slot,) = ops.get(node.op).state(p, ins)
        return ParamLayer(Tensor.empty(*slot.shape))
    return ParamLayer(Tensor(low.init[node.path]))


def _dtype(name: str):
    from . import DTYPES

    return DTYPES[name]


def _constant(node, p, ins, out, low):
    from tinygrad import Device

    from ... import ops

    device, dtype = low.device or Device.DEFAULT, _dtype(ops.get(node.op).dtype(p))  # the net's device(s): a copy on each
    value = {"zeros": 0, "ones": 1}.get(node.op, getattr(p, "value", 0))
    return lambda: Tensor.full((1, *p.shape), value, dtype=dtype, device=device)


def _arange(node, p, ins, out, low):
    from tinygrad import Device

    from ... import ops

    device, dtype = low.device or Device.DEFAULT, _dtype(ops.get(node.op).dtype(p))
    n = out.shape[1]

    def run():  # start + i·step for i < n: torch.arange's values (a float step is not accumulated)
        i = Tensor.arange(n).to(device)
        if dtype.name.startswith(("float", "bfloat", "half")):
            return (i.cast(dtype) * p.step + p.start).reshape(1, n)
        return (i * p.step + p.start).cast(dtype).reshape(1, n)

    return run


def _reduce(node, p, ins, out, low):
    rank = ins[0].rank
    axes = (
        tuple(range(1, rank))
        if p.axis is None
        else tuple(a + rank if a < 0 else a for a in (p.axis if isinstance(p.axis, tuple) else (p.axis,)))
    )
    to_int = node.op == "sum" and not ins[0].is_float()

    def run(x):
        if to_int:
            x = x.cast("int64")
        return getattr(x, node.op)(axis=axes, keepdim=p.keepdim)

    return run


def matmul(a, b):
    """``torch.matmul`` per sample: a ``(N, k)`` sample vector is a row on the left, a column on the
    right; the batch axes line up, and the samples' other leading axes broadcast right-aligned."""
    va, vb = a.ndim == 2, b.ndim == 2
    a2, b2 = (a.unsqueeze(-2) if va else a), (b.unsqueeze(-1) if vb else b)
    if a2.ndim != b2.ndim:  # axes of 1 after the batch axis of the one with fewer
        short, n = (a2, b2.ndim - a2.ndim) if a2.ndim < b2.ndim else (b2, a2.ndim - b2.ndim)
        short = short.reshape(short.shape[0], *([1] * n), *short.shape[1:])
        a2, b2 = (short, b2) if a2.ndim < b2.ndim else (a2, short)
    y = a2 @ b2
    if va:
        y = y.squeeze(-2)
    if vb:
        y = y.squeeze(-1)
    return y


# ---- the table ----------------------------------------------------------------------------------


def _conv(node, p, ins, out, low):
    a = low.arrays(node)
    return ConvLayer(a["weight"], a.get("bias"), low.window(node), p.groups)


def _deconv(node, p, ins, out, low):
    a = low.arrays(node)
    return DeconvLayer(a["weight"], a.get("bias"), low.window(node), p.groups)


def _dense(node, p, ins, out, low):
    a = low.arrays(node)
    tied = Hidden(low.layer(p.tied)) if p.tied else None
    return DenseLayer(a.get("weight"), a.get("bias"), tied)


def _batchnorm(node, p, ins, out, low):
    bn = CountingBatchNorm(
        node, ins[0].shape[1], eps=p.eps, affine=p.affine, track_running_stats=True, momentum=p.momentum, sync=low.sync_bn
    )
    return _adopt(bn, low.arrays(node))


def _layernorm(node, p, ins, out, low):
    return _adopt(nn.LayerNorm(ins[0].shape[-1], eps=p.eps, elementwise_affine=p.affine), low.arrays(node))


def _groupnorm(node, p, ins, out, low):
    return _adopt(nn.GroupNorm(p.groups, ins[0].shape[1], eps=p.eps, affine=p.affine), low.arrays(node))


def _attention(node, p, ins, out, low):
    a = low.arrays(node)
    layer = AttentionLayer(p)
    if p.separate():
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(layer, name, _Linear(a[f"{name}.weight"], a.get(f"{name}.bias")))
        return layer
    layer.in_proj_weight = a["in_proj_weight"]
    layer.out_proj = _Linear(a["out_proj.weight"], a.get("out_proj.bias"))
    if "in_proj_bias" in a:
        layer.in_proj_bias = a["in_proj_bias"]
    return layer


def _recurrent(node, p, ins, out, low):
    layer = RecurrentLayer(node.op, p)
    for name, t in low.arrays(node).items():
        setattr(layer, name, t)
    return layer


def _cell(node, p, ins, out, low):
    body = [low.node(path) for path in p.body]
    layers = {n.path: low.layer(n.path) for n in body if n.op != "step_in"}
    return CellLayer(p, Hidden((body, layers)))


def _fixed(fn: Callable) -> Callable:
    """A lowering for an op whose callable needs nothing from the node."""
    return lambda node, p, ins, out, low: fn


TRANSFORMS: dict[str, Callable] = {
    **{name: _function for name in FUNCTIONS},
    "prelu": lambda node, p, ins, out, low: PreluLayer(low.arrays(node)["weight"]),
    "conv": _conv,
    "deconv": _deconv,
    "pool": lambda node, p, ins, out, low: PoolLayer(p, ins[0].rank - 2, low.window(node)),
    "dense": _dense,
    "dropout": lambda node, p, ins, out, low: lambda x: x.dropout(p.rate),
    "embedding": _embedding,
    "posembed": lambda node, p, ins, out, low: PosEmbedLayer(low.arrays(node)["weight"]),
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "groupnorm": _groupnorm,
    "attention": _attention,
    # positions and RMS norm (dlspec/ops/position.py, dlspec/ops/norm.py)
    "rmsnorm": lambda node, p, ins, out, low: RmsNormLayer(low.arrays(node).get("weight"), p.eps),
    "posenc": lambda node, p, ins, out, low: lambda x: sinusoids(x, p.base),
    "rope": lambda node, p, ins, out, low: lambda x: rotary(x, p.base),
    "rnn": _recurrent,
    "lstm": _recurrent,
    "gru": _recurrent,
    "cell": _cell,
    "concat": lambda node, p, ins, out, low: lambda *xs: Tensor.cat(*_batched(xs), dim=p.axis) if len(xs) > 1 else xs[0],
    "add": _fixed(_add),
    "multiply": _fixed(_mul),
    "arith": _arith,
    "pad": _pad,
    "flatten": lambda node, p, ins, out, low: lambda x: x.flatten(p.start),
    "reshape": _reshape,
    "permute": lambda node, p, ins, out, low: lambda x: x.permute(0, *p.dims),
    "upsample": _upsample,
    "sample": _fixed(sample),
    # tensors (dlspec/ops/tensor.py) and reductions (dlspec/ops/reduce.py)
    "slice": _slice,
    "split": _pieces,
    "chunk": _pieces,
    "crop": _crop,
    "param": _param,
    "zeros": _constant,
    "ones": _constant,
    "full": _constant,
    "arange": _arange,
    "tril": lambda node, p, ins, out, low: lambda x: x.tril(p.diagonal),
    "triu": lambda node, p, ins, out, low: lambda x: x.triu(p.diagonal),
    "mean": _reduce,
    "sum": _reduce,
    "max": _reduce,
    "min": _reduce,
    "matmul": _fixed(matmul),
    "transpose": lambda node, p, ins, out, low: lambda x: x.transpose(p.dim0, p.dim1),
    # tiling, circular shifts and stochastic depth (dlspec/ops/tiling.py, dlspec/ops/dropout.py)
    "tile": _tile,
    "roll": _roll,
    "droppath": lambda node, p, ins, out, low: lambda x: drop_path(x, p.rate),
}
