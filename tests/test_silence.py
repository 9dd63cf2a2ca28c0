"""Silencing a warning where the behaviour is meant (``conv … , ok drop_border``), and the
bad-input list of issue 14: each mistake located (line and column, a caret), with the
arithmetic in the message and a hint how to fix it."""

from __future__ import annotations

import pytest

import dlspec
from dlspec.silence import WARNINGS


def warnings(text: str) -> list:
    return [d for d in dlspec.load(text, name="t.dl").check() if d.severity == "warning"]


STEM = """
model Stem {
  input image: [3, 32, 32]
  conv 8 kernel 3 stride 2%s
}
"""


def test_a_dropped_border_warns_and_names_its_silence():
    ws = warnings(STEM % "")
    assert [w.message.split(" (")[0] for w in ws] == ["conv 'conv1' output height", "conv 'conv1' output width"]
    for w in ws:
        assert "(32 - 3) / 2 + 1 = 15.5 is rounded down: the last 1 input row(s) are never seen" in w.message
        assert w.kind == "drop_border" and "', ok drop_border'" in w.help


def test_ok_silences_that_warning_at_that_layer_only():
    assert warnings(STEM % ", ok drop_border") == []
    two = STEM.replace("}", "  conv 8 kernel 2 stride 2\n}") % ", ok drop_border"
    ws = warnings(two)  # the second conv's own warnings stay
    assert [(w.span.line, w.kind) for w in ws] == [(5, "drop_border"), (5, "drop_border")]


def test_ok_in_a_block_silences_every_call():
    text = """
block Down {
  conv 8 kernel 3 stride 2, ok drop_border
}

model M {
  input x: [3, 32, 32]
  Down()
  Down()
}
"""
    assert warnings(text) == []


def test_other_warnings_have_names_too():
    w = warnings("model M {\n  input x: [T, 4]\n  lstm 8 dropout 0.5\n}")
    assert [d.kind for d in w] == ["dropout_unused"]
    assert warnings("model M {\n  input x: [T, 4]\n  lstm 8 dropout 0.5, ok dropout_unused\n}") == []
    block = "block Two {\n  output a = dense 2\n  output b = dense 2\n}\n"
    w = warnings(block + "model M {\n  input x: [4]\n  Two() -> dense 3\n}")
    assert [d.kind for d in w] == ["tuple_concat"]
    assert warnings(block + "model M {\n  input x: [4]\n  Two() -> dense 3, ok tuple_concat\n}") == []


def test_an_ok_that_silences_nothing_warns():
    (w,) = warnings("model M {\n  input x: [3, 8, 8]\n  conv 8 kernel 1, ok drop_border\n}")
    assert w.message == "'ok drop_border' silences nothing here: this layer gives no drop_border warning"
    assert (w.span.line, w.span.col) == (3, 23)


def test_an_unknown_warning_name_is_an_error_with_a_suggestion():
    with pytest.raises(dlspec.DlspecError) as e:
        dlspec.load("model M {\n  input x: [3, 8, 8]\n  conv 8 kernel 3, ok drop_bordr\n}").ir()
    (d,) = e.value.diagnostics
    assert d.message == "'ok' takes a warning's name, and 'drop_bordr' is none — did you mean 'drop_border'?"
    assert (d.span.line, d.span.col) == (3, 23)
    assert all(name in d.help for name in WARNINGS)


def test_the_docs_list_every_warning_name():
    from conftest import ROOT

    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    for name in WARNINGS:
        assert f"`{name}`" in text


# ---- the bad-input list ---------------------------------------------------------------------------------

BAD = [
    ("[T, 768]", "x[:, 0, 768]", (3, 3), "index 768 is past axis 2 of size 768", "run from 0 to 767"),
    ("[48, 8, 8]", "a, b, c, d, e = split(x, 5)", (3, 19), "5 pieces do not divide axis 1 of size 48 (48 = 5·9 + 3)", "divides 48"),
    ("[3, 6, 6]", "crop(x, 10)", (3, 3), "crop to 10×10 is larger than its input 6×6 (axis 2: 10 > 6)", "'pad'"),
    ("[T, 16]", "dense size(x, 1)", (3, 9), "has the symbolic size T, known only at run time", "pass the size as a parameter"),
    ("[16]", "a, b = split(x, 4)", (3, 3), "2 names (a, b) but the right-hand side gives 4 tensors", "as many names as it gives (4)"),
    ("[4]", "param w: [d - 4, 4] init zeros", (3, 13), "param 'w' dimension 1 must be a positive whole number, got 0", "'d - 4' is 0"),
    ("[4]", "gate = dense 3", (3, 3), "'gate' is a reserved word and cannot be a name", "choose another name"),
    ("[4]", "output y = dense 4\noutput y = dense 2", (4, 10), "output 'y' is declared twice", "its own name"),
    ("[4]", "t = [[1, 2], [3, 4]]\ndense t[2][0]", (4, 11), "index 2 is past the end of 't', which has 2 items", "from 0 to 1"),
]


@pytest.mark.parametrize("inp,body,at,message,fix", BAD, ids=[b[3].split(" ")[0] + str(i) for i, b in enumerate(BAD)])
def test_bad_input_is_located_with_arithmetic_and_a_fix(inp, body, at, message, fix):
    text = "model M(d = 4) {\n  input x: " + inp + "\n  " + body.replace("\n", "\n  ") + "\n}\n"
    try:
        diags = dlspec.load(text, name="t.dl").check()
    except dlspec.DlspecError as e:
        diags = e.diagnostics
    errors = [d for d in diags if d.severity == "error"]
    assert errors, f"no error for {body!r}"
    d = errors[0]
    assert message in d.message
    assert (d.span.line, d.span.col) == at
    assert d.help and fix in d.help, d.help
