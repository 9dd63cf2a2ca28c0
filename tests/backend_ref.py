"""Independent NumPy float64 references for the backend tests, and the helpers that run a
built model forward and backward and compare it with them (finite differences for gradients).

The references follow PyTorch's definitions (``torch.nn.functional`` conv/pool arithmetic,
``nn.MultiheadAttention``, ``nn.LSTM/GRU/RNN`` equations and gate order); none of them calls
tinygrad or dlspec."""

from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor

import dlspec

RTOL, ATOL = 1e-3, 1e-4
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def build(text: str, model: str | None = None, seed: int = 0, **args):
    return dlspec.load(text).build(model, device="CPU", seed=seed, **args)


def is_buffer(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in BUFFERS


def randomize(net, seed: int = 0, scale: float = 0.5) -> None:
    """Random values in every float tensor (biases are often zero-initialised, which would hide bugs)."""
    rng = np.random.default_rng(seed)
    for k, t in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            a = rng.uniform(0.5, 1.5, size=t.shape)
        else:
            a = rng.standard_normal(size=t.shape) * scale
        t.assign(Tensor(a.astype(np.float32), device=t.device)).realize()


def params64(net) -> dict[str, np.ndarray]:
    return {k: t.numpy().astype(np.float64) for k, t in net.state_dict().items()}


def feeds(inputs: dict[str, np.ndarray]) -> dict[str, Tensor]:
    out = {}
    for k, v in inputs.items():
        if v.dtype.kind == "f":
            out[k] = Tensor(v.astype(np.float32))
        elif v.dtype == np.bool_:
            out[k] = Tensor(v)
        else:
            out[k] = Tensor(v.astype(np.int32))
    return out


def run(net, inputs: dict[str, np.ndarray], train: bool = False, seed: int = 1):
    """Forward, then backward of ``Σ_i Σ outputs_i · R_i`` (R random). Returns the outputs,
    the R's (float32-rounded, as float64) and the gradients by input name / parameter key."""
    rng = np.random.default_rng(seed)
    tin = feeds(inputs)
    outs = net(**tin, train=train)
    outs = outs if isinstance(outs, tuple) else (outs,)
    rs = [rng.standard_normal(o.shape).astype(np.float32) for o in outs]
    trainable = {k: t for k, t in net.state_dict().items() if not is_buffer(k)}
    for t in trainable.values():
        t.grad = None
    loss = sum(((o * Tensor(r)).sum() for o, r in zip(outs, rs)), Tensor(0.0))
    loss.backward()
    grads = {}
    for k, t in tin.items():
        if inputs[k].dtype.kind == "f":
            grads[k] = t.grad.numpy().astype(np.float64) if t.grad is not None else np.zeros(t.shape)
    for k, t in trainable.items():
        grads[k] = t.grad.numpy().astype(np.float64) if t.grad is not None else np.zeros(t.shape)
    return [o.numpy().astype(np.float64) for o in outs], [r.astype(np.float64) for r in rs], grads


def close(got, want, what: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs reference {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def fd_grad(f, arr: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``f()`` w.r.t. ``arr`` (perturbed in place)."""
    g = np.zeros_like(arr)
    flat, gf = arr.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f()
        flat[i] = old - eps
        lo = f()
        flat[i] = old
        gf[i] = (hi - lo) / (2 * eps)
    return g


def check(net, ref, inputs: dict[str, np.ndarray], train: bool = False, grads: bool = True, atol: float = ATOL):
    """Outputs against ``ref(P, **inputs) -> list`` and every gradient (float inputs and
    trainable parameters) against finite differences of the reference. Returns (outputs, P)."""
    outs, rs, tg = run(net, inputs, train=train)
    P = params64(net)
    X = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    want = ref(P, **X)
    assert len(want) == len(outs)
    for name, o, w in zip(net.output_names, outs, want):
        close(o, w, f"output {name}", atol=atol)
    if grads:

        def loss():
            return sum(float((np.asarray(o) * r).sum()) for o, r in zip(ref(P, **X), rs))

        for k, v in X.items():
            if v.dtype.kind == "f":
                close(tg[k], fd_grad(loss, v), f"d loss / d input {k}", atol=10 * atol)
        for k in P:
            if not is_buffer(k):
                close(tg[k], fd_grad(loss, P[k]), f"d loss / d {k}", atol=10 * atol)
    return outs, P


# ---- references -------------------------------------------------------------------------------


def conv2d(x, w, b=None, stride=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), groups=1):
    """PyTorch's conv2d (cross-correlation); ``pads`` = ((top, bottom), (left, right))."""
    x = np.pad(x, ((0, 0), (0, 0), *pads))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for g in range(groups):
        xg, wg = x[:, g * cg : (g + 1) * cg], w[g * og : (g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
                y[:, g * og : (g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv1d(x, w, b=None, stride=1, dilation=1, pads=(0, 0), groups=1):
    return conv2d(x[:, :, None], w[:, :, None], b, (1, stride), (1, dilation), ((0, 0), pads), groups)[:, :, 0]


def deconv2d(x, w, b=None, stride=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), opad=(0, 0), groups=1):
    """PyTorch's conv_transpose2d by scattering; weight (C_in, out/groups, kh, kw)."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // groups
    (sh, sw), (dh, dw) = stride, dilation
    fh, fw = (h - 1) * sh + dh * (kh - 1) + 1, (wd - 1) * sw + dw * (kw - 1) + 1
    full = np.zeros((n, og * groups, fh + opad[0], fw + opad[1]))
    for g in range(groups):
        xg, wg = x[:, g * cg : (g + 1) * cg], w[g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                full[:, g * og : (g + 1) * og, i * dh : i * dh + sh * (h - 1) + 1 : sh, j * dw : j * dw + sw * (wd - 1) + 1 : sw] += (
                    np.einsum("nchw,co->nohw", xg, wg[:, :, i, j])
                )
    oh, ow = fh - sum(pads[0]) + opad[0], fw - sum(pads[1]) + opad[1]
    y = full[:, :, pads[0][0] : pads[0][0] + oh, pads[1][0] : pads[1][0] + ow]
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def pool_size(size, k, s, d, pb, pa, ceil):
    """PyTorch's pooling_output_shape."""
    o = (size + pb + pa - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (o - 1) * s >= size + pb:
        o -= 1
    return o


def pool2d(x, kind, k, s, pads=((0, 0), (0, 0)), dilation=(1, 1), ceil=False, count_include_pad=True):
    """Max/avg pooling exactly as PyTorch's CPU kernels (avg: the divisor counts the padding
    inside ``[−pad_before, size + pad_after)`` but never the ceil-mode overhang)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = k, s, dilation
    (pt, pb), (pl, pr) = pads
    oh, ow = pool_size(h, kh, sh, dh, pt, pb, ceil), pool_size(w, kw, sw, dw, pl, pr, ceil)
    y = np.empty((n, c, oh, ow))
    for a in range(oh):
        for bb in range(ow):
            hs, ws = a * sh - pt, bb * sw - pl
            if kind == "max":
                vals = [
                    x[:, :, r, q]
                    for r in range(hs, hs + dh * (kh - 1) + 1, dh)
                    for q in range(ws, ws + dw * (kw - 1) + 1, dw)
                    if 0 <= r < h and 0 <= q < w
                ]
                y[:, :, a, bb] = np.max(vals, axis=0)
            else:
                he, we = min(hs + kh, h + pb), min(ws + kw, w + pr)
                size = (he - hs) * (we - ws)
                h0, h1, w0, w1 = max(hs, 0), min(he, h), max(ws, 0), min(we, w)
                total = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3))
                y[:, :, a, bb] = total / (size if count_include_pad else (h1 - h0) * (w1 - w0))
    return y


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


_erf = np.vectorize(math.erf)


def gelu(x, tanh=False):
    if tanh:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def batchnorm_train(x, w, b, eps=1e-5):
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = [1, -1] + [1] * (x.ndim - 2)
    m, v = x.mean(axis=axes), x.var(axis=axes)
    y = (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)
    n = x.size // x.shape[1]
    return y, m, v * n / (n - 1)


def batchnorm_eval(x, w, b, rm, rv, eps=1e-5):
    shape = [1, -1] + [1] * (x.ndim - 2)
    return (x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + eps) * w.reshape(shape) + b.reshape(shape)


def layernorm(x, w, b, eps=1e-5):
    m, v = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def groupnorm(x, groups, w, b, eps=1e-5):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    shape = [1, -1] + [1] * (x.ndim - 2)
    return g.reshape(x.shape) * w.reshape(shape) + b.reshape(shape)


def mha(q, kv, P, prefix, heads, keep=None):
    """``nn.MultiheadAttention(batch_first=True)`` with ``keep`` (True = attend) broadcast to (N, h, T_q, T_k);
    a query that may attend to no key gets a zero attention output (then ``out_proj``'s bias)."""
    n, tq, d = q.shape
    tk, dh = kv.shape[1], d // heads
    w, b = P[prefix + ".in_proj_weight"], P.get(prefix + ".in_proj_bias", np.zeros(3 * d))
    Q, K, V = q @ w[:d].T + b[:d], kv @ w[d : 2 * d].T + b[d : 2 * d], kv @ w[2 * d :].T + b[2 * d :]

    def split(t, length):
        return t.reshape(n, length, heads, dh).transpose(0, 2, 1, 3)

    Q, K, V = split(Q, tq), split(K, tk), split(V, tk)
    s = Q @ K.transpose(0, 1, 3, 2) / math.sqrt(dh)
    seen = True
    if keep is not None:  # a query with no key to attend to gets 0 (scaled_dot_product_attention's rule)
        keep = np.broadcast_to(keep, s.shape)
        seen = keep.any(-1, keepdims=True)
        s = np.where(keep | ~seen, s, -np.inf)
    o = np.where(seen, softmax(s) @ V, 0).transpose(0, 2, 1, 3).reshape(n, tq, d)
    return o @ P[prefix + ".out_proj.weight"].T + P.get(prefix + ".out_proj.bias", 0)


def recurrent(kind, x, P, prefix, hidden, layers=1, bidirectional=False, sequences=True, nonlinearity="tanh"):
    """``torch.nn.RNN/LSTM/GRU(batch_first=True)``: LSTM gates i, f, g, o; GRU r, z, n with
    ``n = tanh(W_in x + b_in + r·(W_hn h + b_hn))``. Not sequences: the final hidden state of
    the last layer (forward direction's, then the reverse direction's: ``h_n``)."""
    n, t, _ = x.shape
    inp = x
    lasts = []
    for layer in range(layers):
        outs, lasts = [], []
        for d in range(2 if bidirectional else 1):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            wi, wh = P[f"{prefix}.weight_ih{sfx}"], P[f"{prefix}.weight_hh{sfx}"]
            bi, bh = P.get(f"{prefix}.bias_ih{sfx}", 0), P.get(f"{prefix}.bias_hh{sfx}", 0)
            h = np.zeros((n, hidden))
            c = np.zeros((n, hidden))
            ys = [None] * t
            for step in range(t) if d == 0 else reversed(range(t)):
                gi, gh = inp[:, step] @ wi.T + bi, h @ wh.T + bh
                if kind == "lstm":
                    i, f, g, o = np.split(gi + gh, 4, axis=-1)
                    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                    h = sigmoid(o) * np.tanh(c)
                elif kind == "gru":
                    ir, iz, inn = np.split(gi, 3, axis=-1)
                    hr, hz, hn = np.split(gh, 3, axis=-1)
                    r, z = sigmoid(ir + hr), sigmoid(iz + hz)
                    nn_ = np.tanh(inn + r * hn)
                    h = (1 - z) * nn_ + z * h
                else:
                    h = np.tanh(gi + gh) if nonlinearity == "tanh" else np.maximum(gi + gh, 0)
                ys[step] = h
            outs.append(np.stack(ys, axis=1))
            lasts.append(h)
        inp = np.concatenate(outs, axis=-1)
    return inp if sequences else np.concatenate(lasts, axis=-1)


def linear_1d(x, axis, scale):
    """PyTorch's linear interpolation (align_corners False) by an integer scale along ``axis``."""
    size = x.shape[axis]
    out = np.arange(size * scale)
    src = np.clip((out + 0.5) / scale - 0.5, 0, None)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    frac = src - lo
    shape = [1] * x.ndim
    shape[axis] = -1
    return np.take(x, lo, axis=axis) * (1 - frac).reshape(shape) + np.take(x, hi, axis=axis) * frac.reshape(shape)
