"""Learning-rate schedules for ``dlspec train``: ``schedule NAME [option value …]``.

The names, their options and one-line definitions are :data:`dlspec.registry.SCHEDULES`
(tabled in ``docs/training.md``); this module implements exactly those.

:func:`make_schedule` gives a plain function ``lr(step)`` of the 0-based global step (host floats,
no tensors): feed its value to :func:`dlspec.optim.set_lr` before every step.

``epoch = step // steps_per_epoch``. ``step``, ``multistep`` and ``exponential`` change once per
epoch (PyTorch's ``StepLR``, ``MultiStepLR``, ``ExponentialLR`` stepped per epoch). For cosine and
poly ``u = (step − W)/(T − W)`` clamped to [0, 1], with ``T = epochs·steps_per_epoch`` (option
``epochs`` sets a schedule length other than the run's; after it the lr stays at ``min_lr``) and
``W`` the warm-up steps. ``min_lr`` (default 0) is also a floor for step, multistep and exponential.

Any schedule takes ``warmup N``: over the first ``W = N·steps_per_epoch`` steps the lr is the
schedule's value times ``(step+1)/W`` (never 0: the first step uses ``base_lr/W``), e.g.
``schedule cosine warmup 2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import registry

__all__ = ["SCHEDULES", "SCHEDULE_OPTIONS", "make_schedule"]

#: schedule name → the options it takes (:data:`dlspec.registry.SCHEDULES`)
SCHEDULE_OPTIONS: dict[str, frozenset[str]] = {name: frozenset(e.options) for name, e in registry.SCHEDULES.items()}
SCHEDULES = registry.SCHEDULES.names()


@dataclass(frozen=True)
class _Plan:
    """A schedule's resolved numbers (see :func:`make_schedule`)."""

    base: float
    min_lr: float
    gamma: float
    power: float
    spe: int  # steps per epoch
    warm: int  # warm-up steps
    total: int  # the schedule's length in steps
    every: int  # step: epochs per decay
    milestones: tuple[int, ...]

    def u(self, t: int) -> float:
        """The progress of cosine and poly after warm-up, in [0, 1]."""
        return min(1.0, max(0.0, (t - self.warm) / max(1, self.total - self.warm)))


#: each registered schedule's value at step ``t`` (before the warm-up factor)
IMPLEMENTATIONS: dict[str, Callable[[_Plan, int], float]] = {
    "constant": lambda p, t: p.base,
    "step": lambda p, t: max(p.base * p.gamma ** (t // p.spe // p.every), p.min_lr),
    "multistep": lambda p, t: max(p.base * p.gamma ** sum(t // p.spe >= m for m in p.milestones), p.min_lr),
    "exponential": lambda p, t: max(p.base * p.gamma ** (t // p.spe), p.min_lr),
    "cosine": lambda p, t: p.min_lr + (p.base - p.min_lr) * (1 + math.cos(math.pi * p.u(t))) / 2,
    "warmup": lambda p, t: p.base,
    "poly": lambda p, t: p.min_lr + (p.base - p.min_lr) * (1 - p.u(t)) ** p.power,
}
if set(IMPLEMENTATIONS) != set(SCHEDULES):  # pragma: no cover - a registry edit without its implementation
    raise ImportError(f"dlspec.schedules implements {sorted(IMPLEMENTATIONS)}, the registry names {sorted(SCHEDULES)}")


def _whole(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
        raise ValueError(f"schedule option '{name}' must be a whole number, got {v!r}")
    if int(v) < low:
        raise ValueError(f"schedule option '{name}' must be ≥ {low}, got {v}")
    return int(v)


def make_schedule(name: str, base_lr: float, steps_per_epoch: int, epochs: int, /, **options: Any) -> Callable[[int], float]:
    """``lr(step)`` for schedule ``name`` (see the module docstring); ``epochs`` is the run's length.
    The first four arguments are positional, so the spec's own ``epochs`` option (the schedule's
    length) can come in ``options``. ``None`` options are dropped; an option the schedule does not
    take, or a bad value, raises ``ValueError``."""
    if name not in SCHEDULE_OPTIONS:
        raise ValueError(f"{registry.SCHEDULES.unknown(name)}; one of {', '.join(SCHEDULES)}")
    opts = {k: v for k, v in options.items() if v is not None}
    bad = sorted(set(opts) - SCHEDULE_OPTIONS[name])
    if bad:
        raise ValueError(f"schedule {name} has no option {', '.join(bad)}; options: {', '.join(sorted(SCHEDULE_OPTIONS[name]))}")
    spe = _whole("steps_per_epoch", steps_per_epoch, 1)
    run_epochs = _whole("epochs", epochs, 1)
    base = float(base_lr)
    if base < 0:
        raise ValueError(f"base lr must be ≥ 0, got {base_lr}")
    min_lr = float(opts.get("min_lr", 0.0))
    if min_lr < 0:
        raise ValueError(f"min_lr must be ≥ 0, got {min_lr}")
    gamma = float(opts.get("gamma", 0.95 if name == "exponential" else 0.1))
    if gamma < 0:
        raise ValueError(f"gamma must be ≥ 0, got {gamma}")
    length = _whole("epochs", opts.get("epochs", run_epochs), 1)
    warm = _whole("warmup", opts.get("warmup", 1 if name == "warmup" else 0), 0) * spe
    milestones = sorted(_whole("milestones", m, 0) for m in _seq(opts.get("milestones", (run_epochs // 2, (3 * run_epochs) // 4))))
    plan = _Plan(
        base=base,
        min_lr=min_lr,
        gamma=gamma,
        power=float(opts.get("power", 1.0)),
        spe=spe,
        warm=warm,
        total=length * spe,
        every=_whole("step", opts.get("step", max(1, run_epochs // 3)), 1),
        milestones=tuple(milestones),
    )
    main = IMPLEMENTATIONS[name]

    def lr(step: int) -> float:
        """The learning rate for 0-based global step ``step``."""
        if step < 0:
            raise ValueError(f"step must be ≥ 0, got {step}")
        value = main(plan, step)
        return value * (step + 1) / warm if step < warm else value

    lr.__name__ = lr.__qualname__ = f"schedule_{name}"
    return lr


def _seq(v: Any) -> Iterable[Any]:
    return v if isinstance(v, (tuple, list)) else (v,)
