"""Learning-rate schedules for ``dlspec train``: ``schedule NAME [option value …]``.

:func:`make_schedule` gives a plain function ``lr(step)`` of the 0-based global step (host floats,
no tensors): feed its value to :func:`dlspec.optim.set_lr` before every step.

========================  =====================================================================
``constant``              ``base_lr``
``step``                  ``base_lr·gamma^⌊epoch/step⌋`` (``step`` epochs, default ⌊epochs/3⌋, ≥ 1;
                          ``gamma`` 0.1) — PyTorch ``StepLR`` stepped once per epoch
``multistep``             ``base_lr·gamma^(number of milestones ≤ epoch)`` (``milestones`` epochs,
                          default ⌊epochs/2⌋ and ⌊3·epochs/4⌋; ``gamma`` 0.1) — ``MultiStepLR``
``exponential``           ``base_lr·gamma^epoch`` (``gamma`` default 0.95) — ``ExponentialLR``
``cosine``                ``min_lr + (base_lr−min_lr)·(1+cos(π·u))/2``, per step — ``CosineAnnealingLR``
``poly``                  ``min_lr + (base_lr−min_lr)·(1−u)^power`` (``power`` 1.0), per step —
                          ``PolynomialLR``
``warmup``                linear warm-up, then ``base_lr`` (``warmup`` epochs, default 1)
========================  =====================================================================

``epoch = step // steps_per_epoch``. For cosine and poly ``u = (step − W)/(T − W)`` clamped to
[0, 1], with ``T = epochs·steps_per_epoch`` (option ``epochs`` sets a schedule length other than
the run's; after it the lr stays at ``min_lr``) and ``W`` the warm-up steps. ``min_lr`` (default 0)
is also a floor for step, multistep and exponential.

Any schedule takes ``warmup N``: over the first ``W = N·steps_per_epoch`` steps the lr is the
schedule's value times ``(step+1)/W`` (never 0: the first step uses ``base_lr/W``), e.g.
``schedule cosine warmup 2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SCHEDULES", "SCHEDULE_OPTIONS", "make_schedule"]

#: schedule name → the options it takes
SCHEDULE_OPTIONS: dict[str, frozenset[str]] = {
    "constant": frozenset({"warmup"}),
    "step": frozenset({"step", "gamma", "min_lr", "warmup"}),
    "multistep": frozenset({"milestones", "gamma", "min_lr", "warmup"}),
    "exponential": frozenset({"gamma", "min_lr", "warmup"}),
    "cosine": frozenset({"min_lr", "epochs", "warmup"}),
    "poly": frozenset({"power", "min_lr", "epochs", "warmup"}),
    "warmup": frozenset({"warmup"}),
}
SCHEDULES = tuple(SCHEDULE_OPTIONS)


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
        raise ValueError(f"unknown schedule '{name}'; one of {', '.join(SCHEDULES)}")
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
    power = float(opts.get("power", 1.0))
    length = _whole("epochs", opts.get("epochs", run_epochs), 1)
    warm = _whole("warmup", opts.get("warmup", 1 if name == "warmup" else 0), 0) * spe
    total = length * spe
    every = _whole("step", opts.get("step", max(1, run_epochs // 3)), 1)
    milestones = sorted(_whole("milestones", m, 0) for m in _seq(opts.get("milestones", (run_epochs // 2, (3 * run_epochs) // 4))))

    def main(t: int) -> float:
        epoch = t // spe
        if name in ("constant", "warmup"):
            return base
        if name == "step":
            return max(base * gamma ** (epoch // every), min_lr)
        if name == "multistep":
            return max(base * gamma ** sum(epoch >= m for m in milestones), min_lr)
        if name == "exponential":
            return max(base * gamma**epoch, min_lr)
        u = min(1.0, max(0.0, (t - warm) / max(1, total - warm)))
        if name == "cosine":
            return min_lr + (base - min_lr) * (1 + math.cos(math.pi * u)) / 2
        return min_lr + (base - min_lr) * (1 - u) ** power  # poly

    def lr(step: int) -> float:
        """The learning rate for 0-based global step ``step``."""
        if step < 0:
            raise ValueError(f"step must be ≥ 0, got {step}")
        value = main(step)
        return value * (step + 1) / warm if step < warm else value

    lr.__name__ = lr.__qualname__ = f"schedule_{name}"
    return lr


def _seq(v: Any) -> Iterable[Any]:
    return v if isinstance(v, (tuple, list)) else (v,)
