"""Cells with a context (issue 14): ``context memory`` gives a cell tensors it reads whole at
every step (an encoder's outputs), ``state s: [...] init s0`` starts a state from one of them,
and a cell may call any block, including blocks with several ``input``s.

Checked: static shapes and params (counted once, by hand arithmetic), the tinygrad runtime
against NumPy float64 unrolled references (outputs, and every gradient — of the context and of
a learned initial state too — against finite differences of the reference), the ONNX export
(onnxruntime) and the generated PyTorch module against the runtime; the zoo specs that need
contexts (Bahdanau et al.'s RNNsearch, counted also by a PyTorch module built here, and the
Neural Turing Machine, trained on the copy task); and the located errors."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
from backend_ref import build, check, randomize, softmax
from conftest import ROOT, diagnostics

import dlspec

SPECS = ROOT / "specs"

ATTEND = """
block Additive(units) {
  input query: [5]
  input memory: [T, 4]
  wq = query -> dense units, bias false -> reshape [1, units]
  um = memory -> dense units
  alpha = wq + um -> tanh -> dense 1, bias false as v -> softmax axis 1
  sum(alpha * memory, axis = 1)
}

cell AttnStep(hidden) {
  context memory
  state h: [hidden]
  c = (h, memory) -> Additive(6) as attend
  h = (x, h, c) -> dense hidden -> tanh
}

model Ctx {
  input enc: [T, 4]
  input tgt: [S, 3]
  output seq = (tgt, enc) -> AttnStep(5) as dec
  output last = tgt -> AttnStep(5, memory = enc, sequences = false) as last
}
"""

INIT = """
cell Mem(hidden) {
  context start
  context bias
  state h: [hidden] init start
  h = (x, h) -> dense hidden -> tanh
  h = h + bias
}

model Init {
  input s: [S, 2]
  input b: [4]
  param h0: [4] init normal
  output seq = (s, h0, b) -> Mem(4) as rnn
}
"""


def attend_ref(P, p, s, m, sequences):
    """The AttnStep cell unrolled in float64: additive attention over ``m`` from the state."""
    h = np.zeros((s.shape[0], 5))
    ys = []
    for t in range(s.shape[1]):
        q = h @ P[f"{p}.attend.dense1.weight"].T
        u = m @ P[f"{p}.attend.um.weight"].T + P[f"{p}.attend.um.bias"]
        alpha = softmax(np.tanh(q[:, None, :] + u) @ P[f"{p}.attend.v.weight"].T, axis=1)  # (N, T, 1)
        c = (alpha * m).sum(1)
        h = np.tanh(np.concatenate([s[:, t], h, c], -1) @ P[f"{p}.dense1.weight"].T + P[f"{p}.dense1.bias"])
        ys.append(h)
    return np.stack(ys, 1) if sequences else h


def init_ref(P, s, b):
    h = np.broadcast_to(P["h0"], (s.shape[0], 4))
    ys = []
    for t in range(s.shape[1]):
        h = np.tanh(np.concatenate([s[:, t], h], -1) @ P["rnn.dense1.weight"].T + P["rnn.dense1.bias"]) + b
        ys.append(h)
    return [np.stack(ys, 1)]


def randn(*shape, seed=3):
    return np.random.default_rng(seed).standard_normal(shape)


# ---- static ------------------------------------------------------------------------------------------------


def test_shapes_and_params_are_counted_once():
    prog = dlspec.load(ATTEND)
    shapes = prog.shapes("Ctx")
    assert shapes["dec"].json() == ["N", "S", 5]
    assert shapes["last"].json() == ["N", 5]
    assert shapes["dec.memory"].json() == ["N", "T", 4]  # the context inside: whole, every step
    assert shapes["dec.attend.um"].json() == ["N", "T", 6]
    # a call: W q 5·6, U m 4·6 + 6, v 6, the update (3 + 5 + 4)·5 + 5 = 125; two calls
    one = 5 * 6 + (4 * 6 + 6) + 6 + ((3 + 5 + 4) * 5 + 5)
    assert prog.report("Ctx")["params"] == 2 * one
    g = prog.ir("Ctx")
    cell = next(n for n in g.nodes if n.path == "dec")
    assert cell.inputs == ("tgt", "enc")
    assert cell.params.contexts == ("dec.memory",)
    # the context placeholder is a step input of the body, not a second copy of the encoder
    assert next(n for n in g.nodes if n.path == "dec.memory").op == "step_in"


def test_a_state_starts_from_a_context():
    prog = dlspec.load(INIT)
    (st,) = next(n for n in prog.ir("Init").nodes if n.op == "cell").params.states
    assert st.init == "rnn.start"
    assert prog.report("Init")["params"] == 4 + (2 + 4) * 4 + 4  # h0 counted once, in the model


# ---- the runtime against NumPy -------------------------------------------------------------------------------


def test_context_runtime_matches_numpy_forward_and_gradients():
    """The decoder's encoder outputs get their gradient through the step-wise backward (the
    scan), summed over the steps; a block with two inputs runs inside the cell."""
    net = build(ATTEND)
    randomize(net)

    def ref(P, enc, tgt):
        return [attend_ref(P, "dec", tgt, enc, True), attend_ref(P, "last", tgt, enc, False)]

    outs, _ = check(net, ref, {"enc": randn(2, 3, 4), "tgt": randn(2, 2, 3, seed=4)})
    assert [o.shape for o in outs] == [(2, 2, 5), (2, 5)]


def test_learned_initial_state_matches_numpy_forward_and_gradients():
    net = build(INIT)
    randomize(net)
    check(net, init_ref, {"s": randn(2, 3, 2), "b": randn(2, 4, seed=5)})


def test_the_unrolled_graph_computes_what_the_scan_computes():
    """The lazy unrolled build (used for dropout in a step, and for shape traces) reads the
    contexts and the initial state as the step-wise scan does."""
    from dlspec.backends.tinygrad import scan

    for text, inputs in ((ATTEND, {"enc": randn(2, 3, 4), "tgt": randn(2, 2, 3, seed=4)}), (INIT, {"s": randn(2, 3, 2), "b": randn(2, 4)})):
        net = build(text)
        randomize(net)
        want = _runtime(net, {k: v.astype(np.float32) for k, v in inputs.items()})
        with scan.unrolled():
            got = _runtime(net, {k: v.astype(np.float32) for k, v in inputs.items()})
        _close(got, want, "unrolled")


# ---- exports ------------------------------------------------------------------------------------------------------


def _weights(net):
    return {k: t.numpy() for k, t in net.state_dict().items()}


def _runtime(net, inputs):
    from tinygrad import Tensor

    outs = net(**{k: Tensor(v) for k, v in inputs.items()})
    return [o.numpy() for o in (outs if isinstance(outs, tuple) else (outs,))]


def _inputs(prog, model, env, seed=0):
    from dlspec.dims import dvalue

    rng = np.random.default_rng(seed)
    out = {}
    for name, t in prog.shapes(model).input_types():
        dims = [dvalue(d, env) for d in t.shape]
        out[name] = rng.standard_normal(dims).astype(np.float32) if t.is_float() else rng.integers(0, t.vocab, dims).astype(np.int64)
    return out


def _close(got, want, what):
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape, what
        err = np.abs(np.asarray(g, np.float64) - w).max() / max(1.0, np.abs(w).max())
        assert err < 1e-4, f"{what}: relative error {err:.2e}"


def onnx_outputs(prog, model, weights, inputs):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from dlspec.backends.onnx import build_model

    m = build_model(prog.ir(model), prog.shapes(model), weights, opset=17)
    onnx.checker.check_model(m, full_check=True)
    scan = next(n for n in m.graph.node if n.op_type == "Scan")
    assert dict((a.name, a.i) for a in scan.attribute if a.type == onnx.AttributeProto.INT)["num_scan_inputs"] == 1
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


_count = itertools.count()


def torch_outputs(prog, model, weights, inputs, folder: Path):
    torch = pytest.importorskip("torch")
    from dlspec.backends.torch import generate

    source = generate(prog.ir(model), prog.shapes(model), prog)
    path = folder / f"ctx_{next(_count)}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = getattr(mod, prog.ir(model).name)()
    m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
    m.eval()
    feeds = [torch.from_numpy(inputs[i]) for i in prog.ir(model).inputs]
    with torch.no_grad():
        out = m(*feeds)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))], source


@pytest.mark.parametrize(
    "text,model,signature",
    [(ATTEND, "Ctx", "(self, seq: Tensor, memory: Tensor)"), (INIT, "Init", "(self, seq: Tensor, start: Tensor, bias: Tensor)")],
    ids=["attention", "initial-state"],
)
def test_onnx_and_pytorch_exports_match_the_runtime(text, model, signature, tmp_path):
    prog = dlspec.load(text)
    net = prog.build(model, device="CPU", seed=0)
    randomize(net)
    weights = _weights(net)
    inputs = _inputs(prog, model, {"N": 2, "T": 4, "S": 3})
    want = _runtime(net, inputs)
    _close(onnx_outputs(prog, model, weights, inputs), want, "onnxruntime")
    got, source = torch_outputs(prog, model, weights, inputs, tmp_path)
    _close(got, want, "pytorch")
    assert f"def forward{signature} -> Tensor:" in source  # the contexts after the sequence


# ---- RNNsearch (Bahdanau et al. 2015) ---------------------------------------------------------------------


def test_rnnsearch_count_by_hand():
    K, m, n, na, ll = 30000, 620, 1000, 1000, 500
    by_hand = (
        K * m  # source embedding
        + 2 * (3 * n * (m + n) + 6 * n)  # bidirectional GRU encoder
        + 2 * n * na  # keys U h_j
        + n * n  # W_s of s0 = tanh(W_s ←h_1)
        + K * m  # target embedding
        + n * na
        + na  # W s and v of the alignment model
        + 3 * ((m + n + 2 * n) * n + n)  # z, r, candidate
        + (n + m + 2 * n) * 2 * ll
        + 2 * ll  # t̃ before the maxout of pairs
        + ll * K
        + K  # W_o
    )
    prog = dlspec.load(SPECS / "seq2seq_attention.dl")
    assert by_hand == 80_447_000
    assert prog.report("RNNsearch")["params"] == by_hand
    text = (SPECS / "seq2seq_attention.dl").read_text(encoding="utf-8")
    assert "total 80,447,000" in text


def test_rnnsearch_count_equals_a_pytorch_module():
    """The same layers as torch modules (nn.GRU for the encoder, nn.Linear for the rest)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    K, m, n, na, ll = 30000, 620, 1000, 1000, 500
    with torch.device("meta"):
        parts = [
            nn.Embedding(K, m),
            nn.GRU(m, n, bidirectional=True, batch_first=True),
            nn.Linear(2 * n, na, bias=False),  # U
            nn.Linear(n, n, bias=False),  # W_s
            nn.Embedding(K, m),
            nn.Linear(n, na, bias=False),  # W
            nn.Linear(na, 1, bias=False),  # v
            *[nn.Linear(m + n + 2 * n, n) for _ in range(3)],  # z, r, candidate
            nn.Linear(n + m + 2 * n, 2 * ll),
            nn.Linear(ll, K),
        ]
    total = sum(p.numel() for part in parts for p in part.parameters())
    assert dlspec.load(SPECS / "seq2seq_attention.dl").report("RNNsearch")["params"] == total


SMALL = {"vocab": 11, "embed": 4, "hidden": 5, "align": 3, "units": 2}


def test_rnnsearch_small_runs_and_exports(tmp_path):
    prog = dlspec.load(SPECS / "seq2seq_attention.dl")
    shapes = prog.shapes("RNNsearch", **SMALL)
    assert shapes["decoder"].json() == ["N", "S", 11]
    net = prog.build("RNNsearch", device="CPU", seed=0, **SMALL)
    assert net.num_params()[0] == prog.report("RNNsearch", **SMALL)["params"]
    randomize(net)
    weights = _weights(net)
    inputs = {k: v.astype(np.int32) for k, v in _inputs(prog_kw(prog, SMALL), "RNNsearch", {"N": 2, "T": 4, "S": 3}).items()}
    want = _runtime(net, inputs)
    assert want[0].shape == (2, 3, 11) and np.isfinite(want[0]).all()
    _close(onnx_outputs(prog_kw(prog, SMALL), "RNNsearch", weights, {k: v.astype(np.int64) for k, v in inputs.items()}), want, "onnx")
    got, _ = torch_outputs(prog_kw(prog, SMALL), "RNNsearch", weights, {k: v.astype(np.int64) for k, v in inputs.items()}, tmp_path)
    _close(got, want, "pytorch")


class prog_kw:
    """A program whose ir/shapes take fixed model arguments (for the export helpers)."""

    def __init__(self, prog, args):
        self.prog, self.args = prog, args

    def ir(self, model):
        return self.prog.ir(model, **self.args)

    def shapes(self, model):
        return self.prog.shapes(model, **self.args)

    def __getattr__(self, name):
        return getattr(self.prog, name)


# ---- the Neural Turing Machine (Graves et al. 2014) ----------------------------------------------------------


def test_ntm_count_by_hand():
    F, Y, H, N, M = 9, 8, 100, 128, 20
    head = (H * M + M) + 3 * (H + 1) + (3 * H + 3)  # key, β, g, γ, shift
    by_hand = 4 * ((F + M + H) * H + H) + 2 * head + 2 * (H * M + M) + (H + M) * Y + Y + N * M
    assert by_hand == 64_820
    prog = dlspec.load(SPECS / "ntm.dl")
    assert prog.report("NTM")["params"] == by_hand
    rows = {r["path"]: r for r in prog.report("NTM")["layers"]}
    assert rows["memory0"]["params"] == N * M
    assert "total 64,820" in (SPECS / "ntm.dl").read_text(encoding="utf-8")


def copy_batch(rng, batch, length, bits=8):
    """The copy task: ``length`` random bit vectors, a delimiter, then as many blank steps in
    which the target is the sequence again; the loss counts the blank steps only."""
    T = 2 * length + 1
    seq = (rng.random((batch, length, bits)) < 0.5).astype(np.float32)
    x = np.zeros((batch, T, bits + 1), np.float32)
    y = np.zeros((batch, T, bits), np.float32)
    mask = np.zeros((batch, T, 1), np.float32)
    x[:, :length, :bits] = seq
    x[:, length, bits] = 1
    y[:, length + 1 :] = seq
    mask[:, length + 1 :] = 1
    return x, y, mask


@pytest.mark.slow
def test_ntm_learns_the_copy_task():
    """A small NTM (N 16, M 8, an LSTM of 32) on copies of two 8-bit vectors: 200 Adam steps,
    driven directly (tinygrad, dlspec's optimizer); the masked bit-wise cross entropy falls from
    ln 2 ≈ 0.69 to well below half of it."""
    from tinygrad import Context, Tensor, TinyJit

    from dlspec.optim import make_optimizer, trainable

    prog = dlspec.load(SPECS / "ntm.dl")
    net = prog.build("NTM", device="CPU", seed=0, controller=32, slots=16, width=8)
    opt = make_optimizer("adam", trainable(net.state_dict()), 0.02, clip=10.0)

    @TinyJit
    @Context(TRAINING=1)
    def step(x, y, mask):
        opt.zero_grad()
        per_bit = net(x).binary_crossentropy_logits(y, reduction="none")
        loss = (per_bit * mask).sum() / (mask.sum() * 8)
        loss.backward()
        opt.step()
        return loss

    rng = np.random.default_rng(0)
    Tensor.manual_seed(0)
    losses = []
    for _ in range(200):
        x, y, mask = (Tensor(a).realize() for a in copy_batch(rng, 16, 2))
        losses.append(step(x, y, mask).item())
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-20:]))
    assert abs(first - np.log(2)) < 0.05, first
    assert last < 0.5 * first, (first, last)


# ---- errors --------------------------------------------------------------------------------------------------

STEP = """
  state s: [3]
  s = (x, s) -> dense 3
"""

ERRORS = [
    # the cell's own `input`: it reads x, and a context is the way to see more
    (
        "cell C {\n  input m: [4]" + STEP + "}\nmodel M {\n  input q: [T, 4]\n  C()\n}",
        ["a cell's step input is 'x'; a cell declares no 'input'", "write 'context m'"],
    ),
    ("model M {\n  input q: [T, 4]\n  context q\n}", ["'context NAME' is only allowed in a cell", "input NAME: [shape]"]),
    (
        "cell C {\n  context m" + STEP + "}\nmodel M {\n  input q: [T, 4]\n  C()\n}",
        ["reads the context 'm' but its call gives no tensor for it", "'(seq, m) -> C(…)'", "in cell 'C' called at"],
    ),
    (
        "cell C {" + STEP + "}\nmodel M {\n  input q: [T, 4]\n  (q, q) -> C()\n}",
        ["cell 'C' takes a sequence and no context, but is given 1 tensor more", "'context memory'"],
    ),
    (
        "cell C {\n  context memory" + STEP + "}\nmodel M {\n  input q: [T, 4]\n  C(memroy = q)\n}",
        ["cell 'C' has no parameter or context 'memroy' — did you mean 'memory'?"],
    ),
    (
        "cell C {\n  context m\n  state s: [3] init m2\n  s = (x, s) -> dense 3\n}\nmodel M {\n  input q: [T, 4]\n  (q, q) -> C()\n}",
        ["the initial value of state 's' must be one of the cell's contexts, not 'm2' — did you mean 'm'?"],
    ),
    (
        "cell C {\n  context m\n  state s: [3] init m\n  s = (x, s) -> dense 3\n}\nmodel M {\n  input q: [T, 4]\n  (q, q) -> C()\n}",
        ["cell C: state 's' is (3) but its initial value 'q' is (T, 4)", "a batch of N or 1"],
    ),
    (
        "block B {\n  context m\n  dense 3\n}\ncell C {\n  state s: [3]\n  s = (x, s) -> B()\n}\nmodel M {\n  input q: [T, 4]\n  C()\n}",
        ["'context' belongs in the cell's own body, not in a block it calls"],
    ),
]


@pytest.mark.parametrize("text,expected", ERRORS, ids=[f"e{i}" for i in range(len(ERRORS))])
def test_context_errors_are_located(text, expected):
    out = diagnostics(text)
    assert "error" in out and "Traceback" not in out
    for e in expected:
        assert e in out, out


def test_a_block_with_several_inputs_runs_inside_a_cell():
    """Was: `a cell's input is 'x'; it declares no 'input'`, pointing at the block."""
    assert dlspec.load(ATTEND).check() == []


def test_context_is_no_reserved_word():
    """A model parameter named `context` (transformer.dl) is still a name."""
    prog = dlspec.load("model M(context = 3) {\n  input x: [4]\n  dense context\n  context = x -> dense 2\n  output context\n}")
    assert prog.shapes("M")["context"].json() == ["N", 2]
