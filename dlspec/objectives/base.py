"""The epoch loop the data-driven objectives (autoencoder, VAE, GAN) share.

A subclass builds its nets, optimizers and TinyJit steps in :meth:`EpochRun.setup`, trains one
fixed-shape batch in :meth:`EpochRun.train_batch` (returning floats to average), evaluates on the
test split in :meth:`EpochRun.evaluate`, and draws its images in :meth:`EpochRun.images`. The loop
writes ``metrics.jsonl`` (one flat line per epoch), ``last.safetensors`` (every net and optimizer,
atomically, the one it replaces kept as ``last.prev.safetensors``), the learning curves
(``curves.svg`` / ``curves.png``) and ``summary.json``. Batches, host-side noise and tinygrad's random
stream (reseeded in place: :func:`dlspec.resume.reseed`) are a pure function of (seed, epoch), so
``--resume`` continues bit-identically after the last finished epoch; a damaged checkpoint, another
spec or other data are refused (:mod:`dlspec.resume`)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..train import TrainError, atomic_write_text, file_digest
from .common import (
    Bars,
    Record,
    Staging,
    clock,
    finite,
    fit_shape,
    load_checkpoint,
    load_images,
    need_batches,
    plot_curves,
    save_checkpoint,
)


class EpochRun:
    kind = ""
    #: metrics plotted in curves.svg/png
    curves: tuple[str, ...] = ("train_loss", "test_loss")

    def __init__(self, prog, cfg, run_dir: Path, log: Callable[[str], None], ui: Any = None):
        from ..train import SpecPlaces

        self.prog, self.cfg, self.dir, self.log = prog, cfg, Path(run_dir), log
        self.bars = Bars(ui, log)
        self._staging: dict[tuple, Staging] = {}
        self.places = SpecPlaces(prog, cfg)

    # to override ---------------------------------------------------------------------------------
    def setup(self) -> None:
        raise NotImplementedError

    def parts(self) -> dict[str, Any]:
        raise NotImplementedError

    def train_batch(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def images(self, epoch: int) -> None:
        return None

    def describe(self, m: dict[str, float]) -> str:
        return " ".join(f"{k} {v:.4f}" for k, v in m.items())

    # shared --------------------------------------------------------------------------------------
    def optimizer(self, params: list, name: str, lr: float, options: dict[str, Any], role: str = ""):
        """``optimizer name`` over ``params``; a bad option is an error at the spec line that set it."""
        from .. import optim
        from ..train import OPTIMIZER_FIELDS

        c = self.cfg
        try:
            return optim.make_optimizer(name, params, lr, weight_decay=c.weight_decay, clip=c.clip, **options)
        except (ValueError, TypeError) as e:
            fields = (f"{role}optimizer", f"{role}optimizer_options", f"{role}lr") if role else OPTIMIZER_FIELDS
            raise self.places.error(f"optimizer {name}: {e}", *fields, "weight_decay", "clip") from None

    def fit_shape(self, net, what: str = "input") -> tuple[int, ...]:
        """The shape ``net``'s input takes the data's samples in (:func:`.common.fit_shape`); a misfit is
        an error at the spec's ``data`` line."""
        try:
            return fit_shape(net, self.train_data, self.cfg, what)
        except TrainError as e:
            raise self.places.locate(e, "data", "data_options") from None

    def load_data(self) -> None:
        from .. import data
        from ..errors import DlspecError

        c = self.cfg
        try:
            self.train_data = load_images(c, "train")
            self.test_data = load_images(c, "test")
            need_batches(self.train_data, c.batch, c)
            need_batches(self.test_data, c.batch, c)
        except DlspecError as e:
            raise self.places.locate(e, "data", "data_options", "data_dir", "limit") from None
        self.loader = data.Loader(self.train_data, c.batch, c.seed, shuffle=True, drop_last=True)
        self.test_loader = data.Loader(self.test_data, c.batch, c.seed, shuffle=False, drop_last=True)

    def tensor(self, xb: np.ndarray, shape: tuple[int, ...], scale: tuple[float, float] = (1.0, 0.0), slot: str = "x"):
        """The batch as a realized device tensor (written into a reused buffer, one per ``slot`` and shape)."""
        a, b = scale
        x = xb.reshape(xb.shape[0], *shape).astype(np.float32)
        if (a, b) != (1.0, 0.0):
            x = x * a + b
        key = (slot, x.shape)
        st = self._staging.get(key)
        if st is None:
            st = self._staging[key] = Staging(x.shape, device=self.device)
        return st.set(x)

    def run(self, resume: bool = False) -> dict[str, Any]:
        from .. import resume as exact

        c = self.cfg
        last = self.dir / "last.safetensors"
        self.spec_sha = file_digest(self.dir / "spec.dl") if (self.dir / "spec.dl").exists() else ""
        meta = exact.check(last) if resume else {}  # a damaged checkpoint fails before the data are loaded
        self.load_data()
        self.data_sha = exact.data_digest(self.train_data, self.test_data)
        if resume:
            exact.check_identity(last, meta, self.dir / "spec.dl", self.spec_sha, c.data, self.data_sha)
            if meta.get("kind", self.kind) != self.kind or meta.get("model", c.model) != c.model:
                raise TrainError(
                    f"{last}: the checkpoint holds a 'train {meta.get('kind')} {meta.get('model')}' run, not 'train {self.kind} {c.model}'"
                )
        self.setup()
        start, step = 0, 0
        if resume:
            meta = load_checkpoint(last, self.parts(), verify=False)
            start, step = int(meta.get("epoch", 0)), int(meta.get("step", 0))
            self.log(f"resumed after epoch {start} (step {step})")
        rec = Record(self.dir)
        rec.keep(start)
        steps = self.loader.steps_per_epoch()
        started, samples = clock(), 0
        for epoch in range(start, c.epochs):
            exact.reseed(self.device, exact.epoch_seed(c.seed, epoch))
            rng = np.random.default_rng([c.seed, epoch, 0x0B1EC])
            self.bars.start(epoch, c.epochs, steps)
            sums: dict[str, float] = defaultdict(float)
            t0, n = clock(), 0
            for i, (xb, _) in enumerate(self.loader.epoch(epoch)):
                if c.max_steps is not None and step >= c.max_steps:
                    break
                compiling = step - start * steps < 2 and epoch == start
                vals = self.train_batch(xb, rng)
                for k, v in vals.items():
                    finite(k, v, f"step {step + 1} (epoch {epoch + 1}, batch {i + 1})")
                    sums[k] += v
                step += 1
                n += 1
                samples += len(xb)
                rate = n * c.batch / max(clock() - t0, 1e-9)
                self.bars.step(i + 1, self.describe({k: v / n for k, v in sums.items()}) + f"  {rate:,.0f} samples/s", compiling)
            if n == 0:
                break
            train = {f"train_{k}": v / n for k, v in sums.items()}
            test = {f"test_{k}": v for k, v in self.evaluate().items()}
            seconds = clock() - t0
            record = {
                "epoch": epoch + 1,
                "step": step,
                **train,
                **test,
                "seconds": round(seconds, 3),
                "samples_per_s": round(n * c.batch / seconds, 1),
            }
            self.images(epoch + 1)
            # the line before the checkpoint: killed in between, the resumed run drops it (Record.keep) and redoes the
            # epoch; the other way round a checkpointed epoch would have no line
            rec.add(record)
            save_checkpoint(
                last,
                self.parts(),
                {
                    "epoch": str(epoch + 1),
                    "step": str(step),
                    "kind": self.kind,
                    "model": c.model,
                    exact.SPEC_KEY: self.spec_sha,
                    exact.DATA_KEY: self.data_sha,
                },
            )
            plot_curves(self.dir / "curves", rec.series(*self.curves), title=f"{c.model} ({self.kind})")
            self.log(
                f"epoch {epoch + 1}/{c.epochs}: "
                + self.describe({k: v for k, v in {**train, **test}.items()})
                + f" | {record['samples_per_s']:.0f} samples/s"
            )
            if c.max_steps is not None and step >= c.max_steps:
                break
        last = rec.history[-1] if rec.history else {}
        self.bars.end(last.get("epoch", start))
        wall = clock() - started
        summary = {
            "run_dir": str(self.dir),
            "kind": self.kind,
            "model": c.model,
            "device": self.device,
            "epochs": last.get("epoch", start),
            "steps": step,
            "metrics": {k: v for k, v in last.items() if k not in ("epoch", "step", "seconds", "samples_per_s")},
            "first": {
                k: v for k, v in (rec.history[0] if rec.history else {}).items() if k not in ("epoch", "step", "seconds", "samples_per_s")
            },
            "wall_seconds": round(wall, 1),
            "samples_per_s": round(samples / wall, 1) if wall > 0 and samples else None,
        }
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2))
        return summary
