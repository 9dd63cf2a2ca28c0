"""The one training loop every objective plugs into (``dlspec train``).

An objective (the classifier, the autoencoder, the VAE, the GAN, the DQN, or one a user adds) is a
subclass of :class:`Objective`: it loads its data, builds its nets and optimizers, and trains one
batch (or one environment step) at a time. :class:`Loop` does the rest, the same way for all:

* units (epochs, or a DQN's episodes) of steps, ``steps``/``--max-steps`` as a step budget;
* tinygrad's random stream reseeded in place at every unit start from (seed, unit)
  (:func:`dlspec.resume.reseed`) and a NumPy generator per unit, so everything random is a pure
  function of (seed, unit);
* progress (an epoch bar and a step bar with a visible kernel-compiling phase, or log lines);
* a non-finite value stops the run with the step it happened at and what the last checkpoint keeps;
* after each unit: ``best.safetensors`` when the objective's score improved, ``last.safetensors``
  (atomic, the one it replaces kept as ``last.prev.safetensors``, with its tensors' digest and the
  run's history), then the unit's line of ``metrics.jsonl`` and the learning curves;
* ``--resume``: the checkpoint verified (digest, spec and data identity), every net, optimizer and
  the objective's own state restored, ``metrics.jsonl`` rewritten from the checkpoint's history,
  and training continues bit-identically to an uninterrupted run;
* ``summary.json`` at the end;
* several devices (``--devices``): checked, and the batch with them, before anything loads; every
  objective builds its nets with :meth:`Objective.build_net`, data parallel on them, and every
  device's random stream is reseeded (``docs/training.md``, "Several devices").

:func:`train_command` and :func:`resume_command` are ``dlspec train`` and ``dlspec train --resume``
for every objective: the run directory, the UI, the final table. How to add an objective:
``docs/training.md``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .errors import DlspecError, UsageError
from .train import TrainError, atomic_write_text, file_digest


@dataclass
class Position:
    """Where a run is: units (epochs or episodes) finished, steps taken, the best score so far."""

    unit: int = 0
    step: int = 0
    best: float | None = None

    @property
    def epoch(self) -> int:  # the classifier's name for it
        return self.unit


def clock() -> float:
    return time.perf_counter()


class Record:
    """``metrics.jsonl`` (one line per unit) and the history behind the plots."""

    def __init__(self, run_dir: Path, history: list[dict] | None = None):
        self.dir = Path(run_dir)
        self.history: list[dict] = []
        self._dirty = False  # the file holds lines that are not in the history (unreadable ones)
        path = self.dir / "metrics.jsonl"
        if history is not None:  # the checkpoint's: the file is rewritten to it
            self.history, self._dirty = list(history), True
        elif path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if isinstance(rec, dict):
                    self.history.append(rec)
                else:
                    self._dirty = True

    def keep(self, upto: int, key: str = "epoch") -> None:
        """Keep the records up to ``upto`` (the checkpoint's position); metrics.jsonl is
        rewritten atomically when that drops lines, so later appends follow whole lines."""
        kept = [r for r in self.history if r.get(key, 0) <= upto]
        if self._dirty or len(kept) != len(self.history):
            atomic_write_text(self.dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
            self._dirty = False
        self.history = kept

    def add(self, rec: dict) -> None:
        self.history.append(rec)
        self.write(rec)

    def write(self, rec: dict) -> None:
        """Append ``rec`` (already in the history) to metrics.jsonl."""
        from .train import append_line

        append_line(self.dir / "metrics.jsonl", rec)

    def series(self, *keys: str) -> dict[str, list[float]]:
        return {k: [r[k] for r in self.history if k in r and r[k] is not None] for k in keys}


class Bars:
    """The UI (:mod:`dlspec.progress`, or any object with its methods) with free step text."""

    def __init__(self, ui: Any, log: Callable[[str], None]):
        self.ui, self.log = ui, log

    def start(self, unit: int, units: int, steps: int) -> None:
        if self.ui is not None:
            self.ui.start_epoch(unit, units, steps)

    def step(self, i: int, info: str, compiling: bool = False) -> None:
        ui = self.ui
        if ui is None or getattr(ui, "progress", None) is None or getattr(ui, "step_task", None) is None:
            return
        text = "compiling kernels (first run only, cached afterwards)…" if compiling else info
        ui.progress.update(ui.step_task, completed=i, info=text)

    def end(self, units: int) -> None:
        if self.ui is not None:
            self.ui.end(units)


def finite(name: str, value: float, where: str) -> float:
    if not math.isfinite(value):
        raise TrainError(f"the {name} became {value} at {where}; training stopped (the last checkpoint is kept)")
    return value


#: wall-clock fields of a metrics line and a summary (the only ones two equal runs differ in)
WALL = ("seconds", "samples_per_s")


class Objective:
    """What an objective gives the loop. Override the methods marked *required*; the others have
    defaults that fit an objective trained in epochs of fixed-size batches (the autoencoder's)."""

    #: the name of its ``train`` section kind (``train autoencoder M``)
    kind = ""
    #: what a unit is called: ``epoch`` or ``episode`` (its metrics lines' and checkpoints' key)
    unit = "epoch"

    def __init__(self, prog, cfg, run_dir: Path, log: Callable[[str], None], ui: Any = None):
        from .train import SpecPlaces

        self.prog, self.cfg, self.dir, self.log, self.ui = prog, cfg, Path(run_dir), log, ui
        self.places = SpecPlaces(prog, cfg)
        self.device: str | None = None
        self.record: Record | None = None  # the run's metrics (set by the loop)

    # required ----------------------------------------------------------------------------------
    def prepare(self, meta: dict[str, str]) -> None:
        """Load the data (``meta``: the checkpoint's metadata when resuming, else empty)."""
        raise NotImplementedError

    def setup(self) -> None:
        """Build the nets, optimizers and compiled steps; set ``self.device``; log what was built."""
        raise NotImplementedError

    def parts(self) -> dict[str, Any]:
        """``{prefix: net or optimizer}``: what a checkpoint holds (their tensors under ``prefix.``)."""
        raise NotImplementedError

    def batches(self, unit: int, rng: np.random.Generator) -> Iterable[Any]:
        """The steps of unit ``unit``, one item each (a batch; a DQN's environment step)."""
        raise NotImplementedError

    def train_step(self, batch: Any, pos: Position) -> tuple[dict[str, float], float]:
        """One step on ``batch``: ``(sums, weight)`` — values summed over the step's ``weight``
        samples (the unit's mean of a value is its sum over its weight), checked to be finite."""
        raise NotImplementedError

    def end_unit(self, unit: int, means: dict[str, float], pos: Position, seconds: float, samples: int) -> dict[str, Any]:
        """The metrics line of a finished unit (evaluation, images: here)."""
        raise NotImplementedError

    def summary(self, history: list[dict], pos: Position, wall: float, samples: int) -> dict[str, Any]:
        """``summary.json`` of the finished run (a final test evaluation: here)."""
        raise NotImplementedError

    # optional ----------------------------------------------------------------------------------
    def data_identity(self) -> tuple[str, str | None]:
        """``(name, sha256)`` of what the run trains on: a resume with other data is refused."""
        return self.cfg.data, None

    def units(self) -> int:
        return self.cfg.epochs

    def steps_per_unit(self) -> int:
        return self.loader.steps_per_epoch()

    def start_unit(self, unit: int, rng: np.random.Generator) -> None:
        return None

    def samples(self, batch: Any) -> int:
        """How many samples a step trains on (for samples/s)."""
        return len(batch)

    def compiling(self, batch: Any, pos: Position, first: int) -> bool:
        """Whether this step compiles kernels (``first``: the step the process started at)."""
        return pos.step - first < 2

    def progress(self, i: int, means: dict[str, float], rate: float, compiling: bool) -> None:
        """The step bar after ``i`` steps of the unit (``compiling``: before a compiling step)."""
        self.bars.step(i, self.describe(means) + f"  {rate:,.0f} samples/s", compiling)

    def describe(self, m: dict[str, float]) -> str:
        return " ".join(f"{k} {v:.4f}" for k, v in m.items())

    def unit_line(self, record: dict[str, Any]) -> str:
        m = {k: v for k, v in record.items() if k not in (self.unit, "step", *WALL)}
        return f"{self.unit} {record[self.unit]}/{self.units()}: {self.describe(m)} | {record['samples_per_s']:.0f} samples/s"

    def score(self, record: dict[str, Any]) -> float | None:
        """The value ``best.safetensors`` is chosen by (higher is better); ``None``: no best."""
        return None

    def checkpoint_due(self, record: dict[str, Any]) -> bool:
        return True

    def meta(self, pos: Position) -> dict[str, str]:
        """The checkpoint's metadata of the position (and of the objective's own state)."""
        return {"epoch": str(pos.unit), "step": str(pos.step)}

    def position(self, path: Path, meta: dict[str, str]) -> Position:
        """Undo :meth:`meta`."""
        try:
            return Position(int(meta.get(self.unit, 0)), int(meta.get("step", 0)), json.loads(meta.get("best", "null")))
        except ValueError:
            raise TrainError(f"{path}: not a dlspec checkpoint (no position in its metadata)") from None

    def arrays(self) -> dict[str, np.ndarray]:
        """Host arrays a checkpoint holds besides :meth:`parts` (a replay buffer)."""
        return {}

    def check_resumable(self, path: Path, meta: dict[str, str]) -> None:
        return None

    def restore(self, path: Path, meta: dict[str, str]) -> None:
        """The objective's own state from the checkpoint (:meth:`parts` are already loaded)."""
        return None

    def resumed_line(self, pos: Position) -> str:
        return f"resumed after {self.unit} {pos.unit} (step {pos.step})"

    def best_checkpoint(self, pos: Position, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]] | None:
        """What ``best.safetensors`` holds (default: what ``last.safetensors`` does)."""
        return None

    def plot(self, history: list[dict]) -> None:
        return None

    def nonfinite(self, name: str, value: float, pos: Position, unit: int, i: int) -> TrainError:
        last = self.dir / "last.safetensors"
        kept = (
            f"; {last} keeps the weights after {self.unit} {pos.unit}"
            if last.exists()
            else f"; no checkpoint was written (it fails in the first {self.unit})"
        )
        return TrainError(
            f"the {name} became {value} at step {pos.step + 1} ({self.unit} {unit + 1}, batch {i + 1}); training stopped{kept}."
            " Try a smaller --lr or --clip."
        )

    def close(self) -> None:
        return None

    # shared helpers ------------------------------------------------------------------------------
    @property
    def bars(self) -> Bars:
        return Bars(self.ui, self.log)

    def optimizer(self, params: list, name: str, lr: float, options: dict[str, Any], role: str = "", **extra: Any):
        """``optimizer name`` over ``params``; a bad option is an error at the spec line that set it."""
        from . import optim
        from .train import OPTIMIZER_FIELDS

        c = self.cfg
        try:
            return optim.make_optimizer(name, params, lr, weight_decay=c.weight_decay, clip=c.clip, **extra, **options)
        except (ValueError, TypeError) as e:
            fields = (f"{role}optimizer", f"{role}optimizer_options", f"{role}lr") if role else OPTIMIZER_FIELDS
            raise self.places.error(f"optimizer {name}: {e}", *fields, "weight_decay", "clip") from None

    @property
    def placement(self) -> str | tuple[str, ...] | None:
        """The device the nets go on, or the devices (a tuple) each batch is split across."""
        return placement(self.cfg)

    def build_net(self, model: str, seed: int):
        """``model`` built on the run's device(s), batch norm as its ``sync_bn`` setting says: every
        objective builds its nets here, so ``--devices`` trains each of them data parallel."""
        return self.prog.build(model, device=self.placement, seed=seed, sync_bn=bool(getattr(self.cfg, "sync_bn", False)))

    def run(self, resume: bool = False, on_unit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Train (``resume``: from ``last.safetensors``) with :class:`Loop`; the summary."""
        return Loop(self, on_unit).run(resume)


class Loop:
    """Runs an :class:`Objective` (see the module docstring). ``on_unit`` is called with each
    finished unit's metrics line once its checkpoint and line are written (``dlspec sweep``
    reports it to Ray Tune there)."""

    def __init__(self, objective: Objective, on_unit: Callable[[dict[str, Any]], None] | None = None):
        self.o = objective
        self.on_unit = on_unit

    def checkpoint(
        self, name: str, pos: Position, history: list[dict], parts: dict[str, Any] | None = None, meta: dict | None = None
    ) -> None:
        from . import resume as exact
        from .objectives.common import save_checkpoint

        o, c = self.o, self.o.cfg
        if parts is None:
            meta = {
                **o.meta(pos),
                "kind": o.kind,
                "model": c.model,
                exact.SPEC_KEY: self.spec_sha,
                **({exact.DATA_KEY: self.data_sha} if self.data_sha is not None else {}),
                "history": json.dumps(history),
            }
            parts, arrays = o.parts(), o.arrays()
        else:
            arrays = {}
        save_checkpoint(o.dir / name, parts, meta or {}, arrays=arrays)

    def run(self, resume: bool = False) -> dict[str, Any]:
        from . import resume as exact
        from .objectives.common import load_checkpoint

        o, c = self.o, self.o.cfg
        last = o.dir / "last.safetensors"
        self.spec_sha = file_digest(o.dir / "spec.dl") if (o.dir / "spec.dl").exists() else ""
        check_placement(o.prog, c)  # devices that are not here, or a batch they cannot share: before anything loads
        meta = exact.check(last) if resume else {}  # a damaged checkpoint fails before the data are loaded
        o.prepare(meta)
        data_name, self.data_sha = o.data_identity()
        if resume:
            exact.check_identity(last, meta, o.dir / "spec.dl", self.spec_sha, data_name, self.data_sha)
            kind = meta.get("kind", o.kind)
            if kind != o.kind or meta.get("model", c.model) != c.model:
                raise TrainError(f"{last}: the checkpoint holds a 'train {kind} {meta.get('model')}' run, not 'train {o.kind} {c.model}'")
            o.check_resumable(last, meta)
        o.setup()
        pos, history = Position(), None
        if resume:
            load_checkpoint(last, o.parts(), verify=False)
            pos = o.position(last, meta)
            o.restore(last, meta)
            if "history" in meta:
                try:
                    history = [r for r in json.loads(meta["history"]) if isinstance(r, dict)]
                except ValueError:
                    history = None
        rec = o.record = Record(o.dir, history)  # the objective reads the history (a DQN's mean of the last returns)
        rec.keep(pos.unit, key=o.unit)  # lines of units after the checkpoint (killed in between) are redone
        total = o.units()
        if resume:
            o.plot(rec.history)  # the curves of the same units
            if pos.unit >= total or (c.max_steps is not None and pos.step >= c.max_steps):
                o.log(f"the run is already complete ({pos.unit} {o.unit}s, {pos.step} steps); pass --{o.unit}s N to train further")
            else:
                o.log(o.resumed_line(pos))
        epochs = o.unit == "epoch"  # a step bar per epoch; episodes: one bar of episodes
        steps = o.steps_per_unit() if epochs else total
        bars = o.bars
        if not epochs:
            bars.start(0, 1, total)
        started, samples, first = clock(), 0, pos.step
        for unit in range(pos.unit, total):
            if c.max_steps is not None and pos.step >= c.max_steps:
                break
            exact.reseed(o.device, exact.epoch_seed(c.seed, unit))
            rng = np.random.default_rng([c.seed, unit, 0x0B1EC])
            o.start_unit(unit, rng)
            if epochs:
                bars.start(unit, total, steps)
            sums: dict[str, float] = defaultdict(float)
            weights: dict[str, float] = defaultdict(float)
            t0, n, seen = clock(), 0, 0
            means: dict[str, float] = {}
            for i, batch in enumerate(o.batches(unit, rng)):
                if c.max_steps is not None and pos.step >= c.max_steps:
                    break
                if epochs and o.compiling(batch, pos, first):
                    o.progress(i, means, 0.0, True)
                vals, weight = o.train_step(batch, pos)
                for k, v in vals.items():
                    if not math.isfinite(v):
                        raise o.nonfinite(k, v, pos, unit, i)
                    sums[k] += v
                    weights[k] += weight
                pos.step += 1
                n += 1
                seen += o.samples(batch)
                means = {k: sums[k] / max(weights[k], 1e-30) for k in sums}
                if epochs:
                    o.progress(i + 1, means, seen / max(clock() - t0, 1e-9), False)
            if n == 0:
                break
            samples += seen
            pos.unit = unit + 1
            record = o.end_unit(unit, means, pos, clock() - t0, seen)
            # the checkpoints first (their history holds the unit's line), then the line: killed in between, the
            # resumed run rewrites metrics.jsonl from the checkpoint; a failed checkpoint leaves no line behind
            rec.history.append(record)
            score = o.score(record)
            if score is not None and (pos.best is None or score > pos.best):
                pos.best = score
                best = o.best_checkpoint(pos, record)
                self.checkpoint("best.safetensors", pos, rec.history, *(best or ()))
            if o.checkpoint_due(record):
                self.checkpoint("last.safetensors", pos, rec.history)
            rec.write(record)
            if o.checkpoint_due(record):
                o.plot(rec.history)
                o.log(o.unit_line(record))
            if self.on_unit is not None:
                self.on_unit(record)
            if epochs:
                bars.end(pos.unit)  # the epoch bar counts finished epochs
            else:
                o.progress(pos.unit, {}, 0.0, False)
        if not epochs:
            bars.end(1)
        summary = o.summary(rec.history, pos, clock() - started, samples)
        atomic_write_text(o.dir / "summary.json", json.dumps(summary, indent=2))
        o.close()
        return summary


# ---- several devices ---------------------------------------------------------------------------------


def placement(cfg: Any) -> str | tuple[str, ...] | None:
    """Where a run's nets go: its ``device``, or the tuple of its ``devices`` (data parallel)."""
    devices = getattr(cfg, "devices", None)
    return tuple(devices) if devices else cfg.device


def check_placement(prog, cfg: Any) -> None:
    """A run on several devices: they exist here, are listed once, and share its batch evenly
    (each device takes ``batch / N`` samples of every step, as tinygrad cannot split a batch
    unevenly). Errors are at the spec lines that set the values, or usage errors (exit code 2) when
    the command line did."""
    devices = getattr(cfg, "devices", None)
    if not devices:
        return
    from .backends.tinygrad import check_devices
    from .train import SpecPlaces

    places = SpecPlaces(prog, cfg)
    try:
        check_devices(devices)
    except UsageError as e:
        raise places.error(e.diagnostics[0].message, "devices", cli=UsageError) from None
    n, b = len(devices), cfg.batch
    if b % n:
        lower, upper = b - b % n, b - b % n + n
        what = "batch" if places.span("batch") is not None else "--batch"
        choice = f"{lower} or {upper}" if lower else f"{upper}"
        raise places.error(
            f"{what} {b} does not divide across {n} devices ({', '.join(devices)}): each device takes an equal share of every batch;"
            f" use a multiple of {n} ({choice})",
            "batch",
            "devices",
            cli=UsageError,
        )


# ---- dlspec train -----------------------------------------------------------------------------------


def runner(prog, cfg, run_dir: Path, log, ui: Any = None) -> Objective:
    """The objective of ``cfg.kind``: the class its :data:`dlspec.registry.OBJECTIVES` entry names."""
    import importlib

    from .registry import OBJECTIVES

    entry = OBJECTIVES.get(cfg.kind)
    if entry is None:  # pragma: no cover - resolve() only makes registered kinds
        raise ValueError(cfg.kind)
    module, _, name = entry.runner.partition(":")
    return getattr(importlib.import_module(module), name)(prog, cfg, run_dir, log, ui)


def train_command(args, prog, cfg, run_dir: Path | None = None, resume: bool = False) -> int:
    """``dlspec train``: a new run directory (or ``run_dir`` to resume), the loop, and the final
    table (``--json``: the summary)."""
    from .progress import QuietUI, RichUI, print_summary
    from .runfiles import WriteError
    from .train import start_run_dir, stopped

    episodes = getattr(args, "episodes", None)
    if episodes is not None and run_dir is None:
        if cfg.kind != "dqn":
            raise UsageError(f"--episodes applies to 'train dqn' only; 'train {cfg.kind}' trains for --epochs")
        if episodes < 1:
            raise UsageError(f"--episodes must be positive, got {episodes}")
        cfg = cfg.model_copy(update={"episodes": episodes})
    new = run_dir is None
    if run_dir is None:
        if cfg.kind == "classifier":
            from .backends.tinygrad import check_device
            from .train import SpecPlaces

            try:
                check_device(cfg.device)  # a bad --device fails before a run directory is made
            except UsageError as e:  # at the spec's line when the spec named it
                raise SpecPlaces(prog, cfg).error(e.diagnostics[0].message, "device", "devices", cli=UsageError) from None
        check_placement(prog, cfg)  # so do bad --devices and a batch they cannot share
        run_dir = start_run_dir(Path(args.out), cfg.model, args.file, cfg.model_dump_json(indent=2))
    quiet = args.quiet or args.json or not sys.stderr.isatty()
    ui = QuietUI() if quiet else RichUI()
    with ui:
        ui.log(f"run directory {run_dir}")
        try:
            summary = runner(prog, cfg, run_dir, ui.log, ui).run(resume=resume)
        except DlspecError as e:
            if new and run_dir.exists() and not (run_dir / "last.safetensors").exists():
                shutil.rmtree(run_dir)  # failed before its first checkpoint: nothing to resume, leave no half-made run behind
            if isinstance(e, WriteError):
                raise stopped(e, run_dir) from None
            raise
    from .objectives import final_table

    print_summary(summary, args.json, final_table)
    return 0


def resume_command(args, run_dir: Path, overrides: dict[str, Any]) -> int:
    """``dlspec train --resume DIR`` of any objective's run."""
    from . import load
    from .train import RunConfig, check_resume_overrides, resume_placement, start_over

    fresh = start_over(run_dir)  # no checkpoint yet: the run trains from its start, in this directory
    try:
        raw = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        if raw.get("kind", "classifier") == "classifier":
            cfg: Any = RunConfig(**raw)
        else:
            from .objectives.config import ObjectiveConfig

            cfg = ObjectiveConfig(**raw)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{run_dir}/config.json is not a valid run configuration: {e}") from None
    check_resume_overrides(overrides)
    episodes = getattr(args, "episodes", None)
    if cfg.kind == "dqn":
        if "epochs" in overrides:
            raise UsageError("--epochs does not apply to 'train dqn' (it learns from its environment; use --episodes)")
        if episodes is not None:
            if episodes < 1:
                raise UsageError(f"--episodes must be positive, got {episodes}")
            overrides = {**overrides, "episodes": episodes}
    elif episodes is not None:
        raise UsageError(f"--episodes applies to 'train dqn' only; 'train {cfg.kind}' trains for --epochs")
    overrides = resume_placement(cfg, overrides)  # --device/--devices: the run goes on there
    try:
        cfg = type(cfg)(**{**cfg.model_dump(), **overrides})
    except Exception as e:  # noqa: BLE001 - pydantic names the field
        raise UsageError(f"bad --epochs/--device/--devices: {e}") from None
    prog = load(run_dir / "spec.dl", name=str(run_dir / "spec.dl"))
    if getattr(cfg, "params", None):  # a sweep trial's model parameters
        prog = prog.bind(cfg.params)
    check_placement(prog, cfg)  # bad --devices are refused before the run's config records them
    atomic_write_text(run_dir / "config.json", cfg.model_dump_json(indent=2))
    return train_command(args, prog, cfg, run_dir=run_dir, resume=not fresh)
