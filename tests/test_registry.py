"""Names live once (issue 15): the registries of ``dlspec/registry.py`` against everything that
lists names — docs/training.md's tables (parsed here), docs/language.md's settings table, the
command line's choices, ``dlspec check``'s did-you-mean, the implementations, and the report's
optimizer-state sizes against the state the optimizers really keep."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dlspec import registry as R

DOCS = Path(__file__).resolve().parent.parent / "docs"
CELL = re.compile(r"`([^`]+)`")


def table(doc: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first markdown table after ``heading`` in ``doc``."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    start = text.index(heading + "\n")
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[0 if heading.startswith("|") else 1 :]:  # a table's header row: from it
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # less the header row


def names(cell: str) -> list[str]:
    """The backticked words of a cell (``—``: none)."""
    return CELL.findall(cell)


def test_objectives_table():
    rows = table("training.md", "### Objectives")
    assert [names(r[0]) for r in rows] == [[n] for n in R.OBJECTIVES]
    for r, e in zip(rows, R.OBJECTIVES.values()):
        assert names(r[1]) == list(e.roles), e.name
        assert names(r[2]) == list(e.losses), e.name
        assert (r[3] == "every setting") if e.settings is None else names(r[3]) == list(e.settings), e.name
        assert r[4] == e.doc


def test_sweep_tables():
    """docs/sweep.md's metric table lists exactly each objective's registered metrics (name, mode,
    meaning), and its settings table the settings a sweep of each objective varies."""
    from dlspec.sweep import train_settings

    rows = table("sweep.md", "### Metrics")
    assert [(names(r[0]), names(r[1]), r[2], r[3]) for r in rows] == [
        ([k], [m.name], m.mode, m.doc) for k, e in R.OBJECTIVES.items() for m in e.metrics
    ]
    assert all(e.metrics and len({m.name for m in e.metrics}) == len(e.metrics) for e in R.OBJECTIVES.values())
    assert all(m.mode in ("max", "min") for e in R.OBJECTIVES.values() for m in e.metrics)
    rows = table("sweep.md", "### Train settings by objective")
    assert [(names(r[0]), names(r[1])) for r in rows] == [([k], list(train_settings(k))) for k in R.OBJECTIVES]


def test_data_sets_table():
    rows = table("training.md", "### Data sets")
    assert [names(r[0]) for r in rows] == [[e.name, *e.aliases] for e in R.DATASETS.values()]
    for r, e in zip(rows, R.DATASETS.values()):
        assert r[1] == e.source + (f": {e.why_not}" if e.why_not else "")
        assert names(r[2]) == list(e.options) and r[3] == e.doc
    text = (DOCS / "training.md").read_text(encoding="utf-8")
    assert "Every data set also takes the options " + ", ".join(f"`{o}`" for o in R.DATA_OPTIONS) + "." in text


@pytest.mark.parametrize(
    "heading, registry",
    [("### Losses", R.LOSSES), ("### Schedules", R.SCHEDULES), ("### Metrics", R.METRICS)],
    ids=["loss", "sched", "metric"],
)
def test_name_tables(heading, registry):
    rows = table("training.md", heading)
    assert [names(r[0]) for r in rows] == [[n] for n in registry]
    for r, e in zip(rows, registry.values()):
        assert r[-1] == e.doc
        if len(r) == 3:
            assert names(r[1]) == list(e.options), e.name


def test_optimizers_table():
    rows = table("training.md", "### Optimizers")
    assert [names(r[0]) for r in rows] == [[n] for n in R.OPTIMIZERS]
    for r, e in zip(rows, R.OPTIMIZERS.values()):
        assert names(r[1]) == list(e.options) and r[3] == e.doc
        assert r[2] == str(e.state) + (f", {e.state + e.momentum_state} with `momentum`" if e.momentum_state else "")


def test_language_reference_lists_the_same_names():
    """docs/language.md's settings table names exactly the registry's values."""
    rows = {names(r[0])[0]: r for r in table("language.md", "| Setting | Value | Options |")}
    assert set(names(rows["loss"][1])) == set(R.LOSSES)
    assert set(names(rows["optimizer"][1])) == set(R.OPTIMIZERS)
    assert set(names(rows["schedule"][1])) == set(R.SCHEDULES)
    assert set(names(rows["metrics"][1])) == set(R.METRICS)
    assert set(names(rows["data"][1])) == set(R.DATASETS)
    objectives = table("language.md", "| Objective | Head | Meaning |")
    assert [names(r[0])[0] for r in objectives] == list(R.OBJECTIVES)


def test_the_implementations_are_the_registry():
    from dlspec import data, losses, optim, schedules, trainspec

    assert tuple(losses.IMPLEMENTATIONS) == R.LOSSES.names() and losses.METRICS == R.METRICS.names()
    assert tuple(schedules.IMPLEMENTATIONS) == R.SCHEDULES.names()
    assert tuple(optim.OPTIMIZERS) == R.OPTIMIZERS.names() and all(c.name == n for n, c in optim.OPTIMIZERS.items())
    assert data.available() == [n for n, e in R.DATASETS.items() if e.source != "unavailable"]
    assert trainspec.KINDS == {n: e.roles for n, e in R.OBJECTIVES.items()}
    for name in R.DATASETS:
        if R.DATASETS[name].source == "unavailable":
            with pytest.raises(data.DataError, match="not available"):
                data.canonical_name(name)
        else:
            assert data.canonical_name(name.upper()) == name


def test_every_objective_runner_exists():
    import importlib

    for e in R.OBJECTIVES.values():
        module, _, cls = e.runner.partition(":")
        assert hasattr(importlib.import_module(module), cls), e.runner


def test_the_report_state_sizes_are_the_optimizers_state():
    """OptimizerEntry.state (+ momentum_state) is the number of state tensors per parameter the
    optimizer really creates (counted on two parameters)."""
    from tinygrad import Tensor

    from dlspec.optim import make_optimizer, optimizer_state
    from dlspec.report import OPTIMIZER_STATE

    for name, e in R.OPTIMIZERS.items():
        for momentum in (False, True) if e.momentum_state else (False,):
            params = [Tensor.zeros(3).contiguous().realize(), Tensor.zeros(2, 2).contiguous().realize()]
            opt = make_optimizer(name, params, 0.1, **({"momentum": 0.9} if momentum else {}))
            per_param = (len(optimizer_state(opt)) - 2) / len(params)  # less optim.step and optim.lr
            key = f"{name}+momentum" if momentum else name
            assert per_param == OPTIMIZER_STATE[key] == e.state + momentum * e.momentum_state, key


def test_command_line_choices():
    from dlspec.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    by_dest = {a.dest: a for a in train._actions}
    assert tuple(by_dest["optimizer"].choices) == R.OPTIMIZERS.names()
    assert tuple(by_dest["schedule"].choices) == R.SCHEDULES.names()
    assert tuple(by_dest["loss"].choices) == R.LOSSES.names()
    assert by_dest["data"].help == "data set: shapes, sequences, mnist, fashion_mnist, cifar10, cifar100"
    from dlspec.report import OPTIMIZER_STATE

    compile_ = build_parser()._subparsers._group_actions[0].choices["compile"]
    assert next(a for a in compile_._actions if a.dest == "optimizer").choices == list(OPTIMIZER_STATE)


@pytest.mark.parametrize(
    "line, message",
    [
        ("data mnst", "unknown data set 'mnst' — did you mean 'mnist'?"),
        ('data "Fashion-MNST"', "unknown data set 'Fashion-MNST' — did you mean 'fashion-mnist'?"),
        ("data mnist classes 5", "unknown option 'classes' for data set mnist"),
        ("data shapes features 3", "unknown option 'features' for data set shapes"),
        ("schedule cosine gamma 0.5", "unknown option 'gamma' for schedule cosine"),
        ("loss hubber", "unknown loss 'hubber' — did you mean 'huber'?"),
        ("metrics accuracy, top6", "unknown metric 'top6' — did you mean 'top5'?"),
        ("g_optimizer adamm", "unknown optimizer 'adamm' — did you mean 'adam'?"),
    ],
)
def test_check_reads_the_registry(line, message):
    import dlspec

    text = f"model M {{\n  input x: [1, 28, 28]\n  flatten -> dense 10\n}}\ntrain M {{\n  {line}\n}}\n"
    diags = dlspec.load(text, name="t.dl").check()
    assert [d.message for d in diags] == [message] and diags[0].span.line == 6


@pytest.mark.parametrize("line", ["data FMNIST", 'data "cifar-10" augment true', "data sequences features 8 seed 2", "data imagenet"])
def test_check_accepts_aliases_and_set_options(line):
    import dlspec

    text = f"model M {{\n  input x: [1, 28, 28]\n  flatten -> dense 10\n}}\ntrain M {{\n  {line}\n}}\n"
    assert dlspec.load(text, name="t.dl").check() == []
