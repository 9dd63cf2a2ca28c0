"""The architecture's direction, checked on the source: semantics once, targets as tables.

- ``dlspec/ops/`` holds semantics only: no op module imports tinygrad, a target, the shape pass
  or the IR (they import :mod:`dlspec.dims`, the types a rule works with).
- Drawing reads the IR: ``draw.py`` imports neither the API nor the AST.
- Every op of the catalogue has a tinygrad lowering (the table), and a missing one is a
  located error, not a crash.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dlspec
from dlspec import ops

PKG = Path(dlspec.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any level (function-level imports included), resolved
    to dotted names relative to the dlspec package where they are relative."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("path", sorted((PKG / "ops").glob("*.py")), ids=lambda p: p.name)
def test_op_modules_are_semantics_only(path):
    bad = {m for m in _imports(path) if m.split(".")[0] == "tinygrad" or m.startswith(("dlspec.backends", "dlspec.shapes", "dlspec.ir"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_drawing_reads_the_ir():
    bad = {m for m in _imports(PKG / "draw.py") if m in ("dlspec.api", "dlspec.ast") or m.startswith(("dlspec.api.", "dlspec.ast."))}
    assert not bad, sorted(bad)


def test_every_op_has_a_tinygrad_lowering():
    from dlspec.backends.tinygrad.layers import TRANSFORMS

    lowered = set(TRANSFORMS) | {"input", "step_in"}  # structural: no layer
    assert set(ops.CATALOGUE) - lowered == set()


def test_a_missing_lowering_is_a_located_error(monkeypatch):
    from dlspec.backends.tinygrad.layers import TRANSFORMS
    from dlspec.errors import BackendError

    prog = dlspec.load("model M {\n  input x: [4]\n  dense 3\n  gelu\n}\n")
    monkeypatch.delitem(TRANSFORMS, "gelu")
    with pytest.raises(BackendError) as e:
        prog.build("M")
    assert str(e.value).startswith("<string>:4:3: error: build for tinygrad: op 'gelu' at <string>:4:3 has no tinygrad lowering yet")
