"""Stage 5: a training run's configuration and run directory (``dlspec train`` / ``dlspec eval``).

The loop every objective shares is :mod:`dlspec.loop`; the classifier is
:mod:`dlspec.objectives.classifier` (``Trainer`` here is its old name). A run reads the spec's
``train`` section, applies command-line overrides, and writes a run directory ``runs/<model>-<timestamp>/``: the spec copy, ``config.json``,
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
from dataclasses import replace
from pathlib import Path
from typing import Any

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
    #: data parallel on these devices (each batch split across them); ``None``: one device
    devices: list[str] | None = None
    #: batch norm with the statistics of the whole batch across the devices (else each device's own)
    sync_bn: bool = False
    limit: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    #: model and block parameters bound for this run (``{"DEF.NAME": value}``, :meth:`dlspec.api.Program.bind`):
    #: a ``dlspec sweep`` trial's; ``--resume`` and ``dlspec eval`` bind them again
    params: dict[str, Any] = {}


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
    "devices",
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
            cfg.update(data_setting(s["data"], ("val_split", "augment")))
        if "loss" in s:
            cfg["loss"], cfg["loss_options"] = s["loss"].value, dict(s["loss"].options)
        if "optimizer" in s:
            cfg.update(optimizer_setting(s["optimizer"]))
        if "schedule" in s:
            cfg["schedule"], cfg["schedule_options"] = s["schedule"].value, dict(s["schedule"].options)
        for key in ("weight_decay", "l2", "batch", "epochs", "seed", "device", "steps", "sync_bn"):
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
    cfg.update(section_placement(section.settings if section is not None else {}, overrides))
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


def placement(device: str | None, devices: list[str] | int | None) -> dict[str, Any]:
    """The ``device`` and ``devices`` configuration fields of a run on ``device`` or on ``devices``:
    device names, or a count N — the first N devices of ``device``'s kind (``--device CUDA --devices 2``:
    ``CUDA:0``, ``CUDA:1``), of tinygrad's default device without one. Names are checked when
    training starts (:func:`dlspec.backends.tinygrad.check_devices`); one device is no split."""
    if devices is None:
        return {"device": device, "devices": None}
    if isinstance(devices, int):
        if devices < 1:
            raise UsageError(f"--devices needs at least one device, got {devices}")
        if device is None:
            from tinygrad import Device

            try:
                device = Device.DEFAULT
            except Exception:  # noqa: BLE001 - no device at all: the check at start says so
                device = "CPU"
        kind, _, index = device.partition(":")
        if index:
            raise UsageError(f"--devices {devices} takes the first {devices} devices of a kind: give --device {kind}, not {device}")
        names = [f"{kind}:{i}" for i in range(devices)]
    else:
        if device is not None:
            raise UsageError(
                f"give --device or --devices, not both (--device {device} --devices {','.join(devices)}); "
                f"--devices N with --device KIND trains on the first N devices of that kind"
            )
        names = list(devices)
    return {"device": names[0], "devices": None} if len(names) == 1 else {"device": None, "devices": names}


def section_placement(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``device``/``devices`` from the spec's ``device``/``devices`` settings, unless the command line
    gives ``--device`` or ``--devices`` (then those: ``--devices N`` alone counts devices of the spec's
    device kind). See :func:`placement`."""
    spec_device = settings["device"].value if "device" in settings else None
    spec_devices: Any = settings["devices"].value if "devices" in settings else None
    if isinstance(spec_devices, tuple):
        spec_devices = spec_devices[0] if len(spec_devices) == 1 and isinstance(spec_devices[0], int) else list(spec_devices)
    device, devices = overrides.get("device"), overrides.get("devices")
    if device is None and devices is None:
        return placement(spec_device, spec_devices)
    return placement(device if device is not None or not isinstance(devices, int) else spec_device, devices)


def data_setting(setting, fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """A ``data NAME opts…`` setting as configuration fields: ``data``, ``data_dir`` (option ``dir``),
    ``limit`` and ``fields``, the rest ``data_options`` (every objective's resolution uses it)."""
    opts = dict(setting.options)
    out: dict[str, Any] = {"data": setting.value}
    for key in ("dir", "limit", *fields):
        if key in opts:
            out["data_dir" if key == "dir" else key] = opts.pop(key)
    out["data_options"] = opts
    return out


def optimizer_setting(setting, prefix: str = "") -> dict[str, Any]:
    """An ``optimizer NAME lr … opts…`` setting as configuration fields (``prefix``: a GAN's ``d_``/``g_``):
    ``optimizer``, ``lr``, ``weight_decay`` (not for a role's) and ``optimizer_options``."""
    opts = dict(setting.options)
    out: dict[str, Any] = {f"{prefix}optimizer": setting.value}
    for key in ("lr",) if prefix else ("lr", "weight_decay"):
        if key in opts:
            out[f"{prefix}{key}"] = opts.pop(key)
    out[f"{prefix}optimizer_options"] = opts
    return out


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


# ---- the classifier -----------------------------------------------------------------------------


def __getattr__(name: str):
    """``Trainer`` (the classifier objective, :class:`dlspec.objectives.classifier.Classifier`),
    ``Position`` and ``_normalization``: their old home."""
    if name in ("Trainer", "_normalization"):
        from .objectives import classifier

        return classifier.Classifier if name == "Trainer" else classifier.normalization
    if name == "Position":
        from .loop import Position

        return Position
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
RESUME_OVERRIDES = frozenset({"epochs", "device", "devices"})


def check_resume_overrides(overrides: dict[str, Any]) -> None:
    """A usage error for command-line overrides ``--resume`` does not take."""
    extra = set(overrides) - RESUME_OVERRIDES
    if extra:
        raise UsageError(
            "--resume continues a run as configured; only --epochs, --device and --devices may change "
            f"(got {', '.join('--' + e.replace('_', '-') for e in sorted(extra))})"
        )


def resume_placement(cfg: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` of a resumed run with ``--device``/``--devices`` turned into its ``device`` and
    ``devices`` fields (without either, the run keeps the devices it was trained on)."""
    device, devices = overrides.get("device"), overrides.get("devices")
    if device is None and devices is None:
        return overrides
    base = device if device is not None or not isinstance(devices, int) else cfg.device
    return {**{k: v for k, v in overrides.items() if k not in ("device", "devices")}, **placement(base, devices)}
