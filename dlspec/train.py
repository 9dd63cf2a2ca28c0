"""Stage 5: training and evaluation of classifiers (``dlspec train`` / ``dlspec eval``).

A run reads the spec's ``train`` section, applies command-line overrides, and writes a
run directory ``runs/<model>-<timestamp>/``: the spec copy, ``config.json``,
``metrics.jsonl`` (one line per epoch), ``last.safetensors`` (weights + optimizer state +
position, after every epoch), ``best.safetensors`` (by validation metric), ``loss.svg``.
Files are written atomically. Everything random is a pure function of (seed, epoch), so
``--resume`` continues bit-identically to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from .errors import DlspecError, UsageError


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
    lr: float = 1e-3
    schedule: str = "constant"
    schedule_options: dict[str, Any] = {}
    weight_decay: float = 0.0
    l2: float = 0.0
    clip: float | None = None
    clip_norm_type: float = 2.0
    batch: int = 64
    epochs: int = 10
    seed: int = 0
    metrics: list[str] = ["accuracy"]
    val_split: float = 0.1
    augment: bool = False
    device: str | None = None
    limit: int | None = None
    max_steps: int | None = None


#: command-line overrides (argparse dest → config field)
OVERRIDES = ("data", "data_dir", "epochs", "batch", "lr", "optimizer", "seed", "device", "schedule", "weight_decay", "val_split", "limit", "loss", "clip", "max_steps")


def resolve(prog, spec_path: str, model: str | None, overrides: dict[str, Any]) -> RunConfig:
    """The run configuration: the model's ``train`` section, then command-line overrides."""
    trains = prog.trains()
    section = None
    if model is None:
        section = next((t for t in trains if t.kind == "classifier"), None)
        model = section.models["model"] if section else prog._model_name(None)
    else:
        prog._model_name(model)
        section = next((t for t in trains if model in t.models.values()), None)
    cfg: dict[str, Any] = {"spec": spec_path, "model": model}
    if section is not None:
        cfg["kind"] = section.kind
        s = section.settings
        if "data" in s:
            cfg["data"] = s["data"].value
            opts = dict(s["data"].options)
            if "dir" in opts:
                cfg["data_dir"] = opts.pop("dir")
            if "val_split" in opts:
                cfg["val_split"] = opts.pop("val_split")
            if "augment" in opts:
                cfg["augment"] = opts.pop("augment")
            if "limit" in opts:
                cfg["limit"] = opts.pop("limit")
            cfg["data_options"] = opts
        if "loss" in s:
            cfg["loss"], cfg["loss_options"] = s["loss"].value, dict(s["loss"].options)
        if "optimizer" in s:
            opts = dict(s["optimizer"].options)
            cfg["optimizer"] = s["optimizer"].value
            if "lr" in opts:
                cfg["lr"] = opts.pop("lr")
            if "weight_decay" in opts:
                cfg["weight_decay"] = opts.pop("weight_decay")
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
            if key == "optimizer" and value != cfg.get("optimizer"):
                cfg["optimizer_options"] = {}
            cfg[key] = value
    if cfg.get("kind", "classifier") != "classifier":
        raise UsageError(f"'train {cfg['kind']}' objectives are not supported by 'dlspec train' yet; it trains classifiers")
    try:
        return RunConfig(**cfg)
    except Exception as e:  # noqa: BLE001 - pydantic's message names the field
        raise UsageError(f"bad training configuration: {e}") from None


# ---- run directory -----------------------------------------------------------------------------


def new_run_dir(root: Path, model: str) -> Path:
    """``runs/<model>-<YYYYmmdd-HHMMSS>`` (with a suffix if that exists: nothing is overwritten)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        d = root / (f"{model}-{stamp}" + (f"-{k}" if k else ""))
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            continue
    raise TrainError(f"cannot create a run directory under {root}")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_line(path: Path, obj: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


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

    def __init__(self, prog, cfg: RunConfig, run_dir: Path, log: Callable[[str], None], ui: Any = None):
        self.prog, self.cfg, self.dir, self.log, self.ui = prog, cfg, run_dir, log, ui

    # data ------------------------------------------------------------------------------------
    def load_data(self) -> None:
        from . import data

        c = self.cfg
        opts = dict(c.data_options)
        full = data.load(c.data, "train", data_dir=c.data_dir, **opts)
        test = data.load(c.data, "test", data_dir=c.data_dir, **opts)
        if c.limit:
            full = _head(full, c.limit)
            test = _head(test, max(1, c.limit // 5))
        if c.val_split > 0:
            train, val = data.split_validation(full, c.val_split, c.seed)
        else:
            train, val = full, None
        mean, std = data.normalizer(train)
        self.train_data, self.val_data, self.test_data = train, val, test
        self.loader = data.Loader(train, c.batch, c.seed, shuffle=True, augment=c.augment, mean=mean, std=std)
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
        self.opt = optim.make_optimizer(
            c.optimizer, params, c.lr, weight_decay=c.weight_decay, clip=c.clip, clip_norm_type=c.clip_norm_type, **c.optimizer_options
        )
        self.schedule = schedules.make_schedule(c.schedule, c.lr, self.loader.steps_per_epoch(), c.epochs, **c.schedule_options)
        self.steps: dict[tuple, Any] = {}
        self.evals: dict[tuple, Any] = {}

    def _fit_input(self) -> None:
        """The data's sample shape must fit the model's input (same shape, or same size)."""
        net = self.net
        if len(net.input_names) != 1 or len(net.output_names) != 1:
            raise UsageError(f"'dlspec train' trains models with one input and one output; {self.cfg.model} has {len(net.input_names)} and {len(net.output_names)}")
        want = net.shapes.types[net.input_names[0]]
        have = self.train_data.sample_shape
        dims = want.sample
        if all(isinstance(d, int) for d in dims):
            if tuple(dims) != tuple(have) and math.prod(dims) != math.prod(have):
                raise TrainError(f"data '{self.cfg.data}' gives samples of shape {tuple(have)} but {self.cfg.model}'s input is {want.show()}")
            self.reshape = tuple(dims)
        else:
            if len(dims) != len(have):
                raise TrainError(f"data '{self.cfg.data}' gives samples of shape {tuple(have)} but {self.cfg.model}'s input is {want.show()}")
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
                    opt.step()  # clips gradients first when configured
                    correct = (out.argmax(-1) == y).sum()
                    return loss.realize(), correct.realize()

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
            loss, c1, c5 = self._eval_step(len(yb))(x, y)
            total += loss.item()
            top1 += c1.item()
            top5 += c5.item()
            n += len(yb)
        out = {"loss": total / max(n, 1), "accuracy": top1 / max(n, 1)}
        if "top5" in self.cfg.metrics:
            out["top5"] = top5 / max(n, 1)
        return out

    def load_weights(self, path: Path) -> None:
        """Weights from a run checkpoint (``model.`` keys), ``net.save``, or a PyTorch file."""
        from .backend.tinygrad import load_weights, read_weights, save_state

        sd = read_weights(path)
        if any(k.startswith("model.") for k in sd):
            tmp = Path(str(path) + f".{os.getpid()}.tmp.safetensors")
            tmp = Path("/tmp") / tmp.name if not os.access(tmp.parent, os.W_OK) else tmp
            save_state({k[6:]: v for k, v in sd.items() if k.startswith("model.")}, tmp)
            try:
                load_weights(self.net, tmp)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            load_weights(self.net, path)

    # checkpoints ------------------------------------------------------------------------------
    def save(self, name: str, pos: Position) -> None:
        from .backend.tinygrad import save_state
        from .optim import optimizer_state

        sd = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        sd.update(optimizer_state(self.opt))  # keys 'optim.…'

        meta = {"epoch": str(pos.epoch), "step": str(pos.step), "best": json.dumps(pos.best), "model": self.cfg.model, "spec_sha256": self.spec_sha}
        save_state(sd, self.dir / name, metadata=meta)

    def restore(self, path: Path) -> Position:
        from .backend.tinygrad import load_weights, read_weights
        from .optim import load_optimizer_state

        sd = read_weights(path)
        meta = _metadata(path)
        model_sd = {k[6:]: v for k, v in sd.items() if k.startswith("model.")}
        optim_sd = {k: v for k, v in sd.items() if k.startswith("optim.")}
        tmp = self.dir / ".restore.safetensors"
        from .backend.tinygrad import save_state

        save_state(model_sd, tmp)
        try:
            load_weights(self.net, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        try:
            load_optimizer_state(self.opt, optim_sd)
        except Exception as e:  # noqa: BLE001 - a mismatched optimizer is the checkpoint's fault
            raise TrainError(f"{path}: optimizer state does not fit ({e})") from None
        best = json.loads(meta.get("best", "null"))
        return Position(epoch=int(meta.get("epoch", 0)), step=int(meta.get("step", 0)), best=best)

    # the run ------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        from tinygrad import Tensor

        from .optim import set_lr

        c = self.cfg
        self.spec_sha = file_digest(self.dir / "spec.dl")
        self.load_data()
        self.build()
        self.log(f"device {self.net.device}; {c.model}: {self.net.num_params()[0]:,} params; data {c.data}: {len(self.train_data):,} train, {len(self.val_data) if self.val_data else 0:,} val, {len(self.test_data):,} test")
        pos = Position()
        if resume:
            pos = self.restore(self.dir / "last.safetensors")
            self.log(f"resumed after epoch {pos.epoch} (step {pos.step})")
        history = _read_history(self.dir / "metrics.jsonl", pos.epoch)
        steps_per_epoch = self.loader.steps_per_epoch()
        started = time.perf_counter()
        samples = 0
        for epoch in range(pos.epoch, c.epochs):
            Tensor.manual_seed(c.seed * 100_003 + epoch)  # dropout/sampling stream of this epoch
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
                loss_t, correct_t = step(x, y)
                loss = loss_t.item()
                if not math.isfinite(loss):
                    raise TrainError(
                        f"the loss became {loss} at step {pos.step + 1} (epoch {epoch + 1}, batch {i + 1}); training stopped",
                        None,
                    )
                pos.step += 1
                run_loss += loss * len(yb)
                run_correct += correct_t.item()
                seen += len(yb)
                samples += len(yb)
                if self.ui:
                    self.ui.step(i + 1, run_loss / seen, run_correct / seen, seen / max(time.perf_counter() - t0, 1e-9), compiling)
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
            self.save("last.safetensors", pos)
            if better:
                shutil.copyfile(self.dir / "last.safetensors", self.dir / ".best.tmp")
                os.replace(self.dir / ".best.tmp", self.dir / "best.safetensors")
            append_line(self.dir / "metrics.jsonl", record)
            write_plot(self.dir / "loss.svg", history)
            msg = f"epoch {pos.epoch}/{c.epochs}: loss {train_metrics['loss']:.4f} acc {train_metrics['accuracy']:.4f}"
            if val:
                msg += f" | val loss {val['loss']:.4f} acc {val['accuracy']:.4f}"
            self.log(msg + f" | {record['samples_per_s']:.0f} samples/s")
            if c.max_steps is not None and pos.step >= c.max_steps:
                break
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


def _head(ds, n: int):
    from dataclasses import replace

    return replace(ds, x=ds.x[:n], y=ds.y[:n])


def _metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file."""
    import struct

    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise TrainError(f"{path}: truncated checkpoint")
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            raise TrainError(f"{path}: corrupt checkpoint header") from None
    return header.get("__metadata__", {})


def _read_history(path: Path, epochs: int) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("epoch", 0) <= epochs:
            out.append(rec)
    return out


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
