"""Stage 5: training and evaluation of classifiers (``dlspec train`` / ``dlspec eval``).

A run reads the spec's ``train`` section, applies command-line overrides, and writes a
run directory ``runs/<model>-<timestamp>/``: the spec copy, ``config.json``,
``metrics.jsonl`` (one line per epoch), ``last.safetensors`` (weights + optimizer state +
position, after every epoch; the one it replaces kept as ``last.prev.safetensors``),
``best.safetensors`` (by validation metric), ``loss.svg``. Files are written atomically.
Everything random is a pure function of (seed, epoch), so ``--resume`` continues
bit-identically to an uninterrupted run (:mod:`dlspec.resume`: the in-place reseed, the
checkpoint digests, the spec and data identity checks). Errors found once training starts are
reported at the spec line that set the value (:class:`SpecPlaces`).
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from .errors import Diagnostic, DlspecError, UsageError


class TrainError(DlspecError):
    """A training run that cannot go on (bad checkpoint, non-finite loss, mismatched data)."""

    stage = "train"


class RunConfig(BaseModel):
    """The resolved configuration of a run (the spec's ``train`` section + overrides)."""

    model_config = ConfigDict(extra="forbid")

    spec: str
    model: str
    kind: str = "classifier"
    data: str = "shapes"
    data_options: dict[str, Any] = {}
    data_dir: str | None = None
    loss: str = "cross_entropy"
    loss_options: dict[str, Any] = {}
    optimizer: str = "adam"
    optimizer_options: dict[str, Any] = {}
    lr: float = Field(1e-3, ge=0)
    schedule: str = "constant"
    schedule_options: dict[str, Any] = {}
    weight_decay: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    clip: float | None = Field(None, gt=0)
    clip_norm_type: float = 2.0
    batch: int = Field(64, ge=1)
    epochs: int = Field(10, ge=1)
    seed: int = Field(0, ge=0)
    metrics: list[str] = ["accuracy"]
    val_split: float = Field(0.1, ge=0, lt=1)
    augment: bool = False
    device: str | None = None
    limit: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)


#: the configuration fields an optimizer is made from
OPTIMIZER_FIELDS = ("optimizer", "optimizer_options", "lr", "weight_decay", "clip", "clip_norm_type")

#: command-line overrides (argparse dest → config field)
OVERRIDES = (
    "data",
    "data_dir",
    "epochs",
    "batch",
    "lr",
    "optimizer",
    "seed",
    "device",
    "schedule",
    "weight_decay",
    "val_split",
    "limit",
    "loss",
    "clip",
    "max_steps",
)


def resolve(prog, spec_path: str, model: str | None, overrides: dict[str, Any], objectives: bool = False) -> RunConfig:
    """The run configuration: the model's ``train`` section, then command-line overrides.
    With ``objectives``, a ``train autoencoder|vae|gan|dqn`` section resolves to a
    :class:`dlspec.objectives.ObjectiveConfig` instead (its ``kind`` says which)."""
    trains = prog.trains()
    section = None
    if model is None:
        section = next((t for t in trains if t.kind == "classifier"), trains[0] if trains else None)
        model = (section.models.get("model") or section.models["generator"]) if section else prog._model_name(None)
    else:
        prog._model_name(model)
        section = next((t for t in trains if model in t.models.values()), None)
    if objectives and section is not None and section.kind != "classifier":
        from .objectives import resolve as resolve_objective

        return resolve_objective(prog, spec_path, section, overrides)
    cfg: dict[str, Any] = {"spec": spec_path, "model": model}
    if section is not None:
        cfg["kind"] = section.kind
        s = section.settings
        if "data" in s:
            cfg["data"] = s["data"].value
            opts = dict(s["data"].options)
            for key, field in (("dir", "data_dir"), ("val_split", "val_split"), ("augment", "augment"), ("limit", "limit")):
                if key in opts:
                    cfg[field] = opts.pop(key)
            cfg["data_options"] = opts
        if "loss" in s:
            cfg["loss"], cfg["loss_options"] = s["loss"].value, dict(s["loss"].options)
        if "optimizer" in s:
            opts = dict(s["optimizer"].options)
            cfg["optimizer"] = s["optimizer"].value
            for key in ("lr", "weight_decay"):
                if key in opts:
                    cfg[key] = opts.pop(key)
            cfg["optimizer_options"] = opts
        if "schedule" in s:
            cfg["schedule"], cfg["schedule_options"] = s["schedule"].value, dict(s["schedule"].options)
        for key in ("weight_decay", "l2", "batch", "epochs", "seed", "device", "steps"):
            if key in s:
                cfg["max_steps" if key == "steps" else key] = s[key].value
        if "clip" in s:  # `clip 1.0 norm 2`: max norm 1.0 of the L2 norm, as clip_grad_norm_(max_norm, norm_type)
            cfg["clip"] = s["clip"].value
            if "norm" in s["clip"].options:
                cfg["clip_norm_type"] = s["clip"].options["norm"]
        if "metrics" in s:
            cfg["metrics"] = [m for m in s["metrics"].value if m != "loss"]
        if "label_smoothing" in s and cfg.get("loss", "cross_entropy") == "cross_entropy":
            cfg.setdefault("loss_options", {})["label_smoothing"] = s["label_smoothing"].value
    for key, value in overrides.items():
        if value is not None:
            # a different optimizer/schedule/loss does not inherit the spec's options for the old one
            if key in ("data", "optimizer", "schedule", "loss") and value != cfg.get(key, RunConfig.model_fields[key].default):
                cfg[f"{key}_options"] = {}
            cfg[key] = value
    if cfg.get("kind", "classifier") != "classifier":
        raise UsageError(f"'train {cfg['kind']}' objectives are not supported by 'dlspec train' yet; it trains classifiers")
    try:
        return RunConfig(**cfg)
    except Exception as e:  # noqa: BLE001 - pydantic's message names the field
        errors = getattr(e, "errors", None)
        fields = [str(err.get("loc", ("",))[0]) for err in errors()] if callable(errors) else []
        if section is not None and fields and not any(overrides.get(f) is not None for f in fields):
            from .trainspec import setting_span

            raise TrainError(
                [Diagnostic(_pydantic_message(err), setting_span(section, f)) for f, err in zip(fields, errors())]
            ) from None  # the spec's values: at their lines
        raise UsageError(f"bad training configuration: {_pydantic_message(e)}") from None


def _pydantic_message(e: Any) -> str:
    """``field: message (got value)`` of a pydantic error (or of one of its ``errors()``)."""
    if isinstance(e, dict):
        return f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')} (got {e.get('input')!r})"
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    return "; ".join(_pydantic_message(err) for err in errors())


class SpecPlaces:
    """Where a run's settings are in its spec: errors found while training (a bad optimizer
    option, a loss that does not fit the model, data options a data set rejects) are reported at
    the spec line that set the value — when the value is the spec's; one given on the command line
    is reported as such."""

    def __init__(self, prog, cfg: Any):
        self.prog, self.cfg = prog, cfg
        self._section: Any = False
        self._spec_cfg: Any = False

    @property
    def section(self):
        """The run's ``train`` section (a validated ``TrainSpec``), or ``None``."""
        if self._section is False:
            try:
                trains = self.prog.trains()
            except DlspecError:
                trains = []
            self._section = next((t for t in trains if self.cfg.model in t.models.values()), None)
        return self._section

    def _from_spec(self, fields: tuple[str, ...]) -> bool:
        """Whether ``fields`` have the values the spec's section alone gives them."""
        if self._spec_cfg is False:
            try:
                self._spec_cfg = resolve(self.prog, self.cfg.spec, self.cfg.model, {}, objectives=self.cfg.kind != "classifier")
            except DlspecError:
                self._spec_cfg = None
        spec = self._spec_cfg
        return spec is not None and all(getattr(spec, f, None) == getattr(self.cfg, f, None) for f in fields)

    def span(self, *fields: str):
        """The span of the spec's setting of the first of ``fields`` it sets (else the section's
        head), or ``None`` if a value is not the spec's."""
        from .trainspec import setting_span

        if self.section is None or not self._from_spec(fields):
            return None
        spans = [setting_span(self.section, f) for f in fields]
        return next((sp for sp in spans if sp != self.section.span), self.section.span)

    def error(self, message: str, *fields: str, cli: type[DlspecError] | None = None) -> DlspecError:
        """``message`` at the spec line of ``fields``; from the command line: ``cli`` (default
        :class:`~dlspec.errors.UsageError` "bad training configuration: …")."""
        span = self.span(*fields)
        if span is not None:
            return TrainError(Diagnostic(message, span))
        if cli is None:
            return UsageError(f"bad training configuration: {message}")
        return cli(message)

    def locate(self, e: DlspecError, *fields: str) -> DlspecError:
        """``e`` with its diagnostics that have no place put at the spec line of ``fields``."""
        span = self.span(*fields)
        if span is None or all(d.span is not None for d in e.diagnostics):
            return e
        out = copy.copy(e)
        DlspecError.__init__(out, [replace(d, span=span) if d.span is None else d for d in e.diagnostics])
        return out


# ---- run directory -----------------------------------------------------------------------------


def new_run_dir(root: Path, model: str) -> Path:
    """``runs/<model>-<YYYYmmdd-HHMMSS>`` (with a suffix if that exists: nothing is overwritten).
    A root that cannot hold it (read-only, not a folder, …) is a :class:`~dlspec.runfiles.WriteError`.
    Temporary files that killed runs left in ``root``'s other run directories are removed."""
    from .runfiles import WriteError, remove_stale_temps

    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        d = root / (f"{model}-{stamp}" + (f"-{k}" if k else ""))
        try:
            d.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            if d.exists() or d.is_symlink():
                continue
            raise WriteError(f"{root}: cannot create a run directory: {_not_a_folder(root)}", root) from None
        except OSError as e:
            reason = _not_a_folder(root) if e.errno == errno.ENOTDIR else (e.strerror or str(e))
            raise WriteError(f"{root}: cannot create a run directory: {reason}", root) from None
        for other in _subfolders(root):
            if other != d:
                remove_stale_temps(other)
        return d
    raise TrainError(f"cannot create a run directory under {root}")


def _not_a_folder(root: Path) -> str:
    """Which part of ``root`` is a file, for 'cannot create a run directory'."""
    for p in (root, *root.parents):
        if p.exists() and not p.is_dir():
            return f"{p} is a file, not a folder"
    return "Not a directory"


def _subfolders(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def start_run_dir(root: Path, model: str, spec_file: str | Path, config_json: str) -> Path:
    """A new run directory holding the spec's copy and ``config.json``, written before training
    starts: a root or disk that cannot take them fails here (a :class:`~dlspec.runfiles.WriteError`),
    and the half-made directory is removed."""
    import shutil

    from .runfiles import WriteError, atomic_write

    spec = Path(spec_file).read_bytes()
    d = new_run_dir(root, model)
    try:
        atomic_write(d / "spec.dl", spec)
        atomic_write(d / "config.json", config_json)
    except WriteError:
        shutil.rmtree(d, ignore_errors=True)
        raise
    return d


def start_over(run_dir: Path) -> bool:
    """Prepare ``run_dir`` for ``--resume``: remove the temporary files of interrupted writes;
    with no checkpoint yet (killed before its first epoch ended) say that the run trains from
    its start, in the same directory, and clear its ``metrics.jsonl``. True in that case."""
    import sys

    from .runfiles import atomic_write, remove_stale_temps

    remove_stale_temps(run_dir, legacy=True)
    last = run_dir / "last.safetensors"
    if last.is_file():
        return False
    from .resume import backup_of

    if backup_of(last).exists():  # never so after dlspec's own writes: someone removed it
        from .resume import backup_advice

        raise TrainError(f"{last}: no such checkpoint{backup_advice(last)}; or remove {backup_of(last).name} to train it from the start")
    print(f"{run_dir} has no checkpoint yet (it stopped before its first epoch ended): training it from the start", file=sys.stderr)
    if (run_dir / "metrics.jsonl").exists():
        atomic_write(run_dir / "metrics.jsonl", "")
    return True


def stopped(e: Exception, run_dir: Path) -> Exception:
    """A :class:`~dlspec.runfiles.WriteError` during training, with what is left and what to do."""
    from .runfiles import WriteError

    if not isinstance(e, WriteError):
        return e
    last = run_dir / "last.safetensors"
    if not run_dir.exists():
        tail = "training stopped before its first checkpoint (the run directory was removed)"
    elif last.is_file():
        try:
            meta = check_safetensors(last)
            kept = f"episode {meta['episode']}" if "episode" in meta else f"epoch {meta['epoch']}"
        except (DlspecError, KeyError):
            kept = "the last finished epoch"
        tail = f"training stopped; {last} keeps {kept}: free some space, then dlspec train --resume {run_dir}"
    else:
        tail = f"training stopped before its first checkpoint: free some space, then dlspec train --resume {run_dir}"
    return WriteError(f"{e.diagnostics[0].message}; {tail}", e.path)


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` to ``path`` atomically (:func:`dlspec.runfiles.atomic_write`)."""
    from .runfiles import atomic_write

    atomic_write(path, text)


def append_line(path: Path, obj: dict) -> None:
    """One JSON line appended whole to ``path`` (:func:`dlspec.runfiles.append_line`)."""
    from .runfiles import append_line as append

    append(path, json.dumps(obj))


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- the loop ------------------------------------------------------------------------------------


@dataclass
class Position:
    epoch: int = 0  # epochs completed
    step: int = 0  # global optimizer steps done
    best: float | None = None


class Trainer:
    """Trains a classifier spec on a data set; see the module docstring."""

    #: run the compiled steps with the kernels ``dlspec tune`` found for this spec, batch and device, if any
    tuned_kernels = True

    def __init__(self, prog, cfg: RunConfig, run_dir: Path, log: Callable[[str], None], ui: Any = None):
        self.prog, self.cfg, self.dir, self.log, self.ui = prog, cfg, run_dir, log, ui
        self.normalization: tuple[Any, Any] | None = None  # (mean, std) to use instead of the training split's
        self.places = SpecPlaces(prog, cfg)

    # data ------------------------------------------------------------------------------------
    def load_data(self) -> None:
        import numpy as np

        from . import data

        c = self.cfg
        opts = dict(c.data_options)
        try:
            full = data.load(c.data, "train", data_dir=c.data_dir, **opts)
            test = data.load(c.data, "test", data_dir=c.data_dir, **opts)
        except DlspecError as e:
            raise self.places.locate(e, "data", "data_options", "data_dir") from None
        if c.limit:
            full = _head(full, c.limit)
            test = _head(test, max(1, c.limit // 5))
        if c.val_split > 0:
            train, val = data.split_validation(full, c.val_split, c.seed)
        else:
            train, val = full, None
        mean, std = data.normalizer(train)
        if self.normalization is not None and np.size(self.normalization[0]) == np.size(mean):
            mean, std = self.normalization
        self.mean, self.std = mean, std
        self.train_data, self.val_data, self.test_data = train, val, test
        has_bn = any(n.op == "batchnorm" for n in self.prog.ir(c.model).nodes)
        self.loader = data.Loader(train, c.batch, c.seed, shuffle=True, augment=c.augment, mean=mean, std=std, drop_single=has_bn)
        self.eval_loaders = {
            name: data.Loader(ds, c.batch, c.seed, shuffle=False, augment=False, mean=mean, std=std)
            for name, ds in (("val", val), ("test", test))
            if ds is not None
        }

    # model and optimizer -----------------------------------------------------------------------
    def build(self) -> None:
        from . import optim, schedules

        c = self.cfg
        self.net = self.prog.build(c.model, device=c.device, seed=c.seed)
        self._fit_input()
        params = self.net.parameters()
        try:
            self.opt = optim.make_optimizer(
                c.optimizer, params, c.lr, weight_decay=c.weight_decay, clip=c.clip, clip_norm_type=c.clip_norm_type, **c.optimizer_options
            )
        except (ValueError, TypeError) as e:
            raise self.places.error(f"optimizer {c.optimizer}: {e}", *OPTIMIZER_FIELDS) from None
        try:
            self.schedule = schedules.make_schedule(c.schedule, c.lr, self.loader.steps_per_epoch(), c.epochs, **c.schedule_options)
        except (ValueError, TypeError) as e:
            raise self.places.error(f"schedule {c.schedule}: {e}", "schedule", "schedule_options", "lr", "epochs") from None
        self.steps: dict[tuple, Any] = {}
        self.evals: dict[tuple, Any] = {}
        if self.tuned_kernels:  # kernels tuned by `dlspec tune`: the steps use them, and the log says so
            from .tuning import use_tuned

            use_tuned(self)

    def _fit_input(self) -> None:
        """The data's sample shape must fit the model's input (same shape, or same size)."""
        try:
            self._check_input()
        except TrainError as e:
            raise self.places.locate(e, "data", "data_options") from None

    def _check_input(self) -> None:
        net = self.net
        if len(net.input_names) != 1 or len(net.output_names) != 1:
            raise UsageError(
                f"'dlspec train' trains models with one input and one output; {self.cfg.model} has {len(net.input_names)} and {len(net.output_names)}"
            )
        want = net.shapes.types[net.input_names[0]]
        have = self.train_data.sample_shape
        dims = want.sample
        if all(isinstance(d, int) for d in dims):
            if tuple(dims) != tuple(have) and math.prod(dims) != math.prod(have):
                raise TrainError(
                    f"data '{self.cfg.data}' gives samples of shape {tuple(have)} but {self.cfg.model}'s input is {want.show()}"
                )
            self.reshape = tuple(dims)
        else:
            if len(dims) != len(have):
                raise TrainError(
                    f"data '{self.cfg.data}' gives samples of shape {tuple(have)} but {self.cfg.model}'s input is {want.show()}"
                )
            self.reshape = tuple(have)
        out = net.shapes.types[net.graph.outputs[0].node]
        classes = out.sample[-1] if out.sample else None
        if isinstance(classes, int) and classes < self.train_data.classes:
            raise TrainError(f"{self.cfg.model} has {classes} outputs but data '{self.cfg.data}' has {self.train_data.classes} classes")

    def _tensors(self, xb, yb):
        from tinygrad import Tensor, dtypes

        x = Tensor(xb.reshape(xb.shape[0], *self.reshape), device=self.net.device)
        y = Tensor(yb.astype("int32"), device=self.net.device, dtype=dtypes.int32)
        return x, y

    def _train_step(self, n: int):
        """The TinyJit-compiled training step for batches of ``n`` (one per size)."""
        from tinygrad import Context, Tensor, TinyJit

        from . import losses, optim

        key = ("train", n)
        if key not in self.steps:
            net, opt, c = self.net, self.opt, self.cfg
            params = opt.params

            def step(x: Tensor, y: Tensor):
                with Context(TRAINING=1):
                    opt.zero_grad()
                    out = net(x, train=True)
                    loss = losses.loss(c.loss, out, y, **c.loss_options)
                    total = loss + optim.l2_penalty(params, c.l2) if c.l2 else loss
                    total.backward()
                    correct = (out.argmax(-1) == y).sum()
                    # one schedule for the update (clipping first when configured), the loss and the
                    # accuracy count: realized after opt.step() they would read the updated weights.
                    # Running statistics are updated by lazy assigns and are no optimizer parameters:
                    # realized here, or a TinyJit replay would never update them.
                    buffers = [t for k, t in net.state_dict().items() if _is_buffer_key(k)]
                    Tensor.realize(loss, correct, *buffers, *opt.schedule_step())
                    return loss, correct

            self.steps[key] = TinyJit(step)
        return self.steps[key]

    def _eval_step(self, n: int):
        from tinygrad import Tensor, TinyJit

        from . import losses

        key = ("eval", n)
        if key not in self.evals:
            net, c = self.net, self.cfg

            def step(x: Tensor, y: Tensor):
                out = net(x, train=False)
                loss = losses.loss(c.loss, out, y, **c.loss_options) * x.shape[0]
                top1 = (out.argmax(-1) == y).sum()
                k = min(5, out.shape[-1])
                top5 = (out.topk(k)[1] == y.unsqueeze(-1)).sum() if k > 1 else top1
                return loss.realize(), top1.realize(), top5.realize()

            self.evals[key] = TinyJit(step)
        return self.evals[key]

    def evaluate(self, loader) -> dict[str, float]:
        n = total = top1 = top5 = 0.0
        for xb, yb in loader.epoch(0):
            x, y = self._tensors(xb, yb)
            try:
                loss, c1, c5 = self._eval_step(len(yb))(x, y)
            except ValueError as e:
                raise self.places.error(f"loss {self.cfg.loss} on {self.cfg.model}: {e}", "loss", "loss_options", cli=TrainError) from None
            total += loss.item()
            top1 += c1.item()
            top5 += c5.item()
            n += len(yb)
        out = {"loss": total / max(n, 1), "accuracy": top1 / max(n, 1)}
        if "top5" in self.cfg.metrics:
            out["top5"] = top5 / max(n, 1)
        return out

    def load_weights(self, path: Path, name_map: str | Path | None = None) -> None:
        """Weights from a run checkpoint (``model.`` keys), ``net.save``, or a PyTorch file
        (``name_map``: see :func:`dlspec.load_weights`)."""
        from .backends.tinygrad import load_weights
        from .weightfile import weights_format

        path = Path(path)
        if weights_format(path) == "safetensors":  # its whole header validated before the model is touched
            check_safetensors(path, "weights file")
        self._loading(path, lambda: load_weights(self.net, path, name_map))  # a run checkpoint's model.* part, or the whole file

    def _load_model_state(self, path: Path, sd: dict) -> None:
        """Load ``sd`` (model keys, read from ``path``) into the net, with load_weights's checks."""
        from .backends.tinygrad import load_state

        self._loading(path, lambda: load_state(self.net, sd, str(path)))

    @staticmethod
    def _loading(path: Path, load: Callable[[], None]) -> None:
        try:
            load()
        except UsageError:  # a bad name map, a missing file: the caller's mistake (exit 2)
            raise
        except DlspecError as e:
            raise TrainError(e.diagnostics) from None
        except Exception as e:  # noqa: BLE001 - reading the file's (lazy) tensors failed: the file's fault
            raise TrainError(f"{path}: cannot read the weights ({type(e).__name__}: {e})") from None

    # checkpoints ------------------------------------------------------------------------------
    def save(self, name: str, pos: Position, history: list[dict]) -> None:
        from . import resume
        from .optim import optimizer_state

        sd = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        sd.update(optimizer_state(self.opt))  # keys 'optim.…'
        meta = {
            "format": "dlspec-checkpoint-1",
            "epoch": str(pos.epoch),
            "step": str(pos.step),
            "best": json.dumps(pos.best),
            "model": self.cfg.model,
            resume.SPEC_KEY: self.spec_sha,
            resume.DATA_KEY: self.data_sha,
            "seed": str(self.cfg.seed),
            # the dropout/sampling stream is reseeded at every epoch start from (seed, epoch): see resume.reseed
            "rng": json.dumps({"scheme": "per-epoch", "epoch_seed": resume.epoch_seed(self.cfg.seed, pos.epoch)}),
            "normalize": json.dumps({"mean": [float(v) for v in self.mean.reshape(-1)], "std": [float(v) for v in self.std.reshape(-1)]}),
            "history": json.dumps(history),
        }
        resume.save(self.dir / name, sd, meta, backup=name == "last.safetensors")

    def restore(self, path: Path) -> tuple[Position, list[dict]]:
        """Model and optimizer state, position and history from checkpoint ``path`` (verified,
        and refused if it was trained from another spec, another model or other data)."""
        from . import resume
        from .optim import load_optimizer_state

        meta = resume.check(path)
        resume.check_identity(path, meta, self.dir / "spec.dl", self.spec_sha, self.cfg.data, self.data_sha)
        if meta.get("model") not in (None, self.cfg.model):
            raise TrainError(f"{path}: the checkpoint holds model {meta.get('model')}, not {self.cfg.model}")
        try:
            pos = Position(epoch=int(meta["epoch"]), step=int(meta["step"]), best=json.loads(meta.get("best", "null")))
            history = json.loads(meta.get("history", "[]"))
        except (KeyError, ValueError):
            raise TrainError(f"{path}: not a dlspec checkpoint (no position in its metadata)") from None
        sd = _read(path)
        self._load_model_state(path, {k[6:]: v for k, v in sd.items() if k.startswith("model.")})
        try:
            load_optimizer_state(self.opt, {k: v for k, v in sd.items() if k.startswith("optim.")})
        except Exception as e:  # noqa: BLE001 - a mismatched optimizer is the checkpoint's fault
            raise TrainError(f"{path}: optimizer state does not fit ({e})") from None
        return pos, history

    # the run ------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        from . import resume as exact
        from .optim import set_lr

        c = self.cfg
        self.spec_sha = file_digest(self.dir / "spec.dl")
        if resume:  # the run's own normalisation (a pure function of the config, but kept exactly)
            meta = exact.check(self.dir / "last.safetensors")
            norm = _normalization(meta)
            if norm is not None:
                self.normalization = norm
        self.load_data()
        self.data_sha = exact.data_digest(self.train_data, self.val_data, self.test_data)
        self.build()
        self.log(
            f"device {self.net.device}; {c.model}: {self.net.num_params()[0]:,} params; data {c.data}: "
            f"{len(self.train_data):,} train, {len(self.val_data) if self.val_data else 0:,} val, {len(self.test_data):,} test"
        )
        pos, history = Position(), []
        if resume:
            pos, history = self.restore(self.dir / "last.safetensors")
            # metrics.jsonl may hold a line of an epoch the checkpoint does not (killed in between): rewrite it
            atomic_write_text(self.dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
            write_plot(self.dir / "loss.svg", history)  # the curve of the same epochs
            if pos.epoch >= c.epochs or (c.max_steps is not None and pos.step >= c.max_steps):
                self.log(f"the run is already complete ({pos.epoch} epochs, {pos.step} steps); pass --epochs N to train further")
            else:
                self.log(f"resumed after epoch {pos.epoch} (step {pos.step})")
        steps_per_epoch = self.loader.steps_per_epoch()
        started = time.perf_counter()
        samples = 0
        for epoch in range(pos.epoch, c.epochs):
            if c.max_steps is not None and pos.step >= c.max_steps:
                break
            exact.reseed(self.net.device, exact.epoch_seed(c.seed, epoch))
            t0 = time.perf_counter()
            run_loss = run_correct = seen = 0.0
            if self.ui:
                self.ui.start_epoch(epoch, c.epochs, steps_per_epoch)
            for i, (xb, yb) in enumerate(self.loader.epoch(epoch)):
                if c.max_steps is not None and pos.step >= c.max_steps:
                    break
                set_lr(self.opt, self.schedule(pos.step))
                x, y = self._tensors(xb, yb)
                step = self._train_step(len(yb))
                compiling = step.cnt < 2
                if compiling and self.ui:
                    self.ui.step(i, run_loss / max(seen, 1), run_correct / max(seen, 1), 0.0, True)
                try:
                    loss_t, correct_t = step(x, y)
                except ValueError as e:  # losses reject outputs/targets that do not fit
                    raise self.places.error(f"loss {c.loss} on {c.model}: {e}", "loss", "loss_options", cli=TrainError) from None
                loss = loss_t.item()
                if not math.isfinite(loss):
                    kept = (
                        f"; {self.dir / 'last.safetensors'} keeps the weights after epoch {pos.epoch}"
                        if (self.dir / "last.safetensors").exists()
                        else "; no checkpoint was written (it fails in the first epoch)"
                    )
                    raise TrainError(
                        f"the loss became {loss} at step {pos.step + 1} (epoch {epoch + 1}, batch {i + 1}); training stopped{kept}."
                        " Try a smaller --lr or --clip."
                    )
                pos.step += 1
                run_loss += loss * len(yb)
                run_correct += correct_t.item()
                seen += len(yb)
                samples += len(yb)
                if self.ui:
                    self.ui.step(i + 1, run_loss / seen, run_correct / seen, seen / max(time.perf_counter() - t0, 1e-9), False)
            train_metrics = {"loss": run_loss / max(seen, 1), "accuracy": run_correct / max(seen, 1)}
            val = self.evaluate(self.eval_loaders["val"]) if "val" in self.eval_loaders else None
            pos.epoch = epoch + 1
            record = {
                "epoch": pos.epoch,
                "step": pos.step,
                "lr": self.schedule(max(pos.step - 1, 0)),
                "train": train_metrics,
                "val": val,
                "seconds": round(time.perf_counter() - t0, 3),
                "samples_per_s": round(seen / max(time.perf_counter() - t0, 1e-9), 1),
            }
            history.append(record)
            score = (val or train_metrics)["accuracy"]
            better = pos.best is None or score > pos.best
            if better:
                pos.best = score
                # best before last: killed in between, the resumed run redoes this epoch and writes both
                self.save("best.safetensors", pos, history)
            self.save("last.safetensors", pos, history)
            append_line(self.dir / "metrics.jsonl", record)
            write_plot(self.dir / "loss.svg", history)
            msg = f"epoch {pos.epoch}/{c.epochs}: loss {train_metrics['loss']:.4f} acc {train_metrics['accuracy']:.4f}"
            if val:
                msg += f" | val loss {val['loss']:.4f} acc {val['accuracy']:.4f}"
            self.log(msg + f" | {record['samples_per_s']:.0f} samples/s")
            if self.ui:
                self.ui.end(pos.epoch)  # the epoch bar counts finished epochs
        wall = time.perf_counter() - started
        test = self.evaluate(self.eval_loaders["test"])
        summary = {
            "run_dir": str(self.dir),
            "model": c.model,
            "device": self.net.device,
            "epochs": pos.epoch,
            "steps": pos.step,
            "train": history[-1]["train"] if history else None,
            "val": history[-1]["val"] if history else None,
            "test": test,
            "best_val": pos.best,
            "wall_seconds": round(wall, 1),
            "samples_per_s": round(samples / wall, 1) if wall > 0 and samples else None,
        }
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2))
        return summary


def _is_buffer_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")


def _normalization(meta: dict[str, str]):
    import numpy as np

    try:
        norm = json.loads(meta["normalize"])
        return np.asarray(norm["mean"], dtype=np.float32), np.asarray(norm["std"], dtype=np.float32)
    except (KeyError, ValueError, TypeError):
        return None


def _read(path: Path) -> dict:
    from .backends.tinygrad import read_weights

    try:
        return read_weights(path)
    except DlspecError as e:
        raise TrainError(e.diagnostics) from None


def check_safetensors(path: Path, what: str = "checkpoint") -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, after validating its whole header
    (:func:`dlspec.weightfile.safetensors_header`: every tensor's dtype, shape and offsets, and
    that they tile the data exactly — a truncated file fails here, not later)."""
    from .weightfile import WeightsError, safetensors_header

    path = Path(path)
    try:
        return safetensors_header(path).metadata
    except FileNotFoundError:
        raise TrainError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise TrainError(f"{path}: is a directory, not a {what}") from None
    except OSError as e:
        raise TrainError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    except WeightsError as e:
        raise TrainError(e.diagnostics) from None


def _head(ds, n: int):
    from dataclasses import replace

    return replace(ds, x=ds.x[:n], y=ds.y[:n])


def write_plot(path: Path, history: list[dict]) -> None:
    """A small SVG learning curve: train and validation loss per epoch (no plotting library)."""
    w, h, m = 480, 300, 48
    series = {"train loss": [r["train"]["loss"] for r in history], "val loss": [r["val"]["loss"] for r in history if r.get("val")]}
    values = [v for s in series.values() for v in s if math.isfinite(v)]
    if not values:
        return
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    n = max(len(history), 2)

    def xy(i: int, v: float) -> str:
        return f"{m + (w - 2 * m) * i / (n - 1):.1f},{h - m - (h - 2 * m) * (v - lo) / (hi - lo):.1f}"

    colors = {"train loss": "#1f77b4", "val loss": "#d62728"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">epoch</text>',
        f'<text x="{m - 6}" y="{m}" text-anchor="end">{hi:.3g}</text><text x="{m - 6}" y="{h - m}" text-anchor="end">{lo:.3g}</text>',
        f'<text x="{m}" y="{h - m + 14}">1</text><text x="{w - m}" y="{h - m + 14}" text-anchor="end">{len(history)}</text>',
    ]
    for k, (name, vals) in enumerate(series.items()):
        if not vals:
            continue
        pts = " ".join(xy(i, v) for i, v in enumerate(vals) if math.isfinite(v))
        parts.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{w - m - 90}" y="{m + 14 * k}" fill="{colors[name]}">{name}</text>')
    parts.append("</svg>")
    atomic_write_text(path, "\n".join(parts) + "\n")


#: what `--resume` may change: the rest continues as configured
RESUME_OVERRIDES = frozenset({"epochs", "device"})


def check_resume_overrides(overrides: dict[str, Any]) -> None:
    """A usage error for command-line overrides ``--resume`` does not take."""
    extra = set(overrides) - RESUME_OVERRIDES
    if extra:
        raise UsageError(
            "--resume continues a run as configured; only --epochs and --device may change "
            f"(got {', '.join('--' + e.replace('_', '-') for e in sorted(extra))})"
        )
