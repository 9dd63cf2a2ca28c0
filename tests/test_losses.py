"""dlspec.losses: every loss and metric against numbers worked out by hand (the working is in the
comments), and the cross-entropy gradient against the analytic (softmax − target)/N.

Mostly (2, 3) tensors so the kernels are shared."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tinygrad import Tensor, dtypes

from dlspec.losses import loss, metric

LOGITS = [[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]
LABELS = [2, 0]
# row 1: logsumexp(1, 2, 3) = 3 + log(1 + e⁻¹ + e⁻²) = 3.40760596 → log-probs −2.40760596, −1.40760596, −0.40760596
# row 2: every log-prob is −log 3 = −1.09861229
LSE1 = 3 + math.log(1 + math.exp(-1) + math.exp(-2))


def t(x, dtype=None) -> Tensor:
    return Tensor(x, dtype=dtype)


def labels(x) -> Tensor:
    return Tensor(x, dtype=dtypes.int32)


def val(x: Tensor) -> float:
    return x.item()


def test_cross_entropy():
    # (0.40760596 + 1.09861229)/2
    assert LSE1 == pytest.approx(3.40760596)
    assert val(loss("cross_entropy", t(LOGITS), labels(LABELS))) == pytest.approx(0.75310912, rel=1e-6)
    # probabilities as targets: the same number
    assert val(loss("cross_entropy", t(LOGITS), t([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))) == pytest.approx(0.75310912, rel=1e-6)
    # classes on the last axis: a (1, 2, 3) sequence output with (1, 2) targets
    assert val(loss("cross_entropy", t([LOGITS]), labels([LABELS]))) == pytest.approx(0.75310912, rel=1e-6)


def test_cross_entropy_label_smoothing():
    # PyTorch: (1−ε)·nll + ε·mean_c(−logp_c), ε = 0.1, C = 3
    # row 1: 0.9·0.40760596 + 0.1·1.40760596 = 0.50760596;  row 2: 1.09861229;  mean 0.80310912
    got = loss("cross_entropy", t(LOGITS), labels(LABELS), label_smoothing=0.1)
    assert val(got) == pytest.approx(0.80310912, rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_gradient(eps):
    # ∂ mean CE / ∂ logits = (softmax − q)/N with q = (1−ε)·onehot + ε/C
    x = Tensor(LOGITS).realize()  # a leaf: backward() fills its grad
    loss("cross_entropy", x, labels(LABELS), label_smoothing=eps).backward()
    z = np.array(LOGITS)
    soft = np.exp(z - z.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)  # row 1: 0.09003057, 0.24472847, 0.66524096; row 2: ⅓ each
    q = (1 - eps) * np.eye(3)[LABELS] + eps / 3
    np.testing.assert_allclose(x.grad.tolist(), (soft - q) / 2, rtol=1e-5, atol=1e-7)


def test_nll():
    # −(logp[0, 0] + logp[1, 2])/2 = (0.5 + 0.2)/2
    assert val(loss("nll", t([[-0.5, -1.0, -2.0], [-3.0, -0.1, -0.2]]), labels([0, 2]))) == pytest.approx(0.35, rel=1e-6)


P = [[0.9, 0.2, 0.5], [0.6, 0.99, 0.01]]
Y = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_bce():
    # −log 0.9, −log 0.8, −log 0.5, −log 0.4, −log 0.99, −log 0.99
    # = 0.10536052 + 0.22314355 + 0.69314718 + 0.91629073 + 0.01005034 + 0.01005034 = 1.95804266; /6
    assert val(loss("bce", t(P), t(Y))) == pytest.approx(0.32634044, rel=1e-5)
    # logs clamped at −100 (PyTorch): p = 0 with y = 1 costs 100, p = 1 with y = 1 costs 0 (no nan)
    # (100 + 0 + log 2 + 100 + 0 + log 2)/6 = 33.56438239
    got = loss("bce", t([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]]), t([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert val(got) == pytest.approx(33.56438239, rel=1e-5)


def test_bce_logits():
    # y = 1: softplus(−x); y = 0: softplus(x)
    # log(1+e⁻²) = 0.12692801, log(1+e⁻¹) = 0.31326169, log 2 = 0.69314718, 100, 100,
    # log(1+e^0.5) = 0.97407698 → sum 202.10741386, mean 33.68456898 (the ±100 would overflow naively)
    got = loss("bce_logits", t([[2.0, -1.0, 0.0], [100.0, -100.0, 0.5]]), t(Y))
    assert val(got) == pytest.approx(33.68456898, rel=1e-5)


OUT = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
TGT = [[1.5, 2.0, 1.0], [4.0, 7.0, 5.5]]  # differences −0.5, 0, 2, 0, −2, 0.5


def test_regression_losses():
    assert val(loss("mse", t(OUT), t(TGT))) == pytest.approx(8.5 / 6, rel=1e-6)  # (0.25 + 4 + 4 + 0.25)/6
    assert val(loss("l1", t(OUT), t(TGT))) == pytest.approx(5 / 6, rel=1e-6)  # (0.5 + 2 + 2 + 0.5)/6
    # Huber δ=1: ½d² = 0.125 for |d| = 0.5; δ(|d| − ½δ) = 1.5 for |d| = 2 → 3.25/6
    assert val(loss("huber", t(OUT), t(TGT))) == pytest.approx(3.25 / 6, rel=1e-6)
    # δ=1.5: 0.125, 1.5·(2 − 0.75) = 1.875 → 4/6
    assert val(loss("huber", t(OUT), t(TGT), delta=1.5)) == pytest.approx(4 / 6, rel=1e-6)
    # a flat target with as many elements is reshaped; another shape is an error, not a broadcast
    assert val(loss("mse", t(OUT), t([x for r in TGT for x in r]))) == pytest.approx(8.5 / 6, rel=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        loss("mse", t(OUT), t([1.0, 2.0, 3.0]))


def test_loss_errors():
    with pytest.raises(ValueError, match="unknown loss"):
        loss("hinge", t(OUT), t(TGT))
    with pytest.raises(ValueError, match="no option delta"):
        loss("mse", t(OUT), t(TGT), delta=1.0)
    with pytest.raises(ValueError, match="integer targets must have shape"):
        loss("cross_entropy", t(LOGITS), labels([0, 1, 2]))


def test_metrics():
    # argmax row 1 = 2 (label 2: hit), row 2 = 1 (label 0: miss) → 0.5
    assert val(metric("accuracy", t([[1.0, 2.0, 3.0], [1.0, 5.0, 1.0]]), labels(LABELS))) == pytest.approx(0.5)
    # top-5 of 7 classes: row 1 ascending 0..6, row 2 descending 6..0
    z = t([[0.0, 1, 2, 3, 4, 5, 6], [6.0, 5, 4, 3, 2, 1, 0]])
    assert val(metric("top5", z, labels([1, 0]))) == pytest.approx(0.5)  # class 1 has 5 above it: out
    assert val(metric("top5", z, labels([2, 0]))) == pytest.approx(1.0)  # class 2 has 4 above: in
    assert val(metric("top2", z, labels([2, 0]))) == pytest.approx(0.5)
    # one output per example: p > 0.5 → 1, 0, 0, 1, 1, 0 against 1, 0, 1, 0, 1, 0 → 4/6
    assert val(metric("accuracy", t(P), t(Y))) == pytest.approx(4 / 6)
    assert val(metric("loss", t(LOGITS), labels(LABELS))) == pytest.approx(0.75310912, rel=1e-6)
    assert val(metric("loss", t(OUT), t(TGT), loss_name="l1")) == pytest.approx(5 / 6, rel=1e-6)
    with pytest.raises(ValueError, match="unknown metric"):
        metric("f1", t(LOGITS), labels(LABELS))
