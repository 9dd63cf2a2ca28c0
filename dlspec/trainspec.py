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

NUM = (int, float)
#: numeric options that may be negative (and must not be positive)
SIGNED = frozenset({"lr_power"})

#: objective → the model roles it names (first role: the one named without a key)
KINDS: dict[str, tuple[str, ...]] = {
    "classifier": ("model",),
    "autoencoder": ("model",),
    "vae": ("model",),
    "gan": ("generator", "discriminator"),
    "dqn": ("model",),
}

#: setting → (value type, allowed values or None, {option: type})
SETTINGS: dict[str, tuple[Any, tuple[str, ...] | None, dict[str, Any]]] = {
    "data": (str, None, {"dir": str, "val_split": float, "augment": bool, "normalize": bool, "limit": int, "length": int, "classes": int}),
    "loss": (
        str,
        ("cross_entropy", "nll", "bce", "bce_logits", "mse", "l1", "huber"),
        {"label_smoothing": float, "delta": float},
    ),
    "optimizer": (
        str,
        ("sgd", "rmsprop", "adagrad", "ftrl", "adam", "adamw"),
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
    ),
    "schedule": (
        str,
        ("constant", "step", "multistep", "exponential", "cosine", "warmup", "poly"),
        {"step": int, "milestones": tuple, "gamma": float, "warmup": int, "power": float, "min_lr": float, "epochs": int},
    ),
    "weight_decay": (float, None, {}),
    "l2": (float, None, {}),
    "clip": (float, None, {"norm": float}),
    "batch": (int, None, {}),
    "epochs": (int, None, {}),
    "steps": (int, None, {}),
    "seed": (int, None, {}),
    "metrics": (tuple, ("accuracy", "top5", "loss"), {}),
    "device": (str, None, {}),
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
    "d_optimizer": (
        str,
        ("sgd", "rmsprop", "adagrad", "ftrl", "adam", "adamw"),
        {"lr": float, "beta1": float, "beta2": float, "momentum": float},
    ),
    "g_optimizer": (
        str,
        ("sgd", "rmsprop", "adagrad", "ftrl", "adam", "adamw"),
        {"lr": float, "beta1": float, "beta2": float, "momentum": float},
    ),
}

#: options that make sense only for some optimizers
OPTIMIZER_OPTIONS = {
    "sgd": {"lr", "momentum", "nesterov", "weight_decay"},
    "rmsprop": {"lr", "alpha", "eps", "momentum", "weight_decay"},
    "adagrad": {"lr", "eps", "initial_accumulator", "weight_decay"},
    "ftrl": {"lr", "lr_power", "l1", "l2", "beta", "initial_accumulator"},
    "adam": {"lr", "beta1", "beta2", "eps", "weight_decay"},
    "adamw": {"lr", "beta1", "beta2", "eps", "weight_decay"},
}

#: options that make sense only for some losses
LOSS_OPTIONS = {"cross_entropy": frozenset({"label_smoothing"}), "huber": frozenset({"delta"})}


def _allowed(key: str, value: Any, opts: dict[str, Any]) -> Any:
    """The options ``key value`` takes: per optimizer and per loss, else the setting's."""
    if key in ("optimizer", "d_optimizer", "g_optimizer"):
        return OPTIMIZER_OPTIONS.get(value, opts)
    if key == "loss":
        return LOSS_OPTIONS.get(value, frozenset())
    return opts


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
                raise _Bad(
                    f"unknown {key[:-1] if key.endswith('s') else key} '{w}'{suggest(str(w), choices)}",
                    v.span,
                    help="one of " + ", ".join(choices),
                )
            words.append(w)
        return Setting(key=key, value=tuple(words), span=st.span)
    value = _word(first, evaluate) if typ is str else _num(first, evaluate, typ, key)
    if choices and value not in choices:
        raise _Bad(f"unknown {key} '{value}'{suggest(str(value), choices)}", first.span, help="one of " + ", ".join(choices))
    options: dict[str, Any] = {}
    while args:
        k = args.pop(0)
        if not isinstance(k, A.Name):
            raise _Bad(f"expected an option name of '{key}'", k.span)
        allowed = _allowed(key, value, opts)
        if k.id not in allowed:
            what = f"optimizer {value}" if key.endswith("optimizer") else f"loss {value}" if key == "loss" else f"'{key}'"
            help = ("options: " + ", ".join(sorted(allowed))) if allowed else f"{what} takes no options"
            if k.id == "label_smoothing":
                help += "; a GAN's label smoothing is a setting of its own: 'label_smoothing 0.1'"
            raise _Bad(f"unknown option '{k.id}' for {what}{suggest(k.id, allowed)}", k.span, help=help)
        if not args:
            raise _Bad(f"option '{k.id}' needs a value", k.span)
        v = args.pop(0)
        types = SETTINGS["optimizer"][2] if key in ("d_optimizer", "g_optimizer") else opts  # GAN optimizers: as `optimizer`
        t = types.get(k.id, float)
        options[k.id] = _word(v, evaluate) if t is str else _num(v, evaluate, t, k.id)
    return Setting(key=key, value=value, options=options, span=st.span)


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
