"""``dlspec train`` / ``dlspec eval`` end to end, on a tiny CNN and the built-in ``shapes`` data.

Kernel compilation dominates: every run here uses the same model and batch size 20 with data
sizes that are multiples of 20 (1000 samples → 900 train, 100 val, 200 test), so the compiled
kernels are shared; runs go through ``cli.main`` in-process except where a real process is the
point (SIGKILL + resume, no tracebacks).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import read_safetensors

import dlspec
from dlspec.cli import main

SPEC = """\
model TinyCNN {
  input x: [1, 28, 28]
  conv 8 kernel 4 stride 2 padding 1 -> batchnorm -> relu
  pool max kernel 2
  flatten
  dropout 0.2
  dense 10
}

train TinyCNN {
  data shapes
  optimizer adam lr 0.01
  batch 20
  epochs 3
  seed 1
}
"""
LIMIT = "1000"  # 900 train + 100 val (val_split 0.1), 200 test: all batches of 20
STEPS_PER_EPOCH = 45


def run_main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "dlspec", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def tensors(path: Path) -> tuple[dict[str, tuple[str, list[int], bytes]], dict[str, str]]:
    """Every tensor of a safetensors file as (dtype, shape, raw bytes), and its metadata."""
    return read_safetensors(path)


def f32(entry) -> np.ndarray:
    dtype, shape, data = entry
    return np.frombuffer(data, dtype={"F32": np.float32, "I32": np.int32, "I64": np.int64}[dtype]).reshape(shape)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train")
    (d / "tiny.dl").write_text(SPEC, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def base(work):
    """One uninterrupted 3-epoch run: (run dir, summary, stdout, stderr)."""
    code, out, err = run_main("train", str(work / "tiny.dl"), "--limit", LIMIT, "--out", str(work / "runs"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    return Path(summary["run_dir"]), summary, out, err


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# 1 ---------------------------------------------------------------------------------------------


def test_short_seeded_run_learns(base):
    run_dir, summary, _, _ = base
    # 10 balanced classes: chance is 0.1; this run reaches ~0.65 — require 4× chance
    assert summary["test"]["accuracy"] > 0.4
    assert summary["val"]["accuracy"] > 0.3
    hist = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert hist[-1]["train"]["loss"] < hist[0]["train"]["loss"] - 0.3


# 2 ---------------------------------------------------------------------------------------------


def test_run_directory(base, work):
    run_dir, summary, out, _ = base
    assert run_dir.parent == work / "runs" and run_dir.name.startswith("TinyCNN-")
    assert {p.name for p in run_dir.iterdir()} == {
        "spec.dl",
        "config.json",
        "metrics.jsonl",
        "last.safetensors",
        "last.prev.safetensors",  # the checkpoint last.safetensors replaced: epoch 2's
        "best.safetensors",
        "loss.svg",
        "summary.json",
    }
    assert tensors(run_dir / "last.prev.safetensors")[1]["epoch"] == "2" and tensors(run_dir / "last.safetensors")[1]["epoch"] == "3"
    assert (run_dir / "spec.dl").read_text() == SPEC
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"] == "TinyCNN" and cfg["optimizer"] == "adam" and cfg["lr"] == 0.01
    assert (cfg["batch"], cfg["epochs"], cfg["seed"], cfg["limit"], cfg["data"]) == (20, 3, 1, 1000, "shapes")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert [r["step"] for r in recs] == [45, 90, 135]
    assert all(set(r) >= {"train", "val", "lr", "seconds", "samples_per_s"} for r in recs)
    last, meta = tensors(run_dir / "last.safetensors")
    assert (meta["epoch"], meta["step"]) == ("3", "135")
    assert json.loads(meta["history"]) == recs  # the checkpoint carries the history, for resume
    assert {"model.conv1.weight", "model.dense1.weight", "optim.step", "optim.lr", "optim.m.0", "optim.v.0"} <= set(last)
    assert int(f32(last["optim.step"]).reshape(-1)[0]) == 135
    _, best_meta = tensors(run_dir / "best.safetensors")
    assert float(best_meta["best"]) == max(r["val"]["accuracy"] for r in recs)
    svg = ET.fromstring((run_dir / "loss.svg").read_text())
    assert svg.tag.endswith("svg") and len([e for e in svg.iter() if e.tag.endswith("polyline")]) == 2
    assert json.loads((run_dir / "summary.json").read_text()) == summary == json.loads(out)
    assert summary["epochs"] == 3 and summary["steps"] == 135 and summary["device"] == "CPU"


def test_new_runs_never_overwrite(tmp_path, monkeypatch):
    from dlspec import train

    monkeypatch.setattr(train.time, "strftime", lambda fmt: "20260101-000000")
    a = train.new_run_dir(tmp_path, "M")
    (a / "keep").write_text("x")
    b = train.new_run_dir(tmp_path, "M")
    c = train.new_run_dir(tmp_path, "M")
    assert [a.name, b.name, c.name] == ["M-20260101-000000", "M-20260101-000000-1", "M-20260101-000000-2"]
    assert (a / "keep").read_text() == "x" and not any(b.iterdir())


# 3 ---------------------------------------------------------------------------------------------


def test_sigkill_mid_epoch_then_resume_is_bit_identical(base, work):
    """A real process killed with SIGKILL in the middle of epoch 2, resumed: the same bytes as
    the uninterrupted run (weights, BN statistics, optimizer state), dropout included."""
    out = work / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlspec", "train", str(work / "tiny.dl"), "--limit", LIMIT, "--out", str(out), "--quiet"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, NO_COLOR="1"),
    )
    try:
        deadline = time.monotonic() + 240
        metrics = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(out.glob("*/metrics.jsonl"))
            if found and found[0].read_text().count("\n") >= 1 and (found[0].parent / "last.safetensors").exists():
                metrics = found[0]
                break
            time.sleep(0.005)
        assert metrics is not None, proc.communicate()[1].decode() if proc.poll() is not None else "no checkpoint in time"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    run_dir = metrics.parent
    _, meta = tensors(run_dir / "last.safetensors")
    assert meta["epoch"] == "1", "killed after epoch 2's checkpoint: not in the middle of an epoch"
    assert metrics.read_text().count("\n") == 1

    r = run_cli("train", "--resume", str(run_dir), "--quiet", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "resumed after epoch 1 (step 45)" in r.stderr
    want, _ = tensors(base[0] / "last.safetensors")
    got, meta = tensors(run_dir / "last.safetensors")
    assert meta["epoch"] == "3" and set(got) == set(want)
    different = [k for k in want if got[k] != want[k]]
    assert not different, f"resumed run differs from the uninterrupted one in {different}"
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    base_recs = [json.loads(line) for line in (base[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert [(r["train"], r["val"]) for r in recs] == [(r["train"], r["val"]) for r in base_recs]
    assert json.loads((run_dir / "summary.json").read_text())["test"] == base[1]["test"]


def test_resume_finished_run_and_extend(base, tmp_path):
    run_dir = copy_run(base[0], tmp_path / "run")
    before = (run_dir / "last.safetensors").read_bytes()
    code, out, err = run_main("train", "--resume", str(run_dir), "--json")
    assert code == 0, err
    assert "already complete" in err
    assert (run_dir / "last.safetensors").read_bytes() == before
    assert json.loads(out)["test"] == base[1]["test"]

    code, out, err = run_main("train", "--resume", str(run_dir), "--epochs", "4", "--json")
    assert code == 0, err
    assert "resumed after epoch 3" in err and "epoch 4/4" in err
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 4
    assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    _, meta = tensors(run_dir / "last.safetensors")
    assert (meta["epoch"], meta["step"]) == ("4", "180")


def test_resume_with_another_spec_file(base, work, tmp_path):
    other = tmp_path / "other.dl"
    other.write_text(SPEC.replace("lr 0.01", "lr 0.02"))
    r = run_cli("train", str(other), "--resume", str(base[0]), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "another spec" in r.stderr and str(other) in r.stderr
    code, _, err = run_main("train", str(work / "tiny.dl"), "--resume", str(base[0]))  # the same spec is fine
    assert code == 0, err


@pytest.mark.parametrize("damage", ["truncate", "garbage", "cut-header"])
def test_resume_corrupt_checkpoint(base, tmp_path, damage):
    run_dir = copy_run(base[0], tmp_path / "run")
    ckpt = run_dir / "last.safetensors"
    raw = ckpt.read_bytes()
    ckpt.write_bytes({"truncate": raw[: len(raw) - 100], "garbage": b"\x00garbage" * 10, "cut-header": raw[:50]}[damage])
    r = run_cli("train", "--resume", str(run_dir), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert str(ckpt) in r.stderr and ("truncated" in r.stderr or "corrupt" in r.stderr)


def test_resume_rejects_other_overrides(base):
    code, _, err = run_main("train", "--resume", str(base[0]), "--lr", "0.1", "--batch", "10")
    assert code == 2 and "only --epochs, --device and --devices" in err and "--batch, --lr" in err
    code, _, err = run_main("train", "--resume", str(base[0]), "--epochs", "0")
    assert code == 2 and "epochs" in err
    code, _, err = run_main("train", "--resume", str(base[0].parent / "nope"))
    assert code == 2 and "not a dlspec run directory" in err


# 4 ---------------------------------------------------------------------------------------------


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(work, tmp_path):
    """Epoch 1 trains normally; then the schedule's lr (0.05·1e40) overflows float32: step 46
    makes the weights infinite and the loss of step 47 is NaN."""
    spec = tmp_path / "blowup.dl"
    spec.write_text(SPEC.replace("optimizer adam lr 0.01", "optimizer sgd lr 0.05\n  schedule exponential gamma 1e40"))
    code, _, err = run_main("train", str(spec), "--limit", LIMIT, "--out", str(tmp_path / "runs"), "--quiet")
    assert code == 1, err
    assert "Traceback" not in err
    assert "error: the loss became nan at step 47 (epoch 2, batch 2); training stopped" in err
    run_dir = next((tmp_path / "runs").iterdir())
    assert "last.safetensors keeps the weights after epoch 1" in err
    got, meta = tensors(run_dir / "last.safetensors")
    assert meta["epoch"] == "1" and meta["step"] == str(STEPS_PER_EPOCH)
    assert all(np.isfinite(f32(v)).all() for k, v in got.items() if v[0] == "F32")
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    prog = dlspec.load(spec)
    from dlspec.train import RunConfig, Trainer

    cfg = RunConfig(**json.loads((run_dir / "config.json").read_text()))
    trainer = Trainer(prog, cfg, run_dir, lambda m: None)
    trainer.load_data()
    trainer.build()
    trainer.load_weights(run_dir / "last.safetensors")  # loads


# 5 ---------------------------------------------------------------------------------------------

ALL_OVERRIDES = [
    *("--lr 0.02 --batch 20 --epochs 1 --optimizer adamw --seed 3 --schedule cosine --weight-decay 0.001".split()),
    *("--loss cross_entropy --clip 1.0 --val-split 0.2 --limit 100 --max-steps 2 --data shapes --device CPU".split()),
]


def test_every_train_option_can_be_overridden(work, tmp_path):
    code, out, err = run_main(
        "train", str(work / "tiny.dl"), *ALL_OVERRIDES, "--data-dir", str(tmp_path), "--out", str(tmp_path / "runs"), "--json"
    )
    assert code == 0, err
    assert "device CPU" in err  # the run logs its device
    run_dir = Path(json.loads(out)["run_dir"])
    cfg = json.loads((run_dir / "config.json").read_text())
    want = {
        "lr": 0.02,
        "batch": 20,
        "epochs": 1,
        "optimizer": "adamw",
        "seed": 3,
        "schedule": "cosine",
        "weight_decay": 0.001,
        "loss": "cross_entropy",
        "clip": 1.0,
        "val_split": 0.2,
        "limit": 100,
        "max_steps": 2,
        "data": "shapes",
        "data_dir": str(tmp_path),
        "device": "CPU",
    }
    assert {k: cfg[k] for k in want} == want
    assert json.loads(out)["steps"] == 2 and json.loads(out)["device"] == "CPU"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "BOGUS"], "device 'BOGUS' is not available here; available: "),
        (["--batch", "0"], "batch"),
        (["--lr", "-1"], "lr"),
        (["--val-split", "1.5"], "val_split"),
        (["--optimizer", "sgd", "--schedule", "step", "--epochs", "0"], "epochs"),
    ],
)
def test_bad_overrides_are_usage_errors(work, tmp_path, args, message):
    code, _, err = run_main("train", str(work / "tiny.dl"), *args, "--out", str(tmp_path / "runs"))
    assert code == 2, err
    assert message in err and "Traceback" not in err
    if "BOGUS" in args:
        assert "CPU" in err.split("available: ")[1]
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_unknown_data_set_is_a_usage_error(work, tmp_path):
    """``--data`` is checked against the registry as the command line is read: exit code 2, one line."""
    r = run_cli("train", str(work / "tiny.dl"), "--data", "nosuchdata", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1].startswith("dlspec: error: argument --data: unknown data set 'nosuchdata' (data sets: shapes, ")
    assert not (tmp_path / "runs").exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_directory(tmp_path):
    spec = tmp_path / "three.dl"
    spec.write_text("model M {\n  input x: [1, 28, 28]\n  flatten\n  dense 3\n}\ntrain M {\n  data shapes\n  epochs 1\n}\n")
    code, _, err = run_main("train", str(spec), "--limit", "50", "--out", str(tmp_path / "runs"), "--quiet")
    assert code == 1 and "M has 3 outputs but data 'shapes' has 10 classes" in err
    assert list((tmp_path / "runs").iterdir()) == []


# 6 ---------------------------------------------------------------------------------------------


def test_quiet_log_lines_and_json_summary(base):
    _, summary, out, err = base
    lines = err.splitlines()
    assert lines[0].startswith("run directory ") and lines[1].startswith(
        "device CPU; TinyCNN: 4,082 params; data shapes: 900 train, 100 val, 200 test"
    )
    assert [x.split(":")[0] for x in lines[2:5]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "val loss" in lines[2] and "samples/s" in lines[2]
    assert json.loads(out) == summary and set(summary) >= {"train", "val", "test", "best_val", "wall_seconds", "samples_per_s"}


def test_rich_progress_shows_the_compiling_phase():
    from rich.console import Console

    from dlspec.progress import RichUI, final_table

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200, color_system=None)
    with RichUI(console) as ui:
        ui.start_epoch(0, 3, 45)
        ui.step(0, 0.0, 0.0, 0.0, True)
        ui.progress.refresh()
        shown = buf.getvalue()
        ui.step(1, 2.25, 0.15, 123.0, False)
        ui.progress.refresh()
        ui.end(1)
    assert "compiling kernels (first run only, cached afterwards)" in shown and "epoch 1" in shown and "0/45" in shown
    assert "loss 2.2500  acc 0.150  123 samples/s" in buf.getvalue()
    buf = io.StringIO()
    summary = {"model": "M", "epochs": 1, "steps": 45, "wall_seconds": 75.0, "device": "CPU"}
    summary |= {"train": {"loss": 1.0, "accuracy": 0.5}, "val": None, "test": {"loss": 1.5, "accuracy": 0.25}}
    Console(file=buf, width=60, color_system=None).print(final_table(summary))
    text = buf.getvalue()
    assert text.splitlines()[0] == "M: 1 epoch, 45 steps, 1 min 15 s on CPU"  # one line, no wrapping
    assert "25.00%" in text and "val" not in text


# 7 ---------------------------------------------------------------------------------------------


class RecordingUI:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start_epoch(self, epoch, epochs, steps) -> None:
        self.calls.append(("epoch", epoch, steps))

    def step(self, i, loss, acc, rate, compiling) -> None:
        self.calls.append(("step", i, compiling))

    def end(self, epochs_done) -> None:
        self.calls.append(("end", epochs_done))


def _trainer(work, run_dir: Path, ui=None, **cfg):
    from dlspec.train import Trainer, resolve

    prog = dlspec.load(work / "tiny.dl")
    config = resolve(prog, str(work / "tiny.dl"), None, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "tiny.dl", run_dir / "spec.dl")
    return Trainer(prog, config, run_dir, lambda m: None, ui)


def test_last_partial_batch_under_tinyjit(work, tmp_path, monkeypatch):
    """250 samples in batches of 20: 12 full batches and one of 10, each sample once per epoch;
    the size-10 step has its own compiled step (replayed from epoch 3 on) and matches eager."""
    from tinygrad import Context

    monkeypatch.setenv("DLSPEC_STEPCACHE", "0")  # every step compiled here (no step loaded from dlspec.stepcache)

    runs = {}
    for jit in (1, 0):
        ui = RecordingUI()
        t = _trainer(work, tmp_path / f"jit{jit}", ui, limit=250, val_split=0.0)
        seen: list[np.ndarray] = []
        losses: list[tuple[int, float]] = []
        to_tensors, make_step = t._tensors, t._train_step

        def tensors_(xb, yb, seen=seen, to_tensors=to_tensors):
            seen.append(xb.copy())
            return to_tensors(xb, yb)

        def train_step(n, losses=losses, make_step=make_step):
            jitted = make_step(n)

            def call(x, y):
                loss, correct = jitted(x, y)
                losses.append((n, loss.item()))
                return loss, correct

            call.cnt = jitted.cnt
            return call

        t._tensors, t._train_step = tensors_, train_step
        with Context(JIT=jit):
            summary = t.run()
        runs[jit] = (t, seen, losses, summary, ui)

    t, seen, losses, summary, ui = runs[1]
    assert summary["steps"] == 3 * 13
    assert [n for n, _ in losses[:13]] == [20] * 12 + [10]
    per_epoch = [np.concatenate(seen[e * 13 : (e + 1) * 13]) for e in range(3)]  # test batches come after
    want = sorted(row.tobytes() for row in ((t.train_data.x - t.loader._mean) * t.loader._scale))
    for e, xs in enumerate(per_epoch):
        assert len(xs) == 250 and sorted(row.tobytes() for row in xs) == want, f"epoch {e + 1}: a sample missing or repeated"
    assert not np.array_equal(per_epoch[0], per_epoch[1])  # reshuffled
    # a compiled step per batch size; the compiling phase is shown before each one's first two calls
    compiling = [(i, c) for kind, i, c in (x for x in ui.calls if x[0] == "step") if c]
    assert compiling[:2] == [(0, True), (1, True)] and (12, True) in compiling
    # the jitted partial batches (including the replays of epoch 3) match the eager run
    eager = runs[0][2]
    assert [n for n, _ in eager] == [n for n, _ in losses]
    np.testing.assert_allclose([v for _, v in losses], [v for _, v in eager], rtol=1e-5, atol=1e-6)
    a, b = runs[1][0].net.state_dict(), runs[0][0].net.state_dict()
    for k in a:
        np.testing.assert_allclose(np.array(a[k].tolist()), np.array(b[k].tolist()), rtol=1e-4, atol=1e-5, err_msg=k)


# 8 ---------------------------------------------------------------------------------------------


def test_eval_reproduces_the_runs_test_accuracy(base, work, tmp_path):
    run_dir, summary, _, _ = base
    code, out, err = run_main("eval", str(work / "tiny.dl"), "--weights", str(run_dir / "last.safetensors"), "--data", "shapes", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["accuracy"] == summary["test"]["accuracy"] and got["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-6)
    code, out, err = run_main("eval", str(work / "tiny.dl"), "--weights", str(run_dir / "best.safetensors"), "--data", "shapes")
    assert code == 0, err
    assert out.startswith("TinyCNN on shapes test: loss ") and "accuracy" in out

    # weights from net.save() (no run directory): the same numbers with the same data settings
    from dlspec.train import RunConfig, Trainer

    cfg = RunConfig(**json.loads((run_dir / "config.json").read_text()))
    t = Trainer(dlspec.load(work / "tiny.dl"), cfg, run_dir, lambda m: None)
    t.load_data()
    t.build()
    t.load_weights(run_dir / "last.safetensors")
    t.net.save(tmp_path / "net.safetensors")
    code, out, err = run_main("eval", str(work / "tiny.dl"), "--weights", str(tmp_path / "net.safetensors"), "--limit", LIMIT, "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == summary["test"]["accuracy"]
    # the same weights under other names (as from a PyTorch model), with a name map
    from dlspec.backends.tinygrad import save_state

    save_state({f"features.{k}": v for k, v in t.net.state_dict().items()}, tmp_path / "renamed.safetensors")
    tops = dict.fromkeys(k.split(".")[0] for k in t.net.state_dict())  # e.g. "features.conv1  conv1"
    (tmp_path / "names.txt").write_text("".join(f"features.{top}  {top}\n" for top in tops))
    args = ("--weights", str(tmp_path / "renamed.safetensors"), "--name-map", str(tmp_path / "names.txt"), "--limit", LIMIT, "--json")
    code, out, err = run_main("eval", str(work / "tiny.dl"), *args)
    assert code == 0, err
    assert json.loads(out)["accuracy"] == summary["test"]["accuracy"]


@pytest.mark.parametrize("content", [b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", b"junk" * 3])
def test_eval_corrupt_weights_file(work, tmp_path, content):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    r = run_cli("eval", str(work / "tiny.dl"), "--weights", str(bad), "--limit", "100", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert str(bad) in r.stderr and "Traceback" not in r.stderr and "internal error" not in r.stderr


# 9 ---------------------------------------------------------------------------------------------


def test_batchnorm_and_dropout_phases(base, work):
    run_dir, _, _, _ = base
    ck, _ = tensors(run_dir / "last.safetensors")
    # training updated the running statistics in every (replayed) step
    assert int(f32(ck["model.batchnorm1.num_batches_tracked"]).reshape(-1)[0]) == 135
    assert np.abs(f32(ck["model.batchnorm1.running_mean"])).max() > 1e-3
    assert not np.allclose(f32(ck["model.batchnorm1.running_var"]), 1.0)

    from dlspec.train import RunConfig, Trainer

    cfg = RunConfig(**json.loads((run_dir / "config.json").read_text()))
    t = Trainer(dlspec.load(work / "tiny.dl"), cfg, run_dir, lambda m: None)
    t.load_data()
    t.build()
    t.load_weights(run_dir / "last.safetensors")
    stats = {k: v.tolist() for k, v in t.net.state_dict().items() if "batchnorm" in k and "running" in k}
    first, second = t.evaluate(t.eval_loaders["test"]), t.evaluate(t.eval_loaders["test"])
    assert first == second  # no dropout, running statistics
    assert stats == {k: v.tolist() for k, v in t.net.state_dict().items() if "batchnorm" in k and "running" in k}
    xb, yb = next(t.eval_loaders["test"].epoch(0))
    x, _ = t._tensors(xb, yb)
    a, b = t.net(x, train=True).tolist(), t.net(x, train=True).tolist()
    assert a != b  # dropout is on in the training phase
    assert t.net(x, train=False).tolist() == t.net(x, train=False).tolist()
