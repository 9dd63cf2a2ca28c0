"""Hypothesis properties of the front end.

(a) No input makes ``load(text).check()`` or ``format_text`` raise anything but
``DlspecError``: random token sequences from the language's vocabulary, and valid specs
mutated by deleting, duplicating or swapping tokens or characters.
(b) On generated valid specs ``fmt`` is idempotent and preserves the IR.
"""

from __future__ import annotations

import re

from conftest import ROOT, strip_spans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlspec
from dlspec.fmt import format_text

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SPECS = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.dl"))]
TOKEN_RE = re.compile(r'"[^"\n]*"|\d+\.?\d*(?:e-?\d+)?|[A-Za-z_]\w*|->|==|!=|<=|>=|//|\*\*|#[^\n]*|\n|\S')

# a list, not a set: newlines come up more often
VOCAB = [
    *"model block cell train import input output state gate if elif else when and or not true false as index".split(),
    *"residual shortcut concat add multiply branch repeat group".split(),
    *"dense conv deconv pool max avg global flatten reshape relu tanh sigmoid softmax dropout batchnorm attention".split(),
    *"kernel stride padding bias units heads mask same valid sequences data loss optimizer sgd lr batch epochs x h T".split(),
    "M",
    "B",
    "B(",
    "M(",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    ":",
    "=",
    "->",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "**",
    "==",
    "!=",
    "<",
    ">=",
    "0",
    "1",
    "3",
    "-1",
    "0.5",
    "1e-3",
    '"a.dl"',
    '"\\x"',
    "# c",
    "\n",
    "\n",
    "\n",
]


def only_dlspec_errors(text: str) -> None:
    try:
        dlspec.load(text).check()
    except dlspec.DlspecError:
        pass
    try:
        format_text(text)
    except dlspec.DlspecError:
        pass


@FAST
@given(st.lists(st.sampled_from(VOCAB), max_size=60), st.sampled_from([" ", "", "\n"]))
def test_random_token_sequences_raise_only_dlspec_errors(tokens, sep):
    only_dlspec_errors(sep.join(tokens))


@st.composite
def mutated_spec(draw):
    text = draw(st.sampled_from(SPECS))
    if draw(st.booleans()):
        units = TOKEN_RE.findall(text)
        joiner = " "
    else:
        units = list(text)
        joiner = ""
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(units) - 1))
        j = draw(st.integers(0, len(units) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "insert"]))
        if kind == "delete":
            del units[i]
        elif kind == "duplicate":
            units.insert(i, units[j])
        elif kind == "swap":
            units[i], units[j] = units[j], units[i]
        else:
            units.insert(i, draw(st.sampled_from(VOCAB)))
    return joiner.join(units)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_spec())
def test_mutated_specs_raise_only_dlspec_errors(text):
    only_dlspec_errors(text)


# ---- (b) generated valid specs ----------------------------------------------------

ACTS = ["relu", "tanh", "sigmoid", "gelu", "silu", "identity", "softmax", "leaky_relu 0.2", "elu alpha 0.5"]


@st.composite
def dense_layer(draw, params=()):
    units = draw(st.sampled_from([str(draw(st.integers(1, 64))), *params, "(2 * 3)", "(4 if true else 5)"]))
    parts = [f"dense {units}"]
    if draw(st.booleans()):
        parts[0] += draw(st.sampled_from([", bias false", " bias true", " bias false"]))
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(ACTS)))
    if draw(st.booleans()):
        parts.append(f"dropout {draw(st.sampled_from(['0', '0.1', '0.25', 'p 0.5', '.5']))}")
    return " -> ".join(parts)


@st.composite
def statement(draw, depth=0, params=()):
    kinds = ["layer", "layer", "layer"] + (["repeat", "residual", "group", "block_call", "concat", "if"] if depth < 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "layer":
        return [draw(dense_layer(params))]
    if kind == "block_call":
        return [draw(st.sampled_from(["Mlp(8)", "Mlp(h = 4)", "Mlp(3, act = false)", "Mlp(2, act = 1 > 0)"]))]
    body = draw(st.lists(statement(depth + 1, params), min_size=1, max_size=3))
    flat = [line for s in body for line in s]
    head = {
        "repeat": f"repeat {draw(st.integers(0, 3))}",
        "residual": "residual",
        "group": f"group g{draw(st.integers(0, 9))}",
        "if": draw(st.sampled_from(["if true", "if 1 > 2", "if not false and true"])),
    }.get(kind)
    if kind == "concat":
        branches = [f"branch {{ {draw(dense_layer(params))} }}" for _ in range(draw(st.integers(1, 3)))]
        return ["concat {", *("  " + b for b in branches), "}"]
    if len(flat) == 1 and draw(st.booleans()):  # a one-line body
        one = f"{head} {{ {flat[0]} }}"
        if kind == "if" and draw(st.booleans()):
            one += " else { relu }"
        return [one]
    lines = [f"{head} {{", *("  " + line for line in flat), "}"]
    if kind == "if" and draw(st.booleans()):
        lines[-1] = "} else {"
        lines += ["  tanh", "}"]
    return lines


@st.composite
def valid_spec(draw):
    out = ["# generated", "block Mlp(h, act = true) {", "  dense h", "  if act { relu }", "}", ""]
    params = draw(st.sampled_from([(), ("w",)]))
    head = "model Gen(w = 5)" if params else "model Gen"
    out.append(head + " {")
    out.append(f"  input x: [{draw(st.integers(1, 32))}]" + draw(st.sampled_from(["", "  # the input"])))
    for stmt in draw(st.lists(statement(0, params), min_size=1, max_size=6)):
        if draw(st.booleans()):
            out.append(draw(st.sampled_from(["", "", "  # a comment", "\n"])))
        indent = draw(st.sampled_from(["  ", "    ", "\t"]))
        out.extend(indent + line for line in stmt)
    out.append("}")
    text = "\n".join(out) + "\n"
    counter = iter(range(10**6))
    return re.sub(r"group g\d+", lambda m: f"group g{next(counter)}", text)  # group names are unique


def ir_of(text: str) -> dict:
    prog = dlspec.load(text)
    return {m: strip_spans(prog.ir(m).model_dump()) for m in prog.models}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_spec())
def test_fmt_is_idempotent_and_preserves_the_ir(text):
    before = ir_of(text)  # the generator only makes valid specs
    once = format_text(text)
    assert format_text(once) == once
    assert ir_of(once) == before
    # comments survive formatting
    assert once.count("#") == text.count("#")
