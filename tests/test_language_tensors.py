"""The tensor language (issue 14, first part): subscripts and slices, split/chunk/crop, tuples and
destructuring, bound compound statements, learned (``param``) and constant tensors, numeric
locals, shape queries and tables, reductions, ``matmul``/``@`` and ``transpose``; reserved words
and duplicate outputs; the ops' shape rules and messages, their tinygrad lowerings against NumPy
float64 references (and PyTorch), static against runtime shapes, ``fmt``.

The numeric test builds one small model with many outputs (tinygrad's kernel compilation is
what costs time); the property test traces lazily (``verify(run=False)``) and compiles nothing."""

from __future__ import annotations

import json
import random

import fuzzgen
import numpy as np
import pytest
from backend_ref import build, check
from conftest import strip_spans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinygrad import Context, Tensor

import dlspec
from dlspec.backends.tinygrad import verify
from dlspec.errors import UsageError
from dlspec.fmt import format_text


def model(body: str, inp: str = "[3, 8, 8]", pre: str = "") -> str:
    lines = "".join(f"  {ln}\n" for ln in body.strip("\n").split("\n"))
    return f"{pre}model M {{\n  input x: {inp}\n{lines}}}\n"


def diags(text: str) -> list:
    try:
        return dlspec.load(text, name="t.dl").check()
    except dlspec.DlspecError as e:
        return list(e.diagnostics)


def messages(text: str) -> list[str]:
    return [d.message for d in diags(text)]


def one_error(text: str) -> dlspec.errors.Diagnostic:
    ds = [d for d in diags(text) if d.severity == "error"]
    assert len(ds) == 1, [d.message for d in ds]
    return ds[0]


def shapes(text: str, m: str = "M"):
    prog = dlspec.load(text)
    return prog.ir(m), prog.shapes(m)


def out_shapes(text: str) -> dict[str, tuple]:
    graph, sh = shapes(text)
    return {o.name: tuple(map(str, sh.types[o.node].shape)) for o in graph.outputs}


# ---- subscripts -------------------------------------------------------------------------------------


def test_subscripts_index_and_slice_every_axis_but_the_batch():
    got = out_shapes(
        model(
            """
output a = x[:, 0]
output b = x[:, -1, 2:7:2]
output c = x[..., 0]
output d = x[:, ..., 1:, :]
output e = x[:, 1:100]
output f = x[:, ::2, -3]
"""
        )
    )
    assert got == {
        "a": ("N", "8", "8"),
        "b": ("N", "3", "8"),
        "c": ("N", "3", "8"),
        "d": ("N", "3", "7", "8"),
        "e": ("N", "2", "8", "8"),  # bounds past the end are clipped, as in Python
        "f": ("N", "2", "8"),
    }
    graph, _ = shapes(model("y = x[:, 0, 1:5:2, ...]"))
    node = graph.node("slice1")
    assert node.op == "slice" and node.params.items == ((None, None, None), 0, (1, 5, 2), "...")
    assert node.tensor == "y" and node.inputs == ("x",)


def test_subscripts_on_a_symbolic_axis_assume_the_bounds_fit_and_check_them_at_run_time():
    text = model("output a = x[:, 0]\noutput b = x[:, 2:]\noutput c = x[:, ::2]\noutput d = x[:, :-1]", inp="[T, 4]")
    assert out_shapes(text) == {"a": ("N", "4"), "b": ("N", "T-2", "4"), "c": ("N", "⌈(T)/2⌉", "4"), "d": ("N", "T-1", "4")}
    net = dlspec.load(text).build("M", device="CPU")
    assert verify(net, seq={"T": 7}, run=False) == []
    with pytest.raises(UsageError, match=r"slice2 \[:, 2:\] at .* needs axis 1 of size 3 or more, got 1"):
        net(Tensor.randn(2, 1, 4))


@pytest.mark.parametrize(
    "body, inp, message, hint",
    [
        ("x[:, 0, 768]", "[T, 768]", "index 768 is past axis 2 of size 768", "indices of axis 2 run from 0 to 767"),
        ("x[:, -4]", "[3, 8]", "index -4 is past axis 1 of size 3", None),
        ("x[0]", "[3, 8]", "axis 0 is the batch N and cannot be indexed ([0])", "write ':' for the batch first"),
        ("x[1:, 0]", "[3, 8]", "axis 0 is the batch N and cannot be indexed", None),
        ("x[:, 5:2]", "[8]", "slice 5:2 of axis 1 (size 8) is empty", None),
        ("x[:, ::-1]", "[8]", "slice step -1 on axis 1 must be positive (as in PyTorch)", None),
        ("x[:, 0, 0, 0]", "[3, 8]", "4 subscripts for a tensor of 3 axes (N included)", None),
        ("x[..., 0, ...]", "[3, 8]", "a subscript has at most one '...', got 2", None),
    ],
)
def test_subscript_mistakes_are_located_with_the_sizes(body, inp, message, hint):
    d = one_error(model(body, inp))
    assert message in d.message
    assert (d.span.line, d.span.col) == (3, 3)
    if hint:
        assert hint in d.help


def test_subscript_items_must_be_whole_numbers():
    assert "an index must be a whole number, got 1.5" in one_error(model("x[:, 1.5]")).message
    assert "a slice step cannot be 0" in one_error(model("x[:, ::0]")).message
    assert "indexing with a tensor is not supported" in one_error(model("x[:, x]")).message


def test_a_glued_bracket_is_a_subscript_and_a_spaced_one_a_list():
    assert out_shapes(model("output y = x -> reshape [8, -1]", inp="[4, 4]")) == {"y": ("N", "8", "2")}
    d = one_error(model("reshape[8, -1]", inp="[4, 4]"))
    assert d.message == "'reshape' is a layer, not a tensor or a list: it cannot be indexed" and "put a space before it" in d.help


# ---- split, chunk, crop ----------------------------------------------------------------------------------


def test_split_and_chunk_give_one_node_per_piece_named_by_the_targets():
    text = model(
        """
a, b = split(x, 2, axis = 2)
c, d, e = split(x, [1, 1, 1])
halves = chunk(x, 3, axis = -1)
x -> split 3 as parts
tail = x -> split 2 axis 2 piece 1
output a, d, tail
""",
        inp="[3, 8, 7]",
    )
    graph, sh = shapes(text)
    paths = [n.path for n in graph.nodes if n.op in ("split", "chunk")]
    assert paths == ["a", "b", "c", "d", "e", "halves.0", "halves.1", "halves.2", "parts.0", "parts.1", "parts.2", "tail"]
    assert [n.params.piece for n in graph.nodes if n.op == "chunk"] == [0, 1, 2]
    assert sh["a"].shape[1:] == (3, 4, 7) and sh["d"].shape[1:] == (1, 8, 7)
    assert [sh[f"halves.{i}"].shape[-1] for i in range(3)] == [3, 3, 1]  # ⌈7/3⌉ = 3: torch.chunk's sizes
    assert sh["tail"].shape[1:] == (3, 4, 7)
    assert [o.name for o in graph.outputs] == ["a", "d", "tail"]
    assert "output 'halves' is not a tensor" in one_error(text.replace("output a, d, tail", "output halves")).message


@pytest.mark.parametrize(
    "body, message",
    [
        ("a, b, c, d, e = split(x, 5)", "split of input 'x': 5 pieces do not divide axis 1 of size 48 (48 = 5·9 + 3)"),
        ("a, b = split(x, [16, 16])", "split of input 'x': sizes [16, 16] add up to 32 but axis 1 has size 48"),
        ("a, b, c, d = chunk(x, 4, axis = 2)", "axis 2 of size 6 in pieces of ⌈6/4⌉ = 2 gives 3 pieces, not 4"),
        ("a, b = split(x, 2, axis = 0)", "axis 0 is the batch N, which cannot be cut"),
        ("crop(x, 10)", "crop to 10×10 is larger than its input 6×6 (axis 2: 10 > 6)"),
        ("crop(x, [2, 2, 2])", "'size' has 3 values but the input (48, 6, 6) has 2 spatial axes"),
        ("crop(x)", "needs a size or 'like' (one of them)"),
    ],
)
def test_split_and_crop_mistakes_show_the_arithmetic(body, message):
    d = one_error(model(body, inp="[48, 6, 6]"))  # one diagnostic, not one per piece
    assert message in d.message


def test_a_split_into_too_many_pieces_stops_before_making_them():
    d = one_error(model("split(x, 9223372036854775807)", inp="[4]"))
    assert d.message == "split into 9,223,372,036,854,775,807 pieces would pass the limit of 100,000 layers in a model"


def test_crop_takes_the_centre_to_a_size_or_to_another_tensor():
    text = model(
        """
input low: [8, 28, 28]
skip = x -> conv 4 kernel 3
up = low -> deconv 4 kernel 2 stride 2
output c = concat(crop(skip, like = up), up)
output d = skip -> crop [50, 51]
""",
        inp="[3, 64, 64]",
    )
    assert out_shapes(text) == {"c": ("N", "8", "56", "56"), "d": ("N", "4", "50", "51")}
    graph, _ = shapes(text)
    crop = next(n for n in graph.nodes if n.op == "crop" and n.params.like)
    assert crop.params.like == "up" and crop.inputs == ("skip", "up")


# ---- tuples ---------------------------------------------------------------------------------------------

ENCODER = """
block Encoder(latent = 4) {
  h = flatten -> dense 16 -> relu
  output mu = h -> dense latent
  output logvar = h -> dense latent
}
"""


def test_destructuring_a_block_with_two_outputs_and_bound_compound_statements():
    text = model(
        """
mu, logvar = Encoder()
z = (mu, logvar) -> sample
h = repeat 2 { dense 8 -> relu }
g = group head { dense 3 }
r = residual { dense 3 }
output mu, h, g, r
""",
        pre=ENCODER + "\n",
    )
    assert not diags(text)
    graph, sh = shapes(text)
    by_name = {o.name: o.node for o in graph.outputs}
    assert by_name == {"mu": "encoder1.mu", "h": "repeat1.1.relu1", "g": "head.dense1", "r": "add1"}
    assert graph.node("repeat1.0.dense1").inputs == ("z",) and sh["repeat1.1.relu1"].shape[1:] == (8,)  # the repeat takes z


def test_a_block_call_given_tensors_is_applied_to_them():
    text = model(
        """
input s: [T, 2]
mu, logvar = Encoder(x, 2)
h = Encoder(x, latent = 3)
e = Encoder(x) as enc
y = Acc(s)
output mu, y
""",
        pre=ENCODER + "\ncell Acc {\n  state h: [4]\n  h = (x, h) -> dense 4\n}\n\n",
    )
    graph, sh = shapes(text)
    scopes = sorted({n.path.split(".")[0] for n in graph.nodes if "." in n.path})
    assert scopes == ["acc1", "enc", "encoder1", "encoder2"]  # each call expanded once
    assert sh["encoder1.mu"].shape[1:] == (2,) and sh["encoder2.mu"].shape[1:] == (3,) and sh["acc1"].shape[2:] == (4,)
    assert graph.node("encoder1.flatten1").inputs == ("x",)


def test_tuple_count_mismatches_are_located_errors():
    d = one_error(model("a, b = split(x, 3)"))
    assert d.message == "2 names (a, b) but the right-hand side gives 3 tensors" and (d.span.line, d.span.col) == (3, 3)
    assert one_error(model("a, b = x")).message == "2 names (a, b) but the right-hand side gives one tensor, tensor 'x'"
    d = one_error(model("mu, logvar, extra = Encoder()", pre=ENCODER))
    assert d.message == "3 names (mu, logvar, extra) but the right-hand side gives 2 tensors"
    assert one_error(model("a, a = split(x, 3)")).message == "'a' appears twice on the left of '='"


def test_a_tuple_that_is_not_written_there_warns_when_a_layer_takes_one_tensor():
    (w,) = diags(model("split(x, 2) -> dense 4", inp="[16]"))
    assert w.severity == "warning"
    assert w.message == "dense takes one tensor but is given 2 ('split1.0', 'split1.1'); they are concatenated on axis -1"
    assert "concat(…, axis = -1) -> dense" in w.help
    (w,) = diags(model("Encoder() -> dense 2", pre=ENCODER))
    assert "('encoder1.mu', 'encoder1.logvar')" in w.message
    # written tuples and explicit concatenation are intended: no warning
    assert not diags(model("a, b = split(x, 2)\n(a, b) -> dense 4\nh = dense 4 (a, b)\nconcat(a, b, axis = -1) -> dense 2", inp="[16]"))
    # the warning is the shape pass's first, also for `compile`
    _, sh = shapes(model("split(x, 2) -> dense 4", inp="[16]"))
    assert [w.severity for w in sh.warnings] == ["warning"]


def test_tuples_can_be_indexed():
    assert out_shapes(model("p = split(x, [1, 2])\noutput y = p[1]\noutput z = p[-2]")) == {
        "y": ("N", "2", "8", "8"),
        "z": ("N", "1", "8", "8"),
    }
    assert "index 2 is past the end of 'p', which has 2 items" in one_error(model("p = split(x, [1, 2])\np[2]")).message


# ---- numbers, shape queries, tables ----------------------------------------------------------------------


def test_numeric_locals_bind_numbers_and_leave_the_current_tensor():
    text = model(
        """
planes = 64
width = int(planes * (4 / 64)) * 32
flag = width > 100
dense (width + 1)
""",
        inp="[16]",
    )
    graph, sh = shapes(text)
    assert sh["dense1"].shape[1:] == (129,) and graph.node("dense1").inputs == ("x",)


def test_shape_queries_give_static_sizes_in_blocks_and_cells():
    text = """
block SE(ratio = 4) {
  c = channels(x)
  w = x -> pool global avg -> flatten -> dense (c // ratio) -> relu -> dense c -> sigmoid
  x * reshape(w, [c, 1, 1])
}

cell Acc {
  state h: [8]
  f = size(x, -1)
  h = (x, h) -> dense (f * 2) -> dense 8
}

model M {
  input x: [12, 5, 5]
  input s: [T, 3]
  y = x -> SE() -> conv (size(x, 2) * 12) kernel 1 groups channels(x)
  z = s -> Acc()
  output y, z
}
"""
    graph, sh = shapes(text)
    assert sh["se1.dense1"].shape[1:] == (3,) and sh["se1.dense2"].shape[1:] == (12,)
    assert sh["conv1"].shape[1:] == (60, 5, 5) and graph.node("conv1").params.groups == 12
    assert sh["z.dense1"].shape[1:] == (6,)  # size(x, -1) of the step input (N, 3)
    net = dlspec.load(text).build("M", device="CPU")
    assert verify(net, seq={"T": 3}, run=False) == []


@pytest.mark.parametrize(
    "body, inp, message",
    [
        ("dense size(x, 1)", "[T, 16]", "axis 1 of 'x' (T, 16) has the symbolic size T, known only at run time, not a number"),
        ("dense size(x, 0)", "[16]", "axis 0 of 'x' is the batch N, known only at run time"),
        ("dense size(x, 3)", "[16]", "axis 3 is past the last axis of 'x' (16) (2 axes with N, 0 to 1)"),
        ("dense channels(3)", "[16]", "channels() asks a tensor for a size, got 3"),
        ("dense size(x)", "[16]", "size() takes a tensor and an axis: 'size(x, axis)'"),
        ("y = x -> reshape [-1, 5]\ndense size(y, 1)", "[16]", "cannot reshape (16) (16 values) to [-1, 5]: 16 is not a multiple of 5"),
    ],
)
def test_shape_query_mistakes(body, inp, message):
    assert message in one_error(model(body, inp)).message


def test_tables_drive_repeats_and_rows_unpack():
    text = model(
        """
repeat len(cfg) as stage {
  c, s = cfg[i]
  conv c kernel 3 stride s padding 1
}
dense cfg[-1][0]
""",
        pre="",
    ).replace("model M {", "model M(cfg = [[16, 1], [32, 2], [64, 2]]) {")
    graph, sh = shapes(text)
    assert [sh[f"stage.{i}.conv1"].shape[1] for i in range(3)] == [16, 32, 64]
    assert graph.node("stage.2.conv1").params.stride == 2 and sh["dense1"].shape[-1] == 64
    d = one_error(text.replace("cfg[-1][0]", "cfg[3][0]"))
    assert d.message == "index 3 is past the end of 'cfg', which has 3 items" and "from 0 to 2" in d.help
    assert one_error(text.replace("cfg[-1][0]", "cfg[0, 1]")).message == "a list takes one index at a time: write 'cfg[i][j]'"


# ---- learned and constant tensors -----------------------------------------------------------------------


def test_params_are_counted_and_named_by_path_in_the_state_dict():
    text = """
block Scale(d) {
  param gamma: [d] init constant value 0.5
  x * gamma
}

model M {
  input x: [T, 8]
  param class_token: [1, 8] init zeros
  param pos: [5, 8] init trunc_normal std 0.02
  h = concat(class_token, x, axis = 1)
  Scale(8) as blk
  t = Scale(8)
  y = t(h) + t(h)
}
"""
    prog = dlspec.load(text)
    sh = prog.shapes("M")
    assert sh["class_token"].shape == (1, 1, 8) and str(sh["concat1"].shape[1]) == "T+1"
    assert prog.report("M")["params"] == 8 + 40 + 8 + 8  # the instance's second call shares its gamma
    net = prog.build("M", device="CPU")
    sd = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sd == {"class_token": (1, 8), "pos": (5, 8), "blk.gamma": (8,), "t.gamma": (8,)}
    assert np.all(net.state_dict()["blk.gamma"].numpy() == 0.5)
    assert verify(net, seq={"T": 4}, run=False) == []


def test_param_initialisers_draw_torch_init_distributions():
    from dlspec import state

    text = model(
        """
param a: [4000] init normal mean 1 std 2
param b: [4000] init trunc_normal std 1 low -0.5 high 1
param c: [4000] init uniform low -3 high -1
param d: [2, 3] ones
param e: [3] init constant value 7
""",
        inp="[1]",
    )
    graph, sh = shapes(text)
    init = state.initial(graph, sh, seed=3)
    assert set(init) == {"a", "b", "c", "d", "e"}
    assert abs(init["a"].mean() - 1) < 0.15 and abs(init["a"].std() - 2) < 0.15
    assert init["b"].min() >= -0.5 and init["b"].max() <= 1 and 0.3 < init["b"].std() < 0.5
    assert init["c"].min() >= -3 and init["c"].max() <= -1
    assert (init["d"] == 1).all() and (init["e"] == 7).all() and init["d"].shape == (2, 3)
    assert all(np.array_equal(init[k], state.initial(graph, sh, seed=3)[k]) for k in init)  # seeded


@pytest.mark.parametrize(
    "body, message",
    [
        ("param w: [0, 4]", "param 'w' dimension 1 must be a positive whole number, got 0"),
        ("param w: [4, T]", "param 'w' dimension 2 is 'T', not a number: a learned tensor has a fixed shape"),
        ("param w: []", "param 'w' needs a shape"),
        ("param w: [4] init uniform low 2 high 1", "param 'w' uniform needs low < high, got low 2 and high 1"),
        ("param w: [4] init gaussian", "param 'init' must be one of normal, trunc_normal, uniform, zeros, ones, constant, got 'gaussian'"),
        ("param w: [4]\nparam w: [4]", "name 'w' is already used in this scope"),
    ],
)
def test_param_mistakes(body, message):
    assert message in one_error(model(body, inp="[4]")).message


def test_constants_have_static_shapes_and_no_params():
    text = model(
        """
output z = zeros([2, 3])
output o = ones([4, 4], dtype = bool)
output f = full([3], 0.5)
output a = arange(5)
output b = arange(1, 2, 0.25)
output m = tril(ones([3, 3], dtype = bool))
output e = arange(6) -> embedding 4
""",
        inp="[1]",
    )
    graph, sh = shapes(text)
    got = {o.name: (sh.types[o.node].shape, sh.types[o.node].dtype) for o in graph.outputs}
    assert got == {
        "z": ((1, 2, 3), "float32"),
        "o": ((1, 4, 4), "bool"),
        "f": ((1, 3), "float32"),
        "a": ((1, 5), "int64"),
        "b": ((1, 4), "float32"),
        "m": ((1, 3, 3), "bool"),
        "e": ((1, 6, 4), "float32"),
    }
    assert sh["arange1"].vocab == 5 and dlspec.load(text).report("M")["params"] == 6 * 4
    for body, message in [
        ("zeros([4, 0])", "zeros 'shape' must be > 0"),
        ("arange(5, 1)", "arange 'arange1' from 5 to 1 by 1 is empty"),
        ("arange(0, 4, 0)", "'step' must not be 0"),
        ("zeros(x, [2])", "zeros takes no tensor, got tensor 'x'"),
        ("tril(x)", "tril 'tril1' works on the last two axes but gets (4)"),
    ]:
        assert any(message in m or message in (d.help or "") for d in diags(model(body, inp="[4]")) for m in [d.message]), body


# ---- reductions, matmul, transpose ---------------------------------------------------------------------


def test_reductions_matmul_and_transpose_shapes_and_macs():
    text = model(
        """
input q: [16]
output m = mean(x, axis = 1)
output s = sum(x, [1, 2], keepdim = true)
output mx = x -> max axis -1
output all = min(x)
output mm = x @ transpose(x)
output mv = q @ transpose(x)
output vm = x @ q
output vv = q @ q
output t = transpose(x, 1, 2)
""",
        inp="[T, 16]",
    )
    graph, sh = shapes(text)
    got = {o.name: tuple(map(str, sh.types[o.node].shape)) for o in graph.outputs}
    assert got == {
        "m": ("N", "16"),
        "s": ("N", "1", "1"),
        "mx": ("N", "T"),
        "all": ("N",),
        "mm": ("N", "T", "T"),
        "mv": ("N", "T"),
        "vm": ("N", "T"),
        "vv": ("N",),
        "t": ("N", "16", "T"),
    }
    macs = {n.path: str(sh.costs[n.path].macs) for n in graph.nodes}
    assert macs["mean1"] == "16·T" and macs["sum1"] == "16·T" and macs["mx"] == "0"
    assert macs["matmul1"] == "16·T²" and macs["matmul3"] == "16·T" and macs["matmul4"] == "16"


@pytest.mark.parametrize(
    "body, message",
    [
        ("mean(x, axis = 0)", "axis 0 is the batch N, which cannot be reduced"),
        ("sum(x, [1, 1])", "names axis 1 twice"),
        ("max(x, 3)", "axis 3 is past the last axis of (T, 16) (3 axes with N, 0 to 2)"),
        ("x @ x", "(T, 16) @ (T, 16): the inner sizes differ (16 vs T)"),
        ("transpose(x, 0, 1)", "axis 0 is the batch N, which cannot be swapped"),
        ("mean(arange(4))", "mean 'mean1' expects a float input but gets int64 from arange 'arange1'"),
        ("y = 2 @ 3", "'@' multiplies two tensors (matmul), got 2"),
    ],
)
def test_reduction_and_matmul_mistakes(body, message):
    assert any(message in m for m in messages(model(body, inp="[T, 16]"))), messages(model(body, inp="[T, 16]"))


def test_max_and_min_of_numbers_stay_functions():
    assert out_shapes(model("output y = dense (max(3, 4) + min(2, 7))", inp="[4]")) == {"y": ("N", "6")}


# ---- reserved words, duplicate outputs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, word, where",
    [
        (model("gate = dense 4", inp="[4]"), "gate", (3, 3)),
        (model("dense 4 as output", inp="[4]"), "output", (3, 14)),
        ("block B(input) {\n  dense 4\n}\n", "input", (1, 9)),
        (model("a, state = split(x, 2)", inp="[4]"), "state", (3, 6)),
        ("model model {\n  input x: [4]\n}\n", "model", (1, 7)),
        (model("param = 3", inp="[4]"), "param", (3, 3)),
        (model("input if: [4]", inp="[4]"), "if", (3, 9)),
    ],
)
def test_reserved_words_used_as_names_say_so(text, word, where):
    d = one_error(text)
    assert d.message == f"'{word}' is a reserved word and cannot be a name"
    assert (d.span.line, d.span.col) == where and f"'{word}_'" in d.help


def test_two_outputs_with_the_same_name_are_an_error():
    d = one_error(model("output y = dense 4\noutput y = dense 2", inp="[4]"))
    assert d.message == "output 'y' is declared twice" and (d.span.line, d.span.col) == (4, 10)
    assert d.notes[0].message == "first declared here" and d.notes[0].span.line == 3
    assert "declared twice" in one_error(model("h = dense 4\noutput h, h", inp="[4]")).message
    assert "declared twice" in one_error(model("repeat 2 { output y = dense 4 }", inp="[4]")).message
    block = "block B {\n  output a = dense 2\n  output a = dense 3\n}\n\n"
    assert "output 'a' is declared twice" in one_error(model("B()", inp="[4]", pre=block)).message


# ---- fmt --------------------------------------------------------------------------------------------------

EVERYTHING = """
block Enc(latent = 4) {
  param gamma: [latent] init constant value 0.5
  c = channels(x)
  h = flatten -> dense (c * 2) -> relu
  output mu = h -> dense latent
  output logvar = h -> dense latent
}

model M(cfg = [[4, 1], [8, 2]]) {
  input x: [3, 8, 8]
  input s: [T, 6]
  param cls: [1, 6] init trunc_normal std 0.02 low -1 high 1
  y = x[:, 0, 1:7:2, ...]
  h = repeat len(cfg) {
    w, st = cfg[i]
    conv w kernel 3 stride st padding 1
  }
  g = group head { pool global avg -> flatten }
  a, b = split(x, [1, 2])
  mu, logvar = x -> Enc()
  w = int(8 * (16 / 64)) * 2
  q = s @ transpose(s) -> softmax
  e = concat(cls, s, axis = 1)
  m = mean(e, axis = [1], keepdim = true) + sum(e, 1, keepdim = true)
  keep = tril(ones([4, 4], dtype = bool), -1)
  r = arange(0, 8, 2) -> embedding w
  output y, a, h, g, mu, q, m, keep, r
}
"""


def test_fmt_prints_every_construct_and_keeps_the_ir():
    text = EVERYTHING.lstrip("\n")
    assert not diags(text)
    assert format_text(text) == text  # already canonical
    messy = (
        text.replace("x[:, 0, 1:7:2, ...]", "x[ :,0 ,1:7:2,... ]")
        .replace("a, b = split", "a ,b=split")
        .replace("h = repeat len(cfg) {", "h=repeat len(cfg){")
        .replace("s @ transpose(s)", "s@transpose(s)")
    )
    assert format_text(messy) == text
    one = dlspec.load(messy)
    two = dlspec.load(text)
    for m in two.models:
        assert strip_spans(json.loads(one.ir(m).model_dump_json())) == strip_spans(json.loads(two.ir(m).model_dump_json()))
    assert (
        format_text("model M {\n  input x: [4]\n  h = group g { dense 2 }\n}\n")
        == "model M {\n  input x: [4]\n  h = group g { dense 2 }\n}\n"
    )


def test_fmt_keeps_comments_and_one_line_bodies_of_the_new_statements():
    messy = "model M {\n  input x: [4]\n  h = repeat 2 {\n    dense 4   # inner\n  }\n  a ,  b=split( x,2 )  # split\n  g = group head { dense 2 }\n  y = x[ :,0 :2 ]\n  param p : [ 4 ]   init zeros # p\n}\n"
    want = "model M {\n  input x: [4]\n  h = repeat 2 {\n    dense 4  # inner\n  }\n  a, b = split(x, 2)  # split\n  g = group head { dense 2 }\n  y = x[:, 0:2]\n  param p: [4] init zeros  # p\n}\n"
    assert format_text(messy) == want and format_text(want) == want


def test_the_ir_of_the_new_constructs_round_trips_through_json():
    from dlspec.ir import Graph

    for text, m in ((EVERYTHING.lstrip("\n"), "M"), (NUMERIC, "Tensors")):
        g = dlspec.load(text).ir(m)
        back = Graph.model_validate_json(g.model_dump_json())
        assert back == g and back.model_dump() == g.model_dump()
    assert g.node("cls").params.init == "normal" and dlspec.load(EVERYTHING).ir("M").args == {"cfg": ((4, 1), (8, 2))}


def test_the_fuzzer_makes_the_new_constructs():
    ch = fuzzgen.RandomChooser(random.Random(1))
    text = "\n".join(fuzzgen.grammar_spec(ch) for _ in range(400))
    for piece in [
        "[:",
        "...",
        "a, b = ",
        "param p:",
        "split(",
        "chunk(",
        "crop",
        "channels(",
        "size(",
        "@",
        "transpose",
        "mean",
        "zeros(",
        "arange(",
        "tril(",
        "cfg[",
    ]:
        assert piece in text, piece
    assert set(fuzzgen.VOCAB) >= {"param", "split", "matmul", "@", "...", "keepdim"}


# ---- numerics: tinygrad against NumPy float64 references --------------------------------------------------

NUMERIC = """
model Tensors {
  input x: [3, 5, 4]
  input t: [4, 6]
  input v: [6]
  param cls: [1, 6] init normal std 0.5
  param g: [3, 1, 1] init uniform low 0.5 high 1.5
  output sl = x[:, 1:, ::2, -1]
  a, b = split(x, [1, 2])
  output b = b * 1
  c0, c1 = chunk(t, 2, axis = -1)
  output c1 = c1 * 1
  output cr = crop(x, like = x[:, :, 1:4, 1:3])
  output cat = concat(cls, t, axis = 1)
  output sc = x * g
  output red = mean(x, axis = [2, 3], keepdim = true) + sum(x, 1, keepdim = true)
  output mx = max(t, 1, keepdim = true) - min(t, axis = -1, keepdim = true)
  output mm = t @ transpose(t)
  output mv = v @ transpose(t, 1, 2)
  output vm = t @ v
  output vv = v @ v
  output tri = tril(t @ transpose(t), -1) + triu(t @ transpose(t), 1)
  output ar = t + arange(0.5, 6.5)
  output emb = arange(4) -> embedding 3
}
"""


def _ref(P, x, t, v):
    tt = t.transpose(0, 2, 1)
    mm = t @ tt
    cls = np.broadcast_to(P["cls"][None], (x.shape[0], 1, 6))
    return [
        x[:, 1:, ::2, -1],
        x[:, 1:],
        t[..., 3:],
        x[:, :, 1:4, 1:3],
        np.concatenate([cls, t], axis=1),
        x * P["g"][None],
        x.mean(axis=(2, 3), keepdims=True) + x.sum(axis=1, keepdims=True),
        t.max(axis=1, keepdims=True) - t.min(axis=-1, keepdims=True),
        mm,
        np.einsum("nk,nkm->nm", v, tt),
        np.einsum("ntk,nk->nt", t, v),
        np.einsum("nk,nk->n", v, v),
        np.tril(mm, -1) + np.triu(mm, 1),
        t + (np.arange(6) + 0.5)[None, None],
        P["emb.weight"][None, :4],
    ]


@pytest.fixture(scope="module")
def numeric_net():
    with Context(NOOPT=1):  # the same numbers; a cold kernel cache compiles faster
        yield build(NUMERIC)


def test_new_ops_forward_and_backward_match_numpy(numeric_net):
    rng = np.random.default_rng(7)
    inputs = {"x": rng.standard_normal((2, 3, 5, 4)), "t": rng.standard_normal((2, 4, 6)), "v": rng.standard_normal((2, 6))}
    with Context(NOOPT=1):
        outs, P = check(numeric_net, _ref, inputs)
    assert set(P) >= {"cls", "g", "emb.weight"} and P["cls"].shape == (1, 6) and P["g"].shape == (3, 1, 1)
    assert outs[11].shape == (2,)


def test_new_ops_match_pytorch(numeric_net):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x, t, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 5, 4), (2, 4, 6), (2, 6)))
    with Context(NOOPT=1):
        outs = [o.numpy() for o in numeric_net(Tensor(x), Tensor(t), Tensor(v))]
    sd = {k: torch.tensor(w.numpy()) for k, w in numeric_net.state_dict().items()}
    X, T, V = torch.tensor(x), torch.tensor(t), torch.tensor(v)
    names = numeric_net.output_names
    want = {
        "sl": X[:, 1:, ::2, -1],
        "b": torch.split(X, [1, 2], dim=1)[1],
        "c1": torch.chunk(T, 2, dim=-1)[1],
        "cat": torch.cat([sd["cls"][None].expand(2, -1, -1), T], dim=1),
        "red": X.mean(dim=(2, 3), keepdim=True) + X.sum(dim=1, keepdim=True),
        "mx": T.max(dim=1).values.unsqueeze(1) - T.min(dim=-1, keepdim=True).values,
        "mm": torch.matmul(T, T.transpose(1, 2)),
        "mv": torch.vmap(torch.matmul)(V, T.transpose(1, 2)),
        "vm": torch.vmap(torch.matmul)(T, V),
        "vv": torch.vmap(torch.matmul)(V, V),
        "tri": torch.tril(T @ T.mT, -1) + torch.triu(T @ T.mT, 1),
        "ar": T + torch.arange(0.5, 6.5),
        "emb": torch.nn.functional.embedding(torch.arange(4), sd["emb.weight"])[None],
    }
    for name, w in want.items():
        got = outs[names.index(name)]
        np.testing.assert_allclose(got, w.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_constants_and_causal_masks_run(numeric_net):
    text = model(
        """
keep = tril(ones([3, 3], dtype = bool))
h = x -> attention 2 mask keep
output h = h
output ids = arange(2, 9, 3)
output z = full([2], 1.5) + zeros([2])
""",
        inp="[3, 4]",
    )
    net = build(text)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    with Context(NOOPT=1):
        h, ids, z = net(Tensor(x))
        assert ids.tolist() == [[2, 5, 8]] and z.tolist() == [[1.5, 1.5]]
        causal = net(Tensor(x.copy()))[0].numpy()
        later = x.copy()
        later[:, 2] += 10  # the last step cannot change the earlier ones under a causal mask
        moved = net(Tensor(later))[0].numpy()
    np.testing.assert_allclose(moved[:, :2], causal[:, :2], rtol=1e-5, atol=1e-5)
    assert not np.allclose(moved[:, 2], causal[:, 2])
    assert h.shape == (2, 3, 4)


# ---- static shapes equal runtime shapes ---------------------------------------------------------------------


@st.composite
def tensor_spec(draw):
    """A random valid use of a new op on a random (C, H, W) input, and its expected static shape."""
    c, h, w = draw(st.integers(1, 6)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kind = draw(st.sampled_from(["index", "slice", "split", "chunk", "crop", "reduce", "matmul", "transpose", "param"]))
    dims = [c, h, w]
    if kind == "index":
        k = draw(st.integers(1, 3))
        i = draw(st.integers(-dims[k - 1], dims[k - 1] - 1))
        expr = f"x[..., {i}]" if k == 3 and draw(st.booleans()) else "x[" + ", ".join([":"] * k + [str(i)]) + "]"
    if kind == "slice":
        parts = []
        for d in dims:
            a, b = sorted([draw(st.integers(-d, d)), draw(st.integers(-d, d + 2))])
            s = draw(st.integers(1, 3))
            if len(range(*slice(a, b, s).indices(d))) == 0:
                a, b = None, None
            parts.append(f"{'' if a is None else a}:{'' if b is None else b}:{s}")
        expr = f"x[:, {', '.join(parts)}]"
    if kind == "split":
        k = draw(st.sampled_from([n for n in range(1, c + 1) if c % n == 0]))
        expr = f"concat(split(x, {k}))" if draw(st.booleans()) else f"split(x, [{', '.join(['1'] * c)}])[{draw(st.integers(0, c - 1))}]"
    if kind == "chunk":
        k = draw(st.integers(1, w))
        each = -(-w // k)
        if -(-w // each) != k:
            k = -(-w // each)
        expr = f"chunk(x, {k}, axis = 3)[{draw(st.integers(0, k - 1))}]"
    if kind == "crop":
        expr = f"crop(x, [{draw(st.integers(1, h))}, {draw(st.integers(1, w))}])"
    if kind == "reduce":
        op = draw(st.sampled_from(["mean", "sum", "max", "min"]))
        axes = draw(st.lists(st.sampled_from([1, 2, 3, -1]), min_size=1, max_size=2, unique_by=lambda a: a % 4))
        expr = f"{op}(x, {axes}, keepdim = {draw(st.sampled_from(['true', 'false']))})"
    if kind == "matmul":
        expr = draw(
            st.sampled_from(
                ["x @ transpose(x)", "transpose(x) @ x", "x[:, 0] @ transpose(x[:, 0])", "x[:, 0, 0] @ transpose(x)", "x @ x[:, 0, 0]"]
            )
        )
    if kind == "transpose":
        expr = f"transpose(x, {draw(st.integers(1, 3))}, {draw(st.integers(-3, -1))})"
    if kind == "param":
        expr = f"x * p + concat(p, x, axis = 1)[:, {c}:]"
    return f"model M {{\n  input x: [{c}, {h}, {w}]\n  param p: [{c}, {h}, {w}] init normal std 0.1\n  output y = {expr}\n}}\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensor_spec())
def test_static_shapes_equal_runtime_shapes(text):
    prog = dlspec.load(text)
    assert not [d.message for d in prog.check()], text
    net = prog.build("M", device="CPU")
    assert verify(net, batch=3, run=False) == [], text
