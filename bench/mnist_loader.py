"""How much of a LeNet-5 MNIST epoch the data loader takes: one epoch of ``dlspec train``'s loader
(shuffle, normalise, batch; the spec's train section's batch and validation split) and the
host-to-device copy of each batch, without training, timed against the run's epoch time.

Run: ``.venv/bin/python bench/mnist_loader.py [--data-dir ../shared/data/mnist] [--spec specs/lenet5.dl]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=str(ROOT / "specs" / "lenet5.dl"))
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    args = ap.parse_args()
    from tinygrad import Tensor, dtypes

    import dlspec
    from dlspec.objectives.classifier import Classifier
    from dlspec.train import resolve

    prog = dlspec.load(Path(args.spec))
    cfg = resolve(prog, args.spec, None, {"data_dir": args.data_dir})
    tr = Classifier(prog, cfg, Path("."), print)
    t0 = time.perf_counter()
    tr.load_data()
    load_s = time.perf_counter() - t0
    tr.reshape = tuple(tr.train_data.sample_shape)
    from dlspec.objectives.common import Staging

    staging: dict = {}
    for what, copy in (("batches", None), ("batches + new device tensors", "new"), ("batches + staging buffers", "staged")):
        t0 = time.perf_counter()
        n = 0
        for xb, yb in tr.loader.epoch(0):
            xb = xb.reshape(xb.shape[0], *tr.reshape)
            if copy == "new":  # a new tensor per batch (Tensor(array))
                Tensor.realize(Tensor(xb), Tensor(yb.astype("int32"), dtype=dtypes.int32))
            elif copy == "staged":  # written into reused device buffers (dlspec.objectives.common.Staging)
                for a, dt in ((xb, dtypes.float32), (yb, dtypes.int32)):
                    st = staging.get((a.shape, dt)) or staging.setdefault((a.shape, dt), Staging(a.shape, dt))
                    st.set(a)
            n += len(yb)
        dt = time.perf_counter() - t0
        print(f"one epoch of {what}: {n:,} samples in {dt:.2f} s ({n / dt:,.0f} samples/s, batch {cfg.batch})")
    print(f"reading and decoding the files, splitting, normalising: {load_s:.2f} s (once per run)")


if __name__ == "__main__":
    main()
