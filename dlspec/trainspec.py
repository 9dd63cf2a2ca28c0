"""Validation of ``train`` sections: objectives, models, and every setting with its options.

``train LeNet5 { … }`` (a classifier), ``train autoencoder AE { … }``, ``train vae VAE { … }``,
``train gan generator G, discriminator D { … }``, ``train dqn Q { … }``. Running them is
:mod:`dlspec.train`'s job; here each is checked against the tables below.
"""

from __future__ import annotations

from typing import Any

from . import ast as A
from .errors import Diagnostic, Note, Span, suggest
from .ir import Setting, TrainSpec
from .registry import DATA_OPTIONS, DATASETS, LOSSES, METRICS, OBJECTIVES, OPTIMIZERS, SCHEDULES, dataset

NUM = (int, float)
#: numeric options that may be negative (and must not be positive)
SIGNED = frozenset({"lr_power"})

#: objective → the model roles it names (first role: the one named without a key)
KINDS: dict[str, tuple[str, ...]] = {name: e.roles for name, e in OBJECTIVES.items()}

#: setting → (value type, allowed values or None, {option: type}); the names come from :mod:`dlspec.registry`
SETTINGS: dict[str, tuple[Any, tuple[str, ...] | None, dict[str, Any]]] = {
    "data": (str, None, {**DATA_OPTIONS, **DATASETS.option_types}),
    "loss": (str, LOSSES.names(), LOSSES.option_types),
    "optimizer": (str, OPTIMIZERS.names(), OPTIMIZERS.option_types),
    "schedule": (str, SCHEDULES.names(), SCHEDULES.option_types),
    "weight_decay": (float, None, {}),
    "l2": (float, None, {}),
    "clip": (float, None, {"norm": float}),
    "batch": (int, None, {}),
    "epochs": (int, None, {}),
    "steps": (int, None, {}),
    "seed": (int, None, {}),
    "metrics": (tuple, METRICS.names(), {}),
    "device": (str, None, {}),
    "devices": (tuple, None, {}),
    "sync_bn": (bool, None, {}),
    "noise": (float, None, {"dim": int}),
    "latent": (int, None, {}),
    "label_smoothing": (float, None, {}),
    "env": (str, None, {}),
    "gamma": (float, None, {}),
    "buffer": (int, None, {}),
    "target_update": (int, None, {}),
    "epsilon": (float, None, {"end": float, "decay": int}),
    "episodes": (int, None, {}),
    "warmup": (int, None, {}),
    "beta": (float, None, {}),
    "d_optimizer": (str, OPTIMIZERS.names(), OPTIMIZERS.option_types),
    "g_optimizer": (str, OPTIMIZERS.names(), OPTIMIZERS.option_types),
}

#: options that make sense only for some optimizers
OPTIMIZER_OPTIONS: dict[str, frozenset[str]] = {name: frozenset(e.options) for name, e in OPTIMIZERS.items()}

#: options that make sense only for some losses
LOSS_OPTIONS: dict[str, frozenset[str]] = {name: frozenset(e.options) for name, e in LOSSES.items() if e.options}

#: options each schedule takes
SCHEDULE_OPTIONS: dict[str, frozenset[str]] = {name: frozenset(e.options) for name, e in SCHEDULES.items()}

#: the setting a run-configuration field comes from (for errors found when training starts)
FIELD_SETTINGS: dict[str, tuple[str, ...]] = {
    "data_options": ("data",),
    "data_dir": ("data",),
    "val_split": ("data",),
    "augment": ("data",),
    "limit": ("data",),
    "loss_options": ("loss",),
    "optimizer_options": ("optimizer",),
    "lr": ("optimizer",),
    "weight_decay": ("weight_decay", "optimizer"),
    "schedule_options": ("schedule",),
    "clip_norm_type": ("clip",),
    "max_steps": ("steps",),
    "d_optimizer": ("d_optimizer", "optimizer"),
    "g_optimizer": ("g_optimizer", "optimizer"),
    "d_lr": ("d_optimizer", "optimizer"),
    "d_optimizer_options": ("d_optimizer", "optimizer"),
    "g_lr": ("g_optimizer", "optimizer"),
    "g_optimizer_options": ("g_optimizer", "optimizer"),
    "noise_dim": ("noise",),
    "epsilon_end": ("epsilon",),
    "epsilon_decay": ("epsilon",),
}


def setting_span(spec: TrainSpec, field: str) -> Span:
    """Where in ``spec`` the run-configuration ``field`` is set: its setting's line, else the
    ``train`` section's head."""
    for key in FIELD_SETTINGS.get(field, (field,)):
        if key in spec.settings:
            return spec.settings[key].span
    return spec.span


#: the registry of each named setting's values
NAMED = {
    "loss": LOSSES,
    "optimizer": OPTIMIZERS,
    "d_optimizer": OPTIMIZERS,
    "g_optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "metrics": METRICS,
}


def _allowed(key: str, value: Any, opts: dict[str, Any]) -> Any:
    """The options ``key value`` takes: per optimizer, loss, schedule and data set, else the setting's."""
    if key in ("optimizer", "d_optimizer", "g_optimizer"):
        return OPTIMIZER_OPTIONS.get(value, opts)
    if key == "loss":
        return LOSS_OPTIONS.get(value, frozenset())
    if key == "schedule":
        return SCHEDULE_OPTIONS.get(value, opts)
    if key == "data":
        entry = dataset(value)
        return frozenset(DATA_OPTIONS) | frozenset(entry.options) if entry is not None else opts
    return opts


def _what(key: str, value: Any) -> str:
    """How an option's owner is named in messages: ``optimizer sgd``, ``data set mnist``, ``'clip'``."""
    if key.endswith("optimizer") or key in ("loss", "schedule"):
        return f"{'optimizer' if key.endswith('optimizer') else key} {value}"
    if key == "data" and dataset(value) is not None:
        return f"data set {dataset(value).name}"
    return f"'{key}'"


def validate(train: A.Train, models: dict[str, Span], evaluate) -> tuple[TrainSpec | None, list[Diagnostic]]:
    """Check one ``train`` section. ``evaluate(expr)`` gives an argument's value."""
    diags: list[Diagnostic] = []
    args = [a for g in train.groups for a in g]
    head_span = train.span
    if not args:
        return None, [Diagnostic("'train' needs the model to train: 'train LeNet5 { … }'", head_span)]
    kind = "classifier"
    if isinstance(args[0], A.Name) and args[0].id in KINDS and args[0].id not in models:
        kind = args.pop(0).id
    roles = KINDS[kind]
    named: dict[str, str] = {}
    while args:
        a = args.pop(0)
        if not isinstance(a, A.Name):
            diags.append(Diagnostic("expected a model name", a.span))
            break
        if a.id in roles and args and isinstance(args[0], A.Name) and len(roles) > 1:
            role, m = a.id, args.pop(0)
        elif len(roles) == 1 and "model" not in named:
            role, m = "model", a
        else:
            diags.append(Diagnostic(f"'train {kind}' names {', '.join(roles)}; got '{a.id}'{suggest(a.id, roles)}", a.span))
            break
        if m.id not in models:
            diags.append(Diagnostic(f"unknown model '{m.id}'{suggest(m.id, models)}", m.span))
        named[role] = m.id
    for r in roles:
        if r not in named and not diags:
            want = " ".join(f"{x} NAME" for x in roles) if len(roles) > 1 else "NAME"
            diags.append(Diagnostic(f"'train {kind}' needs its {r}: 'train {kind} {want} {{ … }}'", head_span))
    settings: dict[str, Setting] = {}
    for st in train.body.stmts:
        try:
            s = _setting(st, evaluate)
        except _Bad as b:
            diags.append(b.diag)
            continue
        if s.key in settings:
            diags.append(Diagnostic(f"'{s.key}' is set twice", s.span, notes=[Note("first set here", settings[s.key].span)]))
            continue
        settings[s.key] = s
    devices = settings.get("devices")
    if devices is not None and "device" in settings:
        count = len(devices.value) == 1 and isinstance(devices.value[0], int)
        device = str(settings["device"].value)
        if not count:
            diags.append(
                Diagnostic(
                    "'devices' names the devices itself: set 'device' or 'devices', not both",
                    devices.span,
                    notes=[Note("'device' set here", settings["device"].span)],
                    help=f"or a count with a device kind: 'devices {len(devices.value)}' with 'device {device.partition(':')[0]}' trains on the first {len(devices.value)} devices of that kind",
                )
            )
        elif ":" in device:
            diags.append(
                Diagnostic(
                    f"'devices {devices.value[0]}' trains on the first {devices.value[0]} devices of one kind: give 'device' a kind ('{device.partition(':')[0]}'), not '{device}'",
                    settings["device"].span,
                )
            )
    if diags:
        return None, diags
    return TrainSpec(kind=kind, models=named, settings=settings, span=train.span), []


class _Bad(Exception):
    def __init__(self, message: str, span: Span, help: str | None = None):
        self.diag = Diagnostic(message, span, help=help)


def _setting(st: A.Stmt, evaluate) -> Setting:
    if not isinstance(st, A.ChainStmt) or len(st.chain.stages) != 1:
        raise _Bad("a train setting is one line 'key value [option value …]', e.g. 'batch 64'", st.span)
    e = st.chain.stages[0]
    if isinstance(e, A.Name):
        head, args = e, []
    elif isinstance(e, A.Apply) and isinstance(e.head, A.Name):
        head, args = e.head, list(e.args)
    else:
        raise _Bad("a train setting is one line 'key value [option value …]', e.g. 'batch 64'", st.span)
    key = head.id
    if key not in SETTINGS:
        raise _Bad(f"unknown train setting '{key}'{suggest(key, SETTINGS)}", head.span, help="settings: " + ", ".join(SETTINGS))
    typ, choices, opts = SETTINGS[key]
    if not args:
        raise _Bad(f"'{key}' needs a value", head.span)
    first = args.pop(0)
    if typ is tuple:  # metrics accuracy, top5 — everything is a value
        vals = [first] + args
        words = []
        for v in vals:
            w = _word(v, evaluate)
            if choices and w not in choices:
                raise _Bad(NAMED[key].unknown(str(w)), v.span, help="one of " + ", ".join(choices))
            words.append(w)
        if key == "devices":
            _check_devices(vals, words)
        return Setting(key=key, value=tuple(words), span=st.span)
    value = _word(first, evaluate) if typ is str else _num(first, evaluate, typ, key)
    if choices and value not in choices:
        raise _Bad(NAMED[key].unknown(str(value)), first.span, help="one of " + ", ".join(choices))
    options: dict[str, Any] = {}
    while args:
        k = args.pop(0)
        if not isinstance(k, A.Name):
            raise _Bad(f"expected an option name of '{key}'", k.span)
        allowed = _allowed(key, value, opts)
        if k.id not in allowed:
            what = _what(key, value)
            help = ("options: " + ", ".join(sorted(allowed))) if allowed else f"{what} takes no options"
            if k.id == "label_smoothing":
                help += "; a GAN's label smoothing is a setting of its own: 'label_smoothing 0.1'"
            raise _Bad(f"unknown option '{k.id}' for {what}{suggest(k.id, allowed)}", k.span, help=help)
        if not args:
            raise _Bad(f"option '{k.id}' needs a value", k.span)
        v = args.pop(0)
        t = opts.get(k.id, float)
        options[k.id] = _word(v, evaluate) if t is str else _num(v, evaluate, t, k.id)
    if key == "data" and dataset(value) is None:  # after its options: those errors come first
        names = [n for e in DATASETS.values() for n in (e.name, *e.aliases)]
        raise _Bad(f"unknown data set '{value}'{suggest(str(value).lower(), names)}", first.span, help="data sets: " + DATASETS.help())
    return Setting(key=key, value=value, options=options, span=st.span)


def _check_devices(exprs: list[A.Expr], words: list[Any]) -> None:
    """``devices "CUDA:0", "CUDA:1"`` (names) or ``devices 2`` (a count); the names themselves are
    checked when training starts, on the machine that trains."""
    if len(words) == 1 and isinstance(words[0], int) and not isinstance(words[0], bool):
        if words[0] < 1:
            raise _Bad(f"'devices' must be positive, got {words[0]}", exprs[0].span)
        return
    for e, w in zip(exprs, words):
        if not isinstance(w, str):
            raise _Bad(
                f"'devices' takes device names or one count, got {_shown(w)}",
                e.span,
                help='devices "CUDA:0", "CUDA:1" (names as strings), or devices 2',
            )


def _word(e: A.Expr, evaluate) -> Any:
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Str):
        return e.value
    return evaluate(e)


def _num(e: A.Expr, evaluate, typ, key: str) -> Any:
    v = e.id if isinstance(e, A.Name) else evaluate(e)  # `seed yes`: a word where a number belongs
    if typ is bool:
        if not isinstance(v, bool):
            raise _Bad(f"'{key}' must be true or false, got {v!r}", e.span)
        return v
    if typ is tuple:
        if not isinstance(v, tuple):
            raise _Bad(f"'{key}' must be a list, got {v!r}", e.span)
        return v
    if isinstance(v, bool) or not isinstance(v, NUM):
        raise _Bad(f"'{key}' must be a number, got {_shown(v)}", e.span)
    if typ is int:
        if not isinstance(v, int):
            raise _Bad(f"'{key}' must be a whole number, got {v}", e.span)
        if v <= 0 and key not in ("seed",):
            raise _Bad(f"'{key}' must be positive, got {v}", e.span)
        if v < 0:
            raise _Bad(f"'{key}' must be ≥ 0, got {v}", e.span)
        return v
    if key in SIGNED:  # FTRL's learning_rate_power: ≤ 0 (the paper's -0.5)
        if v > 0:
            raise _Bad(f"'{key}' must be ≤ 0 (e.g. -0.5), got {v}", e.span)
        return float(v)
    if v < 0:
        raise _Bad(f"'{key}' must be ≥ 0, got {v}", e.span)
    return float(v)


def _shown(v: Any) -> str:
    return f"'{v}'" if isinstance(v, str) else repr(v)
