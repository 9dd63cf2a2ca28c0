"""Losses and metrics for ``dlspec train``: ``loss NAME [label_smoothing ε] [delta δ]`` and
``metrics accuracy, top5, loss``.

The names, their options and one-line definitions are :data:`dlspec.registry.LOSSES` and
:data:`dlspec.registry.METRICS` (tabled in ``docs/training.md``); this module implements them
and checks at import that it implements exactly those.

All losses return the mean (a 0-d float tensor), PyTorch's ``reduction='mean'``: over the batch
(and any further target positions, e.g. a sequence's time steps) for the classification losses,
over every element for the element-wise ones. Classes are on the **last** axis (``(N, C)`` or
``(N, T, C)`` with integer targets ``(N,)`` / ``(N, T)``). Everything is tensor code (TinyJit-safe).
For the element-wise losses a target with as many elements as the output (``(N,)`` for ``(N, 1)``)
is reshaped to it; other shape mismatches raise ``ValueError`` rather than broadcast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tinygrad import Tensor, dtypes

from . import registry

__all__ = ["LOSSES", "METRICS", "loss", "metric"]

#: the loss names (:data:`dlspec.registry.LOSSES`), in their documented order
LOSSES = registry.LOSSES.names()
#: the metric names (:data:`dlspec.registry.METRICS`)
METRICS = registry.METRICS.names()
LOSS_OPTIONS = {name: frozenset(e.options) for name, e in registry.LOSSES.items()}


def _class_target(name: str, output: Tensor, target: Tensor) -> Tensor:
    """One-hot (or the given probabilities) for a classification loss, shaped like ``output``."""
    if output.ndim < 1:
        raise ValueError(f"{name} needs outputs with a class axis, got shape {output.shape}")
    if dtypes.is_float(target.dtype):
        if tuple(target.shape) != tuple(output.shape):
            raise ValueError(f"{name}: probability targets must have the output's shape {output.shape}, got {target.shape}")
        return target.float()
    if tuple(target.shape) != tuple(output.shape[:-1]):
        raise ValueError(f"{name}: integer targets must have shape {output.shape[:-1]} (output {output.shape}), got {target.shape}")
    return target.one_hot(output.shape[-1]).float()


def _same(name: str, output: Tensor, target: Tensor) -> Tensor:
    if tuple(target.shape) != tuple(output.shape):
        if target.numel() != output.numel():
            raise ValueError(f"{name}: target shape {target.shape} does not match output shape {output.shape}")
        target = target.reshape(output.shape)
    return target.float()


def _cross_entropy(out: Tensor, target: Tensor, opts: dict[str, Any]) -> Tensor:
    eps = float(opts.get("label_smoothing", 0.0))
    if not 0 <= eps <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {eps}")
    q = _class_target("cross_entropy", out, target)
    if eps:
        q = q * (1 - eps) + eps / out.shape[-1]
    return -(q * out.log_softmax(-1)).sum(-1).mean()


def _nll(out: Tensor, target: Tensor, opts: dict[str, Any]) -> Tensor:
    return -(_class_target("nll", out, target) * out).sum(-1).mean()


def _bce(out: Tensor, target: Tensor, opts: dict[str, Any]) -> Tensor:
    y = _same("bce", out, target)
    return -(y * out.log().maximum(-100) + (1 - y) * (1 - out).log().maximum(-100)).mean()


def _bce_logits(out: Tensor, target: Tensor, opts: dict[str, Any]) -> Tensor:
    y = _same("bce_logits", out, target)
    return (out.maximum(0) - out * y + (1 + (-out.abs()).exp()).log()).mean()


def _mse(out: Tensor, target: Tensor, opts: dict[str, Any]) -> Tensor:
    d = out - _same("mse", out, target)
    return (d * d).mean()


def _l1(out: Tensor, target: Tensor, opts: dict[str, Any]) -> Tensor:
    return (out - _same("l1", out, target)).abs().mean()


def _huber(out: Tensor, target: Tensor, opts: dict[str, Any]) -> Tensor:
    delta = float(opts.get("delta", 1.0))
    if delta <= 0:
        raise ValueError(f"huber delta must be positive, got {delta}")
    d = out - _same("huber", out, target)
    a = d.abs()
    return (a < delta).where(0.5 * d * d, delta * (a - 0.5 * delta)).mean()


#: each registered loss's implementation ``(output, target, options) → mean loss``
IMPLEMENTATIONS: dict[str, Callable[[Tensor, Tensor, dict[str, Any]], Tensor]] = {
    "cross_entropy": _cross_entropy,
    "nll": _nll,
    "bce": _bce,
    "bce_logits": _bce_logits,
    "mse": _mse,
    "l1": _l1,
    "huber": _huber,
}
if set(IMPLEMENTATIONS) != set(LOSSES):  # pragma: no cover - a registry edit without its implementation
    raise ImportError(f"dlspec.losses implements {sorted(IMPLEMENTATIONS)}, the registry names {sorted(LOSSES)}")


def loss(name: str, output: Tensor, target: Tensor, **options: Any) -> Tensor:
    """The mean loss ``name`` of ``output`` against ``target`` (see the module docstring).
    Options: ``label_smoothing`` (cross_entropy), ``delta`` (huber); ``None`` values are dropped."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"{registry.LOSSES.unknown(name)}; one of {', '.join(LOSSES)}")
    opts = {k: v for k, v in options.items() if v is not None}
    bad = sorted(set(opts) - LOSS_OPTIONS[name])
    if bad:
        raise ValueError(f"loss {name} has no option {', '.join(bad)}")
    return IMPLEMENTATIONS[name](output.float(), target, opts)


def metric(name: str, output: Tensor, target: Tensor, *, threshold: float = 0.5, loss_name: str | None = None, **options: Any) -> Tensor:
    """A metric as a 0-d float tensor (TinyJit-safe; ``.item()`` it outside).

    * ``accuracy`` — fraction of argmax (last axis) equal to integer targets; for a single output
      per example (output shaped like the target, or ``(N, 1)``) the fraction of ``output > threshold``
      equal to the 0/1 target (``threshold`` 0.5 for probabilities; pass 0.0 for logits).
    * ``top5`` (any ``topK``) — fraction of targets whose output is among the K largest (ties count
      in the target's favour: fewer than K outputs strictly above it).
    * ``loss`` — :func:`loss` ``loss_name`` (default cross_entropy) with ``options``."""
    if name == "loss":
        return loss(loss_name or "cross_entropy", output, target, **options)
    if options:
        raise ValueError(f"metric {name} takes no options {', '.join(sorted(options))}")
    m = re.fullmatch(r"top(\d+)", name)
    if name != "accuracy" and not m:
        raise ValueError(f"{registry.METRICS.unknown(name)}; one of {', '.join(METRICS)}")
    out = output.float()
    if tuple(target.shape) == tuple(out.shape[:-1]) and out.shape[-1] > 1:
        if name == "accuracy":
            return (out.argmax(-1) == target.cast(dtypes.int32)).float().mean()
        k = int(m.group(1))
        mine = (target.one_hot(out.shape[-1]) > 0).where(out, 0.0).sum(-1, keepdim=True)
        return ((out > mine).sum(-1) < k).float().mean()
    y = _same(name, out, target)
    if name != "accuracy":
        raise ValueError(f"{name} needs class scores (N, C) with C > 1 and integer targets (N,)")
    return ((out > threshold).float() == (y > 0.5).float()).float().mean()
