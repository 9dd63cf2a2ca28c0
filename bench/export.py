"""Export time for ResNet-50 and GPT-2 small (issue 13's goal: ≤ 2 s each without a weights file).

What ``dlspec export FILE --to onnx|pytorch -o OUT`` does in-process, phase by phase, median of
``--repeat`` runs (the spec file is parsed afresh each run):

- front end: load the spec, expand it to the IR, infer shapes;
- init: the seeded PyTorch-default initialisation of every tensor (NumPy; ``dlspec.state.initial``;
  ONNX only: without ``--weights`` a PyTorch module initialises itself);
- build: the ONNX graph (``onnx.helper``) with its initialisers, or the PyTorch module's source
  (formatted with ruff);
- write: serialise and write the file atomically (ONNX: protobuf with the weights inside;
  PyTorch: the ``.py`` file, plus the weights beside it when they are given).

Run: ``.venv/bin/python bench/export.py`` (``--models resnet50,gpt2``, ``--repeat N``, ``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dlspec  # noqa: E402
from dlspec import state  # noqa: E402

MODELS = {"resnet50": ("resnet.dl", "ResNet50"), "gpt2": ("gpt2_small.dl", "GPT2Small")}


def _gpt2_name() -> str:
    prog = dlspec.load(ROOT / "specs" / "gpt2_small.dl")
    return prog.models[0]


def one(file: str, model: str, target: str, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    prog = dlspec.load(ROOT / "specs" / file)
    graph, shapes = prog.ir(model), prog.shapes(model)
    t1 = time.perf_counter()
    # as the CLI: ONNX holds the weights, a PyTorch module without --weights initialises itself
    weights = state.initial(graph, shapes) if target == "onnx" else None
    t2 = time.perf_counter()
    if target == "onnx":
        from dlspec.backends import onnx as target_mod

        m = target_mod.build_model(graph, shapes, weights)
        t3 = time.perf_counter()
        from dlspec.runfiles import atomic_write

        atomic_write(out, m.SerializeToString(), what="ONNX model")
    else:
        from dlspec.backends import torch as target_mod

        src = target_mod.generate(graph, shapes)
        t3 = time.perf_counter()
        from dlspec.runfiles import atomic_write

        atomic_write(out, src, what="PyTorch module")
    t4 = time.perf_counter()
    return {
        "front_end_s": t1 - t0,
        "init_s": t2 - t1,
        "build_s": t3 - t2,
        "write_s": t4 - t3,
        "total_s": t4 - t0,
        "bytes": out.stat().st_size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,gpt2")
    ap.add_argument("--targets", default="onnx,pytorch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    MODELS["gpt2"] = ("gpt2_small.dl", _gpt2_name())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            file, model = MODELS[key]
            for target in args.targets.split(","):
                out = Path(tmp) / f"{key}.{'onnx' if target == 'onnx' else 'py'}"
                runs = [one(file, model, target, out) for _ in range(args.repeat)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                rows.append({"model": model, "target": target, **med})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':<12} {'target':<8} {'front end':>10} {'init':>8} {'build':>8} {'write':>8} {'total':>8} {'file':>10}")
    for r in rows:
        print(
            f"{r['model']:<12} {r['target']:<8} {r['front_end_s']:>9.2f}s {r['init_s']:>7.2f}s {r['build_s']:>7.2f}s "
            f"{r['write_s']:>7.2f}s {r['total_s']:>7.2f}s {r['bytes'] / 2**20:>7.1f} MiB"
        )


if __name__ == "__main__":
    main()
