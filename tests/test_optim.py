"""dlspec.optim: every optimizer against its published update rule, computed here in float64 NumPy
for three steps on a 3-element parameter with fixed gradients; clipping, weight decay, l2, the lr
under TinyJit, and exact resume from saved state.

All tensors are shape (3,) so the compiled kernels are shared between tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tinygrad import Context, Tensor, TinyJit
from tinygrad.nn.state import safe_load, safe_save

from dlspec.optim import (
    clip_grad_norm,
    get_lr,
    l2_penalty,
    load_optimizer_state,
    make_optimizer,
    optimizer_state,
    set_lr,
    trainable,
)

P0 = [1.0, -2.0, 0.5]
GRADS = [[0.1, 0.2, -0.3], [0.4, -0.1, 0.2], [-0.2, 0.3, 0.1]]
RTOL, ATOL = 1e-5, 1e-7  # float32 against float64


def run(name: str, lr: float = 0.1, grads=GRADS, **options) -> list[list[float]]:
    """The parameter after each step, with the given gradients."""
    p = Tensor(P0).realize()
    opt = make_optimizer(name, [p], lr, **options)
    out = []
    with Context(TRAINING=1):
        for g in grads:
            p.grad = Tensor(g)
            opt.step()
            out.append(p.tolist())
    return out


def check(got: list[list[float]], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"step {k + 1}")


def ref(update, grads=GRADS, p0=P0) -> list[np.ndarray]:
    """Apply ``update(p, g, t) -> new p`` (float64, t = 1-based step) to the fixed gradients."""
    p = np.array(p0, dtype=np.float64)
    out = []
    for t, g in enumerate(grads, 1):
        p = update(p, np.array(g, dtype=np.float64), t)
        out.append(p.copy())
    return out


# --- SGD -------------------------------------------------------------------------------------


def test_sgd_plain_literal():
    # p -= lr·g, written out: lr 0.1
    check(
        run("sgd", 0.1),
        [
            np.array([1.0 - 0.01, -2.0 - 0.02, 0.5 + 0.03]),
            np.array([0.99 - 0.04, -2.02 + 0.01, 0.53 - 0.02]),
            np.array([0.95 + 0.02, -2.01 - 0.03, 0.51 - 0.01]),
        ],
    )


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum(nesterov):
    # PyTorch torch.optim.SGD (dampening 0): b = μ·b + g (b = g on step 1); d = g + μ·b if nesterov else b; p -= lr·d
    lr, mu = 0.1, 0.9
    b = np.zeros(3)

    def upd(p, g, t):
        nonlocal b
        b = mu * b + g
        return p - lr * (g + mu * b if nesterov else b)

    check(run("sgd", lr, momentum=mu, nesterov=nesterov), ref(upd))


def test_sgd_weight_decay_coupled():
    # PyTorch SGD weight_decay: g ← g + wd·p before momentum
    lr, mu, wd = 0.1, 0.5, 0.2
    b = np.zeros(3)

    def upd(p, g, t):
        nonlocal b
        b = mu * b + (g + wd * p)
        return p - lr * b

    check(run("sgd", lr, momentum=mu, weight_decay=wd), ref(upd))


# --- RMSProp, AdaGrad ------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_rmsprop(momentum):
    # PyTorch torch.optim.RMSprop (centered=False): s = α·s + (1−α)·g²; u = g/(√s + eps);
    # momentum: b = μ·b + u, p -= lr·b; else p -= lr·u
    lr, alpha, eps = 0.01, 0.9, 1e-8
    s, b = np.zeros(3), np.zeros(3)

    def upd(p, g, t):
        nonlocal s, b
        s = alpha * s + (1 - alpha) * g * g
        u = g / (np.sqrt(s) + eps)
        if momentum:
            b = momentum * b + u
            u = b
        return p - lr * u

    check(run("rmsprop", lr, alpha=alpha, eps=eps, momentum=momentum or None), ref(upd))


def test_adagrad():
    # PyTorch torch.optim.Adagrad (lr_decay 0): s starts at initial_accumulator_value; s += g²; p -= lr·g/(√s + eps)
    lr, acc, eps = 0.1, 0.1, 1e-10
    s = np.full(3, acc)

    def upd(p, g, t):
        nonlocal s
        s = s + g * g
        return p - lr * g / (np.sqrt(s) + eps)

    check(run("adagrad", lr, initial_accumulator=acc), ref(upd))


# --- FTRL ------------------------------------------------------------------------------------


def test_ftrl_paper():
    # McMahan et al. 2013, "Ad Click Prediction: a View from the Trenches", Algorithm 1, per coordinate i:
    #   σ = (√(n + g²) − √n)/α;  z += g − σ·w;  n += g²
    #   w = 0 if |z| ≤ λ1 else −(z − sgn(z)·λ1) / ((β + √n)/α + λ2)
    # TensorFlow's Ftrl (lr_power −0.5) is this with λ2 = 2·l2 and n starting at initial_accumulator_value.
    alpha, beta, l1, l2, n0 = 0.1, 0.1, 0.01, 0.01, 0.1
    n, z = np.full(3, n0), np.zeros(3)

    def upd(w, g, t):
        nonlocal n, z
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / alpha
        z = z + g - sigma * w
        n = n + g * g
        w = -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / alpha + 2 * l2)
        return np.where(np.abs(z) <= l1, 0.0, w)

    check(run("ftrl", alpha, l1=l1, l2=l2, beta=beta, initial_accumulator=n0), ref(upd))


def test_ftrl_lr_power_and_sparsity():
    # TensorFlow ApplyFtrl, general learning_rate_power p:
    #   n' = n + g²; z += g − (n'^(−p) − n^(−p))/lr·w; w = (clip(z, −l1, l1) − z)/(n'^(−p)/lr + 2·l2)
    lr, p_, l1, l2, n0 = 0.5, -1.0, 0.05, 0.0, 0.1
    n, z = np.full(3, n0), np.zeros(3)

    def upd(w, g, t):
        nonlocal n, z
        n1 = n + g * g
        z = z + g - (n1 ** (-p_) - n ** (-p_)) / lr * w
        n = n1
        return (np.clip(z, -l1, l1) - z) / (n1 ** (-p_) / lr + 2 * l2)

    got = run("ftrl", lr, lr_power=p_, l1=l1, l2=l2, initial_accumulator=n0)
    check(got, ref(upd))
    # a large l1 keeps every weight at exactly 0 (the point of FTRL-proximal)
    assert run("ftrl", lr, l1=10.0)[-1] == [0.0, 0.0, 0.0]


# --- Adam, AdamW -----------------------------------------------------------------------------


def _adam_ref(lr, b1, b2, eps, wd, decoupled):
    # PyTorch torch.optim.Adam / AdamW: m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
    # p -= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps). Adam: g += wd·p first; AdamW: p *= 1 − lr·wd first.
    m, v = np.zeros(3), np.zeros(3)

    def upd(p, g, t):
        nonlocal m, v
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        return p - lr / (1 - b1**t) * m / (np.sqrt(v) / math.sqrt(1 - b2**t) + eps)

    return upd


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam(wd):
    check(run("adam", 0.01, weight_decay=wd or None), ref(_adam_ref(0.01, 0.9, 0.999, 1e-8, wd, False)))


def test_adam_betas():
    check(run("adam", 0.05, beta1=0.5, beta2=0.9, eps=1e-6), ref(_adam_ref(0.05, 0.5, 0.9, 1e-6, 0.0, False)))


@pytest.mark.parametrize("wd", [None, 0.5])
def test_adamw(wd):
    check(run("adamw", 0.01, weight_decay=wd), ref(_adam_ref(0.01, 0.9, 0.999, 1e-8, 0.01 if wd is None else wd, True)))


# --- clipping, weight decay, l2, buffers -----------------------------------------------------


def test_clip_global_norm():
    # torch.nn.utils.clip_grad_norm_: g *= min(1, max_norm/(‖g‖ + 1e-6)), the norm over all gradients
    g1, g2 = [0.3, 0.4, 1.2], [0.0, 0.0, 0.0]  # ‖·‖₂ = 1.3
    p, q = Tensor(P0).realize(), Tensor(P0).realize()
    opt = make_optimizer("sgd", [p, q], 1.0, clip=0.65)
    with Context(TRAINING=1):
        p.grad, q.grad = Tensor(g1), Tensor(g2)
        opt.step()
    scale = 0.65 / (1.3 + 1e-6)
    np.testing.assert_allclose(p.tolist(), np.array(P0) - scale * np.array(g1), rtol=RTOL)
    np.testing.assert_allclose(q.tolist(), P0, rtol=RTOL)
    # below the bound: unchanged; the global norm of two tensors; the max-norm
    small = clip_grad_norm([Tensor([0.1, 0.2, -0.3])], 1.0)[0].tolist()
    np.testing.assert_allclose(small, [0.1, 0.2, -0.3], rtol=RTOL)
    two = clip_grad_norm([Tensor(g1), Tensor(g1)], 1.3)
    np.testing.assert_allclose(two[1].tolist(), np.array(g1) * 1.3 / (1.3 * math.sqrt(2) + 1e-6), rtol=RTOL)
    inf = clip_grad_norm([Tensor(g1)], 0.6, norm_type=math.inf)[0].tolist()
    np.testing.assert_allclose(inf, np.array(g1) * 0.6 / (1.2 + 1e-6), rtol=RTOL)


def test_l2_penalty_and_trainable():
    w = Tensor(P0).realize()
    rm = Tensor([0.0, 0.0, 0.0]).realize()  # a running mean left marked as a parameter: excluded by key
    rv = Tensor([1.0, 1.0, 1.0]).is_param_(False).realize()
    state = {"fc.weight": w, "bn.running_mean": rm, "bn.running_var": rv, "tied": w}
    assert trainable(state) == [w]
    assert trainable([w, rv]) == [w]
    # l2 λ = 0.5·λ·Σw²: 0.5·0.1·(1 + 4 + 0.25) = 0.2625; its gradient λ·w = coupled weight_decay λ
    pen = l2_penalty(trainable(state), 0.1)
    assert pen.item() == pytest.approx(0.2625, rel=1e-6)
    pen.backward()
    np.testing.assert_allclose(w.grad.tolist(), [0.1, -0.2, 0.05], rtol=1e-6)


def test_buffers_not_updated():
    p = Tensor(P0).realize()
    buf = Tensor([5.0, 6.0, 7.0]).is_param_(False).realize()
    opt = make_optimizer("sgd", [p, buf], 0.1, weight_decay=0.1)
    assert opt.params == [p]
    with Context(TRAINING=1):
        p.grad = Tensor(GRADS[0])
        opt.step()
    assert buf.tolist() == [5.0, 6.0, 7.0]


def test_make_optimizer_errors():
    p = Tensor(P0).realize()
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lbfgs", [p], 0.1)
    with pytest.raises(ValueError, match="has no option beta1"):
        make_optimizer("sgd", [p], 0.1, beta1=0.9)
    with pytest.raises(ValueError, match="lr_power"):
        make_optimizer("ftrl", [p], 0.1, lr_power=0.5)


# --- the lr under TinyJit, resume ------------------------------------------------------------


def test_lr_and_clip_under_jit():
    p = Tensor(P0).realize()
    opt = make_optimizer("sgd", [p], 0.1, clip=0.5)

    @TinyJit
    @Context(TRAINING=1)
    def step(g: Tensor) -> Tensor:
        opt.zero_grad()
        (p * g).sum().backward()  # ∂/∂p = g
        opt.step()
        return p

    def call(g, lr):  # the change of p (float32 p ≈ 2: compare with atol)
        set_lr(opt, lr)
        before = np.array(p.tolist())
        step(Tensor(g).realize())
        return np.array(p.tolist()) - before

    for lr in (0.1, 0.2, 0.3):  # run, capture, replay
        np.testing.assert_allclose(call(GRADS[0], lr), -lr * np.array(GRADS[0]), atol=1e-6)
    assert step.cnt >= 2
    assert get_lr(opt) == pytest.approx(0.3)
    np.testing.assert_allclose(call(GRADS[1], 0.01), -0.01 * np.array(GRADS[1]), atol=1e-6)  # replay, new lr
    big = [3.0, 4.0, 12.0]  # norm 13: clipped to 0.5 on replay
    np.testing.assert_allclose(call(big, 1.0), -np.array(big) * 0.5 / (13 + 1e-6), atol=1e-6)


CONFIGS = [
    ("sgd", dict(momentum=0.9, nesterov=True)),
    ("rmsprop", dict(momentum=0.5)),
    ("adagrad", dict(initial_accumulator=0.1)),
    ("ftrl", dict(l1=0.001, beta=0.1)),
    ("adam", dict(weight_decay=0.01)),
    ("adamw", dict()),
]


@pytest.mark.parametrize("name,opts", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_resume_bit_identical(name, opts, tmp_path):
    grads = GRADS + GRADS[::-1]
    p = Tensor(P0).realize()
    opt = make_optimizer(name, [p], 0.1, **opts)
    with Context(TRAINING=1):
        for k, g in enumerate(grads):
            if k == 3:  # save mid-run, as the trainer would
                safe_save({"p": p, **optimizer_state(opt)}, str(tmp_path / "s.safetensors"))
            p.grad = Tensor(g)
            opt.step()
    names = set(optimizer_state(opt))
    assert {"optim.step", "optim.lr"} <= names and all(n.startswith("optim.") for n in names)

    saved = safe_load(str(tmp_path / "s.safetensors"))
    assert saved["optim.step"].to("CPU").tolist() == [3.0]
    q = Tensor.empty(3).assign(saved["p"].to(p.device)).realize()
    opt2 = make_optimizer(name, [q], 0.5, **opts)  # lr comes back from the state too
    load_optimizer_state(opt2, saved)
    with Context(TRAINING=1):
        for g in grads[3:]:
            q.grad = Tensor(g)
            opt2.step()
    assert q.tolist() == p.tolist()
    for k, t in optimizer_state(opt2).items():
        assert t.tolist() == optimizer_state(opt)[k].tolist(), k


def test_load_state_errors():
    p = Tensor(P0).realize()
    opt = make_optimizer("adam", [p], 0.1)
    state = {k: Tensor.zeros(*t.shape).contiguous() for k, t in optimizer_state(opt).items()}
    with pytest.raises(KeyError, match=r"optim\.v\.0"):
        load_optimizer_state(opt, {k: v for k, v in state.items() if k != "optim.v.0"})
    with pytest.raises(ValueError, match="shape"):
        load_optimizer_state(opt, {**state, "optim.m.0": Tensor.zeros(2)})


def test_spec_settings_reach_optimizer_and_schedule():
    # the option names a spec's train section validates are the ones make_optimizer/make_schedule take
    import dlspec
    from dlspec.schedules import make_schedule

    src = (
        "model M {\n  input x: [3]\n  dense 2\n}\n"
        "train M {\n  optimizer ftrl lr 0.1 lr_power -0.5 l1 0.01 l2 0.01 beta 0.1 initial_accumulator 0.1\n"
        "  schedule cosine warmup 2 min_lr 1e-5 epochs 5\n}\n"
        "train gan generator M, discriminator M {\n  g_optimizer sgd lr 0.1 momentum 0.9 nesterov true\n"
        "  d_optimizer rmsprop lr 0.01 alpha 0.9 eps 1e-6 momentum 0.5\n}\n"
    )
    a, b = dlspec.load(src).trains()
    p = Tensor(P0).realize()
    for s in (a.settings["optimizer"], b.settings["g_optimizer"], b.settings["d_optimizer"]):
        opts = dict(s.options)
        opt = make_optimizer(s.value, [p], opts.pop("lr"), **opts)
        assert opt.name == s.value
    assert opts == {"alpha": 0.9, "eps": 1e-6, "momentum": 0.5}
    sched = a.settings["schedule"]
    assert make_schedule(sched.value, 0.1, 10, 10, **sched.options)(60) == pytest.approx(1e-5)
