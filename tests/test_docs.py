"""Every ```dl example in docs/language.md and docs/glossary.md is checked here.

Conventions (also described in docs/language.md, "About the examples"):

- ```dl: a *complete file* (a line starting with ``model``, ``block``, ``cell``, ``train`` or
  ``import``) or a *fragment* of layer lines, which is wrapped into
  ``model Example { input x: [3, 32, 32] … }``. It must load and check with no diagnostic,
  pass static shape inference, and be written in canonical layout (``fmt`` leaves it as is).
- ```dl-error: the same wrapping, but it must produce at least one diagnostic.
- An HTML comment on the line just before the fence sets options, separated by ``;``:
  ``<!-- input: [T] int vocab 100 -->`` the fragment's input (anything an ``input``
  statement takes after the name; default ``[3, 32, 32]``);
  ``<!-- train -->`` or ``<!-- train: gan generator Net, discriminator Net -->`` the fragment
  is the body of a ``train`` section (default head ``Net``) for a small model ``Net``;
  ``<!-- file: lib/blocks.dl -->`` the block is also written to that path, relative to the
  directory every example is loaded from (for ``import``);
  ``<!-- error: some text -->`` (dl-error) a diagnostic's message contains this text;
  ``<!-- fmt: no -->`` the example shows a non-canonical layout on purpose (not compared
  with ``fmt``'s output; it must still check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import dlspec
from dlspec import ops
from dlspec.fmt import format_text

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC_FILES = ("language.md", "glossary.md")
DEFAULT_INPUT = "[3, 32, 32]"
COMPLETE = re.compile(r"^(model|block|cell|train|import)\b", re.M)
FENCE = re.compile(r"^```(dl|dl-error)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
OPTIONS = re.compile(r"<!--(.*?)-->\s*$")
TRAIN_MODEL = "model Net {\n  input x: [1, 28, 28]\n  flatten -> dense 10\n}\n"


@dataclass
class Example:
    doc: str
    line: int
    kind: str  # "dl" or "dl-error"
    text: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def source(self) -> str:
        """The example as a complete ``.dl`` file."""
        if COMPLETE.search(self.text):
            return self.text
        body = "".join(("  " + ln if ln.strip() else ln) + "\n" for ln in self.text.splitlines())
        if "train" in self.options:
            head = self.options["train"] or "Net"
            return f"{TRAIN_MODEL}\ntrain {head} {{\n{body}}}\n"
        shape = self.options.get("input") or DEFAULT_INPUT
        return f"model Example {{\n  input x: {shape}\n{body}}}\n"


def _options(line: str) -> dict[str, str]:
    m = OPTIONS.search(line)
    if not m:
        return {}
    out = {}
    for part in m.group(1).split(";"):
        key, _, value = part.partition(":")
        if key.strip():
            out[key.strip()] = value.strip()
    return out


def examples(doc: str) -> list[Example]:
    text = (DOCS / doc).read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append(Example(doc, line, m.group(1), m.group(2), _options(before)))
    return found


ALL = [e for doc in DOC_FILES for e in examples(doc)]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory holding every ``<!-- file: … -->`` example, made the current directory."""
    for e in ALL:
        if "file" in e.options:
            target = tmp_path / e.options["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(e.text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def diagnostics(source: str) -> list:
    """Every diagnostic of ``source``: syntax, names, params, train sections and shapes."""
    try:
        prog = dlspec.load(source, name="example.dl")
        diags = prog.check()
        if diags:
            return diags
        try:
            from dlspec.shapes import infer
        except ImportError:  # pragma: no cover - shape inference not there yet
            return []
        for m in prog.models:
            infer(prog.ir(m))
    except dlspec.DlspecError as e:
        return list(e.diagnostics)
    return []


def test_examples_are_found():
    for doc in DOC_FILES:
        assert len([e for e in ALL if e.doc == doc]) >= 20, f"{doc}: too few ```dl examples"


@pytest.mark.parametrize("ex", [e for e in ALL if e.kind == "dl"], ids=lambda e: e.id)
def test_example_checks(ex: Example, workdir):
    source = ex.source()
    diags = diagnostics(source)
    assert not diags, f"{ex.id}: the example has errors:\n" + "\n".join(f"  {d.span}: {d.message}" for d in diags) + "\n" + source
    if ex.options.get("fmt") == "no":
        return
    assert format_text(source) == source, f"{ex.id}: not in canonical layout; 'dlspec fmt' writes:\n{format_text(source)}"


@pytest.mark.parametrize("ex", [e for e in ALL if e.kind == "dl-error"], ids=lambda e: e.id)
def test_error_example_fails(ex: Example, workdir):
    diags = diagnostics(ex.source())
    assert diags, f"{ex.id}: the example is marked dl-error but checks without a diagnostic"
    want = ex.options.get("error")
    if want:
        messages = [d.message for d in diags]
        assert any(want in m for m in messages), f"{ex.id}: no diagnostic contains {want!r}; got {messages}"


def _section(doc: str, title: str) -> str:
    text = (DOCS / doc).read_text(encoding="utf-8")
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end >= 0 else len(text)]


def test_catalogue_lists_every_op_and_key():
    table = _section("language.md", "## Op catalogue")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_0-9]+)`.*$", table, re.M)}
    missing = [name for name in ops.USER_OPS if name not in rows]
    assert not missing, f"ops missing from the catalogue table in docs/language.md: {missing}"
    for name in ops.USER_OPS:
        for key in ops.get(name).keys():
            assert f"`{key}`" in rows[name] or f"`{key} " in rows[name], f"op '{name}': key '{key}' is not in its catalogue row"
    extra = [name for name in rows if name not in ops.USER_OPS]
    assert not extra, f"the catalogue table lists ops that do not exist: {extra}"


def test_train_settings_documented():
    from dlspec import trainspec

    text = _section("language.md", "## Training: `train` sections")
    for kind in trainspec.KINDS:
        assert f"`{kind}`" in text, f"train objective '{kind}' is not documented"
    for key, (_typ, choices, opts) in trainspec.SETTINGS.items():
        assert f"`{key}`" in text, f"train setting '{key}' is not documented"
        for word in list(choices or ()) + list(opts):
            assert f"`{word}`" in text, f"'{word}' of train setting '{key}' is not documented"
    for name, allowed in trainspec.OPTIMIZER_OPTIONS.items():
        for opt in allowed:
            assert f"`{opt}`" in text, f"option '{opt}' of optimizer '{name}' is not documented"
