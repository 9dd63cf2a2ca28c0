"""Hypothesis properties of the front end.

(a) No input makes ``load(text).check()``, ``format_text`` or (when the check passes) the
report, as JSON, raise anything but ``DlspecError``: random token sequences from the
language's vocabulary, valid specs mutated by deleting, duplicating or swapping tokens or
characters, and the fuzzer's families (tests/fuzzgen.py): every construct of the grammar,
huge numbers in every position, nesting up to and past the limits, long chains of block
calls. A small run here; ``bench/fuzz.py`` runs a seeded campaign of 100,000 cases.
(b) On generated valid specs ``fmt`` is idempotent and preserves the IR.
"""

from __future__ import annotations

import re

import fuzzgen
from conftest import ROOT, strip_spans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlspec
from dlspec.fmt import format_text

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SPECS = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.dl"))]
TOKEN_RE = fuzzgen.TOKEN_RE
# a list, not a set: newlines come up more often; every keyword, op and setting word, huge numbers
VOCAB = fuzzgen.VOCAB


only_dlspec_errors = fuzzgen.only_dlspec_errors


@FAST
@given(st.lists(st.sampled_from(VOCAB), max_size=60), st.sampled_from([" ", "", "\n"]))
def test_random_token_sequences_raise_only_dlspec_errors(tokens, sep):
    only_dlspec_errors(sep.join(tokens))


@st.composite
def mutated_spec(draw):
    return fuzzgen.mutated(fuzzgen.DrawChooser(draw), draw(st.sampled_from(SPECS)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_spec())
def test_mutated_specs_raise_only_dlspec_errors(text):
    only_dlspec_errors(text)


@st.composite
def family(draw, name: str) -> str:
    return fuzzgen.FAMILIES[name][0](fuzzgen.DrawChooser(draw))


LARGE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


@settings(LARGE, max_examples=60)
@given(family("grammar"))
def test_every_construct_raises_only_dlspec_errors(text):
    only_dlspec_errors(text)


@settings(LARGE, max_examples=60)
@given(family("huge"))
def test_huge_numbers_in_every_position_raise_only_dlspec_errors(text):
    only_dlspec_errors(text)


@settings(LARGE, max_examples=8)
@given(family("deep"))
def test_deep_nesting_up_to_and_past_the_limits_raises_only_dlspec_errors(text):
    only_dlspec_errors(text)


@settings(LARGE, max_examples=10)
@given(family("chain"))
def test_long_chains_of_block_calls_raise_only_dlspec_errors(text):
    only_dlspec_errors(text)


def test_the_families_make_what_they_say():
    """The generators reach what they are for: valid specs, each huge-number template, the
    limits and every construct of the grammar's statements."""
    import random

    ch = fuzzgen.RandomChooser(random.Random(0))
    grammar = "\n".join(fuzzgen.grammar_spec(ch) for _ in range(300))
    words = "import model block cell train input output state gate if elif else when residual shortcut concat add multiply branch repeat as index group"
    for w in words.split():
        assert re.search(rf"\b{w}\b", grammar), w
    for op in ["**", "//", "%", "==", "!=", "<=", ">=", " and ", " or ", "not ", " if ", "->", "(x, h)", "c = "]:
        assert op in grammar, op
    huge = [fuzzgen.huge_spec(ch) for _ in range(400)]
    assert all("@" not in t for t in huge)
    assert any("9" * 5000 in t for t in huge) and any("(2 ** 64) ** 64" in t for t in huge)
    deep = [fuzzgen.deep_spec(ch) for _ in range(60)]
    past = 0
    for t in deep:
        try:
            dlspec.load(t)
        except dlspec.DlspecError as e:
            past += any("the limit is" in d.message for d in e.diagnostics)
    assert 0 < past < len(deep)


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
