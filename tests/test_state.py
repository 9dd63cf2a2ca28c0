"""The state-dict naming contract (dlspec.state) and the resolved window geometry
(``Shapes.windows``): one place that every target reads.

- For every zoo model, the contract's entries add up to the shape pass's parameter and buffer
  counts (the published counts are checked in test_zoo.py), without building anything.
- For small models, the tinygrad runtime's state dict has exactly the contract's keys, shapes
  and initial values, and the initial values are PyTorch's defaults (checked by their bounds).
- Two builds with different seeds interleaved in one process do not disturb each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dlspec
from dlspec import state

SPECS = Path(__file__).resolve().parents[1] / "specs"


def _zoo():
    for f in sorted(SPECS.glob("*.dl")):
        prog = dlspec.load(f)
        for m in prog.models:
            yield pytest.param(f.name, m, id=f"{f.stem}:{m}")


@pytest.mark.parametrize("file,model", list(_zoo()))
def test_entries_add_up_to_the_counts(file, model):
    prog = dlspec.load(SPECS / file)
    g, sh = prog.ir(model), prog.shapes(model)
    ent = state.entries(g, sh)
    params = sum(e.slot.size for e in ent.values() if not e.slot.buffer)
    buffers = sum(e.slot.size for e in ent.values() if e.slot.buffer)
    # num_batches_tracked is a scalar: size 1, as the report counts it
    assert (params, buffers) == (sum(c.params for c in sh.costs.values()), sum(c.buffers for c in sh.costs.values()))
    for key, e in ent.items():
        # a `param`'s slot has no name: its path is its key
        assert key == (f"{e.node}.{e.slot.name}" if e.slot.name else e.node) and g.node(e.node).shares is None


SMALL = """
block Basic(c, stride = 1) {
  residual {
    conv c kernel 3 stride stride padding 1 bias false as conv1
    batchnorm as bn1
    relu
    conv c kernel 3 padding same bias false as conv2
    batchnorm as bn2
  } shortcut {
    conv c kernel 1 stride stride bias false
    batchnorm
  }
  relu
}
model Small {
  input x: [3, 8, 8]
  conv 4 kernel 3 padding same as stem
  prelu per_channel
  pool max kernel 3 stride 2 padding 1
  Basic(6, stride = 2) as layer1
  pool global avg
  flatten
  dense 5 as fc
}
model Seq {
  input tokens: [T] int vocab 11
  embedding 8 as emb
  posembed 16
  layernorm
  attention 2 causal as att
  lstm 6 layers 2 bidirectional as rnn
  gru 8 sequences false
  dense 11 tied emb
}
"""


@pytest.mark.parametrize("model", ["Small", "Seq"])
def test_tinygrad_state_dict_is_the_contract(model):
    prog = dlspec.load(SMALL)
    g, sh = prog.ir(model), prog.shapes(model)
    net = prog.build(model, seed=3)
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    ent = state.entries(g, sh)
    assert sorted(sd) == sorted(ent)
    init = state.initial(g, sh, seed=3)
    for k, e in ent.items():
        assert sd[k].shape == e.slot.shape, k
        np.testing.assert_array_equal(sd[k], init[k], err_msg=k)


def test_initial_values_are_pytorch_defaults():
    prog = dlspec.load(SMALL)
    g, sh = prog.ir("Seq"), prog.shapes("Seq")
    init = state.initial(g, sh, seed=0)
    # LSTM: U(−1/√H, 1/√H), H = 6; attention in_proj: Xavier U(±√(6/(D + 3D))), D = 8; out_proj: U(±1/√D)
    assert np.abs(init["rnn.weight_ih_l1_reverse"]).max() <= 1 / np.sqrt(6) and init["rnn.weight_ih_l1_reverse"].shape == (24, 12)
    assert np.abs(init["att.in_proj_weight"]).max() <= np.sqrt(6 / 32) and init["att.in_proj_weight"].shape == (24, 8)
    assert np.abs(init["att.out_proj.weight"]).max() <= 1 / np.sqrt(8)
    np.testing.assert_array_equal(init["att.in_proj_bias"], np.zeros(24, np.float32))
    assert abs(init["emb.weight"].std() - 1.0) < 0.25  # N(0, 1), 88 draws
    assert "dense1.weight" not in init and init["dense1.bias"].shape == (11,)  # tied: only its bias
    prog2 = dlspec.load(SMALL)
    small = state.initial(prog2.ir("Small"), prog2.shapes("Small"))
    assert small["layer1.bn1.num_batches_tracked"].dtype == np.int64 and small["layer1.bn1.num_batches_tracked"].shape == ()
    np.testing.assert_array_equal(small["prelu1.weight"], np.full(4, 0.25, np.float32))  # PReLU's a = 0.25, per channel


def test_seeded_initialisation_belongs_to_the_call():
    prog = dlspec.load(SMALL)
    g, sh = prog.ir("Small"), prog.shapes("Small")
    a0 = state.initial(g, sh, seed=0)
    a1 = state.initial(g, sh, seed=1)
    b0 = state.initial(g, sh, seed=0)
    assert all(np.array_equal(a0[k], b0[k]) for k in a0)
    assert not np.array_equal(a0["fc.weight"], a1["fc.weight"])


def test_windows_are_resolved_once():
    prog = dlspec.load(SMALL)
    sh = prog.shapes("Small")
    # same padding, 3×3 stride 1: 1 before and after; the strided 1×1 shortcut: none
    assert sh.windows["stem"].pads == ((1, 1), (1, 1)) and sh.windows["stem"].kernel == (3, 3)
    assert sh.windows["layer1.conv1"].stride == (2, 2)
    assert sh.windows["layer1.conv2"].pads == ((1, 1), (1, 1))
    assert sh.windows["pool1"].pads == ((1, 1), (1, 1)) and sh.windows["pool1"].stride == (2, 2)
    assert "pool2" not in sh.windows  # global pooling has no window
    odd = dlspec.load("model M {\n  input x: [1, 7, 6]\n  conv 2 kernel [4, 3] stride 2 padding same\n}").shapes("M")
    # TensorFlow's same: total = (ceil(S/s) − 1)·s + k − S; height 7: 3·2 + 4 − 7 = 3 → (1, 2); width 6: 2·2 + 3 − 6 = 1 → (0, 1)
    assert odd.windows["conv1"].pads == ((1, 2), (0, 1))
