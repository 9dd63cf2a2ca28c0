"""Compiled steps cached across processes (:mod:`dlspec.stepcache`): a run that loads its steps
from the cache ends bit-identical to one that compiles them (also when resumed), a damaged or
stale entry is one warning and is rebuilt, a full disk while writing the cache is a warning and
training goes on, ``dlspec cache info|clear``. Every test has caches of its own."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from conftest import run_dlspec

import dlspec
from dlspec import runfiles, stepcache
from dlspec.resume import file_digest

# batch norm, dropout (the random stream) and Adam: every kind of bound state
SPEC = """model Small {
  input image: [1, 28, 28]
  flatten
  dense 16 -> batchnorm -> relu -> dropout 0.25
  dense 10
}

train Small {
  data shapes limit 192 val_split 0.2
  loss cross_entropy
  optimizer adam lr 0.01
  batch 32
  epochs 2
  seed 3
}
"""


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), stepcache.ENV_SWITCH: "1"}  # on (tests/conftest.py turns it off)


def _train(tmp_path: Path, env: dict, *extra: str, out: str = "runs") -> tuple[dict, str]:
    spec = tmp_path / "small.dl"
    spec.write_text(SPEC, encoding="utf-8")
    r = run_dlspec("train", str(spec), "--out", str(tmp_path / out), "--quiet", "--json", *extra, env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout[r.stdout.index("{") :]), r.stderr


def _resume(run_dir: str, env: dict, *extra: str) -> tuple[dict, str]:
    r = run_dlspec("train", "--resume", run_dir, "--quiet", "--json", *extra, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout[r.stdout.index("{") :]), r.stderr


def test_cached_steps_are_bit_identical_and_resume(tmp_path, env):
    plain, err = _train(tmp_path, {**env, stepcache.ENV_SWITCH: "0"}, out="plain")
    assert not list((tmp_path / "cache").rglob("*.step"))
    first, err = _train(tmp_path, env, out="first")  # compiles and saves
    assert "from the step cache" not in err
    saved = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "dlspec" / "steps").glob("*.step"))
    assert saved.count("train") >= 1 and saved.count("eval") >= 1  # one per batch size (and the last partial batch)
    second, err = _train(tmp_path, env, out="second")  # loads both
    assert "compiled train step from the step cache" in err and "compiled eval step from the step cache" in err
    assert "warning" not in err
    digests = {file_digest(Path(s["run_dir"]) / "last.safetensors") for s in (plain, first, second)}
    assert len(digests) == 1  # weights, batch-norm statistics, optimizer state: the same bits
    assert plain["test"] == first["test"] == second["test"]
    # resume with the cached steps: one epoch, then the second, equals the uninterrupted run
    half, _ = _train(tmp_path, env, "--epochs", "1", out="half")
    resumed, err = _resume(half["run_dir"], env, "--epochs", "2")
    assert "from the step cache" in err
    assert file_digest(Path(resumed["run_dir"]) / "last.safetensors") in digests
    assert resumed["test"] == plain["test"]


def _trainer(tmp_path: Path, batch: int = 8):
    from dlspec.benchmark import resolve_run, synthetic_batch, synthetic_trainer

    spec = tmp_path / "small.dl"
    spec.write_text(SPEC, encoding="utf-8")
    prog = dlspec.load(spec)
    cfg, sample = resolve_run(prog, str(spec), None, batch, None, {}, "test")
    logs: list[str] = []
    tr = synthetic_trainer(prog, cfg, sample, log=logs.append, tuned=False)
    return tr, synthetic_batch(tr, sample, batch, 0), logs


def _run(step, xy, n: int = 3) -> list[float]:
    return [step(*xy)[0].item() for _ in range(n)]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(stepcache.ENV_SWITCH, raising=False)
    return tmp_path / "cache" / "dlspec" / "steps"


def _warnings(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]


def test_damaged_and_stale_entries_warn_once_and_are_rebuilt(tmp_path, own_cache, capsys):
    tr, xy, _ = _trainer(tmp_path)
    want = _run(tr._train_step(8), xy)
    (path,) = own_cache.glob("train-*.step")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    tr2, xy2, logs = _trainer(tmp_path)
    assert _run(tr2._train_step(8), xy2) == want  # compiled again: the same numbers
    (w,) = _warnings(capsys)
    assert "damaged compiled step" in w and str(path) in w
    assert path.is_file() and path.read_bytes() != data[: len(data) // 2]  # rebuilt
    # a pickle naming a class outside tinygrad is refused, not run
    head, start = stepcache.read_head(path)
    import hashlib
    import pickle

    evil = pickle.dumps(os.system)
    head.update(bytes=len(evil), sha256=hashlib.sha256(evil).hexdigest())
    path.write_bytes(stepcache.MAGIC + json.dumps(head).encode() + b"\n" + evil)
    tr3, xy3, _ = _trainer(tmp_path)
    assert _run(tr3._train_step(8), xy3) == want
    (w,) = _warnings(capsys)
    assert "may not name posix.system" in w or "may not name os.system" in w
    # stale: bound to a tensor this model lacks
    tr4, xy4, _ = _trainer(tmp_path)
    real = stepcache.named_state
    stepcache.named_state = lambda t: {k: v for k, v in real(t).items() if not k.startswith("optim.m")}
    try:
        assert _run(tr4._train_step(8), xy4) == want
    finally:
        stepcache.named_state = real
    stale, uncached = _warnings(capsys)
    assert "stale compiled step" in stale and "optim.m" in stale
    # and the step it compiled updates state it cannot name then: not cached (a fresh buffer would be wrong)
    assert "not cached: it updates a tensor dlspec does not know by name" in uncached
    assert not list(own_cache.glob("train-*.step"))
    tr5, xy5, logs = _trainer(tmp_path)
    assert _run(tr5._train_step(8), xy5) == want and not any("from the step cache" in m for m in logs)
    tr6, xy6, logs = _trainer(tmp_path)
    assert _run(tr6._train_step(8), xy6) == want
    assert any("from the step cache" in m for m in logs) and not _warnings(capsys)


def test_a_full_disk_while_caching_is_a_warning_and_training_goes_on(tmp_path, own_cache, capsys, monkeypatch):
    real = runfiles._write

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and ".step." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(runfiles, "_write", full)
    tr, xy, _ = _trainer(tmp_path)
    losses = _run(tr._train_step(8), xy, 4)
    assert len(losses) == 4 and losses[-1] < losses[0]
    (w,) = _warnings(capsys)
    assert "No space left on device" in w and "training goes on" in w
    assert not list(own_cache.glob("*.step")) and not list(own_cache.glob(".*.tmp"))


def test_cache_info_and_clear(tmp_path, env):
    _train(tmp_path, env, "--epochs", "1")
    r = run_dlspec("cache", "info", env=env)
    assert r.returncode == 0, r.stderr
    n = len(list((tmp_path / "cache" / "dlspec" / "steps").glob("*.step")))
    assert f"{n} entries" in r.stdout and "train Small [32x1x28x28 32] on CPU" in r.stdout and "bound buffers" in r.stdout
    device_known = "DEV" not in os.environ  # a set DEV is used as it is: nothing to remember
    assert ("default device: CPU (remembered for this machine)" in r.stdout) == device_known, r.stdout
    r = run_dlspec("cache", "clear", env=env)
    assert r.returncode == 0 and f"removed {n} compiled steps" in r.stdout
    assert ("device.json" in r.stdout) == device_known
    info = run_dlspec("cache", "info", env=env).stdout
    assert "0 entries" in info and "default device: not remembered" in info
    r = run_dlspec("cache", "wipe", env=env)
    assert r.returncode == 2 and "invalid choice" in r.stderr
