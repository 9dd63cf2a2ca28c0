"""What the data-driven objectives (autoencoder, VAE, GAN) share, on the shared loop
(:mod:`dlspec.loop`).

A subclass builds its nets, optimizers and TinyJit steps in :meth:`EpochRun.setup`, trains one
fixed-shape batch in :meth:`EpochRun.train_batch` (returning floats to average), evaluates on the
test split in :meth:`EpochRun.evaluate`, and draws its images in :meth:`EpochRun.images`. The
loop writes ``metrics.jsonl`` (one flat line per epoch: ``train_*`` and ``test_*`` values),
``last.safetensors`` (every net and optimizer), the learning curves (``curves.svg`` /
``curves.png``) and ``summary.json``, and resumes bit-identically."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..loop import WALL, Objective, Position
from ..train import TrainError
from .common import Staging, fit_shape, load_images, need_batches, plot_curves


class EpochRun(Objective):
    #: metrics plotted in curves.svg/png
    curves: tuple[str, ...] = ("train_loss", "test_loss")

    def __init__(self, prog, cfg, run_dir: Path, log: Callable[[str], None], ui: Any = None):
        super().__init__(prog, cfg, run_dir, log, ui)
        self._staging: dict[tuple, Staging] = {}

    # to override ---------------------------------------------------------------------------------
    def train_batch(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def images(self, epoch: int) -> None:
        return None

    # the objective -------------------------------------------------------------------------------
    def prepare(self, meta: dict[str, str]) -> None:
        self.load_data()

    def data_identity(self) -> tuple[str, str | None]:
        from ..resume import data_digest

        return self.cfg.data, data_digest(self.train_data, self.test_data)

    def start_unit(self, unit: int, rng: np.random.Generator) -> None:
        self._rng = rng  # host-side noise (a GAN's z): a function of (seed, epoch)

    def batches(self, unit: int, rng: np.random.Generator):
        return (xb for xb, _ in self.loader.epoch(unit))

    def train_step(self, batch: np.ndarray, pos: Position) -> tuple[dict[str, float], float]:
        return self.train_batch(batch, self._rng), 1

    def end_unit(self, unit: int, means: dict[str, float], pos: Position, seconds: float, samples: int) -> dict[str, Any]:
        from ..loop import clock

        t0 = clock()
        test = {f"test_{k}": v for k, v in self.evaluate().items()}
        seconds += clock() - t0
        record = {
            "epoch": pos.unit,
            "step": pos.step,
            **{f"train_{k}": v for k, v in means.items()},
            **test,
            "seconds": round(seconds, 3),
            "samples_per_s": round(samples / max(seconds, 1e-9), 1),
        }
        self.images(pos.unit)
        return record

    def plot(self, history: list[dict]) -> None:
        series = {k: [r[k] for r in history if k in r and r[k] is not None] for k in self.curves}
        plot_curves(self.dir / "curves", series, title=f"{self.cfg.model} ({self.kind})")

    def summary(self, history: list[dict], pos: Position, wall: float, samples: int) -> dict[str, Any]:
        last = history[-1] if history else {}
        skip = ("epoch", "step", *WALL)
        return {
            "run_dir": str(self.dir),
            "kind": self.kind,
            "model": self.cfg.model,
            "device": self.device,
            "epochs": last.get("epoch", pos.unit),
            "steps": pos.step,
            "metrics": {k: v for k, v in last.items() if k not in skip},
            "first": {k: v for k, v in (history[0] if history else {}).items() if k not in skip},
            "wall_seconds": round(wall, 1),
            "samples_per_s": round(samples / wall, 1) if wall > 0 and samples else None,
        }

    # shared --------------------------------------------------------------------------------------
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
