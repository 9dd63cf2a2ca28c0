"""Every name a ``train`` section can use, defined once: objectives, data sets, losses, metrics,
optimizers and learning-rate schedules.

Each registry is an ordered mapping name → entry; an entry carries its one-line description
(``doc``) and the spec options it takes. :mod:`dlspec.trainspec` validates ``train`` sections
against these (unknown names and options with did-you-mean), the command line takes its
choices and help from them, :mod:`dlspec.report` its optimizer-state sizes, the implementations
(:mod:`dlspec.losses`, :mod:`dlspec.optim`, :mod:`dlspec.schedules`, :mod:`dlspec.data`,
:mod:`dlspec.objectives`) check at import that they implement exactly these names, and the
tables of ``docs/training.md`` list exactly these entries (a test compares them).

Pure data: importing this module imports nothing heavy (``dlspec --help`` reads it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "Entry",
    "OptimizerEntry",
    "ObjectiveEntry",
    "RunMetric",
    "DataSetEntry",
    "Registry",
    "OBJECTIVES",
    "DATASETS",
    "LOSSES",
    "METRICS",
    "OPTIMIZERS",
    "SCHEDULES",
    "DATA_OPTIONS",
    "dataset",
]


@dataclass(frozen=True)
class Entry:
    """One name: what it is (one line, for ``--help`` and the docs) and the spec options it takes."""

    name: str
    doc: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class OptimizerEntry(Entry):
    #: float32 state tensors kept per parameter (the training-memory estimate), and how many more with ``momentum > 0``
    state: int = 0
    momentum_state: int = 0


@dataclass(frozen=True)
class RunMetric:
    """A number an objective's run reports every unit (epoch or episode), under the name it has in
    the unit's ``metrics.jsonl`` line flattened (a classifier's ``{"val": {"accuracy": …}}`` is
    ``val_acc``): what ``dlspec sweep --metric`` takes."""

    name: str
    #: which way is better: ``max`` or ``min`` (``dlspec sweep``'s default ``--mode`` for it)
    mode: str
    doc: str


@dataclass(frozen=True)
class ObjectiveEntry(Entry):
    #: the model roles of the head (the first is named without a key: ``train vae M``)
    roles: tuple[str, ...] = ("model",)
    #: the losses it can use; the first is its default
    losses: tuple[str, ...] = ()
    #: the settings it takes (``None``: every setting)
    settings: tuple[str, ...] | None = None
    #: ``module:Class`` of its run loop
    runner: str = ""
    #: the metrics its runs report every unit; the first is ``dlspec sweep``'s default ``--metric``
    metrics: tuple[RunMetric, ...] = ()

    @property
    def default_loss(self) -> str:
        return self.losses[0]

    def metric(self, name: str) -> RunMetric | None:
        """The metric ``name`` of its runs, or ``None``."""
        return next((m for m in self.metrics if m.name == name), None)


@dataclass(frozen=True)
class DataSetEntry(Entry):
    #: ``built-in`` (generated, no files), ``files`` (read from the standard files, downloaded when
    #: missing) or ``unavailable`` (known, but not loadable: ``why_not`` says why)
    source: str = "built-in"
    aliases: tuple[str, ...] = ()
    why_not: str = ""


E = TypeVar("E", bound=Entry)


class Registry(Mapping[str, E], Generic[E]):
    """An ordered, read-only ``name → entry`` mapping of one kind of name (``what``: "optimizer", …),
    with the types of the options its entries take."""

    def __init__(self, what: str, entries: tuple[E, ...], option_types: Mapping[str, Any] | None = None):
        self.what = what
        self._entries = {e.name: e for e in entries}
        if len(self._entries) != len(entries):
            raise ValueError(f"a {what} is registered twice")
        self.option_types: dict[str, Any] = dict(option_types or {})
        untyped = sorted({o for e in entries for o in e.options} - set(self.option_types))
        if untyped:
            raise ValueError(f"{what} options without a type: {', '.join(untyped)}")

    def __getitem__(self, name: str) -> E:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"

    def names(self) -> tuple[str, ...]:
        """The names in their documented order."""
        return tuple(self._entries)

    def help(self) -> str:
        """``a, b, c`` for command-line help."""
        return ", ".join(self._entries)

    def unknown(self, name: str) -> str:
        """``unknown optimizer 'adamm' — did you mean 'adam'?``"""
        from .errors import suggest

        return f"unknown {self.what} '{name}'{suggest(name, self._entries)}"


# ---- data sets -----------------------------------------------------------------------------------

#: options of the ``data`` setting every data set takes (the trainer's, and ``dir``/``limit``)
DATA_OPTIONS: dict[str, Any] = {"dir": str, "val_split": float, "augment": bool, "normalize": bool, "limit": int}

DATASETS: Registry[DataSetEntry] = Registry(
    "data set",
    (
        DataSetEntry(
            "shapes",
            "generated 1×28×28 images of 10 shapes (disk, square, triangle, …) at random positions, sizes, angles and noise",
            options=("length", "classes", "seed"),
        ),
        DataSetEntry(
            "sequences",
            "generated (T, 16) sequences whose class is the frequency that produced them",
            options=("length", "classes", "features", "seed"),
        ),
        DataSetEntry("mnist", "handwritten digits, 1×28×28, 10 classes (60,000 train, 10,000 test)", source="files"),
        DataSetEntry(
            "fashion_mnist",
            "Zalando's clothing images, 1×28×28, 10 classes (60,000 train, 10,000 test)",
            source="files",
            aliases=("fashion-mnist", "fashionmnist", "fmnist"),
        ),
        DataSetEntry(
            "cifar10", "colour images, 3×32×32, 10 classes (50,000 train, 10,000 test)", source="files", aliases=("cifar-10", "cifar_10")
        ),
        DataSetEntry(
            "cifar100",
            "colour images, 3×32×32, 100 classes (50,000 train, 10,000 test)",
            source="files",
            aliases=("cifar-100", "cifar_100"),
        ),
        DataSetEntry(
            "imagenet",
            "ILSVRC-2012 images, 1000 classes",
            source="unavailable",
            why_not="ImageNet is not downloadable automatically (it needs a licence and ~150 GB)",
        ),
        DataSetEntry(
            "tiny_shakespeare",
            "character-level text; length: the characters per sample",
            options=("length",),
            source="unavailable",
            why_not="the character-level text sets are not built in yet",
        ),
    ),
    {"length": int, "classes": int, "features": int, "seed": int},
)

# ---- losses and metrics --------------------------------------------------------------------------

LOSSES: Registry[Entry] = Registry(
    "loss",
    (
        Entry(
            "cross_entropy",
            "logits and integer targets (or probabilities shaped like the logits); label_smoothing ε: target (1−ε)·onehot + ε/C",
            options=("label_smoothing",),
        ),
        Entry("nll", "log-probabilities and integer targets: −logp[target]"),
        Entry("bce", "probabilities p: −(y·log p + (1−y)·log(1−p)), the logs clamped at −100 (PyTorch's)"),
        Entry("bce_logits", "logits x: max(x, 0) − x·y + log(1 + e^−abs(x)) (numerically stable)"),
        Entry("mse", "mean squared error (o − y)²"),
        Entry("l1", "mean absolute error abs(o − y)"),
        Entry("huber", "½d² where abs(d) < δ, else δ·(abs(d) − ½δ); delta δ, default 1 (PyTorch's HuberLoss)", options=("delta",)),
    ),
    {"label_smoothing": float, "delta": float},
)

METRICS: Registry[Entry] = Registry(
    "metric",
    (
        Entry("accuracy", "the fraction of argmax predictions equal to the target (one output: of output > 0.5)"),
        Entry("top5", "the fraction of targets among the 5 largest outputs"),
        Entry("loss", "the loss (always reported)"),
    ),
)

# ---- objectives ----------------------------------------------------------------------------------

#: the settings every data-driven objective takes
_COMMON = ("data", "loss", "optimizer", "batch", "epochs", "steps", "seed", "device", "devices", "sync_bn", "weight_decay", "clip")

OBJECTIVES: Registry[ObjectiveEntry] = Registry(
    "objective",
    (
        ObjectiveEntry(
            "classifier",
            "supervised training of one model on labelled data (the default objective)",
            losses=LOSSES.names(),
            runner="dlspec.objectives.classifier:Classifier",
            metrics=(
                RunMetric("val_acc", "max", "accuracy on the validation split (needs val_split > 0)"),
                RunMetric("val_loss", "min", "the loss on the validation split"),
                RunMetric("val_top5", "max", "top-5 accuracy on the validation split (with metrics top5)"),
                RunMetric("train_acc", "max", "the epoch's mean training accuracy"),
                RunMetric("train_loss", "min", "the epoch's mean training loss"),
            ),
        ),
        ObjectiveEntry(
            "autoencoder",
            "reconstruct the input; noise σ adds Gaussian noise to the input only (a denoising autoencoder)",
            losses=("mse", "bce", "bce_logits", "l1"),
            settings=_COMMON + ("noise",),
            runner="dlspec.objectives.autoencoder:AutoencoderRun",
            metrics=(
                RunMetric("test_mse", "min", "per-pixel squared error of the clean test inputs' reconstructions (any loss)"),
                RunMetric("test_loss", "min", "the reconstruction loss on the clean test inputs"),
                RunMetric("train_loss", "min", "the epoch's mean training loss (on the noisy inputs with noise σ)"),
            ),
        ),
        ObjectiveEntry(
            "vae",
            "variational autoencoder: reconstruction plus β·KL (the negative ELBO), both reported",
            losses=("bce", "bce_logits", "mse"),
            settings=_COMMON + ("latent", "beta"),
            runner="dlspec.objectives.autoencoder:VAERun",
            metrics=(
                RunMetric("test_loss", "min", "the negative ELBO rec + β·KL per test sample (one z drawn per sample)"),
                RunMetric("test_rec", "min", "the reconstruction term on the test split"),
                RunMetric("test_kl", "min", "the KL term on the test split"),
                RunMetric("train_loss", "min", "the epoch's mean negative ELBO"),
                RunMetric("train_rec", "min", "the epoch's mean reconstruction term"),
                RunMetric("train_kl", "min", "the epoch's mean KL term"),
            ),
        ),
        ObjectiveEntry(
            "gan",
            "adversarial training: alternating discriminator and non-saturating generator steps, one optimizer each",
            roles=("generator", "discriminator"),
            losses=("bce_logits", "bce"),
            settings=_COMMON + ("noise", "label_smoothing", "d_optimizer", "g_optimizer"),
            runner="dlspec.objectives.gan:GANRun",
            metrics=(
                RunMetric("train_g_loss", "min", "the epoch's mean generator loss −log D(G(z)) (non-saturating)"),
                RunMetric("test_d_acc", "min", "the discriminator's accuracy on test images against fresh samples (chance: 0.5)"),
                RunMetric("train_d_loss", "min", "the epoch's mean discriminator loss"),
                RunMetric("train_d_acc", "max", "the epoch's mean discriminator accuracy on its real and generated batches"),
                RunMetric("train_d_real", "max", "the epoch's mean D(x) on real images"),
                RunMetric("train_d_fake", "max", "the epoch's mean D(G(z)) on generated images"),
            ),
        ),
        ObjectiveEntry(
            "dqn",
            "deep Q-learning in an environment: experience replay, a target network, ε-greedy exploration",
            losses=("huber", "mse"),
            settings=("loss", "optimizer", "batch", "steps", "seed", "device", "devices", "sync_bn", "weight_decay", "clip")
            + ("env", "gamma", "buffer", "target_update", "epsilon", "episodes", "warmup"),
            runner="dlspec.objectives.dqn:DQNRun",
            metrics=(
                RunMetric("eval_return", "max", "mean return of 10 greedy episodes, every 10th episode and at the last"),
                RunMetric("return", "max", "the episode's return (ε-greedy, while training)"),
                RunMetric("loss", "min", "the episode's mean TD loss (once learning has started)"),
            ),
        ),
    ),
)

# ---- optimizers and schedules --------------------------------------------------------------------

OPTIMIZERS: Registry[OptimizerEntry] = Registry(
    "optimizer",
    (
        OptimizerEntry(
            "sgd",
            "stochastic gradient descent (PyTorch's, dampening 0): b = μ·b + g; w −= lr·b, or lr·(g + μ·b) with Nesterov",
            options=("lr", "momentum", "nesterov", "weight_decay"),
            momentum_state=1,
        ),
        OptimizerEntry(
            "rmsprop",
            "RMSProp (PyTorch's, not centred): s = α·s + (1−α)·g²; w −= lr·g/(√s + eps), through a momentum buffer if μ > 0",
            options=("lr", "alpha", "eps", "momentum", "weight_decay"),
            state=1,
            momentum_state=1,
        ),
        OptimizerEntry(
            "adagrad",
            "AdaGrad (PyTorch's): s += g²; w −= lr·g/(√s + eps), s starting at initial_accumulator",
            options=("lr", "eps", "initial_accumulator", "weight_decay"),
            state=1,
        ),
        OptimizerEntry(
            "ftrl",
            "FTRL-proximal (McMahan et al. 2013, in TensorFlow's form): per-coordinate rates, l1 and l2 regularisation",
            options=("lr", "lr_power", "l1", "l2", "beta", "initial_accumulator"),
            state=2,
        ),
        OptimizerEntry(
            "adam",
            "Adam (PyTorch's): bias-corrected moving averages of g and g²; weight_decay added to the gradient",
            options=("lr", "beta1", "beta2", "eps", "weight_decay"),
            state=2,
        ),
        OptimizerEntry(
            "adamw",
            "AdamW (PyTorch's): Adam with decoupled weight decay w −= lr·wd·w (default 0.01)",
            options=("lr", "beta1", "beta2", "eps", "weight_decay"),
            state=2,
        ),
    ),
    {
        "lr": float,
        "momentum": float,
        "nesterov": bool,
        "alpha": float,
        "eps": float,
        "beta1": float,
        "beta2": float,
        "lr_power": float,
        "l1": float,
        "l2": float,
        "beta": float,
        "initial_accumulator": float,
        "weight_decay": float,
    },
)

SCHEDULES: Registry[Entry] = Registry(
    "schedule",
    (
        Entry("constant", "base_lr throughout", options=("warmup",)),
        Entry(
            "step",
            "base_lr·gamma^⌊epoch/step⌋ (step epochs, default ⌊epochs/3⌋; gamma 0.1): PyTorch's StepLR",
            options=("step", "gamma", "min_lr", "warmup"),
        ),
        Entry(
            "multistep",
            "base_lr·gamma^(milestones passed) (default ⌊epochs/2⌋ and ⌊3·epochs/4⌋; gamma 0.1): MultiStepLR",
            options=("milestones", "gamma", "min_lr", "warmup"),
        ),
        Entry("exponential", "base_lr·gamma^epoch (gamma default 0.95): ExponentialLR", options=("gamma", "min_lr", "warmup")),
        Entry("cosine", "min_lr + (base_lr − min_lr)·(1 + cos(π·u))/2 per step: CosineAnnealingLR", options=("min_lr", "epochs", "warmup")),
        Entry("warmup", "linear warm-up over warmup epochs (default 1), then base_lr", options=("warmup",)),
        Entry(
            "poly",
            "min_lr + (base_lr − min_lr)·(1 − u)^power per step (power 1.0): PolynomialLR",
            options=("power", "min_lr", "epochs", "warmup"),
        ),
    ),
    {"step": int, "milestones": tuple, "gamma": float, "warmup": int, "power": float, "min_lr": float, "epochs": int},
)


def dataset(name: str) -> DataSetEntry | None:
    """The entry of a data set by name or alias (case-insensitive), or ``None``."""
    key = str(name).strip().lower()
    if key in DATASETS:
        return DATASETS[key]
    return next((e for e in DATASETS.values() if key in e.aliases), None)
