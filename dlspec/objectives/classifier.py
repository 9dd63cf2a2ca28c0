"""``train M`` (the default objective): supervised training of a classifier on labelled data.

One model with one input and one output, the ``train`` section's loss (``cross_entropy`` by
default, ``l2`` added), optimizer and learning-rate schedule; a validation split held out of the
training data (``val_split``) picks ``best.safetensors`` by accuracy, and the test split is
evaluated at the end. Inputs are normalised with the training split's mean and standard deviation
(kept in the checkpoint, so that ``dlspec eval`` and ``--resume`` use the run's own). A
``metrics.jsonl`` line per epoch: ``{"epoch", "step", "lr", "train": {"loss", "accuracy"}, "val":
{…} or null, "seconds", "samples_per_s"}``; the learning curve is ``loss.svg``.

The compiled steps are built in two small methods, :meth:`Classifier._train_step` (one TinyJit
step per batch size: loss, backward, update, the accuracy count) and
:meth:`Classifier._eval_step`; everything else — the epochs, progress, checkpoints, resume — is
the shared loop's (:mod:`dlspec.loop`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from ..errors import DlspecError, UsageError
from ..loop import Objective, Position
from ..train import OPTIMIZER_FIELDS, RunConfig, TrainError, check_safetensors, write_plot


class Classifier(Objective):
    """Trains a classifier spec on a data set; see the module docstring."""

    kind = "classifier"

    #: run the compiled steps with the kernels ``dlspec tune`` found for this spec, batch and device, if any
    tuned_kernels = True

    def __init__(self, prog, cfg: RunConfig, run_dir: Path, log: Callable[[str], None], ui: Any = None):
        super().__init__(prog, cfg, run_dir, log, ui)
        self.normalization: tuple[Any, Any] | None = None  # (mean, std) to use instead of the training split's

    # data ------------------------------------------------------------------------------------
    def load_data(self) -> None:
        import numpy as np

        from .. import data

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
        # on several devices a last, partial batch is cut to a multiple of their number (a batch splits only
        # evenly); evaluation keeps the few left over as a batch of their own, computed whole on each device
        split = len(c.devices) if c.devices else 1
        self.loader = data.Loader(
            train, c.batch, c.seed, shuffle=True, augment=c.augment, mean=mean, std=std, drop_single=has_bn, multiple=split
        )
        self.eval_loaders = {
            name: data.Loader(ds, c.batch, c.seed, shuffle=False, augment=False, mean=mean, std=std, multiple=split, keep_rest=True)
            for name, ds in (("val", val), ("test", test))
            if ds is not None
        }

    # model and optimizer -----------------------------------------------------------------------
    def build(self) -> None:
        from .. import optim, schedules

        c = self.cfg
        self.net = self.build_net(c.model, c.seed)
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
        if self.tuned_kernels and not c.devices:  # kernels tuned by `dlspec tune` (on one device): the steps use them, and the log says so
            from ..tuning import use_tuned

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
        """A batch as device tensors: float32 samples and int32 labels are written into reused
        device buffers (:class:`~dlspec.objectives.common.Staging`, one per shape: on CPU a copy of
        microseconds, where a new ``Tensor(array)`` per batch took 4 s of a LeNet-5 MNIST epoch)."""
        import numpy as np
        from tinygrad import Tensor, dtypes

        xb = xb.reshape(xb.shape[0], *self.reshape)
        if xb.dtype != np.float32:  # token ids and other inputs: a tensor of their own dtype
            from ..backends.tinygrad import place

            dev = self.net.device
            x = place(Tensor(xb, device=dev[0] if isinstance(dev, tuple) else dev), dev)
        else:
            x = self._staged("x", xb, dtypes.float32)
        return x, self._staged("y", yb.astype("int32"), dtypes.int32)

    def _staged(self, slot: str, a, dtype):
        from .common import Staging

        staging = self.__dict__.setdefault("_batch_buffers", {})
        key = (slot, a.shape)
        if key not in staging:
            staging[key] = Staging(a.shape, dtype, device=self.net.device)
        return staging[key].set(a)

    def _train_step(self, n: int):
        """The TinyJit-compiled training step for batches of ``n`` (one per size)."""
        from tinygrad import Context, Tensor, TinyJit

        from .. import losses, optim
        from ..stepcache import cached_step

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

            self.steps[key] = cached_step(self, "train", lambda: TinyJit(step))  # loaded from the step cache if there
        return self.steps[key]

    def _eval_step(self, n: int):
        from tinygrad import Tensor, TinyJit

        from .. import losses
        from ..stepcache import cached_step

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

            self.evals[key] = cached_step(self, "eval", lambda: TinyJit(step))
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
        from ..backends.tinygrad import load_weights
        from ..weightfile import weights_format

        path = Path(path)
        if weights_format(path) == "safetensors":  # its whole header validated before the model is touched
            check_safetensors(path, "weights file")
        self._loading(path, lambda: load_weights(self.net, path, name_map))  # a run checkpoint's model.* part, or the whole file

    def _load_model_state(self, path: Path, sd: dict) -> None:
        """Load ``sd`` (model keys, read from ``path``) into the net, with load_weights's checks."""
        from ..backends.tinygrad import load_state

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

    # the objective ---------------------------------------------------------------------------
    def prepare(self, meta: dict[str, str]) -> None:
        if meta:  # the run's own normalisation (a pure function of the config, but kept exactly)
            norm = normalization(meta)
            if norm is not None:
                self.normalization = norm
        self.load_data()

    def data_identity(self) -> tuple[str, str | None]:
        from ..resume import data_digest

        return self.cfg.data, data_digest(self.train_data, self.val_data, self.test_data)

    def setup(self) -> None:
        from ..backends.tinygrad import describe_device

        c = self.cfg
        self.build()
        self.device = self.net.device
        self.log(
            f"device {describe_device(self.net.device)}; {c.model}: {self.net.num_params()[0]:,} params; data {c.data}: "
            f"{len(self.train_data):,} train, {len(self.val_data) if self.val_data else 0:,} val, {len(self.test_data):,} test"
        )

    def parts(self) -> dict[str, Any]:
        return {"model": self.net, "optim": self.opt}

    def batches(self, unit: int, rng: Any):
        return self.loader.epoch(unit)

    def samples(self, batch: Any) -> int:
        return len(batch[1])

    def compiling(self, batch: Any, pos: Position, first: int) -> bool:
        step = self._train_step(len(batch[1]))  # a step loaded from the step cache compiles nothing after its first call
        return step.cnt < 2 and not (step.cnt and getattr(step, "from_cache", False))

    def train_step(self, batch: Any, pos: Position) -> tuple[dict[str, float], float]:
        from ..optim import set_lr

        c = self.cfg
        xb, yb = batch
        set_lr(self.opt, self.schedule(pos.step))
        x, y = self._tensors(xb, yb)
        try:
            loss_t, correct_t = self._train_step(len(yb))(x, y)
        except ValueError as e:  # losses reject outputs/targets that do not fit
            raise self.places.error(f"loss {c.loss} on {c.model}: {e}", "loss", "loss_options", cli=TrainError) from None
        loss = loss_t.item()
        if not math.isfinite(loss):
            return {"loss": loss}, len(yb)
        return {"loss": loss * len(yb), "accuracy": correct_t.item()}, len(yb)

    def progress(self, i: int, means: dict[str, float], rate: float, compiling: bool) -> None:
        if self.ui:
            self.ui.step(i, means.get("loss", 0.0), means.get("accuracy", 0.0), rate, compiling)

    def end_unit(self, unit: int, means: dict[str, float], pos: Position, seconds: float, samples: int) -> dict[str, Any]:
        from ..loop import clock

        t_end = clock()
        val = self.evaluate(self.eval_loaders["val"]) if "val" in self.eval_loaders else None
        seconds += clock() - t_end
        return {
            "epoch": pos.unit,
            "step": pos.step,
            "lr": self.schedule(max(pos.step - 1, 0)),
            "train": {"loss": means.get("loss", 0.0), "accuracy": means.get("accuracy", 0.0)},
            "val": val,
            "seconds": round(seconds, 3),
            "samples_per_s": round(samples / max(seconds, 1e-9), 1),
        }

    def unit_line(self, record: dict[str, Any]) -> str:
        train, val = record["train"], record["val"]
        msg = f"epoch {record['epoch']}/{self.cfg.epochs}: loss {train['loss']:.4f} acc {train['accuracy']:.4f}"
        if val:
            msg += f" | val loss {val['loss']:.4f} acc {val['accuracy']:.4f}"
        return msg + f" | {record['samples_per_s']:.0f} samples/s"

    def score(self, record: dict[str, Any]) -> float | None:
        return (record["val"] or record["train"])["accuracy"]

    def meta(self, pos: Position) -> dict[str, str]:
        from .. import resume

        return {
            "format": "dlspec-checkpoint-1",
            "epoch": str(pos.unit),
            "step": str(pos.step),
            "best": json.dumps(pos.best),
            "seed": str(self.cfg.seed),
            # the dropout/sampling stream is reseeded at every epoch start from (seed, epoch): see resume.reseed
            "rng": json.dumps({"scheme": "per-epoch", "epoch_seed": resume.epoch_seed(self.cfg.seed, pos.unit)}),
            "normalize": json.dumps({"mean": [float(v) for v in self.mean.reshape(-1)], "std": [float(v) for v in self.std.reshape(-1)]}),
        }

    def position(self, path: Path, meta: dict[str, str]) -> Position:
        if "epoch" not in meta or "step" not in meta:
            raise TrainError(f"{path}: not a dlspec checkpoint (no position in its metadata)")
        return super().position(path, meta)

    def plot(self, history: list[dict]) -> None:
        write_plot(self.dir / "loss.svg", history)

    def summary(self, history: list[dict], pos: Position, wall: float, samples: int) -> dict[str, Any]:
        test = self.evaluate(self.eval_loaders["test"])
        return {
            "run_dir": str(self.dir),
            "model": self.cfg.model,
            "device": self.net.device,
            "epochs": pos.unit,
            "steps": pos.step,
            "train": history[-1]["train"] if history else None,
            "val": history[-1]["val"] if history else None,
            "test": test,
            "best_val": pos.best,
            "wall_seconds": round(wall, 1),
            "samples_per_s": round(samples / wall, 1) if wall > 0 and samples else None,
        }


#: the old name of :class:`Classifier` (``dlspec.train.Trainer``)
Trainer = Classifier


def _is_buffer_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")


def normalization(meta: dict[str, str]):
    """The ``(mean, std)`` a checkpoint's run normalised its inputs with (``None``: not recorded)."""
    import numpy as np

    try:
        norm = json.loads(meta["normalize"])
        return np.asarray(norm["mean"], dtype=np.float32), np.asarray(norm["std"], dtype=np.float32)
    except (KeyError, ValueError, TypeError):
        return None


def _head(ds, n: int):
    from dataclasses import replace

    return replace(ds, x=ds.x[:n], y=ds.y[:n])
