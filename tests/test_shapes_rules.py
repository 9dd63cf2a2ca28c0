"""Hand-computed shape rules, parameter counts and MACs for every op of the catalogue.

Every expected number is a literal with its arithmetic in a comment; nothing here calls
dlspec's window helpers or PyTorch. Shapes are per sample (the batch N is dropped).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from shapehelp import at, error_messages, infer, last, out, spec, totals, warnings

import dlspec

ROOT = Path(__file__).resolve().parents[1]


def layer(input_shape: str, line: str, pre: str = ""):
    """(shape, params, buffers, MACs) of one layer applied to ``input x: input_shape``."""
    return last(f"input x: {input_shape}\n{line}", pre)


# ---- convolution ------------------------------------------------------------------------

CONV = [
    # conv 1-D: (11 − 3)/1 + 1 = 9; params 4·3·3 + 4 = 40; MACs 4·9 · 3·3 = 324
    ("[3, 11]", "conv 4 kernel 3", (4, 9), 40, 324),
    # 1-D stride 2 dilation 2: k_eff = 2·(3 − 1) + 1 = 5; (17 − 5)/2 + 1 = 7; params 5·2·3 + 5 = 35; MACs 5·7 · 2·3 = 210
    ("[2, 17]", "conv 5 kernel 3 stride 2 dilation 2", (5, 7), 35, 210),
    # 2-D odd size: (11 + 2·1 − 3)/2 + 1 = 6; params 4·3·9 + 4 = 112; MACs 4·6·6 · 3·9 = 3888
    ("[3, 11, 11]", "conv 4 kernel 3 stride 2 padding 1", (4, 6, 6), 112, 3888),
    # asymmetric: H ⌊(11 + 0 + 1 − 3)/2⌋ + 1 = 5, W ⌊(11 + 1 + 2 − 3)/2⌋ + 1 = 6; MACs 4·5·6 · 27 = 3240
    ("[3, 11, 11]", "conv 4 kernel 3 stride 2 padding [[0, 1], [1, 2]]", (4, 5, 6), 112, 3240),
    # per-dim tuples: H (11 + 2 − 3)/2 + 1 = 6; W k_eff = 2·4 + 1 = 9, (11 + 4 − 9)/1 + 1 = 7
    # params 4·3·(3·5) + 4 = 184; MACs 4·6·7 · 3·15 = 7560
    ("[3, 11, 11]", "conv 4 kernel [3, 5] stride [2, 1] padding [1, 2] dilation [1, 2]", (4, 6, 7), 184, 7560),
    # groups 2: (10 − 3) + 1 = 8; params 8·(4/2)·9 + 8 = 152; MACs 8·8·8 · 2·9 = 9216
    ("[4, 10, 10]", "conv 8 kernel 3 groups 2", (8, 8, 8), 152, 9216),
    # depthwise (groups = C), no bias: (9 + 2 − 3) + 1 = 9; params 6·1·9 = 54; MACs 6·9·9 · 9 = 4374
    ("[6, 9, 9]", "conv 6 kernel 3 groups 6 padding 1, bias false", (6, 9, 9), 54, 4374),
    # depthwise multiplier 2: params 12·1·9 + 12 = 120; MACs 12·7·7 · 9 = 5292
    ("[6, 9, 9]", "conv 12 kernel 3 groups 6", (12, 7, 7), 120, 5292),
    # same, stride 1, even kernel: out = S = 10; params 4·3·16 + 4 = 196; MACs 4·10·10 · 48 = 19200
    ("[3, 10, 10]", "conv 4 kernel 4 padding same", (4, 10, 10), 196, 19200),
    # same, stride 1, dilation 2: out = S = 9; MACs 4·81 · 27 = 8748
    ("[3, 9, 9]", "conv 4 kernel 3 dilation 2 padding same", (4, 9, 9), 112, 8748),
    # same, stride 2 (TF): ⌈11/2⌉ = 6; MACs 4·36 · 27 = 3888
    ("[3, 11, 11]", "conv 4 kernel 3 stride 2 padding same", (4, 6, 6), 112, 3888),
    # same, stride 2, even size: ⌈12/2⌉ = 6
    ("[3, 12, 12]", "conv 4 kernel 3 stride 2 padding same", (4, 6, 6), 112, 3888),
    # same, stride 3, kernel 5: ⌈13/3⌉ = 5 (total padding (5 − 1)·3 + 5 − 13 = 4); params 2·1·25 + 2 = 52; MACs 2·25 · 25 = 1250
    ("[1, 13, 13]", "conv 2 kernel 5 stride 3 padding same", (2, 5, 5), 52, 1250),
    # valid = no padding: (11 − 3)/2 + 1 = 5; MACs 4·25 · 27 = 2700
    ("[3, 11, 11]", "conv 4 kernel 3 stride 2 padding valid", (4, 5, 5), 112, 2700),
    # 3-D: (5 − 3)/2 + 1 = 2, (7 − 3)/2 + 1 = 3, (9 − 3)/2 + 1 = 4; params 3·2·27 + 3 = 165; MACs 3·2·3·4 · 54 = 3888
    ("[2, 5, 7, 9]", "conv 3 kernel 3 stride 2", (3, 2, 3, 4), 165, 3888),
    # 3-D per dim: D 8; H (9 + 2 − 3)/2 + 1 = 5; W ⌊(10 + 2 − 3)/2⌋ + 1 = 5; params 2·1·9 + 2 = 20; MACs 2·8·5·5 · 9 = 3600
    ("[1, 8, 9, 10]", "conv 2 kernel [1, 3, 3] stride [1, 2, 2] padding [0, 1, 1]", (2, 8, 5, 5), 20, 3600),
    # kernel larger than the input, saved by padding: (8 + 2 − 9) + 1 = 2; params 4·3·81 + 4 = 976; MACs 4·4 · 243 = 3888
    ("[3, 8, 8]", "conv 4 kernel 9 padding 1", (4, 2, 2), 976, 3888),
]


@pytest.mark.parametrize("shape,line,want,params,macs", CONV, ids=[c[1] for c in CONV])
def test_conv(shape, line, want, params, macs):
    assert layer(shape, line) == (want, params, 0, macs)


def test_conv_warns_when_floor_drops_input_rows():
    # (10 − 3)/2 + 1 = 4.5 → 4; windows cover (4 − 1)·2 + 3 = 9 of 10 rows
    assert layer("[4, 10]", "conv 4 kernel 3 stride 2 padding valid")[0] == (4, 4)
    assert warnings(spec("input x: [4, 10]\nconv 4 kernel 3 stride 2 padding valid")) == [
        "conv 'conv1' output length (10 - 3) / 2 + 1 = 4.5 is rounded down: the last 1 input row(s) are never seen"
    ]


def test_conv_1x1_stride_2_shortcut_does_not_warn():
    # a 1×1 stride-2 projection skips rows by design: (9 − 1)/2 + 1 = 5
    assert layer("[4, 9, 9]", "conv 8 kernel 1 stride 2")[0] == (8, 5, 5)
    assert warnings(spec("input x: [4, 9, 9]\nconv 8 kernel 1 stride 2")) == []


def test_conv_symbolic_length_stays_symbolic():
    shape, params, _, macs = layer("[3, T]", "conv 4 kernel 3")
    assert shape == (4, "T-2")  # T − 3 + 1
    assert params == 40  # 4·3·3 + 4
    assert at(macs, T=10) == 288  # 4·(10 − 2) · 9
    t = infer("input x: [3, T]\nconv 4 kernel 3 stride 2")
    length, macs = t.types["conv1"].shape[2], t.costs["conv1"].macs
    assert str(length) == "⌊(T-3)/2⌋+1"
    assert (at(length, T=10), at(length, T=11)) == (4, 5)  # ⌊7/2⌋ + 1, ⌊8/2⌋ + 1
    assert at(macs, T=11) == 180  # 4·5 · 3·3


DECONV = [
    # (7 − 1)·2 − 2·1 + (3 − 1) + 1 + 1 = 14; params 4·2·9 + 2 = 74; MACs 4·7·7 · 2·9 = 3528
    ("[4, 7, 7]", "deconv 2 kernel 3 stride 2 padding 1 output_padding 1", (2, 14, 14), 74, 3528),
    # 1-D: (5 − 1)·2 − 2 + 3 + 1 = 10; params 3·6·4 + 6 = 78; MACs 3·5 · 6·4 = 360
    ("[3, 5]", "deconv 6 kernel 4 stride 2 padding 1", (6, 10), 78, 360),
    # dilation and groups: (5 − 1) + 2·2 + 1 = 9; params 4·(6/2)·9 = 108; MACs 4·25 · 3·9 = 2700
    ("[4, 5, 5]", "deconv 6 kernel 3 dilation 2 groups 2, bias false", (6, 9, 9), 108, 2700),
    # per-dim output_padding: H 5·2 + 2 + 1 + 1 = 14; W 5·3 + 2 + 2 + 1 = 20; params 4·2·9 + 2 = 74; MACs 4·36 · 18 = 2592
    ("[4, 6, 6]", "deconv 2 kernel 3 stride [2, 3] output_padding [1, 2]", (2, 14, 20), 74, 2592),
]


@pytest.mark.parametrize("shape,line,want,params,macs", DECONV, ids=[c[1] for c in DECONV])
def test_deconv(shape, line, want, params, macs):
    assert layer(shape, line) == (want, params, 0, macs)


# ---- pooling ------------------------------------------------------------------------------

POOL = [
    # (11 − 3)/2 + 1 = 5
    ("[4, 11, 11]", "pool max kernel 3 stride 2", (4, 5, 5)),
    # stride defaults to the kernel: 12/2 = 6
    ("[4, 12, 12]", "pool avg kernel 2", (4, 6, 6)),
    # ceil: ⌈(10 − 3)/2⌉ + 1 = 5 (floor would drop the last row)
    ("[4, 10, 10]", "pool max kernel 3 stride 2 ceil true", (4, 5, 5)),
    # ceil, last window would start in the right padding: ⌈(5 + 2 − 2)/2⌉ + 1 = 4, (4 − 1)·2 = 6 ≥ 5 + 1 → 3
    ("[4, 5, 5]", "pool max kernel 2 stride 2 padding 1 ceil true", (4, 3, 3)),
    # ceil where the last window starts inside the input: ⌈(6 + 2 − 3)/2⌉ + 1 = 4, (4 − 1)·2 = 6 < 6 + 1 → 4
    ("[4, 6, 6]", "pool max kernel 3 stride 2 padding 1 ceil true", (4, 4, 4)),
    # ceil, window larger than the input (PyTorch keeps one overhanging window): k_eff 2·4 + 1 = 9, ⌈(7 − 9)/3⌉ + 1 = 1
    ("[4, 7]", "pool max kernel 5 stride 3 dilation 2 ceil true", (4, 1)),
    # ResNet stem: ⌊(112 + 2 − 3)/2⌋ + 1 = 56 (the dropped row is padding, not an error)
    ("[4, 112, 112]", "pool max kernel 3 stride 2 padding 1", (4, 56, 56)),
    # dilation: k_eff = 2·2 + 1 = 5, stride 3: (11 − 5)/3 + 1 = 3
    ("[4, 11, 11]", "pool avg kernel 3 dilation 2", (4, 3, 3)),
    # 1-D: 9/3 = 3; 3-D: (4/2, 6/2, 8/2)
    ("[4, 9]", "pool max kernel 3", (4, 3)),
    ("[2, 4, 6, 8]", "pool max kernel 2", (2, 2, 3, 4)),
    # per dim: H (9 − 3)/3 + 1 = 3, W (8 − 2)/2 + 1 = 4
    ("[4, 9, 8]", "pool max kernel [3, 2]", (4, 3, 4)),
    # global: every spatial dim → 1
    ("[4, 7, 7]", "pool global avg", (4, 1, 1)),
    ("[4, 9]", "pool global max", (4, 1)),
    ("[4, 3, 5, 7]", "pool global avg", (4, 1, 1, 1)),
    ("[4, H, W]", "pool global avg", (4, 1, 1)),
    # adaptive, divisible: 12 → 4; per dim 12 → 3, 12 → 6
    ("[4, 12, 12]", "pool adaptive avg size 4", (4, 4, 4)),
    ("[4, 12, 12]", "pool adaptive max size [3, 6]", (4, 3, 6)),
]


@pytest.mark.parametrize("shape,line,want", POOL, ids=[f"{p[0]} {p[1]}" for p in POOL])
def test_pool(shape, line, want):
    assert layer(shape, line) == (want, 0, 0, 0)


def test_pool_adaptive_not_divisible_is_an_error():
    assert error_messages("input x: [4, 12, 12]\npool adaptive avg size 5") == [
        "pool 'pool1' adaptive pooling from height 12 to 5: 12 is not a multiple of 5"
    ]


def test_pool_floor_that_drops_input_is_an_error():
    # (8 − 3)/2 + 1 = 3.5
    assert error_messages("input x: [3, 8, 8]\npool avg kernel 3 stride 2") == [
        "pool 'pool1' output height (8 - 3) / 2 + 1 = 3.5 is not a whole number"
    ]


# ---- layout -------------------------------------------------------------------------------

LAYOUT = [
    # flatten: 4·5·5 = 100
    ("[4, 5, 5]", "flatten", (100,)),
    # flatten from axis 2: (4, 5·5)
    ("[4, 5, 5]", "flatten start 2", (4, 25)),
    ("[8]", "flatten", (8,)),
    ("[T, 4]", "flatten", ("4·T",)),
    # reshape with −1: 4·6·6 = 144 = 16·9
    ("[4, 6, 6]", "reshape [-1, 9]", (16, 9)),
    ("[4, 6, 6]", "reshape [2, 72]", (2, 72)),
    ("[T, 4]", "reshape [-1, 2]", ("2·T", 2)),
    # permute (1-based, N fixed): (4, 12, 6) → (6, 4, 12)
    ("[4, 12, 6]", "permute [3, 1, 2]", (6, 4, 12)),
    # upsample: 5·3 = 15, 6·3 = 18; per dim 5·2, 6·3; 1-D 7·2
    ("[4, 5, 6]", "upsample 3", (4, 15, 18)),
    ("[4, 5, 6]", "upsample [2, 3]", (4, 10, 18)),
    ("[4, 7]", "upsample 2 linear", (4, 14)),
    # explicit padding: 8 + 2; [[0, 1], [1, 2]] → 8 + 1, 8 + 3; channels 3 + 8 + 8
    ("[3, 8, 8]", "pad 1", (3, 10, 10)),
    ("[3, 8, 8]", "pad [[0, 1], [1, 2]]", (3, 9, 11)),
    ("[3, 8, 8]", "pad channels 8", (19, 8, 8)),
]


@pytest.mark.parametrize("shape,line,want", LAYOUT, ids=[f"{p[0]} {p[1]}" for p in LAYOUT])
def test_layout(shape, line, want):
    assert layer(shape, line) == (want, 0, 0, 0)


@pytest.mark.parametrize(
    "line,message",
    [
        # 576 values = 4·12·12
        ("reshape [-1, 7]", "reshape 'reshape1' cannot reshape (4, 12, 12) (576 values) to [-1, 7]: 576 is not a multiple of 7"),
        ("reshape [-1, -1]", "reshape 'reshape1' has more than one -1"),
        ("reshape [4, 100]", "reshape 'reshape1' cannot reshape (4, 12, 12) (576 values) to [4, 100] (400 values)"),
        ("reshape [2, 0]", "reshape 'reshape1' dimension 0 must be positive (or -1, once)"),
        ("flatten start 4", "flatten 'flatten1' starts at axis 4 but its input (4, 12, 12) has only 4 axes (N included)"),
        ("permute [1, 2]", "permute 'permute1' dims [1, 2] must be a permutation of [1, 2, 3] for its input (4, 12, 12)"),
        ("upsample [2, 2, 2]", "upsample 'upsample1' 'scale' has 3 values but the input has 2 spatial dims"),
    ],
)
def test_layout_errors(line, message):
    assert error_messages(f"input x: [4, 12, 12]\n{line}") == [message]


def test_reshape_of_symbolic_size_that_may_not_divide():
    assert error_messages("input x: [T, 3]\nreshape [-1, 2]") == ["reshape 'reshape1' cannot tell whether 3·T values divide by 2"]


# ---- normalisation, dropout -----------------------------------------------------------------


def test_batchnorm_params_and_buffers():
    # params γ, β: 2·6 = 12; buffers running mean, var (2·6) + num_batches_tracked = 13
    assert layer("[6, 5, 5]", "batchnorm") == ((6, 5, 5), 12, 13, 0)
    # on features (N, C): 2·8 = 16, 2·8 + 1 = 17
    assert layer("[8]", "batchnorm") == ((8,), 16, 17, 0)
    # no affine: no params, the statistics stay
    assert layer("[6, 5, 5]", "batchnorm affine false") == ((6, 5, 5), 0, 13, 0)


def test_layernorm_and_groupnorm():
    # layernorm over the last axis: 2·10 = 20
    assert layer("[5, 10]", "layernorm") == ((5, 10), 20, 0, 0)
    assert layer("[T, 16]", "layernorm") == (("T", 16), 32, 0, 0)
    # groupnorm: 6 channels in 3 groups; params 2·6 = 12
    assert layer("[6, 4, 4]", "groupnorm 3") == ((6, 4, 4), 12, 0, 0)
    assert error_messages("input x: [6, 4, 4]\ngroupnorm 4") == ["groupnorm 'groupnorm1' cannot split 6 channels into 4 groups"]
    assert error_messages("input x: [C, 4, 4]\nbatchnorm") == [
        "batchnorm 'batchnorm1' needs a known number of channels, got C from input 'x'"
    ]


def test_dropout_keeps_shape_and_has_no_params():
    assert layer("[6, 5, 5]", "dropout 0.3") == ((6, 5, 5), 0, 0, 0)
    assert layer("[T, 16]", "dropout") == (("T", 16), 0, 0, 0)


# ---- embeddings ---------------------------------------------------------------------------


def test_embedding_vocab_from_input_or_param():
    # vocab 100 from the input: 100·16 = 1600
    assert last("input tokens: [T] int vocab 100\nembedding 16") == (("T", 16), 1600, 0, 0)
    # vocab 50 from the param: 50·16 = 800
    assert last("input tokens: [T] int\nembedding 16 vocab 50") == (("T", 16), 800, 0, 0)
    # an int32 input of fixed length 12
    assert last("input tokens: [12] dtype int32 vocab 7\nembedding 3") == ((12, 3), 21, 0, 0)


def test_embedding_needs_integers_and_a_vocab():
    assert error_messages("input x: [T, 16]\nembedding 16 vocab 50") == [
        "embedding 'embedding1' needs integer token ids but gets float32 from input 'x'"
    ]
    assert error_messages("input tokens: [T] int\nembedding 16") == ["embedding 'embedding1' needs a 'vocab' size"]
    assert error_messages("input tokens: [T] int vocab 100\nembedding 8 vocab 50") == [
        "embedding 'embedding1' has vocab 50 but its input's ids go up to 99"
    ]


def test_posembed():
    # params length·D = 64·16 = 1024
    assert last("input tokens: [T] int vocab 100\nembedding 16\nposembed 64") == (("T", 16), 1024, 0, 0)
    assert error_messages("input x: [100, 8]\nposembed 64") == [
        "posembed 'posembed1' encodes at most 64 positions but the sequence has 100"
    ]


# ---- activations ----------------------------------------------------------------------------

ACTIVATIONS = [
    "relu",
    "sigmoid",
    "tanh",
    "silu",
    "gelu",
    "gelu approximate tanh",
    "elu",
    "leaky_relu 0.2",
    "softplus",
    "softmax",
    "softmax axis 1",
    "log_softmax",
    "step",
    "linear",
    "identity",
    "abs",
    "exp",
    "log",
    "sqrt",
    "neg",
]


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_keeps_shape(act):
    assert layer("[6, 5]", act) == ((6, 5), 0, 0, 0)
    assert layer("[T, 6]", act)[0] == ("T", 6)


def test_maxout_groups_channels():
    # 12 channels in groups of 3 → 4
    assert layer("[12, 5]", "maxout 3") == ((4, 5), 0, 0, 0)
    assert layer("[12]", "maxout 4") == ((3,), 0, 0, 0)
    assert error_messages("input x: [4, 8]\nmaxout 3") == ["maxout 'maxout1' cannot split 4 channels into groups of 3"]


def test_prelu_params():
    # one slope (PyTorch's default), or one per channel (axis 1)
    assert layer("[6, 5, 5]", "prelu") == ((6, 5, 5), 1, 0, 0)
    assert layer("[6, 5, 5]", "prelu per_channel true") == ((6, 5, 5), 6, 0, 0)


def test_softmax_axis_must_be_a_feature_axis():
    assert error_messages("input x: [3, 8, 8]\nsoftmax axis 0") == [
        "softmax 'softmax1' axis 0 is not a feature axis of (3, 8, 8) (axis 0 is the batch N)"
    ]
    assert error_messages("input x: [3, 8]\nsoftmax axis 3") == [
        "softmax 'softmax1' axis 3 is not a feature axis of (3, 8) (axis 0 is the batch N)"
    ]


# ---- dense ------------------------------------------------------------------------------------


def test_dense():
    # 120·400 + 120 = 48120; MACs 120·400 = 48000
    assert layer("[400]", "dense 120") == ((120,), 48120, 0, 48000)
    assert layer("[400]", "dense 120, bias false") == ((120,), 48000, 0, 48000)


def test_dense_over_the_last_axis_keeps_symbolic_t():
    shape, params, _, macs = layer("[T, 16]", "dense 8")
    assert (shape, params) == (("T", 8), 136)  # 8·16 + 8
    assert str(macs) == "128·T" and at(macs, T=5) == 640  # 8·16 per step


def test_dense_needs_known_features():
    assert error_messages("input x: [T]\ndense 3") == ["dense 'dense1' needs a known number of input features, got T from input 'x'"]


def test_dense_on_several_inputs_concatenates_them():
    # (10 + 6) features: 4·16 + 4 = 68
    s = infer("input a: [10]\ninput b: [6]\nj = (a, b) -> dense 4")
    assert s.costs["j"].params == 68 and s.costs["j"].macs == 64


def test_tied_dense_counts_only_its_bias():
    body = """
    input tok: [T] int vocab 50
    e = tok -> embedding 8 as emb
    h = e -> dense 8
    o = h -> dense 50 tied "emb"
    """
    s = infer(body)
    # embedding 50·8 = 400; h 8·8 + 8 = 72; tied head: bias 50 only; MACs 50·8 per step
    assert [s.costs[p].params for p in ("emb", "h", "o")] == [400, 72, 50]
    assert at(s.costs["o"].macs, T=3) == 1200  # 3·50·8
    assert error_messages(body.replace("dense 50 tied", "dense 40 tied")) == [
        "dense 'o' is tied to embedding 'emb' with vocab 50 but has 40 units"
    ]
    assert error_messages(body.replace('tied "emb"', 'tied "h"')) == ["dense 'o' is tied to 'h', which is not an embedding layer"]


# ---- attention --------------------------------------------------------------------------------


def test_self_attention():
    shape, params, _, macs = last("input tokens: [T] int vocab 100\nembedding 16\nattention 4")
    assert shape == ("T", 16)
    assert params == 1088  # 4·16² + 4·16
    # 2·T·D² + 2·T·D² + 2·T·T·D = 1024·T + 32·T²
    assert at(macs, T=10) == 13440  # 10240 + 3200
    assert at(macs, T=1) == 1056


def test_self_attention_without_bias():
    assert last("input x: [7, 16]\nattention 2, bias false")[1] == 1024  # 4·16²


def test_cross_attention():
    shape, params, _, macs = last("input q: [7, 16]\ninput k: [5, 16]\na = (q, k) -> attention 2")
    assert shape == (7, 16) and params == 1088
    # 2·7·256 + 2·5·256 + 2·7·5·16 = 3584 + 2560 + 1120
    assert macs == 7264
    shape, _, _, macs = last("input q: [T, 16]\ninput k: [S, 16]\na = (q, k) -> attention 2")
    assert shape == ("T", 16)
    assert at(macs, T=7, S=5) == 7264


@pytest.mark.parametrize("mask", ["[1, 7, 5]", "[2, 7, 5]", "[1, 1, 5]", "[5]", "[1, 5]"])
def test_attention_mask_broadcasts(mask):
    body = f"input q: [7, 16]\ninput k: [5, 16]\ninput mk: {mask} dtype bool\na = (q, k) -> attention 2 mask mk"
    assert last(body)[0] == (7, 16)


def test_attention_errors():
    assert error_messages("input q: [7, 100]\nattention 8") == ["attention 'attention1': 100 is not divisible by heads 8"]
    assert error_messages("input q: [T, 8]\ninput k: [T, 6]\na = (q, k) -> attention 2") == [
        "attention 'a': the query has dimension 8 but the keys/values have 6"
    ]
    assert error_messages("input q: [7, 16]\ninput k: [5, 16]\ninput mk: [3, 7, 5] dtype bool\na = (q, k) -> attention 2 mask mk") == [
        "attention 'a' mask (3, 7, 5) does not broadcast to (heads, T_q, T_k) = (2, 7, 5)"
    ]


# ---- recurrent ---------------------------------------------------------------------------------


def test_lstm_multi_layer_bidirectional():
    shape, params, _, macs = layer("[T, 10]", "lstm 20 layers 2 bidirectional")
    assert shape == ("T", 40)  # 2 directions · 20
    # per layer and direction g·H·(F + H) + 2·g·H, g = 4:
    # layer 1: 2·(4·20·(10 + 20) + 160) = 5120; layer 2 (F = 40): 2·(4·20·60 + 160) = 9920
    assert params == 15040
    assert at(macs, T=3) == 43200  # (2·2400 + 2·4800)·3


def test_gru_last_step_and_rnn():
    # GRU on F = 40, H = 5: 3·5·45 + 2·3·5 = 705; the last step only
    assert layer("[T, 40]", "gru 5, sequences false")[:2] == ((5,), 705)
    # RNN: 1·4·(10 + 4) + 2·4 = 64; MACs 56 per step
    shape, params, _, macs = layer("[T, 10]", "rnn 4")
    assert (shape, params, str(macs)) == (("T", 4), 64, "56·T")
    # no bias: 3·5·45 = 675
    assert layer("[T, 40]", "gru 5 bias false")[1] == 675
    # a fixed length 6: MACs 4·4·(10 + 4)·6 = 1344
    assert layer("[6, 10]", "lstm 4") == ((6, 4), 256, 0, 1344)  # 4·4·14 + 32


def test_recurrent_needs_a_sequence():
    assert error_messages("input x: [8]\nlstm 4") == ["lstm 'lstm1' expects a (T, F) sequence input but gets (8) from input 'x'"]
    assert error_messages("input x: [T, F]\nlstm 4") == ["lstm 'lstm1' needs a known number of input features, got F"]


# ---- cells --------------------------------------------------------------------------------------

CELL = """
cell G(hidden) {
  state h: [hidden]
  gate z = (x, h) -> dense hidden -> sigmoid
  n = (x, z * h) -> dense hidden -> tanh
  h = (1 - z) * h + z * n
}
"""


def test_user_cell():
    s = infer("input s: [T, 16]\nG(8) as a\nG(4, sequences = false) as b\ndense 3", CELL)
    # a: two dense layers on (16 + 8) → 8: 2·(24·8 + 8) = 400; MACs 2·192 = 384 per step
    assert (s.types["a"].sample[1:], s.costs["a"].params, str(s.costs["a"].macs)) == ((8,), 400, "384·T")
    # b on a's 8 features: 2·((8 + 4)·4 + 4) = 104, the last step only
    assert (len(s.types["b"].sample), s.costs["b"].params) == (1, 104)
    assert at(s.costs["b"].macs, T=10) == 960  # 2·48·10


def test_cell_state_update_must_keep_the_declared_shape():
    bad = "cell B(hidden) {\n  state h: [hidden]\n  h = (x, h) -> dense (hidden + 1) -> tanh\n}\n"
    assert error_messages("input s: [T, 16]\nB(8) as a", bad) == [
        "cell B: state 'h' is declared (8) but its update gives (9) (at t.dl:3:39)"
    ]


# ---- merges -------------------------------------------------------------------------------------


def test_concat_on_channels_and_other_axes():
    body = """
    input x: [8, 28, 28]
    concat {
      branch { conv 4 kernel 1 }
      branch { conv 6 kernel 3 padding 1 }
      branch { pool max kernel 3 stride 1 padding 1 }
    }
    """
    assert out(body) == (18, 28, 28)  # 4 + 6 + 8
    assert out("input x: [8, 28, 28]\nconcat axis 2 {\n branch { conv 4 kernel 1 }\n branch { conv 4 kernel 1 }\n}") == (4, 56, 28)
    assert out("input a: [T, 8]\ninput b: [T, 8]\nc = (a, b) -> concat axis 1") == ("2·T", 8)
    assert out("input a: [T, 8]\ninput b: [T, 3]\nc = (a, b) -> concat axis -1") == ("T", 11)


def test_add_and_multiply_broadcast():
    body = "input x: [8, 28, 28]\nadd {\n branch { conv 8 kernel 1 }\n branch { pool global avg }\n}"
    assert out(body) == (8, 28, 28)  # (8, 28, 28) + (8, 1, 1)
    assert out("input a: [T, 8]\ninput b: [1, 8]\nc = a * b\nd = c - 1") == ("T", 8)


def test_merge_mismatches():
    assert error_messages("input x: [8, 28, 28]\nmultiply {\n branch { conv 8 kernel 1 }\n branch { conv 4 kernel 1 }\n}") == [
        "multiply 'multiply1': shapes (8, 28, 28) and (4, 28, 28) do not match or broadcast (dim 1: 8 vs 4)"
    ]
    assert error_messages("input a: [T, 8]\ninput b: [S, 8]\nc = a + b") == [
        "arithmetic: shapes (T, 8) and (S, 8) do not match or broadcast (dim 1: T vs S)"
    ]
    assert error_messages("input x: [8, 28, 28]\nresidual { conv 16 kernel 3 padding 1 }") == [
        "add 'add1': the residual branch gives (16, 28, 28) but the shortcut gives (8, 28, 28)"
    ]


def test_residual_with_projection_shortcut():
    body = "input x: [8, 28, 28]\nresidual { conv 16 kernel 3 stride 2 padding 1 } shortcut { conv 16 kernel 1 stride 2 }"
    # (28 + 2 − 3)/2 + 1 = 14 on both paths; params (16·8·9 + 16) + (16·8 + 16) = 1168 + 144
    assert out(body) == (16, 14, 14)
    assert totals(body) == (1312, 0)


# ---- VAE sampling, shared instances -------------------------------------------------------------


def test_vae_sample():
    assert out("input x: [5]\nh = x -> dense 4\nmu = h -> dense 2\nlv = h -> dense 2\nz = (mu, lv) -> sample") == (2,)
    assert error_messages("input x: [5]\nh = x -> dense 4\nmu = h -> dense 2\nlv = h -> dense 3\nz = (mu, lv) -> sample") == [
        "sample 'z': mu (2) and logvar (3) must have the same shape"
    ]


def test_shared_instance_is_counted_once():
    pre = "block Enc(f = 4) {\n  dense 8 -> relu\n  dense f\n}"
    body = "input l: [6]\ninput r: [6]\nt = Enc()\nd = t(l) - t(r)\noutput o = d -> dense 1"
    s = infer(body, pre)
    # Enc: (8·6 + 8) + (4·8 + 4) = 56 + 36 = 92, once; head 1·4 + 1 = 5
    assert sum(c.params for c in s.costs.values()) == 97
    # MACs are paid by both calls: 2·(48 + 32) + 4
    assert sum(c.macs for c in s.costs.values()) == 164


# ---- published counts --------------------------------------------------------------------------


def test_lenet5_has_61706_params():
    prog = dlspec.load(ROOT / "specs" / "lenet5.dl")
    s = prog.shapes("LeNet5")
    # c1 6·25 + 6 = 156; c3 16·6·25 + 16 = 2416; c5 120·400 + 120 = 48120; f6 84·120 + 84 = 10164; out 10·84 + 10 = 850
    assert sum(c.params for c in s.costs.values()) == 61706
    assert s.output_types()[0][1].sample == (10,)


def test_resnet18_params_and_macs():
    rep = dlspec.load(ROOT / "specs" / "resnet18.dl").report("ResNet18")
    assert rep["params"] == 11_689_512
    assert rep["macs"] == 1_814_073_344
    # 20 batch norms over 4800 channels: 2·4800 + 20
    assert rep["buffers"] == 9_620
    assert rep["outputs"][0]["shape"] == ["N", 1000]


def test_resnet18_stage_shapes():
    s = dlspec.load(ROOT / "specs" / "resnet18.dl").shapes("ResNet18")
    # 224 → conv /2 → 112 → pool /2 → 56 → 28 → 14 → 7
    assert s.types["pool1"].sample == (64, 56, 56)
    last_block = [n.path for n in s.graph.top_level() if n.path.startswith("layer4.")][-1]
    assert s.types[last_block].sample == (512, 7, 7)
