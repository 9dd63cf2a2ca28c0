"""Golden report fixtures for ``dlspec compile --json`` (the IR fixtures live in conftest.py).

``tests/fixtures/report/NAME.dl`` holds a spec, ``NAME.json`` the expected report: exactly
what ``dlspec compile NAME.dl --json`` prints (``{"file", "models": [...]}``), with ``file``
the fixture's bare name. A fixture's first line may add command-line options:
``# compile: --depth 1 --seq T=20``. Regenerate with ``DLSPEC_UPDATE_GOLDEN=1`` (the same
switch as the IR fixtures) and review the diff.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
from pathlib import Path

import pytest

from dlspec.cli import main

REPORT_DIR = Path(__file__).resolve().parent / "fixtures" / "report"
UPDATE_GOLDEN = os.environ.get("DLSPEC_UPDATE_GOLDEN") == "1"


def report_cases() -> list[Path]:
    return sorted(REPORT_DIR.glob("*.dl"))


def compile_options(dl: Path) -> list[str]:
    """The options on the fixture's ``# compile:`` first line, if any."""
    first = dl.read_text(encoding="utf-8").splitlines()[0]
    return shlex.split(first.removeprefix("# compile:")) if first.startswith("# compile:") else []


def compile_json(dl: Path, *extra: str) -> dict:
    """Run ``dlspec compile DL --json [options]`` in-process and parse what it prints."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["compile", str(dl), "--json", *compile_options(dl), *extra])
    assert code == 0, buf.getvalue()
    doc = json.loads(buf.getvalue())
    assert doc["file"] == str(dl)
    doc["file"] = dl.name
    return doc


def check_report_golden(dl: Path) -> None:
    """Compare the report of ``dl`` with ``dl.with_suffix('.json')`` (or rewrite it when updating)."""
    got = compile_json(dl)
    expected_file = dl.with_suffix(".json")
    if UPDATE_GOLDEN or not expected_file.exists():
        expected_file.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if not UPDATE_GOLDEN:
            pytest.fail(f"{expected_file.name} was missing and has been written: review it")
    assert got == json.loads(expected_file.read_text(encoding="utf-8"))
