"""Shared helpers for the front-end tests.

Golden IR fixtures (one loader, sqlglot-style): ``tests/fixtures/ir/NAME.dl`` holds a spec,
``tests/fixtures/ir/NAME.json`` the expected resolved IR of every model in it
(``Graph.model_dump(mode="json")``, file paths relative to the fixture directory).
Regenerate with ``DLSPEC_UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import dlspec
from dlspec.errors import render_all

ROOT = Path(__file__).resolve().parents[1]
# compiled steps are not cached across test processes (a test that patches dlspec in-process must
# compile its own step); tests/test_stepcache.py turns the cache on for its own runs
os.environ.setdefault("DLSPEC_STEPCACHE", "0")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
IR_DIR = FIXTURES / "ir"
UPDATE_GOLDEN = os.environ.get("DLSPEC_UPDATE_GOLDEN") == "1"


def golden_cases() -> list[Path]:
    """Every top-level ``.dl`` fixture (files under subfolders are only imported)."""
    return sorted(IR_DIR.glob("*.dl"))


def resolved_ir(dl: Path) -> dict:
    """``{model: Graph.model_dump(mode="json")}`` for every model of ``dl``, paths normalised."""
    prog = dlspec.load(dl, name=dl.name)
    out = {m: prog.ir(m).model_dump(mode="json") for m in prog.models}
    return json.loads(json.dumps(out).replace(str(dl.parent) + os.sep, ""))


def check_golden(dl: Path) -> None:
    """Compare ``dl``'s IR with ``dl.with_suffix('.json')`` (or rewrite it when updating)."""
    got = resolved_ir(dl)
    expected_file = dl.with_suffix(".json")
    if UPDATE_GOLDEN or not expected_file.exists():
        expected_file.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if not UPDATE_GOLDEN:
            pytest.fail(f"{expected_file.name} was missing and has been written: review it")
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    assert got == expected


def diagnostics(text: str, name: str = "t.dl") -> str:
    """All diagnostics of ``text`` (load, expand, train sections) rendered without colour."""
    try:
        diags = dlspec.load(text, name=name).check()
    except dlspec.DlspecError as e:
        diags = e.diagnostics
    return render_all(diags)


def strip_spans(obj):
    """A dumped IR with every source span removed (for comparing IR across layouts)."""
    if isinstance(obj, dict):
        return {k: strip_spans(v) for k, v in obj.items() if k != "span"}
    if isinstance(obj, (list, tuple)):
        return [strip_spans(v) for v in obj]
    return obj


def run_dlspec(*args: str, cwd: Path | None = None, module: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the command line in a subprocess (``python -m dlspec``)."""
    e = dict(os.environ, NO_COLOR="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "dlspec", *args], cwd=cwd or ROOT, capture_output=True, text=True, env=e, timeout=120)


@pytest.fixture
def write(tmp_path):
    """``write("name.dl", text) -> Path`` in a fresh temporary directory."""

    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        return p

    return _write


def read_safetensors(path: Path) -> tuple[dict[str, tuple[str, list[int], bytes]], dict[str, str]]:
    """Every tensor of a safetensors file as (dtype, shape, raw bytes), and its metadata: parsed
    here from the file format, independently of dlspec's and the safetensors package's readers."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = raw[8 + n :]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0] : v["data_offsets"][1]]) for k, v in header.items()}, meta


def run_main(*args: str) -> tuple[int, str, str]:
    """``dlspec ARGS`` in this process: (exit code, stdout, stderr)."""
    from dlspec.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return code, out.getvalue(), err.getvalue()
