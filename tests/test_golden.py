"""Golden IR fixtures: each ``fixtures/ir/NAME.dl`` against its reviewed ``NAME.json``."""

from __future__ import annotations

import pytest
from conftest import check_golden, golden_cases, resolved_ir

import dlspec
from dlspec.ir import Graph


@pytest.mark.parametrize("dl", golden_cases(), ids=lambda p: p.stem)
def test_golden_ir(dl):
    check_golden(dl)


def test_every_golden_fixture_has_a_reviewed_json():
    names = {p.stem for p in golden_cases()}
    assert names >= {"lenet", "blocks", "repeat", "residual", "merges", "conditionals", "dag", "shared", "cell", "imports", "tokens"}
    assert all(p.with_suffix(".json").exists() for p in golden_cases())


@pytest.mark.parametrize("dl", golden_cases(), ids=lambda p: p.stem)
def test_ir_json_round_trip_is_lossless(dl):
    prog = dlspec.load(dl)
    for m in prog.models:
        g = prog.ir(m)
        back = Graph.model_validate_json(g.model_dump_json())
        assert back == g
        assert back.model_dump() == g.model_dump()


def test_golden_paths_are_normalised():
    ir = resolved_ir(golden_cases()[0])
    assert "/" not in next(iter(ir.values()))["file"]
