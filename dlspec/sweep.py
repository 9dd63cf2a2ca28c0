"""``dlspec sweep``: hyperparameter search over a spec's model parameters and train settings, on Ray Tune.

A sweep tunes a run of any objective (:data:`dlspec.registry.OBJECTIVES`: a classifier, an
autoencoder, a VAE, a GAN — its generator's and discriminator's parameters —, a DQN), and is
planned here, before anything runs: every ``--param NAME=SPACE`` is resolved (a parameter of the
model(s) or of a block, a train setting of the objective, an optimizer option), the configurations
are drawn (the full grid of finite spaces, or ``--trials K`` random draws), and each one is
checked statically — bound into the spec (:meth:`dlspec.api.Program.bind`), its shapes inferred
and its parameters and MACs counted against ``--max-params``/``--max-macs``, its train settings
resolved. A configuration that fails is *pruned* with its diagnostic (``spec.dl:4:3: error: …``)
and never launched. The others run as Ray Tune trials, each a normal ``dlspec train`` run in its
own run directory ``DIR/trials/NNN`` (:func:`run_trial`, in a Ray worker), reporting every epoch's
(a DQN's: episode's) metrics — the objective's registered ``metrics`` — so that ``--scheduler asha``
can stop bad trials early.

``DIR/sweep.json`` (written atomically whenever a trial starts or ends) holds the plan and each
trial's settings, status (``done``, ``pruned``, ``stopped``, ``failed``; ``pending``, ``running`` or
``interrupted`` while unfinished) and metrics, and the best trial; ``--resume DIR`` reruns the
unfinished trials (a started one continues from its last checkpoint, bit-identically) and keeps
the finished ones. Ray is imported only to run trials (``pip install 'dlspec[sweep]'``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import DlspecError, UsageError, suggest

#: sweep.json's format
FORMAT = "dlspec-sweep-1"
#: space kinds written ``KIND:LO:HI`` (a list ``a,b,c`` is the other)
KINDS = ("int", "uniform", "loguniform")
#: at most this many configurations in a sweep
MAX_TRIALS = 10_000
#: statuses a trial ends in; the others (pending, running, interrupted) are rerun by --resume
FINAL = ("done", "stopped", "failed", "pruned")
#: metric keys shortened in the flat names Ray sees
SHORT = {"accuracy": "acc"}
#: the run-configuration fields a spec setting of an objective (:data:`dlspec.registry.OBJECTIVES`'s
#: ``settings``) lets a sweep vary, where they are not the setting's own name (none: a setting a
#: sweep does not vary — the devices, and the data set but for its ``limit``)
SETTING_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("limit",),
    "device": (),
    "devices": (),
    "sync_bn": (),
    "steps": ("max_steps",),
    "optimizer": ("optimizer", "lr"),
    "epsilon": ("epsilon", "epsilon_end", "epsilon_decay"),
    "d_optimizer": ("d_optimizer", "d_lr"),
    "g_optimizer": ("g_optimizer", "g_lr"),
}
#: the install command in the missing-Ray message
INSTALL = "pip install 'dlspec[sweep]'"


# ---- spaces -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """The values one ``--param`` takes: ``choice`` (a list), ``int`` (whole numbers LO..HI by STEP,
    both ends included), ``uniform`` or ``loguniform`` (real numbers between LO and HI)."""

    name: str
    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    text: str = ""

    @property
    def finite(self) -> bool:
        return self.kind in ("choice", "int")

    def grid(self) -> tuple:
        """Every value of a finite space, in order."""
        if self.kind == "choice":
            return self.values
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, self.step))
        raise ValueError(f"a {self.kind} space has no grid")

    def sample(self, rng) -> Any:
        """One value drawn from ``rng`` (a NumPy generator)."""
        if self.finite:
            g = self.grid()
            return g[int(rng.integers(len(g)))]
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


def typed(text: str) -> Any:
    """A list item as a value: a whole number, a decimal, ``true``/``false``, else the word itself."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    try:
        v = float(text)
    except ValueError:
        return text
    return v if math.isfinite(v) else text


def parse_space(name: str, text: str) -> Space:
    """``SPACE`` of ``--param NAME=SPACE``; a malformed one is a :class:`UsageError` saying what is expected."""
    expected = "expected a list (64,128,256), int:LO:HI[:STEP], uniform:LO:HI or loguniform:LO:HI"
    where = f"--param {name}={text}"
    text = text.strip()
    if not text:
        raise UsageError(f"{where}: the space is empty; {expected}")
    head, colon, rest = text.partition(":")
    if colon and "," not in text:
        kind = head.strip().lower()
        if kind not in KINDS:
            raise UsageError(f"{where}: unknown space '{head}'{suggest(kind, KINDS) or '; ' + expected}")
        parts = [p.strip() for p in rest.split(":")]
        if kind == "int":
            if len(parts) not in (2, 3) or not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
                raise UsageError(f"{where}: expected int:LO:HI or int:LO:HI:STEP with whole numbers LO ≤ HI, STEP ≥ 1")
            lo, hi, *st = (int(p) for p in parts)
            step = st[0] if st else 1
            if lo > hi or step < 1:
                raise UsageError(f"{where}: expected int:LO:HI or int:LO:HI:STEP with whole numbers LO ≤ HI, STEP ≥ 1")
            if (hi - lo) // step + 1 > MAX_TRIALS:
                raise UsageError(f"{where}: {(hi - lo) // step + 1:,} values; a space holds at most {MAX_TRIALS:,}")
            return Space(name, "int", low=lo, high=hi, step=step, text=text)
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            lo = hi = math.nan
        if len(parts) != 2 or not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or (kind == "loguniform" and lo <= 0):
            need = "0 < LO ≤ HI" if kind == "loguniform" else "LO ≤ HI"
            raise UsageError(f"{where}: expected {kind}:LO:HI with numbers {need}")
        return Space(name, kind, low=lo, high=hi, text=text)
    items = [p.strip() for p in text.split(",")]
    if any(not p for p in items):
        raise UsageError(f"{where}: an empty value in the list; {expected}")
    values = tuple(typed(p) for p in items)
    for i, v in enumerate(values):
        if any(type(v) is type(w) and v == w for w in values[:i]):
            raise UsageError(f"{where}: the value {items[i]} is listed twice")
    return Space(name, "choice", values=values, text=text)


# ---- names: model parameters, train settings, optimizer options ------------------------------------


@dataclass(frozen=True)
class Knob:
    """What a ``--param`` name sets: ``param`` (bound into the spec as ``key``, ``DEF.NAME``),
    ``setting`` (the run-configuration field ``key``) or ``option`` (the optimizer option ``key``)."""

    name: str
    what: str
    key: str
    type: Any = None  # int, float, str, bool (settings and options); None: a model parameter takes any value


@dataclass
class Target:
    """What a sweep trains: its objective (``kind``, a :data:`dlspec.registry.OBJECTIVES` name) and
    its models by role (``{"model": "Net"}``; a GAN's ``generator`` and ``discriminator``)."""

    kind: str
    models: dict[str, str]

    @classmethod
    def of(cls, cfg: Any) -> "Target":
        """The target of a resolved run configuration (a classifier's ``RunConfig`` or an ``ObjectiveConfig``)."""
        return cls(cfg.kind, dict(getattr(cfg, "models", None) or {"model": cfg.model}))

    @property
    def model(self) -> str:
        """The model a run is named after (a GAN's generator)."""
        return self.models.get("model") or self.models["generator"]

    @property
    def distinct(self) -> list[str]:
        """Its models, each once, in role order."""
        return list(dict.fromkeys(self.models.values()))

    @property
    def unit(self) -> str:
        """What its runs count: ``epoch``, or a DQN's ``episode`` (the objective class's ``unit``)."""
        import importlib

        from .registry import OBJECTIVES

        module, _, name = OBJECTIVES[self.kind].runner.partition(":")
        return getattr(importlib.import_module(module), name).unit

    def describe(self) -> str:
        """``Net``, or ``generator G, discriminator D``."""
        if len(self.models) == 1:
            return self.model
        return ", ".join(f"{role} {m}" for role, m in self.models.items())


def _field_types(cls: Any) -> dict[str, Any]:
    import typing

    out: dict[str, Any] = {}
    for k, f in cls.model_fields.items():
        types = [t for t in typing.get_args(f.annotation) or (f.annotation,) if t is not type(None)]
        out[k] = types[0]
    return out


def train_settings(kind: str = "classifier") -> dict[str, Any]:
    """The train settings a sweep of a ``kind`` run can vary, and their types: a classifier's are
    ``dlspec train``'s overrides but the data and the devices; another objective's are the
    run-configuration fields of the settings its registry entry takes (:data:`SETTING_FIELDS`:
    ``optimizer`` gives ``optimizer`` and ``lr``, ``data`` its ``limit``, ``steps`` ``max_steps``, …)."""
    from .registry import OBJECTIVES
    from .train import OVERRIDES, RunConfig

    if OBJECTIVES[kind].settings is None:
        types = _field_types(RunConfig)
        return {k: types[k] for k in OVERRIDES if k not in ("data", "data_dir", "device", "devices")}
    from .objectives.config import ObjectiveConfig

    types = _field_types(ObjectiveConfig)
    out: dict[str, Any] = {}
    for setting in OBJECTIVES[kind].settings:
        for k in SETTING_FIELDS.get(setting, (setting,)):
            out[k] = types[k]
    return out


def optimizer_options() -> dict[str, Any]:
    """The optimizer options a sweep can vary (all but ``lr`` and ``weight_decay``, which are settings)."""
    from .registry import OPTIMIZERS

    return {k: t for k, t in OPTIMIZERS.option_types.items() if k not in ("lr", "weight_decay")}


def _param_names(prog, model: str) -> list[str]:
    return [p.name for p in prog.defs[model].params or ()]


def knob(prog, target: Target, name: str) -> Knob:
    """What ``name`` names, for a sweep of ``target``: a parameter of its model (of a GAN's
    generator or discriminator: ``generator.NAME``, ``discriminator.NAME``, or ``NAME`` when only one
    of them has it), ``DEF.NAME`` (a model's, block's or cell's parameter), a train setting of its
    objective or an optimizer option; else a :class:`UsageError` with a did-you-mean over all of them."""
    if "." in name:
        owner, _, pname = name.partition(".")
        key = f"{target.models[owner]}.{pname}" if owner not in prog.defs and owner in target.models else name
        try:
            prog.bind({key: None})  # checks the definition and the parameter
        except UsageError as e:
            raise UsageError(f"--param {name}: {e.diagnostics[0].message}") from None
        return Knob(name, "param", key)
    own = {m: _param_names(prog, m) for m in target.distinct}
    owners = [m for m in target.distinct if name in own[m]]  # a model parameter shadows a setting of the same name
    if len(owners) > 1:
        roles = [next(r for r, m in target.models.items() if m == o) for o in owners]
        raise UsageError(
            f"--param {name}: {' and '.join(f'the {r} {o}' for r, o in zip(roles, owners))} both have a parameter '{name}';"
            f" give {' or '.join(f'{r}.{name}' for r in roles)}"
        )
    if owners:
        return Knob(name, "param", f"{owners[0]}.{name}")
    settings, options = train_settings(target.kind), optimizer_options()
    if name in settings:
        return Knob(name, "setting", name, settings[name])
    if name in options:
        return Knob(name, "option", name, options[name])
    roles = len(target.models) > 1
    names = [n for m in target.distinct for n in own[m]]
    if roles:
        names += [f"{r}.{n}" for r, m in target.models.items() for n in own[m]]
    hint = suggest(name, [*names, *settings, *options])
    what = "train settings" if target.kind == "classifier" else f"'train {target.kind}' settings"
    if any(name in train_settings(k) for k in _kinds() if k != target.kind):  # another objective's (a DQN's epochs)
        head = "a classifier" if target.kind == "classifier" else f"'train {target.kind}'"
        raise UsageError(f"--param {name}: the setting '{name}' does not apply to {head}; its settings: {', '.join(settings)}")
    parts = [f"{m}'s parameters: {', '.join(own[m])}" if own[m] else f"{m} has no parameters" for m in target.distinct]
    listed = f"; {'; '.join(parts)}; {what}: {', '.join(settings)}; optimizer options: {', '.join(options)}"
    who = " and ".join(target.distinct) if len(target.distinct) > 1 else target.model
    has = "have" if len(target.distinct) > 1 else "has"
    raise UsageError(f"--param {name}: {who} {has} no parameter '{name}' and it is no train setting{hint or listed}")


def _kinds() -> tuple[str, ...]:
    from .registry import OBJECTIVES

    return OBJECTIVES.names()


def _names_of(key: str, kind: str) -> tuple[str, Any]:
    """``(what, names)`` a named setting takes for a ``kind`` run: ``("optimizer", OPTIMIZERS)``, …"""
    from .registry import LOSSES, OPTIMIZERS, SCHEDULES

    if key in ("optimizer", "d_optimizer", "g_optimizer"):
        return "optimizer", OPTIMIZERS
    if key == "schedule":
        return "schedule", SCHEDULES
    if key == "loss":
        return "loss", LOSSES
    from .objectives.config import ENVS

    return "environment", tuple(ENVS)


def check_values(k: Knob, space: Space, kind: str = "classifier") -> Space:
    """A space whose values fit the setting or option ``k`` of a ``kind`` run (numbers for numbers,
    names from the registries — a loss the objective can use, an environment it has —, whole
    numbers for whole-number settings); a :class:`UsageError` otherwise."""
    from .registry import OBJECTIVES

    where = f"--param {space.name}={space.text}"
    if k.type is None:
        return space
    if k.type is str:
        what, names = _names_of(k.key, kind)
        if space.kind != "choice":
            raise UsageError(f"{where}: {k.name} takes names; give a list such as {','.join(list(names)[:3])}")
        for v in space.values:
            if v not in names:
                listed = ", ".join(names)
                raise UsageError(f"{where}: unknown {what} '{v}'{suggest(str(v), names) or f'; {what}s: {listed}'}")
            if k.key == "loss" and v not in OBJECTIVES[kind].losses:
                raise UsageError(f"{where}: 'train {kind}' cannot use loss '{v}'; one of {', '.join(OBJECTIVES[kind].losses)}")
        return space
    if k.type is bool:
        if space.kind != "choice" or not all(isinstance(v, bool) for v in space.values):
            raise UsageError(f"{where}: {k.name} is true or false; give true,false")
        return space
    if k.type is int:
        if space.kind in ("uniform", "loguniform"):
            raise UsageError(f"{where}: {k.name} takes whole numbers; give a list or int:LO:HI")
        bad = [v for v in space.values if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise UsageError(f"{where}: {k.name} takes whole numbers, not {bad[0]!r}")
        return space
    bad = [v for v in space.values if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        raise UsageError(f"{where}: {k.name} takes numbers, not {bad[0]!r}")
    if space.kind == "choice":
        return Space(space.name, "choice", values=tuple(float(v) for v in space.values), text=space.text)
    return space


#: a GAN's settings that set both of its optimizers, and those that set one (a sweep takes one kind)
BOTH = {"lr": ("d_lr", "g_lr"), "optimizer": ("d_optimizer", "g_optimizer")}


def parse_params(prog, target: Target, texts: list[str]) -> list[tuple[Knob, Space]]:
    """Every ``--param NAME=SPACE`` resolved (for a sweep of ``target``) and checked."""
    out: list[tuple[Knob, Space]] = []
    seen: set[str] = set()
    keys: dict[tuple[str, str], str] = {}
    for text in texts:
        name, eq, value = text.partition("=")
        name = name.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", name):
            raise UsageError(f"--param {text}: expected NAME=SPACE such as hidden=64,128 or lr=loguniform:1e-4:1e-2")
        if name in seen:
            raise UsageError(f"--param {name} is given twice")
        seen.add(name)
        space = parse_space(name, value)
        k = knob(prog, target, name)
        if (k.what, k.key) in keys:  # generator.width and G.width
            raise UsageError(f"--param {keys[k.what, k.key]} and --param {name} set the same parameter {k.key}")
        keys[k.what, k.key] = name
        out.append((k, check_values(k, space, target.kind)))
    if target.kind == "gan":
        for both, ones in BOTH.items():
            one = [keys[w, o] for w, o in keys if w == "setting" and o in ones]
            if ("setting", both) in keys and one:
                raise UsageError(
                    f"--param {both} sets both {' and '.join(ones)} of a GAN, and --param {one[0]} one of them;"
                    f" vary {both}, or {' and '.join(ones)}"
                )
    return out


# ---- the plan: configurations, each checked statically ---------------------------------------------


def configurations(spaces: list[Space], trials: int | None, seed: int) -> tuple[list[dict[str, Any]], str]:
    """The configurations to try and how they were made: with no ``trials`` the full grid (every
    space finite); else ``trials`` random draws (distinct points of the grid when every space is
    finite; the whole grid when it has no more points)."""
    import numpy as np

    names = [s.name for s in spaces]
    finite = all(s.finite for s in spaces)
    size = math.prod(len(s.grid()) for s in spaces) if finite else None
    if trials is None:
        if not finite:
            inf = next(s for s in spaces if not s.finite)
            raise UsageError(
                f"--param {inf.name}={inf.text}: a {inf.kind} space has no grid; give --trials K (how many configurations to draw)"
            )
        if size > MAX_TRIALS:
            raise UsageError(f"the grid has {size:,} configurations (at most {MAX_TRIALS:,}); give --trials K to draw K of them")
        return [dict(zip(names, combo)) for combo in itertools.product(*(s.grid() for s in spaces))], "grid"
    if trials > MAX_TRIALS:
        raise UsageError(f"--trials {trials}: at most {MAX_TRIALS:,}")
    if finite and trials >= size:
        return [dict(zip(names, combo)) for combo in itertools.product(*(s.grid() for s in spaces))], "grid"
    rng = np.random.default_rng([seed, 0x5EE9])
    if finite:
        grids = [s.grid() for s in spaces]
        chosen: list[tuple[int, ...]] = []
        seen: set[tuple[int, ...]] = set()
        while len(chosen) < trials:
            idx = tuple(int(rng.integers(len(g))) for g in grids)
            if idx not in seen:
                seen.add(idx)
                chosen.append(idx)
        return [{n: g[i] for n, g, i in zip(names, grids, idx)} for idx in chosen], "random"
    return [{s.name: s.sample(rng) for s in spaces} for _ in range(trials)], "random"


@dataclass
class Trial:
    """One configuration of a sweep and what became of it."""

    id: str
    settings: dict[str, Any]
    status: str = "pending"
    error: str | None = None
    diagnostics: list[dict] | None = None
    params: int | None = None
    macs: int | None = None
    config: dict[str, Any] | None = None  # the resolved RunConfig or ObjectiveConfig (a launched trial's)
    run_dir: str | None = None
    epochs: int = 0  # the epochs (a DQN's: episodes) it trained
    value: float | None = None  # the sweep's metric at the trial's best epoch
    metrics: dict[str, Any] = field(default_factory=dict)  # the last epoch's, flat
    test: dict[str, Any] | None = None  # of a done trial: a classifier's test split, a DQN's final evaluation
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trial": self.id,
            "settings": self.settings,
            "status": self.status,
            "error": self.error,
            **({"diagnostics": self.diagnostics} if self.diagnostics else {}),
            "params": self.params,
            "macs": self.macs,
            "run_dir": self.run_dir,
            "epochs": self.epochs,
            "value": self.value,
            "metrics": self.metrics,
            "test": self.test,
            "seconds": self.seconds,
        }


def check_trial(
    prog, spec: str, target: Target, overrides: dict[str, Any], knobs: list[Knob], trial: Trial, budgets: dict[str, int | None]
) -> Trial:
    """Bind ``trial``'s settings, check its shapes, budgets and train settings; ``pruned`` (with the
    diagnostics) or its resolved configuration. Nothing is built or run."""
    from .registry import OPTIMIZERS
    from .train import resolve

    by_name = {k.name: k for k in knobs}
    params = {by_name[n].key: v for n, v in trial.settings.items() if by_name[n].what == "param"}
    settings = {by_name[n].key: v for n, v in trial.settings.items() if by_name[n].what == "setting"}
    options = {by_name[n].key: v for n, v in trial.settings.items() if by_name[n].what == "option"}

    def pruned(message: str, diags: list | None = None) -> Trial:
        trial.status, trial.error = "pruned", message
        trial.diagnostics = [d.to_json() for d in diags] if diags else None
        return trial

    try:
        bound = prog.bind(params)
        errors = [d for d in bound.check() if d.severity == "error"]
    except DlspecError as e:
        errors = [d for d in e.diagnostics if d.severity == "error"]
        bound = None
    if errors:
        return pruned(_plain_lines(errors), errors)
    reports = [bound.report(m) for m in target.distinct]  # a GAN's: the generator's and the discriminator's
    trial.params, trial.macs = sum(r["params"] for r in reports), sum(r["macs"] for r in reports)
    who = " + ".join(target.distinct) + (" have" if len(target.distinct) > 1 else " has")
    for what, limit, have in (("params", budgets.get("params"), trial.params), ("MACs", budgets.get("macs"), trial.macs)):
        if limit is not None and have > limit:
            return pruned(f"{who} {have:,} {what} ({human(have)}), over the budget --max-{what.lower()} {limit:,} ({human(limit)})")
    try:
        follow = _declared_sizes(bound, target, settings) if params else {}
        cfg = resolve(bound, spec, target.model, {**overrides, **follow, **settings}, objectives=True)
        if options:
            # a GAN's optimizer options go to both of its optimizers, as its one `optimizer` line's do
            fields = ("d_optimizer", "g_optimizer") if target.kind == "gan" else ("optimizer",)
            update: dict[str, Any] = {}
            for f in fields:
                name = getattr(cfg, f)
                allowed = OPTIMIZERS[name].options
                for k in options:
                    if k not in allowed:
                        role = {"d_optimizer": "the discriminator's ", "g_optimizer": "the generator's "}.get(f, "")
                        return pruned(f"{role}optimizer {name} takes no option '{k}' (its options: {', '.join(allowed)})")
                update[f"{f}_options"] = {**getattr(cfg, f"{f}_options"), **options}
            cfg = type(cfg)(**{**cfg.model_dump(), **update})
        cfg = type(cfg)(**{**cfg.model_dump(), "params": bound.params})
    except DlspecError as e:
        return pruned(_plain_lines(e.diagnostics), e.diagnostics)
    except Exception as e:  # noqa: BLE001 - pydantic names the field
        from .train import _pydantic_message

        return pruned(f"bad training configuration: {_pydantic_message(e)}")
    devices = getattr(cfg, "devices", None)
    if devices and cfg.batch % len(devices):  # as dlspec.loop.check_placement refuses it when the trial starts
        return pruned(
            f"batch {cfg.batch} does not divide across {len(devices)} devices ({', '.join(devices)}): each device takes an equal share of every batch"
        )
    trial.config = cfg.model_dump(mode="json")
    return trial


def _declared_sizes(bound, target: Target, settings: dict[str, Any]) -> dict[str, Any]:
    """The sizes a train section states for its models — a VAE's ``latent N`` (of ``mu``), a GAN's
    ``noise σ dim N`` (of ``z``) — as the trial's bound models have them: a sweep that changes a
    model's size does not contradict the section (unless the setting itself is swept)."""
    from .objectives.config import _io, _size

    section = next((t for t in bound.trains() if target.model in t.models.values()), None)
    if section is None:
        return {}
    s = section.settings
    if target.kind == "vae" and "latent" in s and "latent" not in settings:
        _, outs, _ = _io(bound, target.model)
        mu = dict(outs).get("mu")
        return {"latent": _size(mu)} if mu is not None and _size(mu) is not None else {}
    if target.kind == "gan" and "noise" in s and "dim" in s["noise"].options:
        ins, _, _ = _io(bound, target.models["generator"])
        dims = ins[0].sample if len(ins) == 1 else ()
        return {"noise_dim": dims[0]} if len(dims) == 1 and isinstance(dims[0], int) else {}
    return {}


def _plain_lines(diags) -> str:
    return "\n".join(f"{d.span}: error: {d.message}" if d.span else f"error: {d.message}" for d in diags)


def human(n: int) -> str:
    from .report import human as h

    return h(n)


# ---- one trial (in a Ray worker, or anywhere) -------------------------------------------------------


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch's ``metrics.jsonl`` line as the flat numbers Ray sees: ``{"val": {"accuracy": …}}`` → ``val_acc``."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                    out[f"{k}_{SHORT.get(kk, kk)}"] = vv
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
    return out


def config_class(kind: str) -> Any:
    """The run configuration class of a ``kind`` run: ``RunConfig`` (a classifier's) or ``ObjectiveConfig``."""
    if kind == "classifier":
        from .train import RunConfig

        return RunConfig
    from .objectives.config import ObjectiveConfig

    return ObjectiveConfig


def run_trial(spec: str | Path, run_dir: str | Path, config: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train one trial as ``dlspec train`` would, of any objective, in ``run_dir`` (made, or resumed
    from its last checkpoint if it has one), calling ``report`` with every epoch's (a DQN's:
    episode's) flat metrics but the last;
    returns the last epoch's, with ``dlspec_status`` ``done`` — or ``failed`` and ``dlspec_error``
    (its one-line message) if the run stopped with an error."""
    from . import load
    from .loop import runner
    from .runfiles import append_line, atomic_write
    from .train import start_over

    run_dir = Path(run_dir)
    log_file = run_dir / "train.log"

    def log(line: str) -> None:
        append_line(log_file, line, what="log")

    try:
        cfg = config_class(config.get("kind", "classifier"))(**config)
        prog = load(Path(spec), name=cfg.spec)
        if cfg.params:
            prog = prog.bind(cfg.params)
        resume = False
        if (run_dir / "config.json").is_file():  # started before: continue it
            resume = not start_over(run_dir)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(run_dir / "spec.dl", Path(spec).read_bytes())
            atomic_write(run_dir / "config.json", cfg.model_dump_json(indent=2))
        objective = runner(prog, cfg, run_dir, log)
        total = objective.units()

        def on_unit(record: dict[str, Any]) -> None:
            if record.get(objective.unit, 0) < total:  # the last epoch (episode) is reported once summary.json is written
                report(flat(record))

        objective.run(resume=resume, on_unit=on_unit)
        history = objective.record.history if objective.record is not None else []
        return {**(flat(history[-1]) if history else {}), "dlspec_status": "done"}
    except DlspecError as e:
        message = str(e).split("\n")[0]
    except Exception as e:  # noqa: BLE001 - a bug in dlspec: the trial fails, the sweep goes on
        message = f"internal error: {type(e).__name__}: {e}"
    try:
        log(message)
    except DlspecError:
        pass
    return {"dlspec_status": "failed", "dlspec_error": message}


def _trainable(config: dict[str, Any], plan: dict[str, dict[str, Any]]) -> None:
    """The Ray Tune function trainable: the trial ``config["trial"]`` of ``plan``."""
    from ray import tune

    t = plan[config["trial"]]
    final = run_trial(t["spec"], t["run_dir"], t["config"], tune.report)
    tune.report(final)


# ---- the sweep ------------------------------------------------------------------------------------


@dataclass
class Sweep:
    """A sweep's plan and state: what ``sweep.json`` holds."""

    out: Path
    spec: str  # as named on the command line (diagnostics)
    spec_path: str  # absolute
    spec_sha256: str
    model: str
    metric: str
    mode: str
    spaces: dict[str, str]
    overrides: dict[str, Any]
    how: str
    trials_requested: int | None
    seed: int
    scheduler: str
    budgets: dict[str, int | None]
    trials: list[Trial]
    fits: int = 0
    kind: str = "classifier"  # the objective
    models: dict[str, str] = field(default_factory=dict)  # role → model (a GAN's two)
    log: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr), repr=False)

    @property
    def target(self) -> Target:
        return Target(self.kind, dict(self.models or {"model": self.model}))

    @property
    def unit(self) -> str:
        """What its trials count: ``epoch`` or ``episode``."""
        return self.target.unit

    @property
    def complete(self) -> bool:
        return all(t.status in FINAL for t in self.trials)

    def best(self) -> Trial | None:
        scored = [t for t in self.trials if t.value is not None and t.status in ("done", "stopped")]
        if not scored:
            return None
        return max(scored, key=lambda t: t.value) if self.mode == "max" else min(scored, key=lambda t: t.value)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        best = self.best()
        return {
            "format": FORMAT,
            "spec": self.spec,
            "spec_path": self.spec_path,
            "spec_sha256": self.spec_sha256,
            "model": self.model,
            "objective": self.kind,
            "models": self.target.models,
            "metric": self.metric,
            "mode": self.mode,
            "params": self.spaces,
            "overrides": self.overrides,
            "search": self.how,
            "trials_requested": self.trials_requested,
            "seed": self.seed,
            "scheduler": self.scheduler,
            "budgets": self.budgets,
            "fits": self.fits,
            "complete": self.complete,
            "counts": self.counts(),
            "best": None
            if best is None
            else {"trial": best.id, "run_dir": best.run_dir, "value": best.value, "settings": best.settings, "status": best.status},
            "trials": [t.to_json() for t in self.trials],
        }

    def save(self) -> None:
        from .runfiles import atomic_write

        atomic_write(self.out / "sweep.json", json.dumps(self.to_json(), indent=2) + "\n", what="sweep state")

    def trial(self, tid: str) -> Trial:
        return next(t for t in self.trials if t.id == tid)

    # the trials' run directories are the truth about them ------------------------------------------
    def read_run(self, t: Trial) -> None:
        """``t``'s epochs, metrics and best value from its run directory."""
        d = Path(t.run_dir or "")
        history = []
        if (d / "metrics.jsonl").is_file():
            for line in (d / "metrics.jsonl").read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    history.append(flat(rec))
        t.epochs = len(history)
        t.metrics = history[-1] if history else {}
        values = [h[self.metric] for h in history if isinstance(h.get(self.metric), (int, float))]
        t.value = (max(values) if self.mode == "max" else min(values)) if values else None
        t.seconds = round(_seconds(history, self.unit), 2) if history else None
        summary = d / "summary.json"
        if summary.is_file():
            try:
                t.test = final_evaluation(json.loads(summary.read_text(encoding="utf-8")))
            except (ValueError, AttributeError):
                t.test = None

    def started(self, tid: str) -> None:
        t = self.trial(tid)
        resumed = bool(t.run_dir) and (Path(t.run_dir) / "last.safetensors").is_file()
        t.status = "running"
        self.save()
        how = "resumed from its last checkpoint" if resumed else "started"
        self.log(f"trial {t.id} {how} ({' '.join(f'{k}={show(v)}' for k, v in t.settings.items())})")

    def finished(self, tid: str, result: dict[str, Any] | None, error: str | None = None) -> None:
        """Trial ``tid`` ended: ``result`` its last report (``dlspec_status`` unless a scheduler stopped it)."""
        t = self.trial(tid)
        result = result or {}
        self.read_run(t)
        status = result.get("dlspec_status")
        if error is not None or status == "failed":
            t.status, t.error = "failed", error or result.get("dlspec_error")
        elif status == "done" or (Path(t.run_dir or "") / "summary.json").is_file():
            t.status, t.error = "done", None
        else:
            t.status, t.error = "stopped", None
        self.save()
        n = sum(x.status in FINAL and x.status != "pruned" for x in self.trials)
        todo = sum(x.status != "pruned" for x in self.trials)
        self.log(f"[{n}/{todo}] {self.line(t)}")

    def line(self, t: Trial) -> str:
        """A trial in one line: status, metric, settings (the progress line)."""
        settings = " ".join(f"{k}={show(v)}" for k, v in t.settings.items())
        if t.status in ("failed", "pruned"):
            return f"trial {t.id} {t.status} ({settings}): {(t.error or '').splitlines()[0] if t.error else ''}"
        value = f"{self.metric} {t.value:.4f}" if t.value is not None else f"no {self.metric}"
        return f"trial {t.id} {t.status} ({settings}): {value} after {t.epochs} {self.unit}{'s' * (t.epochs != 1)}"


def _seconds(history: list[dict[str, Any]], unit: str) -> float:
    """A run's training seconds from its metrics lines: an epoch's are its own; a DQN episode's
    ``seconds`` count from the start of the process that trained it (a resumed run's start again)."""
    if unit == "epoch":
        return sum(h.get("seconds", 0) for h in history)
    total = last = 0.0
    for h in history:
        now = h.get("seconds", 0)
        if now < last:  # resumed: a new process
            total += last
        last = now
    return total + last


def final_evaluation(summary: dict[str, Any]) -> dict[str, Any] | None:
    """What a finished run's ``summary.json`` says beyond its last metrics line: a classifier's
    test split, a DQN's final evaluation of its best weights (the others evaluate on the test split
    every epoch: it is in their metrics)."""
    if summary.get("test") is not None:
        return summary["test"]
    keys = ("eval_episodes", "eval_mean_return", "eval_min_return", "eval_max_return", "solved")
    return {k: summary[k] for k in keys if k in summary} or None


def show(v: Any) -> str:
    """A setting's value for the table: decimals to 4 significant digits."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def metrics_of(cfg: Any) -> tuple[str, ...]:
    """The metric names a run of ``cfg`` reports every unit (:data:`dlspec.registry.OBJECTIVES`'
    ``metrics``): a classifier's ``val_`` ones only with a validation split, ``val_top5`` only with
    ``metrics top5``."""
    from .registry import OBJECTIVES

    out = [m.name for m in OBJECTIVES[cfg.kind].metrics]
    if cfg.kind == "classifier":
        out = [m for m in out if m != "val_top5" or "top5" in cfg.metrics]
        if cfg.val_split == 0:
            out = [m for m in out if not m.startswith("val_")]
    return tuple(out)


def check_metric(metric: str | None, mode: str | None, cfg: Any) -> tuple[str, str]:
    """The metric (default: the objective's first) and mode (default: the metric's own, as the
    registry has it), checked against what the run reports."""
    from .registry import OBJECTIVES

    entry = OBJECTIVES[cfg.kind]
    metric = metric or entry.metrics[0].name
    names = metrics_of(cfg)
    if metric not in names:
        if cfg.kind == "classifier" and entry.metric(metric) is not None and metric.startswith("val_") and cfg.val_split == 0:
            raise UsageError(
                f"--metric {metric}: the runs hold out no validation split (val_split is 0); use a train_ metric or --val-split"
            )
        hint = suggest(metric, names)
        runs = "the runs" if cfg.kind == "classifier" else f"'train {cfg.kind}' runs"
        raise UsageError(f"--metric {metric}: not a metric {runs} report{hint or '; metrics: ' + ', '.join(names)}")
    return metric, mode or entry.metric(metric).mode


# ---- the command ------------------------------------------------------------------------------------


#: options that --resume does not take (the plan is the sweep's): argparse dest → flag
_PLAN_OPTIONS = {
    "param": "--param",
    "trials": "--trials",
    "metric": "--metric",
    "mode": "--mode",
    "max_params": "--max-params",
    "max_macs": "--max-macs",
    "scheduler": "--scheduler",
    "sweep_seed": "--sweep-seed",
    "model": "--model",
    "out": "--out",
    "dry_run": "--dry-run",
}


def sweep_command(args) -> int:
    """``dlspec sweep``: plan (or read) the sweep, run the unfinished trials on Ray Tune, print the table."""
    from .train import OVERRIDES

    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k, None) is not None}
    if getattr(args, "episodes", None) is not None:  # a DQN's: for every trial (plan_sweep checks the objective)
        overrides["episodes"] = args.episodes
    if args.resume:
        given = [flag for dest, flag in _PLAN_OPTIONS.items() if getattr(args, dest, None) not in (None, [], False)]
        given += ["--" + k.replace("_", "-") for k in overrides]
        if given:
            raise UsageError(
                f"--resume continues the sweep as it was planned; {', '.join(given)} cannot change (start a new sweep instead)"
            )
        sweep = load_sweep(Path(args.resume), args.file)
    else:
        if not args.file:
            raise UsageError("give a spec FILE to sweep, or --resume DIR")
        if not args.param:
            raise UsageError("give at least one --param NAME=SPACE (e.g. --param hidden=64,128 --param lr=loguniform:1e-4:1e-2)")
        sweep = plan_sweep(args, overrides)
        if args.dry_run:
            _print_result(sweep, args.json)
            return 0
    todo = [t for t in sweep.trials if t.status not in FINAL]
    for t in todo:  # finished, but the sweep stopped before it was recorded
        if t.run_dir and (Path(t.run_dir) / "summary.json").is_file():
            sweep.read_run(t)
            t.status = "done"
    todo = [t for t in todo if t.status not in FINAL]
    status = 0
    ray_modules = import_ray() if todo else None  # a missing Ray or an unreachable cluster: nothing is made
    if todo and args.address:
        reachable(args.address)
    sweep.out.mkdir(parents=True, exist_ok=True)
    sweep.save()
    if ray_modules is not None:
        status = run_on_ray(sweep, todo, args, *ray_modules)
    if status == 130:
        return status
    _print_result(sweep, args.json)
    best = sweep.best()
    if best is None:
        launched = [t for t in sweep.trials if t.status != "pruned"]
        why = "every configuration was pruned" if not launched else f"no trial reported {sweep.metric}"
        print(f"dlspec: error: {why}; see {sweep.out / 'sweep.json'}", file=sys.stderr)
        return 1
    sweep.log(f"best: trial {best.id} ({sweep.metric} {best.value:.4f}): {best.run_dir}")
    return 0


def plan_sweep(args, overrides: dict[str, Any]) -> Sweep:
    """A new sweep from the command line: names and spaces checked, configurations drawn and
    checked statically (the pruned ones marked), its directory chosen (not made yet)."""
    from . import load
    from .train import file_digest, resolve

    spec = Path(args.file)
    prog = load(spec)
    base = resolve(prog, args.file, args.model, {k: v for k, v in overrides.items() if k != "episodes"}, objectives=True)
    target = Target.of(base)
    if "episodes" in overrides:
        if target.kind != "dqn":
            raise UsageError(
                f"--episodes applies to 'train dqn' only; {target.model}'s section is 'train {target.kind}' (it trains for --epochs)"
            )
        if overrides["episodes"] < 1:
            raise UsageError(f"--episodes must be positive, got {overrides['episodes']}")
        base = resolve(prog, args.file, args.model, overrides, objectives=True)
    model = target.model
    pairs = parse_params(prog, target, args.param)
    knobs = [k for k, _ in pairs]
    metric, mode = check_metric(args.metric, args.mode, base)
    seed = args.sweep_seed or 0
    configs, how = configurations([s for _, s in pairs], args.trials, seed)
    out = _sweep_dir(args, model)
    width = max(3, len(str(len(configs) - 1)))
    for k in ("data_dir",):
        if k in overrides:
            overrides[k] = str(Path(overrides[k]).resolve())  # the trials run in other folders, maybe on other machines
    budgets = {"params": args.max_params, "macs": args.max_macs}
    trials = []
    for i, settings in enumerate(configs):
        t = Trial(f"{i:0{width}d}", settings)
        check_trial(prog, args.file, target, overrides, knobs, t, budgets)
        if t.status != "pruned":
            t.run_dir = str(out / "trials" / t.id)
            if "val_split" in settings and t.config and metric.startswith("val_") and t.config.get("val_split") == 0:
                t.status, t.error = "pruned", f"val_split 0 holds out no validation split: no {metric}"
        trials.append(t)
    return Sweep(
        out=out,
        spec=args.file,
        spec_path=str(spec.resolve()),
        spec_sha256=file_digest(spec),
        model=model,
        metric=metric,
        mode=mode,
        spaces={k.name: s.text for k, s in pairs},
        overrides=overrides,
        how=how,
        trials_requested=args.trials,
        seed=seed,
        scheduler=args.scheduler or "fifo",
        budgets=budgets,
        trials=trials,
        kind=target.kind,
        models=target.models,
    )


def _sweep_dir(args, model: str) -> Path:
    """``--out DIR`` (new or empty; one holding a sweep is refused: --resume it), else ``sweeps/MODEL-STAMP``."""
    if args.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for k in range(1000):
            d = Path("sweeps") / (f"{model}-{stamp}" + (f"-{k}" if k else ""))
            if not d.exists():
                return d
        raise UsageError("cannot choose a sweep directory under sweeps/: give --out DIR")
    d = Path(args.out)
    if (d / "sweep.json").exists():
        raise UsageError(f"{d} holds a sweep already: continue it with dlspec sweep --resume {d}, or give another --out")
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise UsageError(f"{d} exists and is not an empty folder; give a new --out DIR")
    return d


def load_sweep(out: Path, file: str | None) -> Sweep:
    """The sweep in ``out`` (``--resume``), its spec unchanged since it was planned."""
    from .train import file_digest

    path = out / "sweep.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        trials = [
            Trial(
                id=t["trial"],
                settings=t["settings"],
                status=t["status"],
                error=t.get("error"),
                diagnostics=t.get("diagnostics"),
                params=t.get("params"),
                macs=t.get("macs"),
                run_dir=t.get("run_dir"),
                epochs=t.get("epochs", 0),
                value=t.get("value"),
                metrics=t.get("metrics") or {},
                test=t.get("test"),
                seconds=t.get("seconds"),
            )
            for t in doc["trials"]
        ]
        sweep = Sweep(
            out=out,
            spec=doc["spec"],
            spec_path=doc["spec_path"],
            spec_sha256=doc["spec_sha256"],
            model=doc["model"],
            metric=doc["metric"],
            mode=doc["mode"],
            spaces=doc["params"],
            overrides=doc["overrides"],
            how=doc["search"],
            trials_requested=doc.get("trials_requested"),
            seed=doc.get("seed", 0),
            scheduler=doc.get("scheduler", "fifo"),
            budgets=doc.get("budgets", {}),
            trials=trials,
            fits=doc.get("fits", 0),
            kind=doc.get("objective", "classifier"),
            models=doc.get("models") or {"model": doc["model"]},
        )
    except FileNotFoundError:
        raise UsageError(f"{out} is not a sweep directory (no sweep.json)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path} is not a valid sweep: {e}") from None
    spec = Path(sweep.spec_path)
    if file is not None and Path(file).resolve() != spec:
        raise UsageError(f"{out} sweeps {sweep.spec}, not {file}; resume it without FILE")
    if not spec.is_file():
        raise UsageError(f"{out} sweeps {sweep.spec_path}, which no longer exists")
    if file_digest(spec) != sweep.spec_sha256:
        raise UsageError(
            f"{sweep.spec} changed since the sweep in {out} was planned (sha256 {sweep.spec_sha256} then, {file_digest(spec)} now);"
            " restore it, or start a new sweep"
        )
    # the launched trials' configurations, as planned: bound and resolved again from the unchanged spec
    from . import load

    prog = load(spec, name=sweep.spec)
    knobs = [knob(prog, sweep.target, n) for n in sweep.spaces]
    for t in sweep.trials:
        if t.run_dir is not None:  # where the sweep is now (it may have been moved, or be named from elsewhere)
            t.run_dir = str(out / "trials" / t.id)
        if t.status not in FINAL:
            check_trial(prog, sweep.spec, sweep.target, sweep.overrides, knobs, t, sweep.budgets)
            if t.status == "pruned":  # pragma: no cover - the same spec and settings were checked when planned
                raise UsageError(f"trial {t.id} no longer checks: {t.error}")
    return sweep


@contextmanager
def _ray_environment() -> Iterator[None]:
    """Ray Tune's switches for the time of the sweep, restored afterwards: no console tables (dlspec
    prints its own progress), no SIGINT handler of its own (Ctrl-C stops the sweep here, which
    records it), no working-directory change in trials (paths are absolute anyway), no result
    loggers (each run directory has its metrics), no usage statistics."""
    switches = {
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    saved = {k: os.environ.get(k) for k in switches}
    os.environ.update({k: v for k, v in switches.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def import_ray():
    """``(ray, ray.tune)``, or the one-line usage error saying how to install them."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UsageError(f"dlspec sweep: Ray Tune is not installed; {INSTALL}") from None
    return ray, tune


def reachable(address: str, timeout: float = 5.0) -> None:
    """A :class:`UsageError` unless ``HOST:PORT`` (or ``ray://HOST:PORT``) takes a TCP connection."""
    import socket

    if address in ("auto", "local"):
        return
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d{1,5})/?", address)
    if not m:
        raise UsageError(f"--address {address}: expected HOST:PORT (the head node's GCS port, 6379 by default), ray://HOST:PORT or auto")
    host, port = m.group(1), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def run_on_ray(sweep: Sweep, todo: list[Trial], args, ray, tune) -> int:
    """Run ``todo`` as Ray Tune trials (``ray``, ``tune``: the modules); 0, or 130 when interrupted
    (the sweep recorded either way)."""
    import logging

    cpus = args.cpus if args.cpus is not None else 1.0
    gpus = args.gpus if args.gpus is not None else 0.0
    out = sweep.out.resolve()
    sweep.fits += 1
    for t in todo:
        t.status = "pending" if t.status == "pending" else "interrupted"
    sweep.save()
    with _ray_environment():
        try:
            if args.address:
                ray.init(address=args.address, log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
            else:
                ray.init(
                    address="local",
                    num_cpus=os.cpu_count() or 1,  # the machine's: a trial asking for more is refused (_fit)
                    num_gpus=None if gpus else 0,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                    include_dashboard=False,
                )
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, …: Ray's reasons, one line
            where = f"the Ray cluster at {args.address}" if args.address else "a local Ray"
            raise UsageError(f"cannot start {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        try:
            return _fit(sweep, todo, out, ray, tune, cpus, gpus, args)
        finally:
            ray.shutdown()


def _fit(sweep: Sweep, todo: list[Trial], out: Path, ray, tune, cpus: float, gpus: float, args) -> int:
    from ray.tune import Callback

    have = ray.cluster_resources()
    for what, need, key in (("CPUs", cpus, "CPU"), ("GPUs", gpus, "GPU")):
        if need and have.get(key, 0) < need:
            raise UsageError(f"each trial asks for {need:g} {what} (--{what.lower()[:-1]}s), but the Ray cluster has {have.get(key, 0):g}")
    where = f"Ray at {args.address}" if args.address else f"a local Ray ({have.get('CPU', 0):g} CPUs)"
    pruned = sum(t.status == "pruned" for t in sweep.trials)
    sweep.log(
        f"sweep {sweep.target.describe()}: {len(sweep.trials)} configurations ({sweep.how}), {pruned} pruned; "
        f"running {len(todo)} trial{'s' * (len(todo) != 1)} on {where}, {cpus:g} CPU{'s' * (cpus != 1)}"
        + (f" and {gpus:g} GPU{'s' * (gpus != 1)}" if gpus else "")
        + f" per trial → {sweep.out}"
    )
    for t in sweep.trials:
        if t.status == "pruned" and sweep.fits == 1:
            sweep.log(sweep.line(t))
    plan = {t.id: {"spec": sweep.spec_path, "run_dir": str(out / "trials" / t.id), "config": t.config} for t in todo}

    class Progress(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            sweep.started(trial.config["trial"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            sweep.finished(trial.config["trial"], trial.last_result)

        def on_trial_error(self, iteration, trials, trial, **info):
            message = "the trial's process failed"
            try:
                err = trial.get_error()
                if err is not None:
                    message += f": {str(err).strip().splitlines()[-1]}"
            except Exception:  # noqa: BLE001 - the reason is a nicety
                pass
            sweep.finished(trial.config["trial"], trial.last_result, error=message)

    scheduler = None
    if sweep.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        unit = sweep.unit  # epochs, or a DQN's episodes (its eval_return comes every eval_every episodes: the grace period)
        max_t = max(t.config[f"{unit}s"] for t in todo)
        grace = min(todo[0].config.get("eval_every", 1), max_t) if unit == "episode" else 1
        scheduler = ASHAScheduler(time_attr=unit, max_t=max(max_t, 1), grace_period=max(grace, 1), reduction_factor=2)
    trainable = tune.with_resources(tune.with_parameters(_trainable, plan=plan), {"cpu": cpus, "gpu": gpus})
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.id for t in todo])},
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            scheduler=scheduler,
            max_concurrent_trials=args.concurrent,
            trial_dirname_creator=lambda trial: f"trial-{trial.config['trial']}",
        ),
        run_config=tune.RunConfig(
            name=f"fit-{sweep.fits}",
            storage_path=str(out / "ray"),
            verbose=0,
            callbacks=[Progress()],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    try:
        tuner.fit()
    except KeyboardInterrupt:
        for t in todo:
            if t.status == "running":
                t.status = "interrupted"
                sweep.read_run(t)
        sweep.save()
        left = sum(t.status not in FINAL for t in sweep.trials)
        print(
            f"dlspec: sweep interrupted: {left} trial{'s' * (left != 1)} unfinished (recorded in {sweep.out / 'sweep.json'}); "
            f"continue with: dlspec sweep --resume {sweep.out}",
            file=sys.stderr,
        )
        return 130
    for t in todo:  # trials Ray never reported back on: --resume runs them
        if t.status not in FINAL:
            t.status = "interrupted"
            sweep.read_run(t)
    sweep.save()
    return 0


# ---- output ---------------------------------------------------------------------------------------


def ordered(sweep: Sweep) -> list[Trial]:
    """The trials by the metric (best first), then those without a value: failed, pruned, unfinished."""
    rank = {"done": 0, "stopped": 0, "interrupted": 1, "running": 1, "pending": 2, "failed": 3, "pruned": 4}
    sign = -1 if sweep.mode == "max" else 1
    return sorted(sweep.trials, key=lambda t: (t.value is None, sign * t.value if t.value is not None else 0, rank.get(t.status, 5), t.id))


def table(sweep: Sweep):
    """The trials as a rich table, best first."""
    from rich.table import Table

    best = sweep.best()
    done = sum(t.status == "done" for t in sweep.trials)
    tab = Table(
        title=f"sweep of {sweep.target.describe()} ({sweep.spec}): {len(sweep.trials)} trials, {done} done — {sweep.metric} ({sweep.mode})",
        title_justify="left",
    )
    tab.add_column("trial")
    tab.add_column("status")
    for name in sweep.spaces:
        tab.add_column(name, justify="right")
    tab.add_column(sweep.metric, justify="right")
    tab.add_column(f"{sweep.unit}s", justify="right")
    tab.add_column("params", justify="right")
    tab.add_column("note", overflow="fold")
    for t in ordered(sweep):
        mark = " ★" if best is not None and t is best else ""
        note = (t.error or "").split("\n")[0] if t.status in ("failed", "pruned") else (t.run_dir or "" if mark else "")
        tab.add_row(
            t.id + mark,
            t.status,
            *(show(t.settings.get(n)) for n in sweep.spaces),
            f"{t.value:.4f}" if t.value is not None else "—",
            str(t.epochs) if t.status not in ("pruned", "pending") else "—",
            f"{t.params:,}" if t.params is not None else "—",
            note,
        )
    return tab


def _print_result(sweep: Sweep, as_json: bool) -> None:
    if as_json:
        print(json.dumps(sweep.to_json(), indent=2))
        return
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(table(sweep))


__all__ = [
    "Space",
    "Knob",
    "Trial",
    "Sweep",
    "parse_space",
    "parse_params",
    "configurations",
    "check_trial",
    "run_trial",
    "flat",
    "sweep_command",
]
