"""The resolved configuration of an objective run, and the checks of its models against the objective.

Every problem (a setting that does not apply to the objective, a VAE without ``mu``/``logvar``
outputs, a generator whose output does not fit the discriminator, an unknown environment) is a
:class:`~dlspec.train.TrainError` pointing at the ``train`` section, never a traceback.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import Diagnostic, Note, UsageError
from ..registry import OBJECTIVES
from ..train import TrainError, _pydantic_message, data_setting, optimizer_setting, section_placement

#: settings each objective takes (beyond these, a setting is an error at its span): :data:`dlspec.registry.OBJECTIVES`
ALLOWED: dict[str, tuple[str, ...]] = {name: e.settings for name, e in OBJECTIVES.items() if e.settings is not None}
#: the losses each objective can use
LOSSES: dict[str, tuple[str, ...]] = {name: e.losses for name, e in OBJECTIVES.items() if name != "classifier"}
DEFAULT_LOSS = {name: e.default_loss for name, e in OBJECTIVES.items() if name != "classifier"}
#: environments ``train dqn`` runs (Gymnasium ids, observation size, actions)
ENVS: dict[str, tuple[str, int, int]] = {"cartpole": ("CartPole-v1", 4, 2)}
#: overrides that do not apply to an objective
NOT_FOR = {"schedule", "val_split"}


class ObjectiveConfig(BaseModel):
    """A ``train autoencoder|vae|gan|dqn`` run: the spec's section plus command-line overrides
    (the ranges are the spec's: a value given on the command line or by a sweep is held to them too)."""

    model_config = ConfigDict(extra="forbid")

    spec: str
    kind: str
    model: str  # the model trained (the generator of a GAN)
    models: dict[str, str]  # role → model
    data: str = "shapes"
    data_options: dict[str, Any] = {}
    data_dir: str | None = None
    limit: int | None = Field(None, ge=1)
    loss: str = "mse"
    loss_options: dict[str, Any] = {}
    optimizer: str = "adam"
    optimizer_options: dict[str, Any] = {}
    lr: float = Field(1e-3, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    clip: float | None = Field(None, gt=0)
    batch: int = Field(64, ge=1)
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    device: str | None = None
    devices: list[str] | None = None  # data parallel on these (each batch split across them)
    sync_bn: bool = False  # batch norm with the whole batch's statistics across the devices
    # autoencoder: σ of the Gaussian input noise (denoising); gan: σ of z
    noise: float = Field(0.0, ge=0)
    noise_dim: int | None = Field(None, ge=1)
    # vae
    latent: int | None = Field(None, ge=1)
    beta: float = Field(1.0, ge=0)
    # gan
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    d_optimizer: str = "adam"
    d_optimizer_options: dict[str, Any] = {}
    d_lr: float = Field(2e-4, ge=0)
    g_optimizer: str = "adam"
    g_optimizer_options: dict[str, Any] = {}
    g_lr: float = Field(2e-4, ge=0)
    # dqn
    env: str = "cartpole"
    gamma: float = Field(0.99, ge=0, le=1)
    buffer: int = Field(10000, ge=1)
    target_update: int = Field(100, ge=1)
    epsilon: float = Field(1.0, ge=0, le=1)
    epsilon_end: float = Field(0.05, ge=0, le=1)
    epsilon_decay: int = Field(1000, ge=1)
    episodes: int = Field(300, ge=1)
    warmup: int = Field(500, ge=0)
    eval_every: int = Field(10, ge=1)
    eval_episodes: int = Field(100, ge=1)
    #: model and block parameters bound for this run (``{"DEF.NAME": value}``): a ``dlspec sweep``
    #: trial's; ``--resume`` binds them again
    params: dict[str, Any] = {}


def _err(message: str, span, notes: list[Note] | None = None, help: str | None = None) -> TrainError:
    return TrainError(Diagnostic(message, span, notes=notes or [], help=help))


def resolve(prog, spec_path: str, section, overrides: dict[str, Any]) -> ObjectiveConfig:
    """The configuration of the objective ``section`` (a validated ``TrainSpec``) with ``overrides``;
    checks the settings and the models' shapes against the objective."""
    kind = section.kind
    s = section.settings
    allowed = ALLOWED[kind]
    for key, st in s.items():
        if key not in allowed:
            raise _err(f"'{key}' does not apply to 'train {kind}'", st.span, help=f"'train {kind}' takes: " + ", ".join(sorted(allowed)))
    models = dict(section.models)
    model = models.get("model") or models["generator"]
    cfg: dict[str, Any] = {"spec": spec_path, "kind": kind, "model": model, "models": models, "loss": DEFAULT_LOSS[kind]}
    if kind == "gan":
        cfg["noise"] = 1.0
    if "data" in s:
        for k in ("val_split", "augment", "normalize"):
            if k in s["data"].options:
                raise _err(f"data option '{k}' does not apply to 'train {kind}'", s["data"].span)
        cfg.update(data_setting(s["data"]))
    if "loss" in s:
        if s["loss"].value not in LOSSES[kind]:
            raise _err(f"'train {kind}' cannot use loss '{s['loss'].value}'", s["loss"].span, help="one of " + ", ".join(LOSSES[kind]))
        cfg["loss"], cfg["loss_options"] = s["loss"].value, dict(s["loss"].options)
    if "optimizer" in s:
        cfg.update(optimizer_setting(s["optimizer"]))
        opts = cfg["optimizer_options"]
        if kind == "gan":  # one `optimizer` line sets both of a GAN's
            for r in ("d", "g"):
                cfg[f"{r}_optimizer"], cfg[f"{r}_optimizer_options"] = cfg["optimizer"], dict(opts)
                if "lr" in cfg:
                    cfg[f"{r}_lr"] = cfg["lr"]
    else:
        cfg["optimizer_options"] = {}
        if kind == "gan":  # DCGAN's Adam: lr 2e-4, β1 0.5
            for r in ("d", "g"):
                cfg[f"{r}_optimizer_options"] = {"beta1": 0.5}
    for r in ("d", "g"):
        key = f"{r}_optimizer"
        if key in s:
            cfg.update(optimizer_setting(s[key], prefix=f"{r}_"))
    for key in ("batch", "epochs", "seed", "device", "weight_decay", "latent", "beta", "label_smoothing", "sync_bn"):
        if key in s:
            cfg[key] = s[key].value
    for key in ("gamma", "buffer", "target_update", "episodes", "warmup", "env"):
        if key in s:
            cfg[key] = s[key].value
    if "steps" in s:
        cfg["max_steps"] = s["steps"].value
    if "clip" in s:
        cfg["clip"] = s["clip"].value
    if "noise" in s:
        cfg["noise"] = s["noise"].value
        if "dim" in s["noise"].options:
            if kind != "gan":
                raise _err("'noise … dim' sets the size of a GAN's z; an autoencoder's noise is 'noise σ'", s["noise"].span)
            cfg["noise_dim"] = s["noise"].options["dim"]
    if "epsilon" in s:
        e = s["epsilon"]
        cfg["epsilon"] = e.value
        cfg["epsilon_end"] = e.options.get("end", min(e.value, 0.05))
        cfg["epsilon_decay"] = e.options.get("decay", 1000)
        if not 0 <= cfg["epsilon_end"] <= cfg["epsilon"] <= 1:
            raise _err(f"epsilon must fall from ≤ 1 to ≥ 0: got {cfg['epsilon']} → {cfg['epsilon_end']}", e.span)
    if "gamma" in s and not 0 <= s["gamma"].value <= 1:
        raise _err(f"gamma must be in [0, 1], got {s['gamma'].value}", s["gamma"].span)
    if "label_smoothing" in s and not 0 <= s["label_smoothing"].value < 1:
        raise _err(f"label_smoothing must be in [0, 1), got {s['label_smoothing'].value}", s["label_smoothing"].span)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in NOT_FOR:
            raise UsageError(f"--{key.replace('_', '-')} does not apply to 'train {kind}'")
        if key == "loss" and value not in LOSSES[kind]:
            raise UsageError(f"'train {kind}' cannot use loss '{value}'; one of {', '.join(LOSSES[kind])}")
        if kind == "dqn" and key in ("data", "data_dir", "limit", "epochs"):
            raise UsageError(f"--{key.replace('_', '-')} does not apply to 'train dqn' (it learns from its environment; use --episodes)")
        if kind != "dqn" and key == "episodes":
            raise UsageError("--episodes applies to 'train dqn' only (use --epochs)")
        if key in ("optimizer", "d_optimizer", "g_optimizer") and value != cfg.get(key, ObjectiveConfig.model_fields[key].default):
            cfg[f"{key}_options"] = {}  # another optimizer does not inherit the spec's options for the old one
        cfg[key] = value
        if kind == "gan" and key in ("lr", "optimizer"):
            for r in ("d", "g"):
                if key == "lr":
                    cfg[f"{r}_lr"] = value
                else:
                    cfg[f"{r}_optimizer"], cfg[f"{r}_optimizer_options"] = value, {}
    if overrides.get("epsilon") is not None or overrides.get("epsilon_end") is not None:
        fields = ObjectiveConfig.model_fields
        eps = cfg.get("epsilon", fields["epsilon"].default)
        if overrides.get("epsilon_end") is None and ("epsilon" not in s or "end" not in s["epsilon"].options):
            cfg["epsilon_end"] = min(eps, fields["epsilon_end"].default)  # as in the spec: the end defaults to min(ε, 0.05)
        end = cfg.get("epsilon_end", fields["epsilon_end"].default)
        if not 0 <= end <= eps <= 1:
            raise UsageError(f"bad training configuration: epsilon must fall from ≤ 1 to ≥ 0: got {eps} → {end}")
    cfg.update(section_placement(s, overrides))
    try:
        out = ObjectiveConfig(**cfg)
    except Exception as e:  # noqa: BLE001 - pydantic's message names the field
        raise UsageError(f"bad training configuration: {_pydantic_message(e)}") from None
    check_models(prog, out, section.span)
    return out


def _model_note(prog, name: str, what: str) -> Note:
    d = prog.defs.get(name)
    return Note(f"{name} {what}", getattr(d, "name_span", None))


def _io(prog, name: str):
    """(input types, output (name, type) pairs) of a model, statically."""
    g = prog.ir(name)
    sh = prog.shapes(name)
    return [sh.types[i] for i in g.inputs], [(o.name, sh.types[o.node]) for o in g.outputs], g


def _size(t) -> int | None:
    dims = t.sample
    return math.prod(dims) if all(isinstance(d, int) for d in dims) else None


def check_models(prog, cfg: ObjectiveConfig, span) -> None:
    """The models fit the objective (static shapes only; the data are checked when loaded)."""
    kind = cfg.kind
    if kind in ("autoencoder", "vae", "dqn"):
        name = cfg.model
        ins, outs, g = _io(prog, name)
        if len(ins) != 1:
            raise _err(
                f"'train {kind} {name}': the model must have one input, it has {len(ins)}",
                span,
                [_model_note(prog, name, "is defined here")],
            )
    if kind == "autoencoder":
        if len(outs) != 1:
            raise _err(f"'train autoencoder {name}': the model must have one output (the reconstruction), it has {len(outs)}", span)
        if _size(ins[0]) != _size(outs[0][1]):
            raise _err(
                f"'train autoencoder {name}': the output {outs[0][1].show()} must reconstruct the input {ins[0].show()}",
                span,
                [_model_note(prog, name, "is defined here")],
            )
    elif kind == "vae":
        names = [n for n, _ in outs]
        if "mu" not in names or "logvar" not in names or len(outs) != 3:
            raise _err(
                f"'train vae {name}': the model must output the reconstruction, mu and logvar ('output recon, mu, logvar'); it outputs {', '.join(names)}",
                span,
                [_model_note(prog, name, "is defined here")],
                help="the encoder's two heads: 'mu = h -> dense latent as mu', 'logvar = h -> dense latent as logvar', then 'z = (mu, logvar) -> sample'",
            )
        types = dict(outs)
        recon = next(n for n in names if n not in ("mu", "logvar"))
        if types["mu"].sample != types["logvar"].sample:
            raise _err(f"'train vae {name}': mu {types['mu'].show()} and logvar {types['logvar'].show()} must have the same shape", span)
        if _size(types[recon]) != _size(ins[0]):
            raise _err(f"'train vae {name}': the output '{recon}' {types[recon].show()} must reconstruct the input {ins[0].show()}", span)
        if not any(n.op == "sample" for n in g.nodes):
            raise _err(f"'train vae {name}': the model has no sampling step 'z = (mu, logvar) -> sample'", span)
        if cfg.latent is not None and _size(types["mu"]) != cfg.latent:
            raise _err(f"'train vae {name}': 'latent {cfg.latent}' but mu is {types['mu'].show()}", span)
    elif kind == "gan":
        gname, dname = cfg.models["generator"], cfg.models["discriminator"]
        gin, gout, _ = _io(prog, gname)
        din, dout, _ = _io(prog, dname)
        if len(gin) != 1 or len(gout) != 1:
            raise _err(
                f"'train gan': the generator {gname} must have one input (z) and one output",
                span,
                [_model_note(prog, gname, "is defined here")],
            )
        if len(din) != 1 or len(dout) != 1:
            raise _err(
                f"'train gan': the discriminator {dname} must have one input and one output",
                span,
                [_model_note(prog, dname, "is defined here")],
            )
        if len(gin[0].sample) != 1 or not isinstance(gin[0].sample[0], int):
            raise _err(f"'train gan': the generator's input must be a vector z [d], {gname} takes {gin[0].show()}", span)
        if tuple(gout[0][1].sample) != tuple(din[0].sample):
            raise _err(
                f"'train gan': the generator {gname} makes {gout[0][1].show()} but the discriminator {dname} takes {din[0].show()}",
                span,
                [_model_note(prog, gname, f"outputs {gout[0][1].show()}"), _model_note(prog, dname, f"takes {din[0].show()}")],
            )
        if _size(dout[0][1]) != 1:
            raise _err(f"'train gan': the discriminator {dname} must give one score per sample, it gives {dout[0][1].show()}", span)
        if cfg.noise_dim is not None and cfg.noise_dim != gin[0].sample[0]:
            raise _err(f"'train gan': 'noise … dim {cfg.noise_dim}' but the generator {gname} takes z {gin[0].show()}", span)
    elif kind == "dqn":
        if cfg.env not in ENVS:
            raise _err(
                f"'train dqn {name}': environment '{cfg.env}' is not supported; supported: {', '.join(ENVS)}",
                span,
                help="Atari games need the Arcade Learning Environment and frame preprocessing, which dlspec does not ship; the Atari DQN spec compiles and runs steps on given frames",
            )
        _, obs, actions = ENVS[cfg.env]
        if len(outs) != 1:
            raise _err(f"'train dqn {name}': the model must have one output (a Q-value per action), it has {len(outs)}", span)
        if tuple(ins[0].sample) != (obs,):
            raise _err(
                f"'train dqn {name}': {cfg.env} observations are [{obs}] but the model takes {ins[0].show()}",
                span,
                [_model_note(prog, name, "is defined here")],
            )
        if tuple(outs[0][1].sample) != (actions,):
            raise _err(
                f"'train dqn {name}': {cfg.env} has {actions} actions but the model outputs {outs[0][1].show()}",
                span,
                [_model_note(prog, name, "is defined here")],
            )
