"""Every op's tinygrad lowering against an independent NumPy float64 reference
(tests/backend_ref.py): forward outputs, and the gradients of a random linear functional of
the outputs w.r.t. every float input and every parameter against finite differences.

Sizes are tiny and odd (5×7 images, 3–4 channels, T = 3) and each test builds one model with
several outputs, so that a cold kernel cache compiles few kernels."""

from __future__ import annotations

import numpy as np
import pytest
from backend_ref import (
    batchnorm_eval,
    batchnorm_train,
    build,
    check,
    close,
    conv1d,
    conv2d,
    deconv2d,
    gelu,
    groupnorm,
    layernorm,
    linear_1d,
    log_softmax,
    mha,
    pool2d,
    randomize,
    recurrent,
    run,
    sigmoid,
    softmax,
)
from tinygrad import Context, Tensor

RNG = np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="module")
def _unoptimised_kernels():
    """Compile without tinygrad's kernel optimiser (upcasts, unrolls): the numbers are the same
    and a cold kernel cache compiles about three times faster."""
    with Context(NOOPT=1):
        yield


def randn(*shape):
    return RNG.standard_normal(shape)


# ---- convolution --------------------------------------------------------------------------------

CONV = """
model Convs {
  input x: [4, 5, 7]
  input s: [4, 9]
  output asym = x -> conv 6 kernel 3 padding [[0, 1], [1, 2]] dilation [1, 2] groups 2
  output same2 = x -> conv 3 kernel [4, 3] stride 2 padding same
  output strided = x -> conv 5 kernel 3 stride [2, 1] padding 1, bias false
  output one_d = s -> conv 3 kernel 3 dilation 2 padding [[2, 1]] groups 1
  output up = x -> deconv 4 kernel 3 stride 2 padding 1 output_padding 1 groups 2
  output up2 = x -> deconv 3 kernel [2, 3] stride [3, 2] dilation [1, 2] output_padding [2, 1], bias false
}
"""


def test_conv_and_deconv():
    net = build(CONV)
    randomize(net)
    sd = net.state_dict()
    assert tuple(sd["asym.weight"].shape) == (6, 2, 3, 3)  # (out, in/groups, kh, kw)
    assert tuple(sd["up.weight"].shape) == (4, 2, 3, 3)  # ConvTranspose: (in, out/groups, kh, kw)
    assert "strided.bias" not in sd and "up2.bias" not in sd

    def ref(P, x, s):
        # 'same' with stride 2 (TensorFlow's rule): H 5 → 3 needs 3 rows of padding (1 before,
        # 2 after), W 7 → 4 needs 2 (1, 1)
        return [
            conv2d(x, P["asym.weight"], P["asym.bias"], (1, 1), (1, 2), ((0, 1), (1, 2)), groups=2),
            conv2d(x, P["same2.weight"], P["same2.bias"], (2, 2), (1, 1), ((1, 2), (1, 1))),
            conv2d(x, P["strided.weight"], None, (2, 1), (1, 1), ((1, 1), (1, 1))),
            conv1d(s, P["one_d.weight"], P["one_d.bias"], 1, 2, (2, 1)),
            deconv2d(x, P["up.weight"], P["up.bias"], (2, 2), (1, 1), ((1, 1), (1, 1)), (1, 1), groups=2),
            deconv2d(x, P["up2.weight"], None, (3, 2), (1, 2), ((0, 0), (0, 0)), (2, 1)),
        ]

    outs, _ = check(net, ref, {"x": randn(2, 4, 5, 7), "s": randn(2, 4, 9)})
    assert outs[1].shape == (2, 3, 3, 4) and outs[4].shape == (2, 4, 10, 14)


# ---- pooling ---------------------------------------------------------------------------------------

POOL = """
model Pools {
  input x: [3, 5, 7]
  output max_ceil = x -> pool max kernel 2 ceil
  output max_pad_dil = x -> pool max kernel 2 stride 1 padding 1 dilation 2
  output max_pad = x -> pool max kernel 3 stride 2 padding 1
  output avg_ceil = x -> pool avg kernel 4 stride 3 padding 1 ceil
  output avg_excl = x -> pool avg kernel 3 stride 2 padding 1 count_include_pad false
  output avg_same = x -> pool avg kernel 4 stride 2 same
  output avg_ceil_nopad = x -> pool avg kernel 2 ceil
  output gavg = x -> pool global avg
  output gmax = x -> pool global max
  output aavg = x -> pool adaptive avg size [5, 1]
  output amax = x -> pool adaptive max size [1, 7]
}
"""


def test_pooling():
    net = build(POOL)

    def ref(P, x):
        return [
            pool2d(x, "max", (2, 2), (2, 2), ceil=True),
            pool2d(x, "max", (2, 2), (1, 1), ((1, 1), (1, 1)), dilation=(2, 2)),
            pool2d(x, "max", (3, 3), (2, 2), ((1, 1), (1, 1))),
            pool2d(x, "avg", (4, 4), (3, 3), ((1, 1), (1, 1)), ceil=True),
            pool2d(x, "avg", (3, 3), (2, 2), ((1, 1), (1, 1)), count_include_pad=False),
            # TF's same: out ⌈5/2⌉, ⌈7/2⌉; total padding 3 each way, 1 before, 2 after; real values only
            pool2d(x, "avg", (4, 4), (2, 2), ((1, 2), (1, 2)), count_include_pad=False),
            pool2d(x, "avg", (2, 2), (2, 2), ceil=True),
            x.mean(axis=(2, 3), keepdims=True),
            x.max(axis=(2, 3), keepdims=True),
            x.mean(axis=3, keepdims=True),
            x.max(axis=2, keepdims=True),
        ]

    outs, _ = check(net, ref, {"x": randn(2, 3, 5, 7)})
    # ceil mode: the last window hangs over the edge (5×7 by 2 → 3×4; 4/3 pad 1 → 2×3)
    assert outs[0].shape == (2, 3, 3, 4) and outs[3].shape == (2, 3, 2, 3)


# ---- normalisation --------------------------------------------------------------------------------

NORM = """
model Norms {
  input x: [4, 3, 5]
  input v: [5]
  output bn = x -> batchnorm
  output bn1d = v -> batchnorm momentum 0.3
  output ln = x -> layernorm
  output gn = x -> groupnorm 2
}
"""


def test_norms_train_and_eval():
    net = build(NORM)
    sd = net.state_dict()
    for k in ("bn.weight", "bn.running_var"):
        assert sd[k].numpy().tolist() == [1.0] * 4
    assert sd["bn.bias"].numpy().tolist() == sd["bn.running_mean"].numpy().tolist() == [0.0] * 4
    randomize(net)
    P0 = {k: t.numpy().astype(np.float64) for k, t in net.state_dict().items()}
    x, v = randn(3, 4, 3, 5), randn(3, 5)

    def ref_train(P, x, v):
        return [
            batchnorm_train(x, P["bn.weight"], P["bn.bias"])[0],
            batchnorm_train(v, P["bn1d.weight"], P["bn1d.bias"])[0],
            layernorm(x, P["ln.weight"], P["ln.bias"]),
            groupnorm(x, 2, P["gn.weight"], P["gn.bias"]),
        ]

    _, P = check(net, ref_train, {"x": x, "v": v}, train=True)
    # running statistics: momentum-weighted, with the unbiased batch variance (as PyTorch)
    for name, inp, mom in (("bn", x, 0.1), ("bn1d", v, 0.3)):
        _, m, var_unbiased = batchnorm_train(inp, P0[f"{name}.weight"], P0[f"{name}.bias"])
        close(P[f"{name}.running_mean"], (1 - mom) * P0[f"{name}.running_mean"] + mom * m, f"{name} running mean")
        close(P[f"{name}.running_var"], (1 - mom) * P0[f"{name}.running_var"] + mom * var_unbiased, f"{name} running var")
        assert net.state_dict()[f"{name}.num_batches_tracked"].item() == 1

    def ref_eval(P, x, v):
        return [
            batchnorm_eval(x, P["bn.weight"], P["bn.bias"], P["bn.running_mean"], P["bn.running_var"]),
            batchnorm_eval(v, P["bn1d.weight"], P["bn1d.bias"], P["bn1d.running_mean"], P["bn1d.running_var"]),
            layernorm(x, P["ln.weight"], P["ln.bias"]),
            groupnorm(x, 2, P["gn.weight"], P["gn.bias"]),
        ]

    check(net, ref_eval, {"x": x, "v": v}, train=False)
    after = net.state_dict()["bn.running_mean"].numpy()
    close(after, P["bn.running_mean"], "eval leaves the running mean alone")


# ---- activations -----------------------------------------------------------------------------------

ACTS = """
model Acts {
  input x: [4, 5]
  output o_linear = x -> linear
  output o_identity = x -> identity
  output o_sigmoid = x -> sigmoid
  output o_tanh = x -> tanh
  output o_relu = x -> relu
  output o_silu = x -> silu
  output o_elu = x -> elu 0.7
  output o_leaky = x -> leaky_relu 0.2
  output o_gelu = x -> gelu
  output o_gelu_tanh = x -> gelu tanh
  output o_softplus = x -> softplus beta 2
  output o_softmax = x -> softmax
  output o_softmax1 = x -> softmax axis 1
  output o_logsoftmax = x -> log_softmax axis 1
  output o_maxout = x -> maxout 2
  output o_prelu = x -> prelu
  output o_prelu_c = x -> prelu per_channel
  output o_abs = x -> abs
  output o_neg = x -> neg
  output o_explog = x -> exp -> log
  output o_sqrt = x -> exp -> sqrt
}
"""


def test_batchnorm_refuses_to_train_on_one_value_per_channel():
    from dlspec.errors import BackendError

    net = build("model B {\n  input v: [3]\n  batchnorm\n}")
    with pytest.raises(
        BackendError, match=r"batchnorm 'batchnorm1' needs more than 1 value per channel when training, got input of shape \(1, 3\)"
    ):
        run(net, {"v": randn(1, 3)}, train=True)
    outs, _, _ = run(net, {"v": randn(1, 3)})  # eval: running statistics, fine
    assert outs[0].shape == (1, 3)


def test_activations():
    net = build(ACTS)
    sd = net.state_dict()
    assert sd["o_prelu.weight"].numpy().tolist() == [0.25] and tuple(sd["o_prelu_c.weight"].shape) == (4,)
    randomize(net)

    def ref(P, x):
        return [
            x,
            x,
            sigmoid(x),
            np.tanh(x),
            np.maximum(x, 0),
            x * sigmoid(x),
            np.where(x > 0, x, 0.7 * (np.exp(x) - 1)),
            np.where(x > 0, x, 0.2 * x),
            gelu(x),
            gelu(x, tanh=True),
            np.log1p(np.exp(2 * x)) / 2,
            softmax(x, -1),
            softmax(x, 1),
            log_softmax(x, 1),
            x.reshape(x.shape[0], 2, 2, 5).max(axis=2),
            np.where(x > 0, x, P["o_prelu.weight"][0] * x),
            np.where(x > 0, x, P["o_prelu_c.weight"][None, :, None] * x),
            np.abs(x),
            -x,
            x,
            np.exp(x / 2),
        ]

    x = randn(2, 4, 5) * 1.5
    check(net, ref, {"x": x})
    # gelu is exact by default (not tinygrad's tanh approximation): they differ by ~1e-4 here
    outs, _, _ = run(net, {"x": np.full((2, 4, 5), 1.5)})
    assert abs(outs[8][0, 0, 0] - gelu(np.array(1.5))) < 1e-6
    assert abs(outs[8][0, 0, 0] - outs[9][0, 0, 0]) > 5e-5


def test_activation_gradients_at_zero_and_far_out_as_pytorch():
    """Where the two pieces meet (x = 0) PyTorch takes the left piece's slope for elu, leaky
    relu and PReLU, and 0 for relu; far out on the positive side nothing overflows."""
    net = build(
        "model Z {\n  input x: [5]\n  output r = x -> relu\n  output e = x -> elu 0.7\n"
        "  output l = x -> leaky_relu 0.2\n  output p = x -> prelu\n}"
    )
    x = np.array([[-1.0, 0.0, 0.0, 1.0, 200.0]])
    outs, rs, grads = run(net, {"x": x})
    assert np.isfinite(outs[1]).all() and outs[1][0, 4] == 200.0
    # d/dx at (-1, 0, 0, 1, 200), by hand: relu 0 0 0 1 1; elu 0.7·e^-1, 0.7, 0.7, 1, 1;
    # leaky 0.2 0.2 0.2 1 1; prelu (a = 0.25) 0.25 0.25 0.25 1 1
    slopes = [
        [0, 0, 0, 1, 1],
        [0.7 * np.exp(-1), 0.7, 0.7, 1, 1],
        [0.2, 0.2, 0.2, 1, 1],
        [0.25, 0.25, 0.25, 1, 1],
    ]
    close(grads["x"], sum(r * np.array([s]) for r, s in zip(rs, slopes)), "input gradient")
    # PReLU's a: d/da = x where x ≤ 0, so only the -1 counts
    close(grads["p.weight"], [-rs[3][0, 0]], "prelu weight gradient")


def test_binary_step_straight_through():
    net = build("model S {\n  input x: [4, 5]\n  output a = x -> step\n  output b = x -> step threshold 0.5\n}")
    x = randn(2, 4, 5) * 3
    x[0, 0, :3] = [0.0, 0.5, 1e8 + 3]  # at the thresholds: not above, so 0; exactly 1 even far above
    outs, rs, grads = run(net, {"x": x})
    assert np.array_equal(outs[0], (x > 0).astype(np.float64))  # exactly 0 or 1
    assert np.array_equal(outs[1], (x > 0.5).astype(np.float64))
    close(grads["x"], rs[0] + rs[1], "straight-through gradient (identity)")


# ---- embeddings ------------------------------------------------------------------------------------

EMB = """
model Emb {
  input tokens: [T] int vocab 7
  output e = tokens -> embedding 4 as wte -> posembed 5 as wpe
  output e2 = tokens -> embedding 3 vocab 9
}
"""


def test_embedding_and_posembed():
    net = build(EMB)
    sd = net.state_dict()
    assert tuple(sd["wte.weight"].shape) == (7, 4) and tuple(sd["wpe.weight"].shape) == (5, 4)
    randomize(net)
    tokens = np.array([[0, 6, 3], [2, 2, 5]])

    def ref(P, tokens):
        return [P["wte.weight"][tokens] + P["wpe.weight"][None, :3], P["e2.weight"][tokens]]

    _, _, grads = run(net, {"tokens": tokens})
    assert np.all(grads["wpe.weight"][3:] == 0)  # positions beyond T get nothing
    check(net, ref, {"tokens": tokens})


# ---- attention ---------------------------------------------------------------------------------------

ATT = """
model Att {
  input q: [3, 6]
  input m: [4, 6]
  input key_mask: [4] bool
  input qk_mask: [3, 3] bool
  output self_causal = q -> attention 2 causal
  output cross_masked = (q, m) -> attention 3 mask key_mask
  output causal_masked = q -> attention 2 causal mask qk_mask
  output cross = (q, m) -> attention 2, bias false
}
"""


def test_attention():
    net = build(ATT)
    sd = net.state_dict()
    assert tuple(sd["cross.in_proj_weight"].shape) == (18, 6) and tuple(sd["cross.out_proj.weight"].shape) == (6, 6)
    assert "cross.in_proj_bias" not in sd and "cross.out_proj.bias" not in sd
    assert np.all(sd["self_causal.in_proj_bias"].numpy() == 0) and np.all(sd["self_causal.out_proj.bias"].numpy() == 0)
    randomize(net)
    # sample 0 of key_mask and row 0 of sample 1 of causal & qk_mask allow no key at all
    key_mask = np.array([[False, False, False, False], [False, False, True, False]])
    qk_mask = np.array(
        [[[True, False, True], [False, True, True], [True, True, True]], [[False, True, False], [True, True, True], [False, True, True]]]
    )
    causal = np.tril(np.ones((3, 3), bool))

    def ref(P, q, m, key_mask, qk_mask):
        return [
            mha(q, q, P, "self_causal", 2, causal),
            mha(q, m, P, "cross_masked", 3, key_mask[:, None, None, :]),
            mha(q, q, P, "causal_masked", 2, causal & qk_mask[:, None]),
            mha(q, m, P, "cross", 2),
        ]

    outs, _ = check(net, ref, {"q": randn(2, 3, 6), "m": randn(2, 4, 6), "key_mask": key_mask, "qk_mask": qk_mask})
    # no NaN: a fully masked query's output is out_proj's bias alone, as in PyTorch
    close(outs[1][0], np.broadcast_to(net.state_dict()["cross_masked.out_proj.bias"].numpy(), (3, 6)), "fully masked queries")


# ---- recurrent ---------------------------------------------------------------------------------------

REC = """
model Rec {
  input s: [3, 4]
  output lstm2 = s -> lstm 3 layers 2 bidirectional sequences false
  output gru_bi = s -> gru 3 layers 2 bidirectional
  output rnn2 = s -> rnn 3 layers 2
  output rnn_relu = s -> rnn 3 relu sequences false, bias false
}
"""


def test_recurrent():
    net = build(REC)
    sd = net.state_dict()
    assert tuple(sd["lstm2.weight_ih_l0"].shape) == (12, 4) and tuple(sd["lstm2.weight_ih_l1_reverse"].shape) == (12, 6)
    assert tuple(sd["gru_bi.weight_hh_l0_reverse"].shape) == (9, 3) and tuple(sd["gru_bi.bias_hh_l0"].shape) == (9,)
    assert "rnn_relu.bias_ih_l0" not in sd and "rnn_relu.weight_hh_l0" in sd
    bound = 1 / np.sqrt(3)  # PyTorch: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias
    assert all(np.abs(sd[k].numpy()).max() <= bound for k in sd)

    def ref(P, s):
        return [
            recurrent("lstm", s, P, "lstm2", 3, layers=2, bidirectional=True, sequences=False),
            recurrent("gru", s, P, "gru_bi", 3, layers=2, bidirectional=True),
            recurrent("rnn", s, P, "rnn2", 3, layers=2),
            recurrent("rnn", s, P, "rnn_relu", 3, sequences=False, nonlinearity="relu"),
        ]

    outs, _ = check(net, ref, {"s": randn(2, 3, 4)})
    assert [o.shape for o in outs] == [(2, 6), (2, 3, 6), (2, 3, 3), (2, 3)]


CELL = """
cell MinimalGRU(hidden) {
  state h: [hidden]
  gate z = (x, h) -> dense hidden -> sigmoid
  n = (x, z * h) -> dense hidden -> tanh
  h = (1 - z) * h + z * n
}

model Cells {
  input s: [3, 4]
  output seq = s -> MinimalGRU(3) as rnn
  output last = s -> MinimalGRU(2, sequences = false) as last
}
"""


def test_user_cell():
    net = build(CELL)
    randomize(net)

    def mgu(s, P, p, hidden, sequences):
        h = np.zeros((s.shape[0], hidden))
        ys = []
        for t in range(s.shape[1]):
            x = s[:, t]
            z = sigmoid(np.concatenate([x, h], -1) @ P[f"{p}.dense1.weight"].T + P[f"{p}.dense1.bias"])
            n = np.tanh(np.concatenate([x, z * h], -1) @ P[f"{p}.dense2.weight"].T + P[f"{p}.dense2.bias"])
            h = (1 - z) * h + z * n
            ys.append(h)
        return np.stack(ys, 1) if sequences else h

    def ref(P, s):
        return [mgu(s, P, "rnn", 3, True), mgu(s, P, "last", 2, False)]

    check(net, ref, {"s": randn(2, 3, 4)})


# ---- merges, dense, layout, padding ---------------------------------------------------------------

MERGE = """
model Merge {
  input a: [3, 5]
  input b: [3, 5]
  input r: [1, 5]
  output cat = concat(a, b)
  output cat_last = concat(a, b, axis = -1)
  output sum3 = (a, b, r) -> add
  output prod = (a, r) -> multiply
  output gated = (1 - sigmoid(a)) * b + a / (b * b + 1) - 2 * r
  output dense2 = (a, b) -> dense 4
  output dense_nb = a -> dense 2, bias false
  output flat = a -> flatten -> dense 3
  output perm = a -> permute [2, 1] -> reshape [-1, 3]
}
"""


def test_merges_dense_and_layout():
    net = build(MERGE)
    randomize(net)

    def ref(P, a, b, r):
        return [
            np.concatenate([a, b], 1),
            np.concatenate([a, b], -1),
            a + b + r,
            a * r,
            (1 - sigmoid(a)) * b + a / (b * b + 1) - 2 * r,
            np.concatenate([a, b], -1) @ P["dense2.weight"].T + P["dense2.bias"],
            a @ P["dense_nb.weight"].T,
            a.reshape(a.shape[0], -1) @ P["dense1.weight"].T + P["dense1.bias"],
            a.transpose(0, 2, 1).reshape(a.shape[0], -1, 3),
        ]

    check(net, ref, {"a": randn(2, 3, 5), "b": randn(2, 3, 5), "r": randn(2, 1, 5)})


PAD = """
model Pads {
  input x: [3, 5, 7]
  output const = x -> pad [[1, 0], [2, 1]] value 0.5
  output refl = x -> pad 2 reflect
  output repl = x -> pad [1, 3] replicate
  output chans = x -> pad channels [1, 2]
  output up_near = x -> upsample 2
  output up_lin = x -> upsample [2, 3] linear
}
"""


def test_pad_and_upsample():
    net = build(PAD)

    def ref(P, x):
        return [
            np.pad(x, ((0, 0), (0, 0), (1, 0), (2, 1)), constant_values=0.5),
            np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect"),
            np.pad(x, ((0, 0), (0, 0), (1, 1), (3, 3)), mode="edge"),
            np.pad(x, ((0, 0), (1, 2), (0, 0), (0, 0))),
            x.repeat(2, axis=2).repeat(2, axis=3),
            linear_1d(linear_1d(x, 2, 2), 3, 3),
        ]

    check(net, ref, {"x": randn(2, 3, 5, 7)})


# ---- the VAE sampling step and dropout ----------------------------------------------------------------

SAMPLE = """
model Sampler {
  input mu: [40]
  input logvar: [40]
  output z = (mu, logvar) -> sample
  output d = mu -> dropout 0.25
}
"""


def test_sample_and_dropout():
    mu, lv = randn(50, 40), randn(50, 40) * 0.5
    net = build(SAMPLE)
    outs, rs, grads = run(net, {"mu": mu, "logvar": lv}, train=False)
    close(outs[0], mu, "eval: z = mu")
    close(outs[1], mu, "eval: dropout is the identity")
    close(grads["logvar"], np.zeros_like(lv), "eval: no gradient to logvar")

    outs, rs, grads = run(net, {"mu": mu, "logvar": lv}, train=True)
    eps = (outs[0] - mu) / np.exp(lv / 2)
    assert abs(eps.mean()) < 0.05 and abs(eps.std() - 1) < 0.05, (eps.mean(), eps.std())
    # reparameterisation: dz/dmu = 1, dz/dlogvar = ε·exp(logvar/2)/2 = (z − mu)/2
    close(grads["mu"], rs[0] + rs[1] * (outs[1] != 0) / 0.75, "d z / d mu (and dropout's mask)", atol=1e-3)
    close(grads["logvar"], rs[0] * (outs[0] - mu) / 2, "d z / d logvar", atol=1e-3)
    kept = outs[1] != 0
    assert abs(kept.mean() - 0.75) < 0.03
    close(outs[1][kept], mu[kept] / 0.75, "dropout scales the kept elements by 1/(1-p)")

    # seeded: a fresh build with the same seed samples the same ε; another seed differs
    again = run(build(SAMPLE), {"mu": mu, "logvar": lv}, train=True)[0]
    other = run(build(SAMPLE, seed=1), {"mu": mu, "logvar": lv}, train=True)[0]
    assert np.array_equal(again[0], outs[0]) and np.array_equal(again[1], outs[1])
    assert not np.allclose(other[0], outs[0])


def test_inputs_are_cast_to_the_model_dtype():
    net = build("model C {\n  input x: [4, 5]\n  output a = x -> relu\n}")
    y = net(Tensor(np.ones((2, 4, 5), np.float64)))
    assert y.dtype.name == "float" and y.numpy().sum() == 40
