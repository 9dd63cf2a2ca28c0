"""The ops of issue 14 (part): ``relu6``, ``hardswish``, ``hardsigmoid``, ``mish``, ``glu``, ``sin``,
``cos``, ``tile``, ``roll``, ``droppath``, ``embedding padding_idx`` and ``upsample bilinear
align_corners``.

The tinygrad runtime against NumPy float64 references written here from the definitions
(outputs, and gradients against finite differences of the references), against PyTorch's own
functions where torch is installed, droppath's training statistics, the static shapes, params and
MACs, and the located errors of bad parameters. The ONNX and PyTorch-code exports of these ops are
checked with the other ops in tests/test_export_onnx.py and tests/test_export_torch.py."""

from __future__ import annotations

import numpy as np
import pytest
from backend_ref import build, check, randomize, run, sigmoid
from shapehelp import errors, last, spec
from tinygrad import Context

import dlspec

RNG = np.random.default_rng(14)


@pytest.fixture(autouse=True, scope="module")
def _unoptimised_kernels():
    """Compile without tinygrad's kernel optimiser: the same numbers, faster on a cold cache."""
    with Context(NOOPT=1):
        yield


# ---- NumPy float64 references (PyTorch's definitions) -----------------------------------------------


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def hardswish(x):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def hardsigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def mish(x):
    return x * np.tanh(np.logaddexp(0.0, x))


def glu(x, axis):
    a, b = np.split(x, 2, axis=axis)
    return a * sigmoid(b)


def lerp_axis(x, axis, out, align_corners):
    """Linear interpolation of ``x`` along ``axis`` to ``out`` values, as ``F.interpolate``: with
    ``align_corners`` output i reads input ``i·(S − 1)/(out − 1)``, else ``(i + ½)·S/out − ½``
    (clamped at 0); the two neighbours weighted by the distance."""
    size = x.shape[axis]
    i = np.arange(out, dtype=np.float64)
    if align_corners:
        src = i * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    else:
        src = np.maximum((i + 0.5) * size / out - 0.5, 0.0)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    w = src - lo
    shape = [1] * x.ndim
    shape[axis] = out
    w = w.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def upsample_linear(x, scale, align_corners):
    y = x
    for ax, s in enumerate(scale, start=2):
        y = lerp_axis(y, ax, x.shape[ax] * s, align_corners)
    return y


# ---- the ops against the references, forward and backward -----------------------------------------

ELEMENTWISE = """
model New {
  input x: [4, 3, 6]
  input s: [2, 5]
  output r6 = x -> relu6
  output hs = x -> hardswish
  output hsg = x -> hardsigmoid
  output mi = x -> mish
  output sn = x -> sin
  output cs = x -> cos
  output gl = x -> glu
  output gl1 = glu(x, axis = 1)
  output tl = x -> tile [1, 2, 1]
  output tt = x -> tile to [8, -1, 12]
  output rl = x -> roll 2 axis 2
  output rl2 = roll(x, [1, -4], axis = [1, -1])
  output dp = x -> droppath 0.3
  output up = x -> upsample 2 bilinear align_corners
  output up2 = x -> upsample [2, 3] bilinear
  output up3 = s -> upsample 3 linear align_corners
}
"""


def test_ops_equal_the_numpy_references():
    net = build(ELEMENTWISE)

    def ref(P, x, s):
        return [
            relu6(x),
            hardswish(x),
            hardsigmoid(x),
            mish(x),
            np.sin(x),
            np.cos(x),
            glu(x, -1),
            glu(x, 1),
            np.tile(x, (1, 1, 2, 1)),
            np.tile(x, (1, 2, 1, 2)),
            np.roll(x, 2, axis=2),
            np.roll(x, (1, -4), axis=(1, 3)),
            x,  # droppath: the identity in eval
            upsample_linear(x, (2, 2), True),
            upsample_linear(x, (2, 3), False),
            upsample_linear(s, (3,), True),
        ]

    # values spread over every piece of the piecewise functions (−3, 0, 3, 6)
    inputs = {"x": RNG.standard_normal((2, 4, 3, 6)) * 4, "s": RNG.standard_normal((2, 2, 5))}
    outs, _ = check(net, ref, inputs)
    assert outs[6].shape == (2, 4, 3, 3) and outs[7].shape == (2, 2, 3, 6)
    assert outs[13].shape == (2, 4, 6, 12) and outs[14].shape == (2, 4, 6, 18) and outs[15].shape == (2, 2, 15)


def test_ops_equal_pytorchs():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = build(ELEMENTWISE)
    x = RNG.standard_normal((2, 4, 3, 6)).astype(np.float32) * 4
    s = RNG.standard_normal((2, 2, 5)).astype(np.float32)
    outs, _, _ = run(net, {"x": x, "s": s})
    tx, ts = torch.from_numpy(x).double(), torch.from_numpy(s).double()
    want = [
        F.relu6(tx),
        F.hardswish(tx),
        F.hardsigmoid(tx),
        F.mish(tx),
        torch.sin(tx),
        torch.cos(tx),
        F.glu(tx),  # PyTorch's default: the last axis
        F.glu(tx, dim=1),
        tx.repeat(1, 1, 2, 1),
        tx.repeat(1, 2, 1, 2),
        torch.roll(tx, 2, 2),
        torch.roll(tx, (1, -4), (1, -1)),
        tx,
        F.interpolate(tx, scale_factor=2, mode="bilinear", align_corners=True),
        F.interpolate(tx, scale_factor=(2, 3), mode="bilinear", align_corners=False),
        F.interpolate(ts, scale_factor=3, mode="linear", align_corners=True),
    ]
    for name, o, w in zip(net.output_names, outs, want):
        np.testing.assert_allclose(o, w.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


# ---- embedding padding_idx ------------------------------------------------------------------------

PADDED = """
model Padded {
  input tok: [6] int vocab 7
  output e = tok -> embedding 3 padding_idx 0
  output last = tok -> embedding 2 padding_idx -1
}
"""


def test_embedding_padding_row_starts_at_zero_and_gets_no_gradient():
    net = build(PADDED)
    sd = net.state_dict()
    w0, w1 = sd["e.weight"].numpy(), sd["last.weight"].numpy()
    assert (w0[0] == 0).all() and (w0[1:] != 0).all()  # N(0, 1) with row 0 zeroed, as torch.nn.Embedding
    assert (w1[6] == 0).all() and (w1[:6] != 0).all()  # padding_idx −1: the last row
    randomize(net)  # a loaded non-zero padding row is read as it is (as PyTorch's)
    frozen = {k: t.numpy().astype(np.float64) for k, t in net.state_dict().items()}

    def ref(P, tok):
        e, la = P["e.weight"].copy(), P["last.weight"].copy()
        e[0], la[6] = frozen["e.weight"][0], frozen["last.weight"][6]  # constants: no gradient
        return [e[tok], la[tok]]

    tok = np.array([[0, 1, 2, 0, 6, 3], [5, 6, 6, 0, 4, 1]])
    outs, _ = check(net, ref, {"tok": tok})
    assert np.abs(outs[0][0, 0]).sum() > 0  # the randomised padding row, not zeros
    _, _, grads = run(net, {"tok": tok}, train=True)
    assert (grads["e.weight"][0] == 0).all() and (grads["e.weight"][1:3] != 0).all()
    assert (grads["last.weight"][6] == 0).all()


def test_embedding_padding_gradient_equals_pytorchs():
    torch = pytest.importorskip("torch")
    net = build(PADDED)
    randomize(net)
    tok = np.array([[0, 1, 2, 0, 6, 3], [5, 6, 6, 0, 4, 1]])
    outs, rs, grads = run(net, {"tok": tok})
    emb = torch.nn.Embedding(7, 3, padding_idx=0).double()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(net.state_dict()["e.weight"].numpy()))
    y = emb(torch.from_numpy(tok))
    (y * torch.from_numpy(rs[0])).sum().backward()
    np.testing.assert_allclose(outs[0], y.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(grads["e.weight"], emb.weight.grad.numpy(), rtol=1e-5, atol=1e-6)


# ---- droppath ---------------------------------------------------------------------------------------


def test_droppath_drops_whole_samples_in_training_and_scales_the_rest():
    net = build("model D {\n  input x: [3, 2]\n  droppath 0.25\n}\n")
    x = np.ones((4000, 3, 2), np.float32)
    (y,), _, _ = run(net, {"x": x}, train=True)
    per_sample = y.reshape(4000, -1)
    kept = per_sample[:, 0] != 0
    # a sample is all zeros or all 1/(1 − 0.25) (timm's DropPath, scale_by_keep)
    assert np.all(per_sample[~kept] == 0)
    np.testing.assert_allclose(per_sample[kept], 1 / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.03  # 3σ ≈ 0.02 at n = 4000
    assert abs(y.mean() - 1.0) < 0.04  # the expectation is kept
    (y_eval,), _, _ = run(net, {"x": x[:4]}, train=False)
    np.testing.assert_array_equal(y_eval, x[:4])


# ---- static shapes, params and MACs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, shape, params",
    [
        ("input x: [4, 6, 8]\nrelu6", (4, 6, 8), 0),
        ("input x: [16]\nhardswish", (16,), 0),
        ("input x: [T, 16]\nhardsigmoid", ("T", 16), 0),
        ("input x: [T, 16]\nmish", ("T", 16), 0),
        ("input x: [T, 16]\nsin -> cos", ("T", 16), 0),
        ("input x: [T, 16]\nglu", ("T", 8), 0),
        ("input x: [8, 5, 5]\nglu axis 1", (4, 5, 5), 0),
        ("input x: [8, 5, 5]\nglu(x, dim = -3)", (4, 5, 5), 0),
        ("input x: [T, 16]\ntile [2, 3]", ("2·T", 48), 0),
        ("input x: [T, 16]\ntile to [-1, 64]", ("T", 64), 0),
        ("input x: [1, 5, 5]\ntile to [3, 5, 10]", (3, 5, 10), 0),
        ("input x: [T, 16]\nroll 3 axis 1", ("T", 16), 0),
        ("input x: [4, 6, 8]\nroll [1, 2] axis [-2, -1]", (4, 6, 8), 0),
        ("input x: [4, 6, 8]\ndroppath 0.1", (4, 6, 8), 0),
        ("input x: [T] int vocab 100\nembedding 16 padding_idx 0", ("T", 16), 1600),
        ("input x: [T] int\nembedding 16 vocab 50 padding_idx -1", ("T", 16), 800),
        ("input x: [4, 6, 8]\nupsample 2 bilinear align_corners", (4, 12, 16), 0),
        ("input x: [4, 6, 8]\nupsample [1, 3] bilinear align_corners false", (4, 6, 24), 0),
        ("input x: [4, 2, 3, 5]\nupsample 2 linear align_corners", (4, 4, 6, 10), 0),
    ],
)
def test_static_shapes_params_and_macs(body, shape, params):
    got_shape, got_params, buffers, macs = last(body)
    assert got_shape == shape
    assert (got_params, buffers) == (params, 0)
    assert macs == 0  # they move or map values; none multiplies-and-accumulates


def test_summaries_and_categories():
    from dlspec import ops

    assert ops.get("relu6").category == ops.get("mish").category == "activation"
    assert ops.get("sin").category == "elementwise" and ops.get("droppath").category == "regularisation"
    assert ops.get("tile").category == ops.get("roll").category == "reshape"
    prog = dlspec.load(spec("input x: [4, 6, 8]\nglu axis 1\ntile [1, 2, 1]\nroll [1, 2] axis [2, 3]\ndroppath 0.2"))
    words = [ops.words(n.op, n.params) for n in prog.ir("M").nodes[1:]]
    assert words == [["glu", "axis 1"], ["tile ×[1, 2, 1]"], ["roll [1, 2]", "axis [2, 3]"], ["droppath 0.2"]]
    up = dlspec.load(spec("input x: [4, 6, 8]\nupsample 2 bilinear align_corners")).ir("M").nodes[1]
    assert ops.words("upsample", up.params) == ["upsample", "×2", "bilinear", "align_corners"]


def test_relu6_layers_get_readable_names():
    g = dlspec.load(spec("input x: [4]\nrelu6\nrelu6")).ir("M")
    assert [n.path for n in g.nodes[1:]] == ["relu6_1", "relu6_2"]


# ---- bad parameters: located errors with the arithmetic ----------------------------------------------------

BAD = [
    (
        "input x: [5, 4, 4]\nglu axis 1",
        "glu 'glu1' halves axis 1 of (N, 5, 4, 4), but its size 5 is odd (5 = 2·2 + 1)",
        "the layer before it needs an even size on axis 1, e.g. 6 (twice the output's 3)",
    ),
    ("input x: [T, 16]\nglu axis 1", "glu 'glu1' cannot halve axis 1 of (N, T, 16): its size T is known only at run time", None),
    ("input x: [16]\nglu axis 0", "glu 'glu1': axis 0 is the batch N, which cannot be gated", None),
    ("input x: [16] int vocab 4\nglu", "glu 'glu1' expects a float input but gets int64 from input 'x'", None),
    (
        "input x: [4, 6, 8]\ntile [2, 2]",
        "tile 'tile1' has 2 counts [2, 2] but its input (N, 4, 6, 8) has 3 axes after the batch N",
        "give one per axis of a sample (3); 1 keeps an axis",
    ),
    ("input x: [4, 6, 8]\ntile [1, 0, 1]", "tile 'reps' must be > 0, got [1, 0, 1] (item 0)", None),
    (
        "input x: [4, 6, 8]\ntile to [4, 9, 8]",
        "tile 'tile1' cannot tile axis 2 of size 6 to 9: 9 is not a multiple of 6 (9 = 6·1 + 3)",
        "a size that is a multiple of 6: 6 or 12",
    ),
    (
        "input x: [T, 8]\ntile to [10, 8]",
        "tile 'tile1' cannot tile axis 1 of size T to 10: the size is known only at run time",
        "write -1 to keep the axis",
    ),
    ("input x: [4, 6, 8]\ntile [1, 1, 1] to [4, 6, 8]", "tile 'tile1' needs counts or a target shape (one of them)", None),
    (
        "input x: [4, 6, 8]\nroll 1 axis 0",
        "roll 'roll1': axis 0 is the batch N, which cannot be rolled",
        "axes count from 0 with the batch N first: a sample's axes are 1 onwards (or −1 from the end)",
    ),
    ("input x: [4, 6, 8]\nroll 1 axis 4", "roll 'roll1': axis 4 is past the last axis of (4, 6, 8) (4 axes with N, 0 to 3)", None),
    ("input x: [4, 6, 8]\nroll [1, 2] axis 2", "roll 'roll1' has 2 shifts [1, 2] for 1 axis [2]", None),
    ("input x: [4, 6, 8]\nroll [1, 2] axis [2, -2]", "roll 'roll1' names axis 2 twice", None),
    (
        "input x: [4, 6, 8]\nroll 1",
        "roll needs 'axis': the axis (or axes) to shift along",
        "write 'roll SHIFT axis K', e.g. 'roll 1 axis 2'",
    ),
    ("input x: [4, 6, 8]\ndroppath", "droppath needs 'rate'", None),
    ("input x: [4, 6, 8]\ndroppath 1", "droppath 'rate' must be < 1.0, got 1", None),
    (
        "input x: [6] int vocab 10\nembedding 4 padding_idx 10",
        "embedding 'embedding1' padding_idx 10 is past its vocabulary of 10 (ids 0 to 9)",
        "a padding id lies in the vocabulary: 0 to 9 (−1 is the last, 9)",
    ),
    (
        "input x: [6] int vocab 10\nembedding 4 padding_idx -11",
        "embedding 'embedding1' padding_idx -11 is past its vocabulary of 10 (ids 0 to 9, or −10 to −1 from the end)",
        None,
    ),
    (
        "input x: [4, 9]\nupsample 2 bilinear",
        "upsample 'upsample1' bilinear needs 2 spatial axes, (N, C, H, W), but gets (N, 4, 9) (1 spatial axis)",
        "'linear' interpolates along any number of spatial axes",
    ),
    ("input x: [4, 6, 8]\nupsample 2 align_corners", "upsample 'upsample1' align_corners is for the linear modes, not nearest", None),
    ("input x: [4, 6, 8]\nupsample 2 bilinar", "bilinar", None),
]


@pytest.mark.parametrize("body, message, help", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_parameters_are_located_errors(body, message, help):
    found = errors(spec(body))
    assert found, "no error"
    line, col, msg, hlp, _ = found[0]
    assert (line, col) >= (3, 3), "the error points at the layer's line"
    assert message in msg
    if help is not None:
        assert hlp == help
