"""The fused optimizer update (:mod:`dlspec.optim`: one flat state tensor per slot, one update over
all parameters): equal to the per-parameter update and to a NumPy float64 reference of PyTorch's
rules to float32 round-off, over a few steps; checkpoints in the per-parameter format
(``optim.<slot>.<i>``) load into it, and it writes that format."""

from __future__ import annotations

import numpy as np
import pytest
from tinygrad import Context, Tensor

from dlspec import optim

SHAPES = [(5, 3), (3,), (2, 2, 3)]
LR, STEPS = 0.05, 4


def _data():
    rng = np.random.default_rng(7)
    w = [rng.standard_normal(s) for s in SHAPES]
    g = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    return w, g


def _tinygrad(name: str, fused: bool, **kw):
    w, grads = _data()
    ps = [Tensor(a.astype(np.float32)).contiguous().realize() for a in w]
    opt = optim.OPTIMIZERS[name](ps, LR, fused=fused, **kw)
    for g in grads:
        with Context(TRAINING=1):
            for p, a in zip(ps, g):
                p.grad = Tensor(a.astype(np.float32))
            opt.step()
    return [p.numpy() for p in ps], opt


def _numpy(name: str, momentum=0.0, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
    """PyTorch's SGD / Adam / AdamW update rules in float64."""
    w, grads = _data()
    m = [np.zeros(s) for s in SHAPES]
    v = [np.zeros(s) for s in SHAPES]
    for t, g in enumerate(grads, start=1):
        for i in range(len(w)):
            gi = g[i] + (weight_decay * w[i] if name in ("sgd", "adam") else 0.0)
            if name == "sgd":
                m[i] = momentum * m[i] + gi if t > 1 else gi.copy()
                w[i] = w[i] - LR * m[i]
            else:
                if name == "adamw":
                    w[i] = w[i] * (1 - LR * weight_decay)
                m[i] = beta1 * m[i] + (1 - beta1) * gi
                v[i] = beta2 * v[i] + (1 - beta2) * gi * gi
                mhat, vhat = m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)
                w[i] = w[i] - LR * mhat / (np.sqrt(vhat) + eps)
    return w


CASES = [("sgd", {"momentum": 0.9}), ("adam", {}), ("adam", {"weight_decay": 0.01}), ("adamw", {"weight_decay": 0.1})]


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in kw.items())}" for n, kw in CASES])
def test_fused_update_matches_per_parameter_and_float64(name, kw):
    fused, opt = _tinygrad(name, True, **kw)
    plain, ref_opt = _tinygrad(name, False, **kw)
    assert opt.fused and not ref_opt.fused
    assert len(opt.slots[next(iter(opt.slots))]) == 1  # one flat tensor per slot
    ref = _numpy(name, **kw)
    for f, p, r in zip(fused, plain, ref):
        np.testing.assert_allclose(f, p, rtol=0, atol=1e-6)
        np.testing.assert_allclose(f, r, rtol=1e-5, atol=1e-6)


def test_fused_clipping_is_the_global_norm():
    fused, _ = _tinygrad("sgd", True, momentum=0.9, clip=0.5)
    plain, _ = _tinygrad("sgd", False, momentum=0.9, clip=0.5)
    for f, p in zip(fused, plain):
        np.testing.assert_allclose(f, p, rtol=0, atol=1e-6)


def test_per_parameter_checkpoints_load_into_the_fused_optimizer(tmp_path):
    from dlspec.backends.tinygrad import read_weights, save_state

    _, old = _tinygrad("adam", False)  # the per-parameter layout checkpoints have been written in
    path = tmp_path / "old.safetensors"
    save_state({k: v.contiguous() for k, v in optim.optimizer_state(old).items()}, path)
    sd = read_weights(path)
    assert sorted(sd) == sorted(["optim.step", "optim.lr"] + [f"optim.{s}.{i}" for s in ("m", "v") for i in range(len(SHAPES))])
    ps = [Tensor.zeros(*s).contiguous().realize() for s in SHAPES]
    new = optim.Adam(ps, LR)
    assert new.fused
    optim.load_optimizer_state(new, sd)
    for k, t in optim.optimizer_state(new).items():  # the fused optimizer writes the same names and shapes
        assert tuple(t.shape) == tuple(sd[k].shape)
        np.testing.assert_array_equal(t.numpy(), sd[k].numpy())
    assert optim.optimizer_state(new)["optim.step"].item() == STEPS
    with pytest.raises(ValueError, match="optim.m.1"):
        optim.load_optimizer_state(new, {**sd, "optim.m.1": Tensor.zeros(4)})
