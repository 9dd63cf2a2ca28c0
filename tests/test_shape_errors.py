"""Every shape error by its exact text, line and column (and help and notes), and that a
model's shape errors all come out of one run without follow-on errors."""

from __future__ import annotations

import pytest
from shapehelp import errors, spec

import dlspec
from dlspec.errors import ShapeError, render_all


def one(text: str, name: str = "t.dl"):
    (e,) = errors(text, name)
    return e


# ---- the examples ---------------------------------------------------------------------


def test_pool_output_not_whole_with_help():
    text = "model M {\n  input x: [4, 11, 11]\n  pool max kernel 2 stride 2 as pool2\n}\n"
    assert one(text, "lenet.dl") == (
        3,
        3,
        "pool 'pool2' output height (11 - 2) / 2 + 1 = 5.5 is not a whole number",
        "use padding 1, or ceil true",
        [],
    )


def test_rendered_diagnostic_has_location_source_and_help_line():
    text = "model M {\n  input x: [4, 11, 11]\n  pool max kernel 2 stride 2 as pool2\n}\n"
    with pytest.raises(ShapeError) as e:
        dlspec.load(text, name="lenet.dl").shapes()
    lines = render_all(e.value.diagnostics).splitlines()
    assert lines[0] == "lenet.dl:3:3: error: pool 'pool2' output height (11 - 2) / 2 + 1 = 5.5 is not a whole number"
    assert lines[-1] == "help: use padding 1, or ceil true"


LENET = """model LeNet {
  input image: [1, 28, 28]
  conv 6 kernel 5 padding 2 as c1 -> tanh
  pool avg kernel 2 as s2
  conv 16 kernel 5 as c2 -> tanh
  pool avg kernel 2 as s4
  flatten
  dense 120 as fc1
  conv 16 kernel 5 as c3
  dense 10
}
"""


def test_conv_after_dense_names_the_source_layer():
    assert one(LENET, "lenet.dl") == (
        9,
        3,
        "conv 'c3' expects a (C, L), (C, H, W) or (C, D, H, W) input but gets (120) from dense 'fc1' at lenet.dl:8:3",
        None,
        [],
    )


def test_attention_heads_must_divide_the_dimension():
    text = "model M {\n  input x: [T, 100]\n  attention 8 as attn\n}\n"
    assert one(text) == (3, 3, "attention 'attn': 100 is not divisible by heads 8", "use a number of heads that divides 100", [])


def test_concat_branch_mismatch():
    text = """model Cat {
  input x: [8, 28, 28]
  concat {
    branch { conv 4 kernel 3 stride 2 padding 1 }
    branch { conv 4 kernel 1 }
  }
}
"""
    assert one(text) == (
        3,
        3,
        "concat: branch 2 gives 28×28 but branch 1 gives 14×14",
        "every input must agree on all dims but the concat axis (1)",
        [],
    )


def test_nested_concat_names_its_own_branches():
    text = """model Cat {
  input x: [8, 28, 28]
  concat {
    branch { conv 4 kernel 1 }
    branch {
      concat {
        branch { conv 4 kernel 1 }
        branch { conv 4 kernel 3 }
      }
    }
  }
}
"""
    assert one(text)[:3] == (6, 7, "concat: branch 2 gives 26×26 but branch 1 gives 28×28")


def test_concat_of_named_tensors_and_ranks():
    text = "model M {\n  input a: [T, 8]\n  input b: [S, 8]\n  c = (a, b) -> concat axis 2\n}\n"
    assert one(text)[:3] == (4, 17, "concat: input 2 ('b') gives S but input 1 ('a') gives T")
    text = "model M {\n  input a: [4, 5]\n  input b: [4]\n  c = (a, b) -> concat\n}\n"
    assert one(text)[:3] == (4, 17, "concat 'c': input 2 ('b') gives (4) but input 1 ('a') gives (4, 5)")
    text = "model M {\n  input a: [4] int\n  input b: [4]\n  c = (a, b) -> concat\n}\n"
    assert one(text)[:3] == (4, 17, "concat 'c': input 2 ('b') is float32 but input 1 ('a') is int64")


# ---- all errors in one run, no follow-on errors -------------------------------------------------

TWO = """model Two {
  input a: [4, 11, 11]
  input b: [T, 100]
  p = a -> pool max kernel 2 stride 2 as pool2 -> conv 8 kernel 3 -> relu
  q = b -> attention 8 -> dense 4 -> attention 3
  output p
  output q
}
"""


def test_two_independent_errors_in_one_run():
    # the layers after each bad one (conv, relu; dense, attention 3 on 4 features) report nothing
    assert [e[:3] for e in errors(TWO)] == [
        (4, 12, "pool 'pool2' output height (11 - 2) / 2 + 1 = 5.5 is not a whole number"),
        (5, 12, "attention 'attention1': 100 is not divisible by heads 8"),
    ]


def test_errors_in_two_branches_are_both_reported():
    text = """model M {
  input x: [8, 28, 28]
  concat {
    branch { conv 4 kernel 3 groups 3 }
    branch { pool max kernel 3 stride 2 }
    branch { conv 4 kernel 1 }
  }
  dense 3
}
"""
    assert [e[:3] for e in errors(text)] == [
        (4, 14, "conv 'branch1.conv1' groups 3 does not divide its 8 input channels"),
        (5, 14, "pool 'branch2.pool1' output height (28 - 3) / 2 + 1 = 13.5 is not a whole number"),
    ]


def test_shape_error_carries_every_diagnostic():
    with pytest.raises(ShapeError) as e:
        dlspec.load(TWO, name="t.dl").shapes()
    assert len(e.value.diagnostics) == 2
    assert all(d.severity == "error" and d.span.file == "t.dl" for d in e.value.diagnostics)


# ---- errors inside block calls and cells -----------------------------------------------------------

BLOCKS = """block Basic(c, stride = 1) {
  residual {
    conv c kernel 3 stride stride padding 1, bias false -> batchnorm -> relu
    conv c kernel 3 padding 1, bias false -> batchnorm
  }
  relu
}

block Stage(c, blocks, stride = 1) {
  repeat blocks { Basic(c, stride = stride if i == 0 else 1) }
}

model R {
  input x: [3, 32, 32]
  conv 64 kernel 3 padding 1
  Stage(64, 2) as layer1
  Stage(128, 2, stride = 2) as layer2
}
"""


def test_residual_mismatch_in_a_block_call_has_notes():
    assert one(BLOCKS) == (
        2,
        3,
        "add 'layer2.0.add1': the residual branch gives (128, 16, 16) but the shortcut gives (64, 32, 32)",
        "give the residual a projection shortcut: 'shortcut { conv C kernel 1 stride S … }'",
        ["in Basic(c=128, stride=2) called at t.dl:10:19", "in Stage(c=128, blocks=2, stride=2) called at t.dl:17:3"],
    )


def test_error_in_a_single_block_call():
    text = """block Basic(c, stride = 1) {
  conv c kernel 3 stride stride
}

model M {
  input x: [3, 2, 2]
  Basic(c=64, stride=1) as b
}
"""
    assert one(text) == (
        2,
        3,
        "conv 'b.conv1' window of 3 does not fit the input height 2",
        "use a smaller kernel, or padding, or remove a downsampling layer before it",
        ["in Basic(c=64, stride=1) called at t.dl:7:3"],
    )


def test_error_inside_a_cell_points_at_the_cell_line():
    text = """cell B(hidden) {
  state h: [hidden]
  h = (x, h) -> dense hidden -> maxout 3
}

model M {
  input s: [T, 16]
  B(8) as a
}
"""
    assert one(text) == (
        3,
        33,
        "maxout 'a.maxout1' cannot split 8 channels into groups of 3",
        "the layer before it needs a multiple of 3 outputs",
        [],
    )


def test_cell_state_update_shape():
    text = """cell B(hidden) {
  state h: [hidden]
  h = (x, h) -> dense (hidden + 1) -> tanh
}

model M {
  input s: [T, 16]
  B(8) as a
}
"""
    assert one(text) == (
        8,
        3,
        "cell B: state 'h' is declared (8) but its update gives (9) (at t.dl:3:39)",
        "the new state must have the declared shape",
        [],
    )


# ---- one message per rule ---------------------------------------------------------------------------

LAYER_ERRORS = [
    # (input, layer, message, help)
    ("[3, 8, 8]", "conv 4 kernel [3, 3, 3]", "conv 'conv1' 'kernel' has 3 values but the input has 2 spatial dims", None),
    ("[3, 8, 8]", "conv 4 kernel 3 padding [1, 1, 1]", "conv 'conv1' 'padding' has 3 values but the input has 2 spatial dims", None),
    (
        "[3, 8, 8]",
        "conv 4 kernel 5 dilation 2",
        "conv 'conv1' window of 9 does not fit the input height 8",
        "use a smaller kernel, or padding, or remove a downsampling layer before it",
    ),
    (
        "[3, 4, 4]",
        "conv 4 kernel 7 padding 1",
        "conv 'conv1' window of 7 does not fit the input height 4 padded to 6",
        "use a smaller kernel, or padding, or remove a downsampling layer before it",
    ),
    ("[3, 8, 8]", "conv 4 kernel 3 groups 2", "conv 'conv1' groups 2 does not divide its 3 input channels", None),
    ("[4, 8, 8]", "conv 6 kernel 3 groups 4", "conv 'conv1' groups 4 does not divide its 6 filters", None),
    ("[C, 8, 8]", "conv 6 kernel 3", "conv 'conv1' needs a known number of input channels, got C", None),
    (
        "[3, H, W]",
        "conv 6 kernel 3 stride 2 padding same",
        "conv 'conv1' padding 'same' with stride 2 needs a known input size, got H",
        None,
    ),
    ("[8]", "conv 6 kernel 3", "conv 'conv1' expects a (C, L), (C, H, W) or (C, D, H, W) input but gets (8) from input 'x'", None),
    (
        "[3, 8, 8]",
        "deconv 4 kernel 3 stride 2 output_padding 2",
        "deconv 'deconv1' output_padding 2 must be smaller than the stride 2 or the dilation 1",
        None,
    ),
    (
        "[3, 8, 8]",
        "deconv 4 kernel 3 padding same",
        "deconv 'deconv1' does not support padding 'same'",
        "give the padding as numbers, as PyTorch's ConvTranspose does",
    ),
    (
        "[3, 2, 2]",
        "deconv 4 kernel 1 padding 2",
        "deconv 'deconv1' output height is -2: the padding is larger than the upsampled input",
        None,
    ),
    (
        "[3, 8, 8]",
        "pool max kernel 3 padding 2",
        "pool 'pool1' padding 2 is more than half its kernel 3",
        "PyTorch allows at most kernel // 2",
    ),
    ("[3, 8, 8]", "pool max", "pool 'pool1' needs a 'kernel'", "e.g. 'pool max kernel 2', or 'pool global avg'"),
    ("[3, 8, 8]", "pool adaptive avg", "pool 'pool1' adaptive pooling needs its output 'size'", "e.g. 'pool adaptive avg size 7'"),
    (
        "[3, 12, 12]",
        "pool adaptive avg size 5",
        "pool 'pool1' adaptive pooling from height 12 to 5: 12 is not a multiple of 5",
        "dlspec pools adaptively where the sizes divide; use a window pool with kernel and stride instead",
    ),
    (
        # no padding up to kernel // 2 covers the input: (9 − 4)/4 + 1 = 2.25 with k_eff 3·1 + 1 = 4
        "[1, 9]",
        "pool max kernel 2 stride 4 dilation 3",
        "pool 'pool1' output length (9 - 4) / 4 + 1 = 2.25 is not a whole number",
        "use ceil true, or a kernel and stride that divide the input",
    ),
    (
        "[3, 4, 4]",
        "pool max kernel 5",
        "pool 'pool1' window of 5 does not fit the input height 4",
        "use a smaller kernel, or padding, or remove a downsampling layer before it",
    ),
    ("[6, 4, 4]", "groupnorm 4", "groupnorm 'groupnorm1' cannot split 6 channels into 4 groups", None),
    (
        "[4, 8]",
        "maxout 3",
        "maxout 'maxout1' cannot split 4 channels into groups of 3",
        "the layer before it needs a multiple of 3 outputs",
    ),
    ("[T]", "dense 3", "dense 'dense1' needs a known number of input features, got T from input 'x'", None),
    ("[100, 8]", "posembed 64", "posembed 'posembed1' encodes at most 64 positions but the sequence has 100", None),
    ("[8]", "attention 2", "attention 'attention1' expects a (T, D) input but gets (8) from input 'x'", None),
    ("[8]", "lstm 4", "lstm 'lstm1' expects a (T, F) sequence input but gets (8) from input 'x'", None),
    (
        "[T, 16]",
        "embedding 16 vocab 50",
        "embedding 'embedding1' needs integer token ids but gets float32 from input 'x'",
        "declare the input as integers: 'input tokens: [T] int vocab 10000'",
    ),
    (
        "[T] int",
        "embedding 16",
        "embedding 'embedding1' needs a 'vocab' size",
        "write 'embedding DIM vocab V', or declare the input with 'vocab V'",
    ),
    (
        "[T] int vocab 5",
        "dense 4",
        "dense 'dense1' expects a float input but gets int64 from input 'x'",
        "integer token ids go through 'embedding' first",
    ),
]


@pytest.mark.parametrize("shape,line,message,help", LAYER_ERRORS, ids=[e[1] for e in LAYER_ERRORS])
def test_layer_error(shape, line, message, help):
    # spec(): line 1 'model M {', line 2 the input, line 3 the layer at column 3
    assert one(spec(f"input x: {shape}\n{line}")) == (3, 3, message, help, [])


def test_error_points_at_the_layer_inside_a_chain():
    text = "model M {\n  input x: [3, 8, 8]\n  conv 8 kernel 3 -> relu -> groupnorm 3\n}\n"
    assert one(text)[:3] == (3, 30, "groupnorm 'groupnorm1' cannot split 8 channels into 3 groups")


def test_arithmetic_errors():
    text = "model M {\n  input a: [T, 8]\n  input b: [S, 8]\n  c = a + b\n}\n"
    assert one(text)[:3] == (4, 7, "arithmetic: shapes (T, 8) and (S, 8) do not match or broadcast (dim 1: T vs S)")
    text = "model M {\n  input a: [4] int\n  c = a * 2\n}\n"
    assert one(text)[:3] == (3, 7, "arithmetic needs float tensors but gets int64 from input 'a'")


def test_input_with_vocab_must_be_integer():
    text = "model M {\n  input a: [4, 8] vocab 3\n}\n"
    assert one(text) == (2, 3, "input 'a' has a vocab but is float32", "token ids are integers: add 'int'", [])


def test_warnings_are_not_errors():
    text = "model M {\n  input x: [T, 8]\n  lstm 4 dropout 0.2\n}\n"
    assert errors(text) == []
    diags = dlspec.load(text, name="t.dl").check()
    assert [(d.severity, d.span.line, d.message) for d in diags] == [
        ("warning", 3, "lstm 'lstm1' dropout 0.2 has no effect with one layer (it applies between layers)")
    ]
