"""``dlspec bench`` and ``dlspec tune`` (:mod:`dlspec.benchmark`, :mod:`dlspec.tuning`): the JSON
figures and their consistency, bad input as one line with exit code 2, the tuned-kernels index
(recorded by ``tune``, used and announced by ``train``, read from tinygrad's cache without a new
search) and its failure modes. No wall-clock limits are asserted: every run gets its own empty
caches (``XDG_CACHE_HOME``, ``CACHEDB``)."""

from __future__ import annotations

import errno
import json
import math
import sqlite3
from pathlib import Path

import pytest
from conftest import run_dlspec

import dlspec
from dlspec import runfiles, tuning
from dlspec.benchmark import torch_plan
from dlspec.errors import UsageError
from dlspec.train import resolve

TINY = """model Tiny {
  input image: [1, 28, 28]
  flatten
  dense 10
}

train Tiny {
  data shapes
  loss cross_entropy
  optimizer sgd lr 0.1
  batch 16
  epochs 1
}
"""

RESULT_KEYS = {"first_step_cold_s", "first_step_warm_s", "step_ms", "samples_per_s", "rss_mb"}


@pytest.fixture
def caches(tmp_path) -> dict[str, str]:
    """An environment with caches of its own (dlspec's index, tinygrad's CACHEDB)."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "CACHEDB": str(tmp_path / "tinygrad.db")}


def spec(tmp_path: Path, text: str, name: str = "m.dl") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def one_line_error(r, code: int, *words: str) -> None:
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


# ---- dlspec bench ------------------------------------------------------------------------------------


def test_bench_json_against_torch(tmp_path, caches):
    pytest.importorskip("torch")
    f = spec(tmp_path, TINY)
    r = run_dlspec("bench", str(f), "--steps", "3", "--json", "--against", "torch", env=caches)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"model", "batch", "device", "results", "ratio_step"}
    assert (doc["model"], doc["batch"], doc["device"]) == ("Tiny", 16, "CPU")
    assert set(doc["results"]) == {"dlspec", "torch"}
    for impl in ("dlspec", "torch"):
        res = doc["results"][impl]
        assert set(res) == RESULT_KEYS
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in res.values()), res
        assert res["samples_per_s"] == pytest.approx(16 / (res["step_ms"] / 1000), rel=1e-9)
    ratio = doc["results"]["dlspec"]["step_ms"] / doc["results"]["torch"]["step_ms"]
    assert doc["ratio_step"] == pytest.approx(ratio, rel=1e-12)


def test_bench_table_without_against(tmp_path, caches):
    f = spec(tmp_path, TINY.replace("  batch 16\n", ""))  # no batch in the section: the default 64, or --batch
    r = run_dlspec("bench", str(f), "--steps", "2", "--batch", "8", env=caches)
    assert r.returncode == 0, r.stderr
    assert "Tiny, batch 8, on CPU" in r.stdout
    for row in ("first step, cold", "first step, warm", "steady step, median", "interquartile range", "samples/s", "peak RSS"):
        assert row in r.stdout
    assert "PyTorch" not in r.stdout and "dlspec / PyTorch" not in r.stdout
    assert "default optimisations" in r.stdout  # nothing tuned in these caches
    assert "loss cross_entropy, optimizer sgd lr 0.1" in r.stderr  # the train section's step


def test_bench_symbolic_size_needs_seq(tmp_path, caches):
    f = spec(tmp_path, "model Seq {\n  input s: [T, 8]\n  lstm 16 sequences false\n  dense 4\n}\n")
    r = run_dlspec("bench", str(f), "--batch", "4", env=caches)
    one_line_error(r, 2, "symbolic size T", "--seq T=LENGTH")
    r = run_dlspec("bench", str(f), "--batch", "4", "--seq", "L=3", env=caches)
    one_line_error(r, 2, "--seq L", "symbolic sizes: T")


def test_bench_without_train_section_needs_batch(tmp_path, caches):
    f = spec(tmp_path, "model M {\n  input x: [8]\n  dense 2\n}\n")
    for command in ("bench", "tune"):
        r = run_dlspec(command, str(f), env=caches)
        one_line_error(r, 2, "no train section", "--batch B")


def test_bench_against_torch_without_torch(tmp_path, caches):
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\")\n", encoding="utf-8")
    f = spec(tmp_path, TINY)
    r = run_dlspec("bench", str(f), "--against", "torch", env={**caches, "PYTHONPATH": str(fake.parent)})
    one_line_error(r, 2, "--against torch needs PyTorch", "No module named 'torch'")


def test_bench_against_torch_without_an_equivalent_optimizer(tmp_path, caches):
    f = spec(tmp_path, TINY.replace("optimizer sgd lr 0.1", "optimizer ftrl lr 0.1"))
    r = run_dlspec("bench", str(f), "--against", "torch", env=caches)
    one_line_error(r, 2, "PyTorch has no ftrl optimizer")


def test_bench_and_tune_refuse_other_objectives(tmp_path, caches):
    r = run_dlspec("tune", str(Path("specs/vae.dl").resolve()), env=caches)
    one_line_error(r, 2, "classifier", "train vae")


def test_tune_symbolic_size_suggests_seq_and_batch(tmp_path, caches):
    f = spec(
        tmp_path, "model Seq {\n  input s: [T, 8]\n  lstm 16 sequences false\n  dense 4\n}\n\ntrain Seq {\n  data sequences\n  batch 8\n}\n"
    )
    r = run_dlspec("tune", str(f), env=caches)
    one_line_error(r, 2, "--seq T=LENGTH", "--batch")


def test_tune_bad_arguments(tmp_path, caches):
    f = spec(tmp_path, TINY)
    r = run_dlspec("tune", str(f), "--beam", "0", env=caches)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_dlspec("tune", str(f), "--budget", "0", env=caches)
    one_line_error(r, 2, "--budget")
    for command in ("bench", "tune"):
        r = run_dlspec(command, str(f), "--device", "NULL", env=caches)
        one_line_error(r, 2, "NULL device computes nothing")


# ---- dlspec tune, and the runs that use its kernels ---------------------------------------------------


def beam_rows(db: str) -> int:
    """Rows of tinygrad's BEAM-choice table(s) in ``db``."""
    with sqlite3.connect(db) as con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'") if t.startswith("beam_search")]
        return sum(con.execute(f"SELECT COUNT(*) FROM '{t}'").fetchone()[0] for t in tables)


def test_tune_records_and_train_uses_the_cache(tmp_path, caches):
    f = spec(tmp_path, TINY)
    r = run_dlspec("tune", str(f), "--beam", "1", "--budget", "20", env=caches)
    assert r.returncode == 0, r.stderr
    assert "training step" in r.stdout and "recorded in" in r.stdout
    index = json.loads((Path(caches["XDG_CACHE_HOME"]) / "dlspec" / "tuned.json").read_text())
    assert index["format"] == tuning.INDEX_FORMAT
    (entry,) = index["entries"]
    assert (entry["model"], entry["batch"], entry["device"], entry["dtype"], entry["sample"], entry["beam"]) == (
        "Tiny",
        16,
        "CPU",
        "float32",
        [1, 28, 28],
        1,
    )
    assert entry["kernels"]["searched"] + entry["kernels"]["cached"] >= 1
    assert entry["train"]["before_ms"] > 0 and entry["train"]["after_ms"] > 0
    rows = beam_rows(caches["CACHEDB"])
    assert rows >= 1

    # train announces the tuned kernels in its first lines (used, or why not: a gain too small to measure)
    r = run_dlspec("train", str(f), "--limit", "64", "--quiet", "--out", str(tmp_path / "runs"), env=caches)
    assert r.returncode == 0, r.stderr
    head = r.stderr.splitlines()[:3]
    assert any(ln.startswith("tuned kernels") and "BEAM=1" in ln for ln in head), r.stderr

    # with the tuned kernels forced on, the warm step reads BEAM choices from the cache: hits, no search
    r = run_dlspec("bench", str(f), "--steps", "2", env={**caches, "DLSPEC_TUNED": "1"})
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("dlspec kernels: tuned, BEAM=1"))
    if "from the step cache" not in line:  # the train run above cached its compiled step (dlspec.stepcache), tuned kernels in it
        hits = int(line.split("(")[1].split(" from")[0])
        assert hits >= 1
    assert beam_rows(caches["CACHEDB"]) == rows  # nothing searched (or stored) after dlspec tune

    # another batch size: no tuned kernels, nothing said
    r = run_dlspec("train", str(f), "--limit", "32", "--batch", "8", "--quiet", "--out", str(tmp_path / "runs"), env=caches)
    assert r.returncode == 0, r.stderr
    assert "tuned kernels" not in r.stderr


# ---- the index (in-process) ---------------------------------------------------------------------------


def entry_for(key: dict, **more) -> dict:
    return {**key, "beam": 2, "use": True, "date": "2026-01-01 00:00", "train": {"before_ms": 2.0, "after_ms": 1.0}, **more}


def test_index_lookup_matches_the_whole_key(tmp_path):
    path = tmp_path / "tuned.json"
    key = {"digest": "d", "model": "M", "batch": 8, "device": "CPU", "dtype": "float32", "sample": [4]}
    assert tuning.record(entry_for(key), path)
    assert tuning.lookup(key, path)["beam"] == 2
    for field, other in (("batch", 16), ("device", "CUDA"), ("digest", "e"), ("sample", [5]), ("dtype", "float16")):
        assert tuning.lookup({**key, field: other}, path) is None
    assert tuning.record(entry_for(key, beam=3), path)  # the same key again: replaced
    assert [e["beam"] for e in tuning.read_index(path)] == [3]


def test_index_full_disk_is_a_warning(tmp_path, monkeypatch):
    path = tmp_path / "tuned.json"
    key = {"digest": "d", "model": "M", "batch": 8, "device": "CPU", "dtype": "float32", "sample": [4]}
    assert tuning.record(entry_for(key), path)
    before = path.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfiles, "_write", full)
    warnings: list[str] = []
    assert tuning.record(entry_for({**key, "batch": 16}), path, warn=warnings.append) is False
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert path.read_bytes() == before  # the old index intact, no temporary file left
    assert [p.name for p in tmp_path.iterdir()] == ["tuned.json"]


def test_index_damaged_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text("{not json", encoding="utf-8")
    warnings: list[str] = []
    assert tuning.read_index(path, warn=warnings.append) == []
    assert len(warnings) == 1 and "damaged" in warnings[0]
    key = {"digest": "d", "model": "M", "batch": 8, "device": "CPU", "dtype": "float32", "sample": [4]}
    assert tuning.record(entry_for(key), path, warn=warnings.append)
    assert tuning.lookup(key, path) is not None


def test_use_follows_the_gain_and_the_switch(monkeypatch):
    entry = entry_for({"batch": 8}, use=False)
    monkeypatch.delenv(tuning.ENV_SWITCH, raising=False)
    assert not tuning.wanted(entry) and "not used" in tuning.describe_entry(entry)
    monkeypatch.setenv(tuning.ENV_SWITCH, "1")
    assert tuning.wanted(entry) and tuning.describe_entry(entry).startswith("tuned kernels: BEAM=2")
    monkeypatch.setenv(tuning.ENV_SWITCH, "0")
    assert not tuning.wanted(entry_for({"batch": 8}))


def test_spec_digest_ignores_layout_not_kernel_settings(tmp_path):
    a = dlspec.load(TINY, name="a.dl")
    b = dlspec.load(TINY.replace("  flatten\n  dense 10\n", "  flatten -> dense 10\n"), name="b/c.dl")
    c = dlspec.load(TINY.replace("optimizer sgd lr 0.1", "optimizer sgd lr 0.1 momentum 0.9"))
    d = dlspec.load(TINY.replace("optimizer sgd lr 0.1", "optimizer sgd lr 0.5"))
    digest = lambda p: tuning.spec_digest(p.ir("Tiny"), resolve(p, "x.dl", None, {}))  # noqa: E731
    assert digest(a) == digest(b) == digest(d)  # the learning rate is a tensor, not a kernel constant
    assert digest(a) != digest(c)


def test_torch_plan_has_the_same_hyperparameters():
    prog = dlspec.load(TINY.replace("optimizer sgd lr 0.1", "optimizer sgd lr 0.1 momentum 0.9 nesterov true\n  weight_decay 5e-4"))
    plan = torch_plan(resolve(prog, "x.dl", None, {}))
    assert plan["optimizer"] == "SGD"
    assert plan["options"] == {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    prog = dlspec.load(TINY.replace("optimizer sgd lr 0.1", "optimizer adam lr 0.002 beta1 0.8 eps 1e-7"))
    plan = torch_plan(resolve(prog, "x.dl", None, {}))
    assert plan["optimizer"] == "Adam"
    assert plan["options"] == {"lr": 0.002, "betas": [0.8, 0.999], "eps": 1e-7, "weight_decay": 0.0}
    with pytest.raises(UsageError, match="no ftrl"):
        torch_plan(resolve(dlspec.load(TINY.replace("sgd", "ftrl")), "x.dl", None, {}))
