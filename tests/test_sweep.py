"""``dlspec sweep``: spaces, names, the static check of every configuration, and sweeps on Ray Tune.

The fast tests need no Ray: the SPACE grammar, drawing configurations, binding model parameters
(:meth:`dlspec.api.Program.bind`), pruning (``--dry-run``) and every bad input — for every
objective: each one's own settings, metrics and models (a GAN's two). The slow ones run real
sweeps through the command line in a subprocess (Ray is a process-wide runtime): a grid on the
built-in ``shapes`` data with two configurations that break the shapes, then the same grid
interrupted by SIGINT after its first trial and resumed — its results must equal the
uninterrupted sweep's, trial for trial, and the finished trial is not trained again; a denoising
autoencoder's sweep and a DQN's; one GAN trial without Ray, sampled from afterwards.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main

import dlspec
from dlspec.errors import UsageError
from dlspec.sweep import Space, configurations, flat, parse_space, run_trial

SPEC = """\
model Net(hidden = 32, k = 2) {
  input x: [1, 28, 28]
  pool avg kernel k
  flatten
  dense hidden -> relu
  dense 10
}

train Net {
  data shapes
  optimizer adam lr 0.01
  batch 20
  epochs 1
  seed 3
}
"""
LIMIT = "200"  # 180 train, 20 val, 40 test samples: batches of 20


def params_of(hidden: int, k: int) -> int:
    """Net's parameter count by hand: two dense layers on the pooled 28/k × 28/k image."""
    n = (28 // k) ** 2
    return n * hidden + hidden + hidden * 10 + 10


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "dlspec", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def spec(tmp_path) -> Path:
    p = tmp_path / "net.dl"
    p.write_text(SPEC, encoding="utf-8")
    return p


# ---- spaces ---------------------------------------------------------------------------------------


def test_lists_are_typed():
    s = parse_space("x", "64, 128,256")
    assert (s.kind, s.values, s.finite) == ("choice", (64, 128, 256), True)
    assert parse_space("x", "1e-3,0.5,adam,true").values == (0.001, 0.5, "adam", True)
    assert parse_space("x", "7").grid() == (7,)


def test_ranges_and_distributions():
    assert parse_space("x", "int:2:8").grid() == (2, 3, 4, 5, 6, 7, 8)
    assert parse_space("x", "int:16:64:16").grid() == (16, 32, 48, 64)
    u = parse_space("lr", "loguniform:1e-4:1e-2")
    assert (u.kind, u.low, u.high, u.finite) == ("loguniform", 1e-4, 1e-2, False)
    assert parse_space("d", "uniform:0:0.5").kind == "uniform"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the space is empty"),
        ("  ", "the space is empty"),
        ("1,,2", "an empty value in the list"),
        ("64,64", "the value 64 is listed twice"),
        ("int:8:2", "expected int:LO:HI or int:LO:HI:STEP"),
        ("int:1.5:3", "expected int:LO:HI or int:LO:HI:STEP"),
        ("int:1:4:0", "expected int:LO:HI or int:LO:HI:STEP"),
        ("uniform:1", "expected uniform:LO:HI with numbers LO ≤ HI"),
        ("uniform:a:b", "expected uniform:LO:HI"),
        ("loguniform:0:1", "0 < LO ≤ HI"),
        ("logunifrom:1e-4:1", "unknown space 'logunifrom' — did you mean 'loguniform'?"),
        ("gauss:0:1", "unknown space 'gauss'; expected a list"),
    ],
)
def test_malformed_spaces(text, message):
    with pytest.raises(UsageError) as e:
        parse_space("lr", text)
    assert message in e.value.diagnostics[0].message
    assert e.value.diagnostics[0].message.startswith(f"--param lr={text.strip()}")


def test_the_grid_is_the_product_in_order():
    spaces = [parse_space("a", "1,2"), parse_space("b", "x,y,z")]
    configs, how = configurations(spaces, None, 0)
    assert how == "grid"
    assert configs == [{"a": a, "b": b} for a in (1, 2) for b in "xyz"]
    # --trials at least the grid's size: the grid
    assert configurations(spaces, 6, 0)[0] == configs and configurations(spaces, 50, 0)[1] == "grid"


def test_trials_draw_distinct_grid_points():
    spaces = [parse_space("a", "int:1:10"), parse_space("b", "1,2,3")]
    configs, how = configurations(spaces, 12, seed=5)
    assert how == "random" and len(configs) == 12
    assert len({(c["a"], c["b"]) for c in configs}) == 12  # distinct
    assert all(1 <= c["a"] <= 10 and c["b"] in (1, 2, 3) for c in configs)
    assert configurations(spaces, 12, seed=5)[0] == configs  # reproducible
    assert configurations(spaces, 12, seed=6)[0] != configs


def test_distributions_are_sampled_in_their_range():
    spaces = [parse_space("lr", "loguniform:1e-4:1e-1"), parse_space("p", "uniform:0.2:0.4"), parse_space("h", "8,16")]
    configs, how = configurations(spaces, 400, seed=0)
    assert how == "random" and len(configs) == 400
    lrs = np.array([c["lr"] for c in configs])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    # log-uniform: log10(lr) is uniform on [-4, -1], mean -2.5 (sd of the mean ≈ 0.043)
    assert abs(np.log10(lrs).mean() - (-2.5)) < 0.2
    ps = np.array([c["p"] for c in configs])
    assert ps.min() >= 0.2 and ps.max() <= 0.4 and abs(ps.mean() - 0.3) < 0.02
    assert {c["h"] for c in configs} == {8, 16}


def test_a_distribution_needs_trials():
    with pytest.raises(UsageError, match="has no grid; give --trials K"):
        configurations([Space("lr", "uniform", low=0.1, high=0.2, text="uniform:0.1:0.2")], None, 0)


def test_flat_metrics():
    rec = {"epoch": 2, "step": 18, "lr": 0.01, "train": {"loss": 2.0, "accuracy": 0.25}, "val": {"loss": 1.5, "accuracy": 0.5, "top5": 0.9}}
    assert flat(rec) == {
        "epoch": 2,
        "step": 18,
        "lr": 0.01,
        "train_loss": 2.0,
        "train_acc": 0.25,
        "val_loss": 1.5,
        "val_acc": 0.5,
        "val_top5": 0.9,
    }
    assert flat({"epoch": 1, "val": None}) == {"epoch": 1}


# ---- binding parameters ---------------------------------------------------------------------------


def test_bind_model_parameters():
    prog = dlspec.load(SPEC, name="net.dl")
    wide = prog.bind({"hidden": 64})
    assert wide.report("Net")["params"] == params_of(64, 2)
    assert prog.report("Net")["params"] == params_of(32, 2)  # the program itself is unchanged
    assert wide.params == {"Net.hidden": 64}
    assert wide.ir("Net").args == {"hidden": 64, "k": 2}
    assert wide.report("Net", hidden=8)["params"] == params_of(8, 2)  # an explicit argument wins
    both = prog.bind({"Net.hidden": 16}).bind({"k": 4})
    assert both.params == {"Net.hidden": 16, "Net.k": 4} and both.report("Net")["params"] == params_of(16, 4)


def test_bind_block_parameters():
    text = """\
block Head(width = 8) {
  dense width -> relu
}
model M {
  input x: [12]
  Head()
  Head(3)
  dense 2
}
"""
    prog = dlspec.load(text, name="m.dl")
    # Head() takes the bound default, Head(3) keeps its argument
    assert prog.report("M")["params"] == (12 * 8 + 8) + (8 * 3 + 3) + (3 * 2 + 2)
    assert prog.bind({"Head.width": 5}).report("M")["params"] == (12 * 5 + 5) + (5 * 3 + 3) + (3 * 2 + 2)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"hiden": 1}, "no model of net.dl has a parameter 'hiden' — did you mean 'hidden'?"),
        ({"Net.kk": 1}, "model 'Net' has no parameter 'kk' — did you mean 'k'?"),
        ({"Nett.k": 1}, "net.dl has no model, block or cell 'Nett' — did you mean 'Net'?"),
        ({"hidden": 2**70}, "parameter hidden is too large"),
    ],
)
def test_bind_unknown_names(params, message):
    with pytest.raises(UsageError) as e:
        dlspec.load(SPEC, name="net.dl").bind(params)
    assert message in e.value.diagnostics[0].message


# ---- the plan, checked statically (no Ray) ---------------------------------------------------------


def test_dry_run_prunes_broken_shapes_and_budgets(spec, tmp_path):
    code, out, err = run_main(
        "sweep", str(spec), "--param", "hidden=16,32", "--param", "k=2,3,4", "--max-params", "3.5K", "--dry-run", "--json", "--limit", LIMIT
    )
    assert code == 0, err
    doc = json.loads(out)
    by = {(t["settings"]["hidden"], t["settings"]["k"]): t for t in doc["trials"]}
    assert len(by) == 6 and doc["search"] == "grid" and doc["budgets"]["params"] == 3500
    for h in (16, 32):
        bad = by[(h, 3)]  # (28 − 3) / 3 + 1 is not whole: a shape error at the pool layer's line and column
        assert bad["status"] == "pruned"
        assert bad["error"].startswith(f"{spec}:3:3: error: pool 'pool1' output height (28 - 3) / 3 + 1")
        assert bad["diagnostics"][0]["line"] == 3 and bad["diagnostics"][0]["col"] == 3
    assert params_of(32, 2) == 6634 > 3500 > params_of(16, 2) == 3322
    over = by[(32, 2)]
    assert over["status"] == "pruned" and over["params"] == 6634
    assert over["error"] == "Net has 6,634 params (6.63K), over the budget --max-params 3,500 (3.50K)"
    for key in ((16, 2), (16, 4), (32, 4)):
        assert by[key]["status"] == "pending" and by[key]["params"] == params_of(*key) and by[key]["error"] is None
    assert not (tmp_path / "sweeps").exists()  # a dry run writes nothing


def test_dry_run_table_and_train_settings(spec):
    code, out, err = run_main("sweep", str(spec), "--param", "lr=0.1,0.001", "--param", "momentum=0.9", "--optimizer", "sgd", "--dry-run")
    assert code == 0, err
    assert "sweep of Net" in out and "pending" in out and "0.001" in out
    # an optimizer option the optimizer does not take prunes the configuration
    code, out, err = run_main("sweep", str(spec), "--param", "momentum=0.9", "--dry-run", "--json")
    assert code == 0
    (t,) = json.loads(out)["trials"]
    assert t["status"] == "pruned" and t["error"].startswith("optimizer adam takes no option 'momentum'")


def test_dry_run_draws_trials(spec):
    code, out, err = run_main(
        "sweep", str(spec), "--param", "lr=loguniform:1e-4:1e-2", "--param", "hidden=8,16", "--trials", "5", "--dry-run", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["search"] == "random" and len(doc["trials"]) == 5
    assert all(1e-4 <= t["settings"]["lr"] <= 1e-2 and t["status"] == "pending" for t in doc["trials"])


# ---- bad input: one line, exit 2 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param", "hiden=16,32"], "--param hiden: Net has no parameter 'hiden' and it is no train setting — did you mean 'hidden'?"),
        (["--param", "lrr=0.1"], "did you mean 'lr'?"),
        (["--param", "Nett.hidden=1"], "net.dl has no model, block or cell 'Nett' — did you mean 'Net'?"),
        (["--param", "hidden="], "--param hidden=: the space is empty"),
        (["--param", "hidden"], "--param hidden: expected NAME=SPACE"),
        (["--param", "lr=loguniform:1e-2"], "--param lr=loguniform:1e-2: expected loguniform:LO:HI"),
        (["--param", "optimizer=adam,sgdd"], "unknown optimizer 'sgdd' — did you mean 'sgd'?"),
        (["--param", "batch=uniform:8:64"], "batch takes whole numbers"),
        (["--param", "lr=fast"], "lr takes numbers, not 'fast'"),
        (["--param", "k=2", "--param", "k=4"], "--param k is given twice"),
        (["--param", "lr=uniform:0.1:0.2"], "has no grid; give --trials K"),
        (["--param", "k=2", "--metric", "val_accc"], "--metric val_accc: not a metric the runs report — did you mean 'val_acc'?"),
        (["--param", "k=2", "--metric", "val_acc", "--val-split", "0"], "no validation split"),
        ([], "give at least one --param"),
        (["--param", "k=2", "--max-params", "lots"], "expected a count such as 500000, 1.5M or 2G"),
    ],
)
def test_bad_input_is_one_line_exit_2(spec, args, message):
    code, out, err = run_main("sweep", str(spec), *args)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("dlspec: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_resume_of_no_sweep(tmp_path):
    code, _, err = run_main("sweep", "--resume", str(tmp_path))
    assert code == 2 and f"{tmp_path} is not a sweep directory (no sweep.json)" in err


def test_missing_ray(spec, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, _, err = run_main("sweep", str(spec), "--param", "k=2,4", "--out", str(tmp_path / "sw"), "--limit", LIMIT)
    assert code == 2
    assert err.strip().splitlines()[-1] == "dlspec: error: dlspec sweep: Ray Tune is not installed; pip install 'dlspec[sweep]'"
    assert not (tmp_path / "sw").exists()


def test_unreachable_cluster(spec, tmp_path):
    pytest.importorskip("ray")
    t0 = time.perf_counter()
    code, _, err = run_main("sweep", str(spec), "--param", "k=2,4", "--address", "127.0.0.1:1", "--out", str(tmp_path / "sw"))
    assert code == 2 and time.perf_counter() - t0 < 30
    (line,) = [ln for ln in err.splitlines() if ln.startswith("dlspec: error:")]
    assert line.startswith("dlspec: error: cannot reach the Ray cluster at 127.0.0.1:1: ")
    code, _, err = run_main("sweep", str(spec), "--param", "k=2,4", "--address", "nowhere", "--out", str(tmp_path / "sw"))
    assert code == 2 and "--address nowhere: expected HOST:PORT" in err


def test_a_batch_the_devices_cannot_share_is_pruned(spec, tmp_path):
    """``--devices 2`` (or a spec's ``devices``): a swept batch that does not divide by 2 is pruned
    statically, with the message the trial's run would stop with; the others are planned."""
    code, out, err = run_main("sweep", str(spec), "--param", "batch=20,21", "--devices", "CPU:0,CPU:1", "--dry-run", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [(t["settings"]["batch"], t["status"]) for t in doc["trials"]] == [(20, "pending"), (21, "pruned")]
    assert doc["trials"][1]["error"] == (
        "batch 21 does not divide across 2 devices (CPU:0, CPU:1): each device takes an equal share of every batch"
    )
    spec.write_text(SPEC.replace("  seed 3\n", "  seed 3\n  devices 2\n  device CPU\n"))
    code, out, err = run_main("sweep", str(spec), "--param", "batch=20,21", "--dry-run", "--json")
    assert code == 0, err
    assert [t["status"] for t in json.loads(out)["trials"]] == ["pending", "pruned"]


def test_more_cpus_per_trial_than_the_machine_has_is_refused(spec, tmp_path):
    """A local Ray has the machine's CPUs: a trial asking for more is refused before any trial runs
    (exit 2), as on a cluster; nothing is trained."""
    pytest.importorskip("ray")
    have = os.cpu_count() or 1
    code, _, err = run_main(
        "sweep", str(spec), "--param", "k=2,4", "--cpus", str(have + 1), "--out", str(tmp_path / "sw"), "--limit", LIMIT
    )
    assert code == 2, err
    assert err.splitlines()[-1] == f"dlspec: error: each trial asks for {have + 1} CPUs (--cpus), but the Ray cluster has {have}"
    assert not (tmp_path / "sw" / "trials").exists()


def test_help_lists_the_command():
    r = subprocess.run([sys.executable, "-m", "dlspec", "sweep", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--param NAME=SPACE" in r.stdout and "loguniform:LO:HI" in r.stdout
    assert "--epochs" in r.stdout and "--data" in r.stdout  # every dlspec train override
    from dlspec.registry import OBJECTIVES

    text = " ".join(r.stdout.split())
    for name, e in OBJECTIVES.items():  # --metric's choices, per objective, from the registry
        assert f"{name}: {', '.join(m.name for m in e.metrics)}" in text


# ---- one trial, without Ray -------------------------------------------------------------------------


@pytest.mark.slow
def test_run_trial_reports_every_epoch(spec, tmp_path):
    from dlspec.train import RunConfig, resolve

    prog = dlspec.load(spec).bind({"Net.hidden": 16})
    cfg = resolve(prog, str(spec), None, {"limit": 200, "epochs": 2})
    cfg = RunConfig(**{**cfg.model_dump(), "params": prog.params})
    reports: list[dict] = []
    final = run_trial(spec, tmp_path / "t", cfg.model_dump(mode="json"), reports.append)
    lines = [json.loads(ln) for ln in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [flat(r) for r in lines[:1]] == reports  # epoch 1 reported while training
    assert final == {**flat(lines[1]), "dlspec_status": "done"}  # epoch 2 once summary.json is written
    assert (tmp_path / "t" / "summary.json").is_file()
    assert json.loads((tmp_path / "t" / "config.json").read_text())["params"] == {"Net.hidden": 16}
    # the trial's parameters travel with its run: --resume and eval bind them again (the default
    # hidden = 32 would not fit the checkpoint's weights)
    code, out, err = run_main("train", "--resume", str(tmp_path / "t"), "--epochs", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["epochs"] == 3 and len((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()) == 3
    code, out, err = run_main("eval", str(spec), "--weights", str(tmp_path / "t" / "last.safetensors"), "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(json.loads((tmp_path / "t" / "summary.json").read_text())["test"]["accuracy"])
    # a failing trial is one line, not an exception
    bad = {**cfg.model_dump(mode="json"), "data": "sequences"}
    out = run_trial(spec, tmp_path / "bad", bad, reports.append)
    assert out["dlspec_status"] == "failed" and "gives samples of shape" in out["dlspec_error"]


# ---- sweeps on Ray ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """One uninterrupted sweep: 2 × 3 configurations, 2 of which break the shapes."""
    pytest.importorskip("ray")
    d = tmp_path_factory.mktemp("sweep")
    (d / "net.dl").write_text(SPEC, encoding="utf-8")
    r = run_cli("sweep", "net.dl", "--param", "hidden=16,32", "--param", "k=2,3,4", "--limit", LIMIT, "--out", "sw", cwd=d)
    assert r.returncode == 0, r.stderr
    return d, r, json.loads((d / "sw" / "sweep.json").read_text())


def metric_of(run_dir: Path) -> float:
    """The best validation accuracy in a run's metrics.jsonl (read independently of dlspec.sweep)."""
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(r["val"]["accuracy"] for r in lines)


@pytest.mark.slow
def test_grid_sweep_finishes_and_picks_the_best(grid):
    d, r, doc = grid
    assert doc["complete"] and doc["counts"] == {"done": 4, "pruned": 2}
    done = [t for t in doc["trials"] if t["status"] == "done"]
    for t in done:
        run = d / t["run_dir"]
        assert t["value"] == metric_of(run) and t["epochs"] == 1
        assert (run / "summary.json").is_file() and (run / "best.safetensors").is_file()
        assert t["params"] == params_of(t["settings"]["hidden"], t["settings"]["k"])
        assert json.loads((run / "config.json").read_text())["params"] == {
            "Net.hidden": t["settings"]["hidden"],
            "Net.k": t["settings"]["k"],
        }
    best = max(done, key=lambda t: t["value"])
    assert doc["best"]["trial"] == best["trial"] and doc["best"]["value"] == best["value"]
    assert (d / doc["best"]["run_dir"] / "metrics.jsonl").is_file()
    for t in doc["trials"]:
        if t["status"] == "pruned":  # never launched: no run directory, the located error kept
            assert t["settings"]["k"] == 3 and t["run_dir"] is None
            assert t["error"].startswith("net.dl:3:3: error: pool 'pool1' output height")
    assert sorted(p.name for p in (d / "sw" / "trials").iterdir()) == sorted(t["trial"] for t in done)
    # the table: every trial, best first (★), the pruned ones with their error; progress on stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("│")]
    assert len(rows) == 6 and rows[0].startswith(f"│ {best['trial']} ★")
    assert all("pruned" in row and "net.dl:3:3: error:" in row for row in rows[4:])
    assert "[4/4] trial" in r.stderr and f"best: trial {best['trial']}" in r.stderr
    assert "Traceback" not in r.stderr and "ERROR" not in r.stderr


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resume_completes(grid, tmp_path):
    ref = {(t["settings"]["hidden"], t["settings"]["k"]): t for t in grid[2]["trials"] if t["status"] == "done"}
    (tmp_path / "net.dl").write_text(SPEC, encoding="utf-8")
    args = ["sweep", "net.dl", "--param", "hidden=16,32", "--param", "k=2,4", "--limit", LIMIT, "--out", "sw", "--concurrent", "1"]
    env = dict(os.environ, NO_COLOR="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "dlspec", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    err = []
    try:
        for line in p.stderr:
            err.append(line)
            if line.startswith("[1/4] trial 000 done"):
                time.sleep(1.0)  # into the second trial
                p.send_signal(signal.SIGINT)
                break
        _, rest = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    err.append(rest)
    text = "".join(err)
    assert p.returncode == 130, text
    assert "Traceback" not in text
    assert "dlspec: sweep interrupted: 3 trials unfinished" in text and "dlspec sweep --resume sw" in text
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert not doc["complete"] and doc["counts"]["done"] == 1
    status = {t["trial"]: t["status"] for t in doc["trials"]}
    assert status["000"] == "done" and set(status.values()) <= {"done", "interrupted", "pending"}
    first = tmp_path / "sw" / "trials" / "000" / "metrics.jsonl"
    stamp = first.stat().st_mtime_ns, first.read_bytes()

    r = run_cli("sweep", "--resume", "sw", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["complete"] and doc["counts"] == {"done": 4} and doc["fits"] == 2
    assert (first.stat().st_mtime_ns, first.read_bytes()) == stamp  # the finished trial was not trained again
    assert "trial 000" not in r.stderr.split("running 3 trials")[-1]
    for t in doc["trials"]:  # as the uninterrupted sweep, trial for trial (training is deterministic)
        want = ref[(t["settings"]["hidden"], t["settings"]["k"])]
        assert math.isclose(t["value"], want["value"]) and t["test"] == pytest.approx(want["test"])
        assert t["value"] == metric_of(tmp_path / t["run_dir"])
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text()) == doc
    # the plan cannot change on resume; a finished sweep resumes to nothing
    r = run_cli("sweep", "--resume", "sw", "--epochs", "2", cwd=tmp_path)
    assert r.returncode == 2 and "--resume continues the sweep as it was planned; --epochs cannot change" in r.stderr


# ---- every objective: names, metrics and plans (no Ray) ----------------------------------------------

AE = """\
model AE(hidden = 16) {
  input image: [1, 28, 28]
  flatten
  dense hidden -> relu
  dense 784 -> sigmoid
  reshape [1, 28, 28]
}

train autoencoder AE {
  data shapes limit 200
  loss bce
  optimizer adam lr 0.003
  batch 20
  epochs 1
  seed 0
}
"""

VAE = """\
model V(latent = 4) {
  input image: [1, 28, 28]
  h = image -> flatten -> dense 16 -> tanh
  mu = h -> dense latent as mu
  logvar = h -> dense latent as logvar
  z = (mu, logvar) -> sample
  recon = z -> dense 784 -> sigmoid -> reshape [1, 28, 28]
  output recon, mu, logvar
}

train vae V {
  data shapes limit 200
  latent 4
  batch 20
  epochs 1
}
"""

GAN = """\
model G(latent = 8, width = 16, side = 28) {
  input z: [latent]
  dense width -> relu
  dense (side * side) -> tanh
  reshape [1, side, side]
}

model D(width = 16) {
  input image: [1, 28, 28]
  flatten -> dense width -> leaky_relu 0.2
  dense 1
}

train gan generator G, discriminator D {
  data shapes limit 200
  noise 1.0 dim 8
  batch 20
  epochs 1
  seed 0
}
"""

DQN = """\
model Q(hidden = 16) {
  input observation: [4]
  dense hidden -> relu
  dense 2
}

train dqn Q {
  env cartpole
  optimizer adam lr 0.001
  buffer 1000
  target_update 50
  epsilon 1.0 end 0.05 decay 200
  warmup 64
  batch 32
  episodes 20
  seed 0
}
"""

SPECS = {"classifier": SPEC, "autoencoder": AE, "vae": VAE, "gan": GAN, "dqn": DQN}


def gan_params(latent: int, gw: int, dw: int, side: int = 28) -> int:
    """G's and D's parameter counts by hand (dense layers: inputs × outputs + outputs)."""
    g = latent * gw + gw + gw * side * side + side * side
    d = 784 * dw + dw + dw + 1
    return g + d


@pytest.fixture
def specs(tmp_path) -> dict[str, Path]:
    out = {}
    for kind, text in SPECS.items():
        out[kind] = tmp_path / f"{kind}.dl"
        out[kind].write_text(text, encoding="utf-8")
    return out


def target_of(kind: str):
    from dlspec.sweep import Target
    from dlspec.train import resolve

    prog = dlspec.load(SPECS[kind], name=f"{kind}.dl")
    cfg = resolve(prog, f"{kind}.dl", None, {}, objectives=True)
    assert cfg.kind == kind
    return prog, Target.of(cfg), cfg


@pytest.mark.parametrize(
    "kind, name, what, key, type_",
    [
        ("autoencoder", "noise", "setting", "noise", float),
        ("autoencoder", "hidden", "param", "AE.hidden", None),
        ("autoencoder", "limit", "setting", "limit", int),
        ("vae", "beta", "setting", "beta", float),  # the VAE's β, not FTRL's option of that name
        ("vae", "latent", "param", "V.latent", None),  # the model parameter shadows the setting
        ("gan", "generator.width", "param", "G.width", None),
        ("gan", "discriminator.width", "param", "D.width", None),
        ("gan", "D.width", "param", "D.width", None),
        ("gan", "latent", "param", "G.latent", None),  # only the generator has it
        ("gan", "d_lr", "setting", "d_lr", float),
        ("gan", "g_optimizer", "setting", "g_optimizer", str),
        ("gan", "label_smoothing", "setting", "label_smoothing", float),
        ("gan", "beta1", "option", "beta1", float),
        ("dqn", "gamma", "setting", "gamma", float),
        ("dqn", "epsilon", "setting", "epsilon", float),
        ("dqn", "target_update", "setting", "target_update", int),
        ("dqn", "episodes", "setting", "episodes", int),
        ("dqn", "max_steps", "setting", "max_steps", int),
        ("classifier", "val_split", "setting", "val_split", float),
        ("classifier", "beta", "option", "beta", float),  # FTRL's
    ],
)
def test_names_are_the_objectives_own(kind, name, what, key, type_):
    from dlspec.sweep import knob

    prog, target, _ = target_of(kind)
    k = knob(prog, target, name)
    assert (k.what, k.key, k.type) == (what, key, type_)


def test_settings_come_from_the_registry():
    from dlspec.registry import OBJECTIVES
    from dlspec.sweep import SETTING_FIELDS, train_settings

    for kind, e in OBJECTIVES.items():
        if e.settings is None:
            continue
        names = set(train_settings(kind))
        # every setting of the objective is reachable (but the devices and the data set itself)
        for setting in e.settings:
            fields = SETTING_FIELDS.get(setting, (setting,))
            assert set(fields) <= names, (kind, setting)
        assert names <= {f for s in e.settings for f in SETTING_FIELDS.get(s, (s,))}, kind
    assert "noise" in train_settings("autoencoder") and "noise" not in train_settings("vae")
    assert {"d_lr", "g_lr", "d_optimizer", "g_optimizer"} <= set(train_settings("gan"))
    assert "epochs" not in train_settings("dqn") and "limit" not in train_settings("dqn")


@pytest.mark.parametrize(
    "kind, name, message",
    [
        ("autoencoder", "nosie", "--param nosie: AE has no parameter 'nosie' and it is no train setting — did you mean 'noise'?"),
        ("vae", "bta", "did you mean 'beta'?"),
        (
            "gan",
            "width",
            "--param width: the generator G and the discriminator D both have a parameter 'width';"
            " give generator.width or discriminator.width",
        ),
        ("gan", "generator.widht", "--param generator.widht: model 'G' has no parameter 'widht' — did you mean 'width'?"),
        ("gan", "schedule", "--param schedule: the setting 'schedule' does not apply to 'train gan'; its settings: limit, loss,"),
        ("dqn", "epochs", "--param epochs: the setting 'epochs' does not apply to 'train dqn'; its settings: loss, optimizer, lr,"),
        ("dqn", "gama", "did you mean 'gamma'?"),
        ("classifier", "noise", "--param noise: the setting 'noise' does not apply to a classifier"),
        ("dqn", "hiddn", "--param hiddn: Q has no parameter 'hiddn' and it is no train setting — did you mean 'hidden'?"),
    ],
)
def test_unknown_names_per_objective(kind, name, message):
    from dlspec.sweep import knob

    prog, target, _ = target_of(kind)
    with pytest.raises(UsageError) as e:
        knob(prog, target, name)
    assert message in e.value.diagnostics[0].message


@pytest.mark.parametrize(
    "kind, default, mode, other",
    [
        ("classifier", "val_acc", "max", "test_mse"),
        ("autoencoder", "test_mse", "min", "val_acc"),
        ("vae", "test_loss", "min", "test_mse"),
        ("gan", "train_g_loss", "min", "test_loss"),
        ("dqn", "eval_return", "max", "val_acc"),
    ],
)
def test_metrics_are_the_registrys(kind, default, mode, other):
    from dlspec.registry import OBJECTIVES
    from dlspec.sweep import check_metric, metrics_of

    _, _, cfg = target_of(kind)
    assert check_metric(None, None, cfg) == (default, mode)
    names = [m.name for m in OBJECTIVES[kind].metrics if m.name != "val_top5"]  # the classifier's: with `metrics top5`
    assert list(metrics_of(cfg)) == names
    for m in OBJECTIVES[kind].metrics:
        if m.name in names:
            assert check_metric(m.name, None, cfg) == (m.name, m.mode)
    assert check_metric(names[-1], "max", cfg) == (names[-1], "max")  # --mode wins
    with pytest.raises(UsageError, match=f"--metric {other}: not a metric"):
        check_metric(other, None, cfg)
    with pytest.raises(UsageError, match=f"did you mean '{default}'"):
        check_metric(default[:-1] + default[-1] * 2, None, cfg)


def dry_run(*args: str) -> dict:
    code, out, err = run_main("sweep", *args, "--dry-run", "--json")
    assert code == 0, err
    return json.loads(out)


def test_autoencoder_plan(specs):
    doc = dry_run(str(specs["autoencoder"]), "--param", "noise=0,0.1", "--param", "hidden=8,16", "--max-params", "20K")
    assert (doc["objective"], doc["models"], doc["metric"], doc["mode"]) == ("autoencoder", {"model": "AE"}, "test_mse", "min")
    by = {(t["settings"]["noise"], t["settings"]["hidden"]): t for t in doc["trials"]}
    for noise in (0.0, 0.1):
        assert by[noise, 8]["status"] == "pending" and by[noise, 8]["params"] == 784 * 8 + 8 + 8 * 784 + 784
        assert by[noise, 16]["status"] == "pruned" and "over the budget --max-params 20,000" in by[noise, 16]["error"]
    code, out, err = run_main("sweep", str(specs["autoencoder"]), "--param", "noise=0,0.1", "--dry-run", "--json", "--limit", "100")
    assert code == 0, err
    assert all(t["status"] == "pending" for t in json.loads(out)["trials"])


def test_vae_latent_follows_the_model(specs):
    """``latent 4`` states mu's size: a trial that binds the model's latent is checked with its own."""
    doc = dry_run(str(specs["vae"]), "--param", "latent=2,4", "--param", "beta=0.5,1")
    assert doc["metric"] == "test_loss" and all(t["status"] == "pending" for t in doc["trials"])
    from dlspec.sweep import Target, Trial, check_trial, knob

    prog = dlspec.load(specs["vae"])
    target = Target("vae", {"model": "V"})
    knobs = [knob(prog, target, "latent"), knob(prog, target, "beta")]
    t = check_trial(prog, "vae.dl", target, {}, knobs, Trial("000", {"latent": 2, "beta": 0.5}), {})
    assert t.status == "pending" and (t.config["latent"], t.config["beta"], t.config["params"]) == (2, 0.5, {"V.latent": 2})


def test_gan_plan_both_models(specs):
    doc = dry_run(
        str(specs["gan"]),
        "--param", "generator.width=8,16",
        "--param", "D.width=4",
        "--param", "G.side=14,28",
        "--param", "d_lr=1e-4,3e-4",
        "--param", "beta1=0.5",
        "--max-params", "15K",
    )  # fmt: skip
    assert (doc["objective"], doc["models"]) == ("gan", {"generator": "G", "discriminator": "D"})
    assert (doc["model"], doc["metric"], doc["mode"]) == ("G", "train_g_loss", "min")
    trials = doc["trials"]
    assert len(trials) == 8
    for t in trials:
        s = t["settings"]
        if s["G.side"] == 14:  # G makes [1, 14, 14], D takes [1, 28, 28]: pruned at the train section
            assert t["status"] == "pruned" and t["run_dir"] is None
            assert (
                t["error"]
                == f"{specs['gan']}:14:1: error: 'train gan': the generator G makes (1, 14, 14) but the discriminator D takes (1, 28, 28)"
            )
            continue
        assert t["params"] == gan_params(8, s["generator.width"], 4)
        if t["params"] > 15_000:
            assert t["status"] == "pruned" and t["error"].startswith("G + D have ")
            continue
        assert t["status"] == "pending", t
    assert sum(t["status"] == "pending" for t in trials) == 2  # generator.width 8 (10,273 params with D), both d_lr
    from dlspec.sweep import Target, Trial, check_trial, knob

    prog = dlspec.load(specs["gan"])
    target = Target("gan", {"generator": "G", "discriminator": "D"})
    names = ["generator.width", "d_lr", "beta1", "noise"]
    knobs = [knob(prog, target, n) for n in names]
    t = check_trial(prog, "gan.dl", target, {}, knobs, Trial("000", {"generator.width": 8, "d_lr": 3e-4, "beta1": 0.9, "noise": 0.5}), {})
    c = t.config
    assert t.status == "pending" and c["params"] == {"G.width": 8}
    assert (c["d_lr"], c["g_lr"], c["noise"], c["noise_dim"]) == (3e-4, 2e-4, 0.5, 8)
    assert c["d_optimizer_options"] == c["g_optimizer_options"] == {"beta1": 0.9}  # an option goes to both optimizers
    # a generator whose z changes size: `noise … dim 8` follows it
    t = check_trial(prog, "gan.dl", target, {}, [knob(prog, target, "latent")], Trial("001", {"latent": 4}), {})
    assert t.status == "pending" and t.config["noise_dim"] == 4 and t.config["params"] == {"G.latent": 4}
    # an optimizer option the discriminator's optimizer does not take
    t = check_trial(
        prog, "gan.dl", target, {}, [knob(prog, target, "d_optimizer"), knob(prog, target, "momentum")],
        Trial("002", {"d_optimizer": "adam", "momentum": 0.9}), {},
    )  # fmt: skip
    assert t.status == "pruned" and t.error.startswith("the discriminator's optimizer adam takes no option 'momentum'")


def test_dqn_plan_episodes_for_every_trial(specs):
    doc = dry_run(
        str(specs["dqn"]),
        "--param", "hidden=8,16",
        "--param", "gamma=0.9,1.5",
        "--param", "epsilon=1.0,0.01",
        "--episodes", "3",
    )  # fmt: skip
    assert (doc["objective"], doc["metric"], doc["mode"], doc["overrides"]) == ("dqn", "eval_return", "max", {"episodes": 3})
    for t in doc["trials"]:
        s = t["settings"]
        assert t["params"] == 4 * s["hidden"] + s["hidden"] + s["hidden"] * 2 + 2
        if s["epsilon"] == 0.01:  # the spec's ε ends at 0.05: it cannot fall from 0.01
            assert t["status"] == "pruned" and "epsilon must fall from ≤ 1 to ≥ 0: got 0.01 → 0.05" in t["error"]
        elif s["gamma"] == 1.5:
            assert t["status"] == "pruned" and "gamma: Input should be less than or equal to 1 (got 1.5)" in t["error"]
        else:
            assert t["status"] == "pending"
    from dlspec.sweep import Target, Trial, check_trial, knob

    prog = dlspec.load(specs["dqn"])
    target = Target("dqn", {"model": "Q"})
    knobs = [knob(prog, target, n) for n in ("hidden", "epsilon_decay", "target_update")]
    t = check_trial(
        prog, "dqn.dl", target, {"episodes": 3}, knobs, Trial("000", {"hidden": 8, "epsilon_decay": 50, "target_update": 10}), {}
    )
    c = t.config
    assert t.status == "pending" and (c["episodes"], c["epsilon_decay"], c["target_update"], c["params"]) == (3, 50, 10, {"Q.hidden": 8})


@pytest.mark.parametrize(
    "kind, args, message",
    [
        ("dqn", ["--param", "hidden=8", "--epochs", "2"], "--epochs does not apply to 'train dqn'"),
        ("dqn", ["--param", "hidden=8", "--episodes", "0"], "--episodes must be positive, got 0"),
        ("dqn", ["--param", "env=cartpole,breakout"], "unknown environment 'breakout'; environments: cartpole"),
        (
            "dqn",
            ["--param", "hidden=8", "--metric", "val_acc"],
            "--metric val_acc: not a metric 'train dqn' runs report; metrics: eval_return",
        ),
        (
            "autoencoder",
            ["--param", "hidden=8", "--episodes", "3"],
            "--episodes applies to 'train dqn' only; AE's section is 'train autoencoder'",
        ),
        ("autoencoder", ["--param", "loss=mse,cross_entropy"], "'train autoencoder' cannot use loss 'cross_entropy'; one of mse, bce,"),
        ("autoencoder", ["--param", "noise=low"], "noise takes numbers, not 'low'"),
        ("vae", ["--param", "latent=2", "--metric", "test_mse"], "--metric test_mse: not a metric 'train vae' runs report"),
        (
            "gan",
            ["--param", "lr=1e-3", "--param", "g_lr=1e-4"],
            "--param lr sets both d_lr and g_lr of a GAN, and --param g_lr one of them",
        ),
        (
            "gan",
            ["--param", "generator.width=8", "--param", "G.width=16"],
            "--param generator.width and --param G.width set the same parameter G.width",
        ),
        ("gan", ["--param", "d_optimizer=adam,adamm"], "unknown optimizer 'adamm' — did you mean 'adam'?"),
        ("gan", ["--param", "width=8"], "give generator.width or discriminator.width"),
        (
            "classifier",
            ["--param", "k=2", "--episodes", "3"],
            "--episodes applies to 'train dqn' only; Net's section is 'train classifier'",
        ),
    ],
)
def test_bad_input_per_objective(specs, kind, args, message):
    code, out, err = run_main("sweep", str(specs[kind]), *args, "--dry-run")
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("dlspec: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_resume_refuses_episodes(tmp_path):
    code, _, err = run_main("sweep", "--resume", str(tmp_path), "--episodes", "5")
    assert code == 2 and "--episodes cannot change" in err


# ---- every objective: trials --------------------------------------------------------------------------


def lines_of(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_autoencoder_sweep_on_ray(tmp_path):
    """A denoising autoencoder's sweep end to end: two noise levels, one short epoch each; the
    value of each trial is the lowest test_mse of its metrics.jsonl (read here independently)."""
    pytest.importorskip("ray")
    from dlspec.registry import OBJECTIVES

    (tmp_path / "ae.dl").write_text(AE, encoding="utf-8")
    r = run_cli("sweep", "ae.dl", "--param", "noise=0,0.3", "--out", "sw", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["complete"] and doc["counts"] == {"done": 2} and (doc["metric"], doc["mode"]) == ("test_mse", "min")
    reported = {m.name for m in OBJECTIVES["autoencoder"].metrics}
    for t in doc["trials"]:
        run = tmp_path / t["run_dir"]
        lines = lines_of(run)
        assert t["value"] == min(ln["test_mse"] for ln in lines) and t["epochs"] == len(lines) == 1
        assert json.loads((run / "config.json").read_text())["noise"] == t["settings"]["noise"]
        assert set(t["metrics"]) - {"epoch", "step", "seconds", "samples_per_s"} == reported  # what the registry lists
        assert (run / "summary.json").is_file() and (run / "recon.png").is_file()
    best = min(doc["trials"], key=lambda t: t["value"])
    assert doc["best"]["trial"] == best["trial"]
    assert "[2/2] trial" in r.stderr and "test_mse" in r.stderr and "after 1 epoch" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_dqn_sweep_on_ray(tmp_path):
    """A DQN's sweep: --episodes for every trial, the value the best greedy evaluation return, the
    final evaluation of the best weights kept as the trial's ``test``."""
    pytest.importorskip("ray")
    pytest.importorskip("gymnasium")
    (tmp_path / "q.dl").write_text(DQN, encoding="utf-8")
    r = run_cli("sweep", "q.dl", "--param", "hidden=8,16", "--episodes", "3", "--out", "sw", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["complete"] and doc["counts"] == {"done": 2} and (doc["metric"], doc["mode"]) == ("eval_return", "max")
    for t in doc["trials"]:
        run = tmp_path / t["run_dir"]
        lines = lines_of(run)
        assert [ln["episode"] for ln in lines] == [1, 2, 3] and t["epochs"] == 3
        assert t["value"] == max(ln["eval_return"] for ln in lines if "eval_return" in ln)
        final = json.loads((run / "eval.json").read_text())
        assert t["test"]["eval_mean_return"] == final["mean"] and t["test"]["eval_episodes"] == final["episodes"]
        assert json.loads((run / "config.json").read_text())["episodes"] == 3
    assert "after 3 episodes" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_gan_trial_and_its_samples(tmp_path):
    """One GAN trial without Ray: both models' parameters bound, every epoch reported, and
    ``dlspec sample`` on its weights binds them again (the spec's widths would not fit)."""
    from dlspec.sweep import Target, Trial, check_trial, knob

    spec = tmp_path / "gan.dl"
    spec.write_text(GAN, encoding="utf-8")
    prog = dlspec.load(spec)
    target = Target("gan", {"generator": "G", "discriminator": "D"})
    knobs = [knob(prog, target, n) for n in ("generator.width", "discriminator.width", "noise")]
    t = check_trial(
        prog, str(spec), target, {"epochs": 2}, knobs, Trial("000", {"generator.width": 8, "discriminator.width": 4, "noise": 0.5}), {}
    )
    assert t.status == "pending", t.error
    reports: list[dict] = []
    final = run_trial(spec, tmp_path / "t", t.config, reports.append)
    lines = lines_of(tmp_path / "t")
    assert [flat(r) for r in lines[:1]] == reports and final == {**flat(lines[1]), "dlspec_status": "done"}
    assert {"train_g_loss", "test_d_acc", "train_d_loss", "train_d_acc", "train_d_real", "train_d_fake"} <= set(final)
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["params"] == {"G.width": 8, "D.width": 4} and cfg["noise"] == 0.5
    out = tmp_path / "g.png"
    code, _, err = run_main("sample", str(spec), "--weights", str(tmp_path / "t" / "last.safetensors"), "-n", "4", "-o", str(out))
    assert code == 0, err
    assert out.is_file()
