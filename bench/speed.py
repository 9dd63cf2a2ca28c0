"""Training-step speed side by side: dlspec (tinygrad's default kernels, then after ``dlspec tune``)
against PyTorch eager, all in one run, through ``dlspec bench --against torch --json``.

Models (as in ``bench/backend.py``): MLP 784-256-256-10 (``specs/mlp.dl``, batch 128), LeNet-5
(``specs/lenet5.dl``, 64), ResNet-20 for CIFAR (``specs/resnet20_cifar.dl``, 32) and an LSTM
(``bench/lstm_t32.dl`` with T = 32, hidden 128, batch 32). Each model's loss and optimizer are
its spec's ``train`` section (the LSTM has none: cross_entropy and adam lr 0.001).

For each model: ``dlspec bench --untuned`` (first step cold and warm, steady step, PyTorch
beside it), then — with ``--tune`` — ``dlspec tune --beam K --budget S`` and ``dlspec bench``
again with the tuned kernels (``DLSPEC_TUNED=1``: used even where the tune's own before/after
measurement was within noise). Everything runs with caches of its own (``--cache DIR``, default
a new temporary folder: ``XDG_CACHE_HOME`` and ``CACHEDB``), so the user's caches are neither
used nor changed.

Run: ``.venv/bin/python bench/speed.py [--models mlp,lenet5] [--tune mlp=2:240,lenet5=2:300]
[--steps 30] [--threads 1] [--json]``; ``--tune NAME=BEAM:BUDGET`` per model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODELS = {
    # name: (spec, extra arguments of dlspec bench/tune)
    "mlp": ("specs/mlp.dl", ["--batch", "128"]),
    "lenet5": ("specs/lenet5.dl", ["--batch", "64"]),
    "resnet20": ("specs/resnet20_cifar.dl", ["--batch", "32"]),  # fewer timed steps: see STEPS
    "lstm": ("bench/lstm_t32.dl", ["--batch", "32", "--seq", "T=32"]),
}


#: timed steps per model where not --steps (ResNet-20's step takes about a second)
STEPS = {"resnet20": 10}


def dlspec(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dlspec", *args]
    print(
        "$ " + " ".join(f"{k}={v}" for k, v in env.items() if k not in ("XDG_CACHE_HOME", "CACHEDB")) + " dlspec " + " ".join(args),
        file=sys.stderr,
        flush=True,
    )
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in done.stderr.splitlines():
        if not line.startswith("kernel "):  # the tune's per-kernel progress lines
            print("  " + line, file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"dlspec {' '.join(args)} failed ({done.returncode})")
    return done


def bench(name: str, steps: int, env: dict[str, str], untuned: bool) -> dict:
    spec, extra = MODELS[name]
    args = ["bench", spec, *extra, "--steps", str(steps), "--against", "torch", "--json"] + (["--untuned"] if untuned else [])
    return json.loads(dlspec(*args, env=env).stdout)


def tune(name: str, beam: int, budget: float, env: dict[str, str]) -> dict:
    spec, extra = MODELS[name]
    t0 = time.perf_counter()
    done = dlspec("tune", spec, *extra, "--beam", str(beam), "--budget", str(budget), env=env)
    index = json.loads((Path(env["XDG_CACHE_HOME"]) / "dlspec" / "tuned.json").read_text())
    entry = [e for e in index["entries"] if e["spec"] == spec][-1]
    return {"beam": beam, "budget_s": budget, "wall_s": time.perf_counter() - t0, "entry": entry, "stdout": done.stdout.strip()}


def table(rows: list[dict]) -> str:
    out = [
        "| model (batch) | step dlspec | step dlspec tuned (BEAM, budget) | step PyTorch | ratio | ratio tuned |"
        " first step warm dlspec (tuned) | first step cold dlspec | first step PyTorch | RSS dlspec / PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, t = r["untuned"]["results"]["dlspec"], r["untuned"]["results"]["torch"]
        tuned = r.get("tuned")
        td = tuned["results"]["dlspec"] if tuned else None
        how = f"{r['tune']['beam']}, {r['tune']['budget_s']:.0f} s" if tuned else ""
        step_tuned = f"{td['step_ms']:.2f} ms ({how})" if td else "—"
        ratio_tuned = f"{tuned['ratio_step']:.2f}" if tuned else "—"
        warm_tuned = f" ({td['first_step_warm_s']:.2f} s)" if td else ""
        out.append(
            f"| {r['model']} ({r['untuned']['batch']}) | {d['step_ms']:.2f} ms | {step_tuned} | {t['step_ms']:.2f} ms"
            f" | {r['untuned']['ratio_step']:.2f} | {ratio_tuned} | {d['first_step_warm_s']:.2f} s{warm_tuned}"
            f" | {d['first_step_cold_s']:.1f} s | {t['first_step_warm_s']:.2f} s | {d['rss_mb']:.0f} / {t['rss_mb']:.0f} MB |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--tune", default="", help="NAME=BEAM:BUDGET,… models to tune, e.g. mlp=2:240,lenet5=2:300")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 30; ResNet-20 10)")
    ap.add_argument("--cache", help="folder for the run's own caches (default: a new temporary folder)")
    ap.add_argument("--threads", type=int, help="tinygrad's CPU threads (NUM_CPU_THREADS), and so PyTorch's (default: tinygrad's choice)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cache = Path(a.cache) if a.cache else Path(tempfile.mkdtemp(prefix="dlspec-speed-"))
    env = {"XDG_CACHE_HOME": str(cache / "xdg"), "CACHEDB": str(cache / "tinygrad.db")}
    if a.threads:
        env["NUM_CPU_THREADS"] = str(a.threads)
    plans = {}
    for item in filter(None, a.tune.split(",")):
        name, _, how = item.partition("=")
        beam, _, budget = how.partition(":")
        plans[name] = (int(beam or 2), float(budget or 300))
    rows = []
    for name in a.models.split(","):
        steps = a.steps or STEPS.get(name, 30)
        row: dict = {"model": name, "untuned": bench(name, steps, env, untuned=True)}
        if name in plans:
            row["tune"] = tune(name, *plans[name], env)
            row["tuned"] = bench(name, steps, {**env, "DLSPEC_TUNED": "1"}, untuned=False)
        rows.append(row)
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=1))
    else:
        print(table(rows))


if __name__ == "__main__":
    main()
