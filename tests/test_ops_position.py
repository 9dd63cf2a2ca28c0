"""``rmsnorm``, ``posenc``, ``rope`` and attention's ``kv_heads`` / ``rope`` (issue 14).

Each op's tinygrad lowering against an independent NumPy float64 reference (outputs, and the
gradients w.r.t. the inputs and parameters by finite differences) and against PyTorch
(``torch.nn.RMSNorm``, ``F.scaled_dot_product_attention`` with repeated key/value heads, a
hand-written HuggingFace-style ``rotate_half`` rotary embedding); the ONNX export in onnxruntime
and the generated PyTorch module agree with dlspec's output; static shapes, params and MACs by
hand; bad parameters are located errors. Sizes are tiny so that few kernels compile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from backend_ref import build, check, close, randomize, softmax
from conftest import diagnostics
from tinygrad import Context, Tensor

import dlspec

RNG = np.random.default_rng(14)


@pytest.fixture(autouse=True, scope="module")
def _unoptimised_kernels():
    with Context(NOOPT=1):
        yield


# ---- NumPy float64 references ---------------------------------------------------------------------------


def rmsnorm(x, w=None, eps=1e-5):
    y = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return y * w if w is not None else y


def sinusoids(t, d, base=10000.0):
    """The paper's table, written element by element: PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(…)."""
    pe = np.zeros((t, d))
    for p in range(t):
        for i in range(d // 2):
            a = p / base ** (2 * i / d)
            pe[p, 2 * i], pe[p, 2 * i + 1] = math.sin(a), math.cos(a)
    return pe


def rope(x, base=10000.0):
    """Rotary embedding of ``x`` (N, T, *, D) as pairs: feature j and j + D/2 rotated by t·base^(−2j/D)."""
    y = np.empty_like(x)
    t, d = x.shape[1], x.shape[-1]
    for p in range(t):
        for j in range(d // 2):
            a = p * base ** (-2 * j / d)
            c, s = math.cos(a), math.sin(a)
            x1, x2 = x[:, p, ..., j], x[:, p, ..., j + d // 2]
            y[:, p, ..., j] = x1 * c - x2 * s
            y[:, p, ..., j + d // 2] = x2 * c + x1 * s
    return y


def gqa(q, kv, P, prefix, heads, kv_heads, causal=False, use_rope=False, bias=True, keep=None):
    """LlamaAttention: separate projections, key/value head j serving query heads j·r … j·r + r − 1."""
    n, tq, d = q.shape
    tk, dh = kv.shape[1], d // heads

    def lin(x, name):
        y = x @ P[f"{prefix}.{name}.weight"].T
        return y + P[f"{prefix}.{name}.bias"] if bias else y

    Q = lin(q, "q_proj").reshape(n, tq, heads, dh)
    K = lin(kv, "k_proj").reshape(n, tk, kv_heads, dh)
    V = lin(kv, "v_proj").reshape(n, tk, kv_heads, dh)
    if use_rope:
        Q, K = rope(Q), rope(K)
    Q, K, V = Q.transpose(0, 2, 1, 3), K.transpose(0, 2, 1, 3), V.transpose(0, 2, 1, 3)
    r = heads // kv_heads
    K, V = np.repeat(K, r, axis=1), np.repeat(V, r, axis=1)
    s = Q @ K.transpose(0, 1, 3, 2) / math.sqrt(dh)
    if causal:
        s = np.where(np.tril(np.ones((tq, tk), bool)), s, -np.inf)
    seen = True
    if keep is not None:
        keep = np.broadcast_to(keep, s.shape)
        seen = keep.any(-1, keepdims=True)
        s = np.where(keep | ~seen, s, -np.inf)
    o = np.where(seen, softmax(s) @ V, 0).transpose(0, 2, 1, 3).reshape(n, tq, d)
    return lin(o, "o_proj")


# ---- tinygrad against NumPy --------------------------------------------------------------------------------

OPS = """
model Positions {
  input x: [5, 8]
  input m: [3, 8]
  input key_mask: [3] bool
  output r = x -> rmsnorm
  output r2 = x -> rmsnorm eps 0.1, affine false
  output pe = x -> posenc
  output pe2 = x -> posenc base 100
  output ro = x -> rope
  output ro4 = x -> reshape [5, 2, 4] -> rope base 50
  output g = x -> attention 4 kv_heads 2 causal rope as gq
  output g1 = (x, m) -> attention 2 kv_heads 1 mask key_mask, bias false as cross
  output mh = x -> attention 2 rope as mh
}
"""


@pytest.fixture(scope="module")
def ops_net():
    net = build(OPS)
    randomize(net)
    return net


def test_ops_match_numpy_float64_with_gradients(ops_net):
    sd = ops_net.state_dict()
    assert tuple(sd["gq.k_proj.weight"].shape) == (4, 8)  # 2 kv heads of 8/4 = 2
    assert tuple(sd["gq.q_proj.weight"].shape) == (8, 8) and tuple(sd["gq.o_proj.bias"].shape) == (8,)
    assert tuple(sd["cross.v_proj.weight"].shape) == (4, 8) and "cross.v_proj.bias" not in sd
    assert "r2.weight" not in sd and tuple(sd["r.weight"].shape) == (8,)

    def ref(P, x, m, key_mask):
        return [
            rmsnorm(x, P["r.weight"]),
            rmsnorm(x, eps=0.1),
            x + sinusoids(5, 8),
            x + sinusoids(5, 8, 100.0),
            rope(x),
            rope(x.reshape(-1, 5, 2, 4), 50.0),
            gqa(x, x, P, "gq", 4, 2, causal=True, use_rope=True),
            gqa(x, m, P, "cross", 2, 1, bias=False, keep=key_mask[:, None, None, :]),
            gqa(x, x, P, "mh", 2, 2, use_rope=True),
        ]

    inputs = {"x": RNG.standard_normal((2, 5, 8)), "m": RNG.standard_normal((2, 3, 8)), "key_mask": np.array([[1, 0, 1], [0, 0, 0]], bool)}
    check(ops_net, ref, inputs)


def test_sinusoids_are_the_papers_formula():
    """The reference table itself, against the closed form of Vaswani et al. §3.5 at a few entries."""
    pe = sinusoids(50, 16)
    assert pe[0, 0::2].tolist() == [0.0] * 8 and pe[0, 1::2].tolist() == [1.0] * 8
    assert pe[7, 2] == pytest.approx(math.sin(7 / 10000 ** (2 / 16)))
    assert pe[49, 15] == pytest.approx(math.cos(49 / 10000 ** (14 / 16)))


# ---- tinygrad against PyTorch ---------------------------------------------------------------------------


torch = pytest.importorskip("torch")
F = torch.nn.functional


def hf_rotary(x: "torch.Tensor", base: float = 10000.0) -> "torch.Tensor":
    """HuggingFace's LlamaRotaryEmbedding + apply_rotary_pos_emb for ``x`` (N, heads, T, head_dim)."""
    dim, t = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)

    def rotate_half(v):
        v1, v2 = v[..., : v.shape[-1] // 2], v[..., v.shape[-1] // 2 :]
        return torch.cat((-v2, v1), dim=-1)

    return x * emb.cos() + rotate_half(x) * emb.sin()


def _torch_sd(net) -> dict:
    return {k: torch.from_numpy(t.numpy().copy()).double() for k, t in net.state_dict().items()}


def test_ops_match_pytorch(ops_net):
    x = RNG.standard_normal((2, 5, 8)).astype(np.float32)
    m = RNG.standard_normal((2, 3, 8)).astype(np.float32)
    keep = np.array([[1, 1, 0], [0, 1, 1]], bool)
    outs = ops_net(x=Tensor(x), m=Tensor(m), key_mask=Tensor(keep))
    got = dict(zip(ops_net.output_names, (o.numpy() for o in outs)))
    P = _torch_sd(ops_net)
    X, M = torch.from_numpy(x).double(), torch.from_numpy(m).double()

    norm = torch.nn.RMSNorm(8, eps=1e-5, dtype=torch.float64)
    norm.load_state_dict({"weight": P["r.weight"]})
    close(got["r"], norm(X).detach().numpy(), "rmsnorm vs torch.nn.RMSNorm")
    close(got["r2"], F.rms_norm(X, (8,), eps=0.1).numpy(), "rmsnorm affine false vs F.rms_norm")

    heads = X.reshape(2, 5, 2, 4).transpose(1, 2)  # rope on (N, T, heads, head_dim) = HF's on (N, heads, T, head_dim)
    close(got["ro4"], hf_rotary(heads, 50.0).transpose(1, 2).numpy(), "rope vs HuggingFace's rotate_half")
    close(got["ro"], hf_rotary(X[:, None])[:, 0].numpy(), "rope (T, D) vs HuggingFace's rotate_half")

    def llama(q, kv, prefix, h, g, causal=False, use_rope=False, mask=None):
        n, tq, d = q.shape
        dh = d // h

        def lin(t, name):
            return F.linear(t, P[f"{prefix}.{name}.weight"], P.get(f"{prefix}.{name}.bias"))

        Q = lin(q, "q_proj").view(n, tq, h, dh).transpose(1, 2)
        K = lin(kv, "k_proj").view(n, -1, g, dh).transpose(1, 2)
        V = lin(kv, "v_proj").view(n, -1, g, dh).transpose(1, 2)
        if use_rope:
            Q, K = hf_rotary(Q), hf_rotary(K)
        K, V = K.repeat_interleave(h // g, dim=1), V.repeat_interleave(h // g, dim=1)  # HF's repeat_kv
        y = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask, is_causal=causal)
        return lin(y.transpose(1, 2).reshape(n, tq, d), "o_proj")

    with torch.no_grad():
        close(got["g"], llama(X, X, "gq", 4, 2, causal=True, use_rope=True).numpy(), "grouped-query attention vs SDPA")
        mask = torch.from_numpy(keep)[:, None, None, :]
        close(got["g1"], llama(X, M, "cross", 2, 1, mask=mask).numpy(), "1 kv head, masked, vs SDPA")
        close(got["mh"], llama(X, X, "mh", 2, 2, use_rope=True).numpy(), "rope multi-head vs SDPA")
        # SDPA's own grouped-query mode gives the same
        n = 2
        Q = F.linear(X, P["gq.q_proj.weight"], P["gq.q_proj.bias"]).view(n, 5, 4, 2).transpose(1, 2)
        K = F.linear(X, P["gq.k_proj.weight"], P["gq.k_proj.bias"]).view(n, 5, 2, 2).transpose(1, 2)
        V = F.linear(X, P["gq.v_proj.weight"], P["gq.v_proj.bias"]).view(n, 5, 2, 2).transpose(1, 2)
        y = F.scaled_dot_product_attention(hf_rotary(Q), hf_rotary(K), V, is_causal=True, enable_gqa=True)
        y = F.linear(y.transpose(1, 2).reshape(n, 5, 8), P["gq.o_proj.weight"], P["gq.o_proj.bias"])
        close(got["g"], y.numpy(), "grouped-query attention vs SDPA enable_gqa")


# ---- the ONNX export and the PyTorch code agree with dlspec -----------------------------------------------------

SMALL = """
block SwiGLU(d, ff) {
  g = dense ff, bias false as gate_proj
  u = x -> dense ff, bias false as up_proj
  silu(g) * u -> dense d, bias false as down_proj
}

model Small {
  input tokens: [T] int vocab 20
  input keep: [T] bool
  e = tokens -> embedding 16 as embed
  p = e -> posenc -> rmsnorm
  h = p -> attention 4 kv_heads 2 causal rope, bias false as att
  c = h -> attention 2 kv_heads 1 mask keep as masked
  r = c -> reshape [-1, 4, 4] -> rope base 100 -> flatten start 2
  output y = r -> rmsnorm eps 1e-6 -> SwiGLU(16, 24) as mlp -> dense 20, bias false
}
"""


def _small_inputs(t: int):
    rng = np.random.default_rng(t)
    return {"tokens": rng.integers(0, 20, (2, t)).astype(np.int64), "keep": rng.random((2, t)) < 0.7}


@pytest.fixture(scope="module")
def small():
    prog = dlspec.load(SMALL)
    net = prog.build(device="CPU", seed=0)
    randomize(net, seed=3)
    return prog, net


def _dlspec_out(net, inputs):
    return net(tokens=Tensor(inputs["tokens"].astype(np.int32)), keep=Tensor(inputs["keep"])).numpy()


def test_onnx_export_agrees(small):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from dlspec.backends import onnx as onnx_export

    prog, net = small
    model = onnx_export.build_model(prog.ir(), prog.shapes(), {k: t.numpy() for k, t in net.state_dict().items()})
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for t in (3, 6):  # any length: the positions are read at run time
        inputs = _small_inputs(t)
        (got,) = sess.run(None, inputs)
        want = _dlspec_out(net, inputs)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_pytorch_export_agrees(small, tmp_path):
    import importlib.util

    from dlspec.backends.torch import generate

    prog, net = small
    source = generate(prog.ir(), prog.shapes(), prog)
    assert "nn.RMSNorm(16, eps=1e-05)" in source and "GroupedQueryAttention(16, 4, 2, bias=False, rope_base=10000.0)" in source
    path = tmp_path / "small_generated.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("small_generated", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.Small()
    model.load_state_dict({k: torch.from_numpy(t.numpy().copy()) for k, t in net.state_dict().items()}, strict=True)
    model.eval()
    for t in (3, 6):
        inputs = _small_inputs(t)
        with torch.no_grad():
            got = model(torch.from_numpy(inputs["tokens"]), torch.from_numpy(inputs["keep"])).numpy()
        want = _dlspec_out(net, inputs)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


# ---- static shapes, params, MACs ---------------------------------------------------------------------------------


def test_static_shapes_params_and_macs():
    prog = dlspec.load(SMALL)
    shapes = prog.shapes()
    assert shapes["flatten1"].json() == ["N", "T", 16] and shapes["rope1"].json() == ["N", "T", 4, 4]
    rep = {r["path"]: r for r in prog.report(seq={"T": 10})["layers"]}
    d, h, g = 16, 4, 2
    dkv = g * d // h
    assert rep["att"]["params"] == 2 * d * d + 2 * d * dkv  # q, o (d, d); k, v (d_kv, d); no biases
    assert rep["masked"]["params"] == 2 * d * d + 2 * d * 8 + 2 * d + 2 * 8  # 1 kv head of 8, biases
    assert rep["att"]["macs"] == 10 * d * d * 2 + 10 * d * dkv * 2 + 2 * 10 * 10 * d
    for path in ("posenc1", "rope1"):
        assert rep[path]["params"] == 0 and rep[path]["macs"] == 0
    assert rep["rmsnorm1"]["params"] == 16
    # plain multi-head attention keeps torch.nn.MultiheadAttention's count 4D² + 4D
    mha = dlspec.load("model M {\n  input x: [T, 16]\n  attention 4 kv_heads 4\n}\n")
    assert mha.report()["params"] == 4 * 16 * 16 + 4 * 16


# ---- bad parameters are located ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, message, help",
    [
        ("attention 8 kv_heads 3", "heads 8 is not divisible by kv_heads 3 (8 / 3 = 2.66667)", "use kv_heads 1, 2, 4 or 8"),
        ("attention 4 kv_heads 8", "heads 4 is not divisible by kv_heads 8", "use kv_heads 1, 2 or 4"),
        ("attention 8 rope", "a head has 24 / 8 = 3 (odd)", "use heads 1, 2, 3, 4, 6 or 12 (an even head size)"),
        ("attention 4 kv_heads 0", "'kv_heads' must be > 0, got 0", None),
        ("attention 4 rope_base 1", "'rope_base' must be > 1.0, got 1", None),
        ("reshape [-1, 3, 8] -> rope", None, None),
        ("dense 7 -> rope", "but it has 7 (an odd number)", "give it an even size, e.g. 8"),
        ("dense 7 -> posenc", "but it has 7 (an odd number)", None),
        ("posenc base 0.5", "'base' must be > 1.0, got 0.5", None),
        ("rmsnorm eps 0", "'eps' must be > 0.0, got 0", None),
        ("rmsnorm epsilon 1e-6", "unknown parameter 'epsilon' for rmsnorm — did you mean 'eps'?", None),
        ("attention 4 kv_head 2", "unknown parameter 'kv_head' for attention — did you mean 'kv_heads'?", None),
    ],
)
def test_bad_parameters_are_located(layer, message, help):
    text = f"model M {{\n  input x: [T, 24]\n  {layer}\n}}\n"
    out = diagnostics(text)
    if message is None:  # a valid use, for contrast
        assert out == "", out
        return
    assert "t.dl:3:" in out and "error:" in out and message in out, out
    assert "^" in out and "Traceback" not in out
    if help:
        assert f"help: {help}" in out, out


def test_rope_and_posenc_need_a_sequence():
    out = diagnostics("model M {\n  input x: [24]\n  rope\n}\n")
    assert "t.dl:3:3: error: rope 'rope1' expects a (T, D) or (T, heads, head_dim) sequence but gets (24)" in out, out
    out = diagnostics("model M {\n  input x: [T, 2, 4]\n  posenc\n}\n")
    assert "posenc 'posenc1' expects a (T, D) sequence but gets (T, 2, 4)" in out, out
