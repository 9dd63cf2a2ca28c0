"""Small helpers for the shape-inference tests: build a one-model spec from its body and
read back shapes (batch ``N`` dropped, symbolic dims as strings), costs and diagnostics."""

from __future__ import annotations

import textwrap

import dlspec
from dlspec.shapes import Shapes, dvalue


def spec(body: str, pre: str = "", name: str = "M") -> str:
    """``model M { body }`` (body dedented and indented by two), after ``pre`` (blocks, cells)."""
    inner = textwrap.indent(textwrap.dedent(body).strip("\n"), "  ")
    return f"{textwrap.dedent(pre).strip()}\n\nmodel {name} {{\n{inner}\n}}\n" if pre else f"model {name} {{\n{inner}\n}}\n"


def infer(body: str, pre: str = "") -> Shapes:
    return dlspec.load(spec(body, pre), name="t.dl").shapes()


def dims(t) -> tuple:
    """A tensor type's sample shape, ints kept and symbolic dims as strings."""
    return tuple(d if isinstance(d, int) else str(d) for d in t.sample)


def out(body: str, pre: str = "") -> tuple:
    """The sample shape of the model's (first) output."""
    s = infer(body, pre)
    return dims(s.types[s.graph.outputs[0].node])


def last(body: str, pre: str = "") -> tuple[tuple, int, int, object]:
    """(sample shape, params, buffers, MACs) of the last top-level node."""
    s = infer(body, pre)
    n = s.graph.top_level()[-1]
    c = s.costs[n.path]
    return dims(s.types[n.path]), c.params, c.buffers, c.macs


def totals(body: str, pre: str = "") -> tuple[int, int]:
    """(params, buffers) of the whole model."""
    s = infer(body, pre)
    return sum(c.params for c in s.costs.values()), sum(c.buffers for c in s.costs.values())


def at(d, **env: int):
    """A (possibly symbolic) dim or MAC count evaluated with symbols bound."""
    return dvalue(d, env)


def errors(text: str, name: str = "t.dl") -> list[tuple[int, int, str, str | None, list[str]]]:
    """Every error diagnostic of ``text``: (line, col, message, help, notes)."""
    try:
        diags = dlspec.load(text, name=name).check()
    except dlspec.DlspecError as e:
        diags = e.diagnostics
    return [(d.span.line, d.span.col, d.message, d.help, [n.message for n in d.notes]) for d in diags if d.severity == "error"]


def warnings(text: str) -> list[str]:
    return [d.message for d in dlspec.load(text, name="t.dl").check() if d.severity == "warning"]


def error_messages(body: str, pre: str = "") -> list[str]:
    return [e[2] for e in errors(spec(body, pre))]
