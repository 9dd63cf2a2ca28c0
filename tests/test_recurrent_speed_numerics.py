"""The step-at-a-time recurrences (dlspec.backends.tinygrad.scan): same forward values and gradients as
the unrolled graph and as a NumPy float64 reference with finite differences, through
``loss.backward()``, and bit-identical training under TinyJit (replay) and eagerly."""

from __future__ import annotations

import numpy as np
import pytest
from backend_ref import build, check, recurrent
from tinygrad import Context, Tensor, TinyJit
from tinygrad.nn.optim import Adam

import dlspec
from dlspec.backends.tinygrad import scan

RNG = np.random.default_rng(7)

REC = """
model Rec {
  input s: [4, 3]
  output lstm = s -> lstm 2 layers 2 bidirectional sequences false
  output gru = s -> gru 3 layers 2
  output rnn = s -> rnn 2 bidirectional
}
"""

CELL = """
cell Peephole(hidden) {
  state h: [hidden]
  state c: [hidden]
  gate f = (x, h, c) -> dense hidden -> sigmoid
  g = (x, h) -> dense hidden -> tanh
  c = f * c + (1 - f) * g
  h = tanh(c) * f
}

model Cells {
  input s: [4, 3]
  output seq = s -> Peephole(2) as pc
}
"""


@pytest.fixture(autouse=True, scope="module")
def _unoptimised_kernels():
    with Context(NOOPT=1):
        yield


def _grads(net, inputs, weights):
    """Outputs and d(sum_i <out_i, w_i>)/d(every param and float input)."""
    feeds = {k: Tensor(v.astype(np.float32)) for k, v in inputs.items()}
    outs = net(**feeds)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o * Tensor(w.astype(np.float32))).sum() for o, w in zip(outs, weights))
    params = net.state_dict()
    targets = list(feeds.values()) + list(params.values())
    gs = loss.gradient(*targets)
    names = list(feeds) + list(params)
    return [o.numpy() for o in outs], {n: g.numpy() for n, g in zip(names, gs)}


SMALL = """
model Small {
  input s: [3, 3]
  output lstm = s -> lstm 2 bidirectional sequences false
  output gru = s -> gru 2
}
"""


@pytest.mark.parametrize("spec,batch", [(SMALL, 2), (CELL, 2), (CELL, 1)], ids=["builtin", "cell", "cell-batch-1"])
def test_scan_equals_unrolled(spec, batch):
    """Forward values and every gradient equal the unrolled graph's (to float32 rounding); a batch
    of 1 through a cell that concatenates x and h once crashed tinygrad (views of size-1 slices)."""
    net = build(spec)
    s = RNG.standard_normal((batch, net.shapes.types["s"].shape[1], 3))
    outs = net(s=Tensor(s.astype(np.float32)))
    outs = [o.numpy() for o in (outs if isinstance(outs, tuple) else (outs,))]
    weights = [RNG.standard_normal(o.shape) for o in outs]
    a_out, a_g = _grads(net, {"s": s}, weights)
    scan.ENABLED = False
    try:
        b_out, b_g = _grads(net, {"s": s}, weights)
    finally:
        scan.ENABLED = True
    for x, y in zip(a_out, b_out):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert a_g.keys() == b_g.keys()
    for k in a_g:
        np.testing.assert_allclose(a_g[k], b_g[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_scan_against_numpy_finite_differences():
    """PyTorch's formulas (gate order, both biases) in float64 NumPy; gradients of every
    parameter and of the input against finite differences (backend_ref.check)."""
    net = build(REC)

    def ref(P, s):
        return [
            recurrent("lstm", s, P, "lstm", 2, layers=2, bidirectional=True, sequences=False),
            recurrent("gru", s, P, "gru", 3, layers=2),
            recurrent("rnn", s, P, "rnn", 2, bidirectional=True),
        ]

    check(net, ref, {"s": RNG.standard_normal((2, 4, 3))})


def test_jit_replay_matches_eager():
    """TinyJit captures the per-step kernels; replays give the same losses and weights as eager
    steps (guards the view bases that the JIT's memory planner must not reuse)."""
    spec = "model L { input s: [3, 4]\n lstm 3 bidirectional\n gru 2 sequences false\n dense 3 }"
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((2, 3, 4)).astype(np.float32), rng.integers(0, 3, 2).astype(np.int32)) for _ in range(4)]

    def run(jit):
        net = dlspec.load(spec).build("L", seed=0)
        opt = Adam(net.parameters(), lr=1e-2)

        def step(x, y):
            with Context(TRAINING=1):
                opt.zero_grad()
                loss = net(x).sparse_categorical_crossentropy(y).backward()
                opt.step()
            return loss

        f = TinyJit(step) if jit else step
        losses = [f(Tensor(x).realize(), Tensor(y).realize()).item() for x, y in data]
        return losses, {k: v.numpy() for k, v in net.state_dict().items()}

    la, pa = run(False)
    lb, pb = run(True)
    assert la == lb
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
