"""dlspec.schedules: each schedule's lr at chosen steps, written out by hand.

Unless said otherwise: base lr 0.1, 10 steps per epoch, 10 epochs (100 steps, 0-based)."""

from __future__ import annotations

import math

import pytest

from dlspec.schedules import SCHEDULES, make_schedule


def lrs(name: str, steps: list[int], base: float = 0.1, spe: int = 10, run_epochs: int = 10, **opts) -> list[float]:
    f = make_schedule(name, base, spe, run_epochs, **opts)
    return [f(s) for s in steps]


def approx(xs):
    return pytest.approx(xs, rel=1e-12, abs=1e-15)


def test_constant():
    assert lrs("constant", [0, 57, 99]) == approx([0.1, 0.1, 0.1])


def test_step():
    # ×gamma every `step` epochs: epochs 0-2 → 0.1, 3-5 → 0.05, 6-8 → 0.025, 9 → 0.0125
    assert lrs("step", [0, 29, 30, 59, 60, 95], step=3, gamma=0.5) == approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])
    # defaults: step ⌊10/3⌋ = 3 epochs, gamma 0.1
    assert lrs("step", [29, 30, 60]) == approx([0.1, 0.01, 0.001])


def test_multistep():
    # milestones at epochs 2 and 5 (step 20, 50)
    assert lrs("multistep", [19, 20, 49, 50, 99], milestones=(5, 2), gamma=0.1) == approx([0.1, 0.01, 0.01, 0.001, 0.001])
    # defaults: epochs 5 and 7
    assert lrs("multistep", [49, 50, 70]) == approx([0.1, 0.01, 0.001])


def test_exponential():
    # ×gamma per epoch: epoch 0 → 0.1, epoch 1 → 0.09, epoch 2 → 0.081 (per epoch, not per step)
    assert lrs("exponential", [0, 9, 10, 25], gamma=0.9) == approx([0.1, 0.1, 0.09, 0.081])
    # min_lr floors it: 0.1·0.5^5 = 0.003125 < 0.01
    assert lrs("exponential", [50], gamma=0.5, min_lr=0.01) == approx([0.01])


def test_cosine():
    # min + (base−min)·(1+cos(π·t/T))/2, T = 100 steps
    assert lrs("cosine", [0, 25, 50, 75]) == approx([0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2])
    assert lrs("cosine", [50, 100, 150], min_lr=0.02) == approx([0.06, 0.02, 0.02])
    # a schedule length of 5 epochs (50 steps) in a 10-epoch run: lr reaches min_lr at step 50 and stays
    assert lrs("cosine", [25, 50, 99], epochs=5) == approx([0.05, 0.0, 0.0])


def test_warmup_alone():
    # linear over warmup epochs, (step+1)/W, then base: W = 2 epochs = 20 steps
    assert lrs("warmup", [0, 9, 19, 20, 99], warmup=2) == approx([0.005, 0.05, 0.1, 0.1, 0.1])
    assert lrs("warmup", [0, 9, 10]) == approx([0.01, 0.1, 0.1])  # default: 1 epoch


def test_cosine_with_warmup():
    # `schedule cosine warmup 2`: 20 warm-up steps, then cosine over the remaining 80
    got = lrs("cosine", [0, 19, 20, 60, 99], warmup=2)
    want = [0.1 * 1 / 20, 0.1, 0.1, 0.05, 0.1 * (1 + math.cos(math.pi * 79 / 80)) / 2]
    assert got == approx(want)


def test_warmup_with_step():
    # warm-up factor times the step schedule: step 5 (epoch 0) → 0.1·6/20; step 15 (epoch 1, after a
    # decay at epoch 1) → 0.1·0.5·16/20
    assert lrs("step", [5, 15, 25], step=1, gamma=0.5, warmup=2) == approx([0.03, 0.04, 0.025])


def test_poly():
    # min + (base−min)·(1 − t/T)^power
    assert lrs("poly", [0, 50, 75], power=2.0) == approx([0.1, 0.025, 0.00625])
    assert lrs("poly", [50], min_lr=0.02) == approx([0.06])  # power 1 by default


def test_errors():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("linear", 0.1, 10, 10)
    with pytest.raises(ValueError, match="has no option gamma"):
        make_schedule("cosine", 0.1, 10, 10, gamma=0.5)
    with pytest.raises(ValueError, match="whole number"):
        make_schedule("step", 0.1, 10, 10, step=1.5)
    assert set(SCHEDULES) == {"constant", "step", "multistep", "exponential", "cosine", "warmup", "poly"}
