"""Nesting limits (dlspec.limits, docs/language.md "Limits"): exactly at a limit every pass
works (check, the report, fmt, draw to DOT); one past it is a located error, never an
internal one. Also fmt on deep one-line nesting (linear, not exponential) and escaped
import paths."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT, run_dlspec, strip_spans
from deepspecs import (
    BLOCK_KINDS,
    EXPRESSIONS,
    HEAD,
    MAX_BLOCK_DEPTH,
    MAX_EXPR_DEPTH,
    block_chain,
    blocks_and_expression,
    nested_blocks,
    nested_concat,
)

import dlspec
import dlspec.limits as L
from dlspec.fmt import format_text


def every_pass(text: str) -> tuple[dict, str, str]:
    """check (no diagnostics), the report, fmt (idempotent, same IR) and the DOT source."""
    prog = dlspec.load(text)
    assert prog.check() == []
    report = prog.report()
    once = format_text(text)
    assert format_text(once) == once
    assert strip_spans(dlspec.load(once).ir().model_dump()) == strip_spans(prog.ir().model_dump())
    dot = prog.draw().source
    assert dot.startswith("digraph")
    return report, once, dot


def parse_error(text: str) -> tuple[int, int, str]:
    with pytest.raises(dlspec.ParseError) as e:
        dlspec.load(text)
    (d,) = e.value.diagnostics
    return d.span.line, d.span.col, d.message


def test_limits_are_the_documented_numbers():
    assert (L.MAX_BLOCK_DEPTH, L.MAX_EXPR_DEPTH) == (200, 1000)
    nesting = (ROOT / "docs" / "language.md").read_text(encoding="utf-8").split("### Nesting")[1].split("\n## ")[0]
    assert "`blocks nested 201 deep; the limit is 200`" in nesting
    assert "| 1,000 (`expression nested 1001 deep at '+' …; the limit is 1000`)" in nesting


# ---- blocks ------------------------------------------------------------------------------

# layers of each kind's level: `residual` adds an `add`, `shortcut` a relu and an add
EXTRA = {"group": 0, "repeat": 0, "residual": 1, "if": 0, "shortcut": 2, "else": 0}


@pytest.mark.parametrize("kind", list(BLOCK_KINDS))
def test_blocks_at_the_limit_pass_every_pass(kind):
    text, _ = nested_blocks(MAX_BLOCK_DEPTH, kind)
    report, _, dot = every_pass(text)
    inner = MAX_BLOCK_DEPTH - 1
    assert len(report["layers"]) == 2 + EXTRA[kind] * inner  # the input, dense 4, and each level's
    assert report["outputs"][0]["shape"][-1] == 4
    if kind == "group":  # the dense layer's path has one scope per group
        path = ".".join(f"g{i}" for i in range(inner)) + ".dense1"
        assert dlspec.load(text).ir().nodes[-1].path == path
        assert f'"{path}" -> output' in dot


@pytest.mark.parametrize("kind", list(BLOCK_KINDS))
def test_blocks_past_the_limit_are_a_located_error(kind):
    text, where = nested_blocks(MAX_BLOCK_DEPTH + 1, kind)
    assert parse_error(text) == (*where, "blocks nested 201 deep; the limit is 200")
    # the caret underlines the header that opens the 201st body
    line = text.splitlines()[where[0] - 1]
    assert line[where[1] - 1 :].startswith(BLOCK_KINDS[kind][0].split()[0])


def test_blocks_on_one_line_past_the_limit_point_at_the_innermost_header():
    text, (line, col) = nested_blocks(MAX_BLOCK_DEPTH + 1, one_line=True)
    assert parse_error(text) == (line, col, "blocks nested 201 deep; the limit is 200")
    assert text.splitlines()[line - 1][col - 1 :].startswith("group g199 {")


def test_concat_branches_at_and_past_the_limit():
    text, _ = nested_concat((MAX_BLOCK_DEPTH - 1) // 2)  # 99 concats: 199 bodies deep
    report, _, _ = every_pass(text)
    assert len(report["layers"]) == 2 + 99  # input, dense, one concat each
    text, where = nested_concat(MAX_BLOCK_DEPTH // 2)  # 201 deep: the 100th `branch {`
    assert where == (102, 10)
    assert parse_error(text) == (102, 10, "blocks nested 201 deep; the limit is 200")


def test_a_chain_of_block_calls_at_the_limit_passes():
    text, _ = block_chain(MAX_BLOCK_DEPTH - 1)  # the model's body and 199 block bodies
    report, _, dot = every_pass(text)
    path = "".join(f"b{i}1." for i in range(1, 200)) + "dense1"  # scope: the block, lower case, and a counter
    assert [r["path"] for r in report["layers"]][-1] == path
    assert f"{path}" in dot


def test_a_chain_of_block_calls_past_the_limit_is_located_at_the_call():
    text, (line, col) = block_chain(MAX_BLOCK_DEPTH)
    prog = dlspec.load(text)  # the text nests 2 deep: only expanding it finds the depth
    (d,) = prog.check()
    assert (d.span.line, d.span.col) == (line, col) == (596, 3)
    assert text.splitlines()[line - 1].strip() == "B200()"
    assert d.message == "blocks nested 201 deep through block calls B1 → B2 → B3 → … → B198 → B199; the limit is 200"
    assert d.notes[0].message.startswith("in block 'B199' called at")
    with pytest.raises(dlspec.ResolveError, match="blocks nested 201 deep"):
        prog.report()
    assert format_text(format_text(text)) == format_text(text)


def test_block_calls_and_bodies_count_together():
    # each block's body holds a group that calls the next: 2 levels per block
    n = MAX_BLOCK_DEPTH // 2
    text = "".join(f"block B{i}() {{\n  group g {{ B{i + 1}() }}\n}}\n" for i in range(1, n))
    text += f"block B{n}() {{\n  group g {{ dense 4 }}\n}}\n" + HEAD + "  B1()\n}\n"
    (d,) = dlspec.load(text).check()
    # the model's body, then B_k's body at 2k and its group's at 2k + 1: B100's group is 201st
    assert (d.span.line, d.span.col, d.span.end_col) == (3 * (n - 1) + 2, 11, 12)
    assert d.message == "blocks nested 201 deep through block calls B1 → B2 → B3 → … → B99 → B100; the limit is 200"
    fewer = text.replace(f"block B{n - 1}() {{\n  group g {{ B{n}() }}", f"block B{n - 1}() {{\n  group g {{ dense 4 }}")
    assert dlspec.load(fewer).check() == []


# ---- expressions -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_expressions_at_the_limit_pass_every_pass(name):
    text, _ = EXPRESSIONS[name](MAX_EXPR_DEPTH)
    report, _, _ = every_pass(text)
    if name not in ("not", "ternary_lines"):  # those two are conditions: the model is a relu
        units = MAX_EXPR_DEPTH if name == "sum" else 4  # the sum adds 1000 ones; the others compute 4
        assert report["outputs"][0]["shape"] == ["N", units]


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_expressions_past_the_limit_are_a_located_error(name):
    text, where = EXPRESSIONS[name](MAX_EXPR_DEPTH + 1)
    line, col, message = parse_error(text)
    assert (line, col) == where
    token = message.split("'")[1]
    assert text.splitlines()[line - 1][col - 1 :].startswith(token)
    assert message == f"expression nested 1001 deep at '{token}' (brackets and operators); the limit is 1000"


def test_a_long_flat_sum_just_works():
    text = HEAD + "  dense (" + " + ".join(["1"] * 480) + " - 476)\n}\n"
    report, _, _ = every_pass(text)
    assert report["outputs"][0]["shape"] == ["N", 4]


def test_both_limits_at_once():
    report, _, _ = every_pass(blocks_and_expression())
    assert report["outputs"][0]["shape"] == ["N", 4]


def test_a_train_section_at_the_expression_limit():
    n = MAX_EXPR_DEPTH - 1  # `lr` is a setting word; the parentheses are its value
    text = HEAD + "  dense 2\n}\n\ntrain M {\n  optimizer sgd lr " + "(" * n + "0.1" + ")" * n + "\n  batch 4\n}\n"
    prog = dlspec.load(text)
    assert prog.check() == []
    assert prog.trains()[0].settings["optimizer"].options == {"lr": 0.1}
    over = text.replace("(" * n, "(" * (n + 2)).replace(")" * n, ")" * (n + 2))
    assert parse_error(over)[2].startswith("expression nested 1001 deep at '('")


def test_what_the_scan_does_not_count():
    # brackets in comments and strings, items of a list, statements and stages are not nested
    text = (
        HEAD
        + "  # "
        + "(" * 5000
        + "\n  dense (len(["
        + ", ".join(["1 + 1"] * 3000)
        + "]) - 2996)\n"
        + "  relu -> relu\n" * 2000
        + "  dense 4 -> "
        + " -> ".join(["relu"] * 2000)
        + "\n}\n"
        + 'train M {\n  data "'
        + "{" * 3000
        + '"\n}\n'
    )
    prog = dlspec.load(text)
    assert prog.report()["outputs"][0]["shape"] == ["N", 4]


def test_what_the_scan_counts_across_lines():
    # a newline inside brackets continues the expression; so does one before `else`
    text = HEAD + "  dense (" + " +\n    ".join(["1"] * 1001) + ")\n}\n"
    assert parse_error(text)[2] == "expression nested 1001 deep at '+' (brackets and operators); the limit is 1000"
    # a ',' between argument groups of a statement does not start a new expression
    text = HEAD + "  x + dense 4, bias true" * 1 + " + x" * 1000 + "\n}\n"
    assert parse_error(text)[2].startswith("expression nested 1001 deep at '+'")


# ---- the stack backstop -------------------------------------------------------------------


def nested_instance_calls(levels: int, parens: int) -> str:
    """Blocks each calling the next through an instance inside a deep expression: the
    nesting the counted limits do not see (the expander's stack budget stops it)."""
    parts = [f"block B{i}() {{\n  t = B{i + 1}()\n  y = " + "(" * parens + "t(x)" + ")" * parens + "\n}\n" for i in range(1, levels)]
    parts.append(f"block B{levels}() {{\n  dense 4\n}}\n")
    return "".join(parts) + HEAD + "  B1()\n}\n"


def test_block_calls_inside_deep_expressions_stop_with_an_error():
    report, _, _ = every_pass(nested_instance_calls(3, 900))
    assert report["outputs"][0]["shape"] == ["N", 4]
    prog = dlspec.load(nested_instance_calls(40, 900))
    (d,) = prog.check()
    assert d.message.startswith("blocks, block calls and expressions nested too deeply through block calls B1 → B2 → B3 → …")
    assert d.span.file == "<string>" and d.span.line > 1


@pytest.fixture
def python_default_limit():
    """The interpreter's default recursion limit for the test (tinygrad raises it to 10,000 on
    import, which would let any budget pass)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(before)


def test_the_frame_budget_holds_the_measured_frames_per_level(monkeypatch, python_default_limit):
    # STACK_FRAMES assumes at most 5 Python frames per body level and 4 per expression level
    # (measured); every pass at both limits must fit in that much (plus the caller's 100)
    monkeypatch.setattr(L, "STACK_FRAMES", 5 * MAX_BLOCK_DEPTH + 4 * MAX_EXPR_DEPTH + 100)
    for text in (blocks_and_expression(), EXPRESSIONS["calls"](MAX_EXPR_DEPTH)[0], block_chain(MAX_BLOCK_DEPTH - 1)[0]):
        every_pass(text)
    monkeypatch.setattr(L, "STACK_FRAMES", 2 * MAX_EXPR_DEPTH)  # max(…) of numbers: 2 frames per level
    with pytest.raises(dlspec.ResolveError, match="nested too deeply to process"):  # a check of the check
        dlspec.load(EXPRESSIONS["calls"](MAX_EXPR_DEPTH)[0]).report()


def test_the_recursion_limit_is_restored():
    before = sys.getrecursionlimit()
    every_pass(blocks_and_expression())
    assert sys.getrecursionlimit() == before


def test_a_recursion_error_is_a_located_spec_error(monkeypatch):
    import dlspec.expand

    def boom(self, defn, overrides=None):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(dlspec.expand.Expander, "model", boom)
    prog = dlspec.load("model Deep {\n  input x: [4]\n  dense 4\n}\n", name="d.dl")
    with pytest.raises(dlspec.ResolveError) as e:
        prog.ir()
    (d,) = e.value.diagnostics
    assert (str(d.span), d.message) == ("d.dl:1:7", "the spec is nested too deeply to process (Python's stack ran out)")
    (d,) = prog.check()
    assert str(d.span) == "d.dl:1:7"


# ---- fmt ---------------------------------------------------------------------------------


def one_line_groups(n: int) -> str:
    return "model M { input x: [4]; " + "group { " * n + "dense 2" + " }" * n + " }\n"


@pytest.mark.parametrize("n", [28, 100])
def test_fmt_of_deep_one_line_nesting(n):
    out = format_text(one_line_groups(n))
    assert format_text(out) == out
    lines = out.splitlines()
    # a body stays on its line when it fits in 100 columns: at indent 2L the groups left,
    # m = n + 1 - L of them, take 2L + 10m + 7 columns, so the first level that fits is
    # L >= (10n + 17 - 100) / 8; for 100 groups none does, and `dense 2` gets a line of its own
    first = -(-(10 * n + 17 - 100) // 8)
    if first <= n:
        m = n + 1 - first
        expected = ["model M {", "  input x: [4]"] + ["  " * k + "group {" for k in range(1, first)]
        expected += ["  " * first + "group { " * m + "dense 2" + " }" * m]
        expected += ["  " * k + "}" for k in range(first - 1, 0, -1)] + ["}"]
    else:
        expected = ["model M {", "  input x: [4]"] + ["  " * k + "group {" for k in range(1, n + 1)]
        expected += ["  " * (n + 1) + "dense 2"] + ["  " * k + "}" for k in range(n, 0, -1)] + ["}"]
    assert lines == expected
    assert (n, len(lines)) in ((28, 52), (100, 204))
    assert max(len(line) for line in lines if not line.strip().startswith("group {") or line.count("{") > 1) <= max(100, 2 * n + 9)


def test_fmt_of_one_line_nesting_keeps_the_ir_and_trailing_comment():
    text, _ = nested_blocks(40, one_line=True)
    out = format_text(text)
    assert strip_spans(dlspec.load(out).ir().model_dump()) == strip_spans(dlspec.load(text).ir().model_dump())
    # a comment after nested one-line bodies stays after them (it used to move inside the outer braces)
    text = "model M {\n  input x: [4]\n  group a { group b { dense 2 } }  # c\n}\n"
    assert format_text(text) == text


def test_fmt_keeps_an_escaped_import_path(tmp_path):
    lib = tmp_path / "lib\\b.dl"  # a file whose name holds a backslash
    lib.write_text("block Unit(c) {\n  dense c\n}\n", encoding="utf-8")
    spec = 'import "lib\\\\b.dl"\n\nmodel M {\n  input x: [4]\n  Unit(2)\n}\n'
    assert format_text(spec) == spec
    assert format_text(format_text(format_text(spec))) == spec
    main = tmp_path / "main.dl"
    main.write_text(spec, encoding="utf-8")
    prog = dlspec.load(main)
    assert prog.module.items[0].path == "lib\\b.dl"
    assert prog.report()["outputs"][0]["shape"] == ["N", 2]
    assert format_text('import "a\\u00e9\\"q.dl"\n') == 'import "aé\\"q.dl"\n'


# ---- the command line --------------------------------------------------------------------


def test_command_line_at_and_past_the_limits(write):
    at = write("at.dl", blocks_and_expression())
    write("past.dl", nested_blocks(MAX_BLOCK_DEPTH + 1)[0])
    r = run_dlspec("check", "at.dl", "past.dl", cwd=at.parent)
    assert r.returncode == 1
    assert r.stdout == "ok at.dl (M)\n"
    assert r.stderr.startswith("past.dl:202:401: error: blocks nested 201 deep; the limit is 200\n")
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    for args in (["compile", "at.dl", "--json"], ["draw", "at.dl", "-o", "at.dot"], ["fmt", "--check", "at.dl"]):
        r = run_dlspec(*args, cwd=at.parent)
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr, (args, r.stderr)
    assert (at.parent / "at.dot").read_text().startswith("digraph")
