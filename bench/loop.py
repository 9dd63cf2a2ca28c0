"""The shared training loop's speed on the classifier: LeNet-5 samples/s on MNIST.

Runs ``dlspec train specs/lenet5.dl`` (its ``train`` section: SGD momentum 0.9, cosine, batch
64) on the first ``--limit`` MNIST training images for ``--epochs`` epochs, ``--repeats`` times in
fresh processes, and reports the samples/s of every epoch after the first (the first one compiles
the kernels) as ``metrics.jsonl`` records them: the epoch's training samples over its wall time,
the loop's bookkeeping (progress, validation, checkpoint, metrics line, plot) included.

Run: ``.venv/bin/python bench/loop.py [--data-dir /work/shared/data/mnist] [--limit 6400]
[--epochs 3] [--repeats 3] [--against DIR] [--json]``; ``--against DIR`` alternates every run with
one of the package in ``DIR`` (the code before a change: ``git archive HEAD dlspec grammar | tar -x
-C DIR``), so that both see the same machine load. The figures are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(args: argparse.Namespace, out: Path) -> list[float]:
    cmd = [
        sys.executable, "-m", "dlspec", "train", str(ROOT / "specs/lenet5.dl"), "--data", "mnist",
        "--data-dir", args.data_dir, "--limit", str(args.limit), "--epochs", str(args.epochs),
        "--out", str(out), "--quiet", "--json",
    ]  # fmt: skip
    src = Path(args.src) if args.src else ROOT  # another copy of the package (the code before a change), same specs
    done = subprocess.run(cmd, cwd=src, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dlspec train failed ({done.returncode}):\n{done.stderr}")
    run_dir = Path(json.loads(done.stdout)["run_dir"])
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["samples_per_s"] for r in lines[1:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="/work/shared/data/mnist")
    ap.add_argument("--limit", type=int, default=6400)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--src", help="run the dlspec package of this folder instead (e.g. `git archive HEAD dlspec grammar` unpacked)")
    ap.add_argument("--against", help="alternate runs with the package of this folder (an A/B under the same load)")
    args = ap.parse_args()
    sides = {"this": args.src, **({"against": args.against} if args.against else {})}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for side, src in sides.items():
                args.src = src
                r = one_run(args, Path(tmp) / f"{side}{k}")
                print(f"{side} run {k + 1}: " + ", ".join(f"{v:,.0f}" for v in r) + " samples/s", file=sys.stderr, flush=True)
                rates[side] += r
    result = {side: {"samples_per_s": r, "median": statistics.median(r), "best": max(r)} for side, r in rates.items()}
    if args.json:
        print(json.dumps(result))
    else:
        for side, r in result.items():
            print(f"{side}: LeNet-5 on MNIST ({args.limit} samples, batch 64): median {r['median']:,.0f} samples/s, best {r['best']:,.0f}")


if __name__ == "__main__":
    main()
