"""Optimizers for ``dlspec train``: SGD (momentum, Nesterov), RMSProp, AdaGrad, FTRL-proximal, Adam, AdamW.

Each is a :class:`tinygrad.nn.optim.Optimizer` subclass, so ``opt.zero_grad()`` / ``opt.step()``
(under ``Context(TRAINING=1)``) and TinyJit capture work as with tinygrad's own. On top of the
published update rules every optimizer here has, uniformly:

* ``weight_decay`` — *coupled* (``g += wd·w`` before the update, as PyTorch's SGD/RMSprop/Adagrad/Adam
  ``weight_decay``), except AdamW, whose decay is *decoupled* (``w -= lr·wd·w``, Loshchilov & Hutter).
* ``clip`` — gradient clipping by the global norm of all gradients together, done first
  (PyTorch's ``clip_grad_norm_``: ``g *= min(1, clip / (‖g‖ + 1e-6))``; ``clip_norm_type`` is the p of
  the norm, ``inf`` for the max-norm). Pure tensor code: works inside TinyJit.
* a step counter and named state for exact resume: :func:`optimizer_state` /
  :func:`load_optimizer_state` (``optim.step``, ``optim.lr``, ``optim.<slot>.<i>`` with ``i`` the
  index of the parameter in ``opt.params``).
* the learning rate lives in the tensor ``opt.lr``; :func:`set_lr` writes it in place, so a
  captured TinyJit step uses the new value on replay.
* one fused update for all parameters (``fused=True``, the default, except for sharded
  parameters): each state slot is one flat float32 tensor over all parameters in ``opt.params``
  order, and the update runs once over the concatenated gradients (tinygrad's fused path), then is
  split back per parameter. :func:`optimizer_state` still names the state per parameter, so
  checkpoints are the same either way; ``fused=False`` keeps one state tensor per parameter.

The ``l2`` training setting is a loss term, :func:`l2_penalty` (``0.5·λ·Σw²``, so its gradient
``λ·w`` equals ``weight_decay λ``). Running statistics (``is_param`` False, or keys
``running_mean``/``running_var``/``num_batches_tracked``) are never updated, decayed or penalised:
see :func:`trainable`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.nn.optim import Optimizer, OptimizerGroup

from . import registry

__all__ = [
    "OPTIMIZERS",
    "DLOptimizer",
    "SGD",
    "RMSProp",
    "AdaGrad",
    "FTRL",
    "Adam",
    "AdamW",
    "make_optimizer",
    "set_lr",
    "get_lr",
    "clip_grad_norm",
    "l2_penalty",
    "trainable",
    "optimizer_state",
    "load_optimizer_state",
    "state_tensors",
]

BUFFER_KEYS = ("running_mean", "running_var", "num_batches_tracked")


def _state(shape: tuple[int, ...], value: float, device: Any) -> Tensor:
    """A realized float32 state buffer (not a parameter) filled with ``value``: copied in from the
    host on one device (no fill kernel to generate, which a process's first step would wait for)."""
    if isinstance(device, tuple):
        return Tensor.full(shape, value, dtype=dtypes.float32, device=device).contiguous().is_param_(False).realize()
    return Tensor(np.full(shape, value, dtype=np.float32), device=device).is_param_(False).realize()


def clip_grad_norm(grads: list[Tensor], max_norm: float, norm_type: float = 2.0) -> list[Tensor]:
    """Scale every gradient by ``min(1, max_norm / (‖g‖_p + 1e-6))``, ``‖g‖_p`` over all of them together
    (PyTorch's ``torch.nn.utils.clip_grad_norm_``). No host sync: safe inside TinyJit."""
    if not grads:
        return grads
    if math.isinf(norm_type):
        total = Tensor.stack(*[g.abs().max() for g in grads]).max()
    elif norm_type == 2.0:
        total = Tensor.stack(*[g.float().square().sum() for g in grads]).sum().sqrt()
    else:
        total = Tensor.stack(*[g.float().abs().pow(norm_type).sum() for g in grads]).sum().pow(1.0 / norm_type)
    coef = (max_norm / (total + 1e-6)).minimum(1.0)
    return [(g * coef).cast(g.dtype) for g in grads]


class DLOptimizer(Optimizer):
    """Base of dlspec's optimizers: clipping, coupled weight decay, step counter, named state.

    Subclasses set ``name`` and implement ``_update(i, w, g) -> Tensor`` (the amount to subtract from
    parameter ``i``; ``w`` is the detached parameter, ``g`` its preprocessed gradient), creating their
    per-parameter state with :meth:`_slot` in ``__init__``."""

    name = ""
    decoupled_weight_decay = False

    def __init__(
        self,
        params: list[Tensor],
        lr: float,
        weight_decay: float = 0.0,
        clip: float | None = None,
        clip_norm_type: float = 2.0,
        device: Any = None,
        fused: bool = True,
    ):
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
        if clip is not None and clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        sharded = isinstance(device, tuple) or any(isinstance(p.device, tuple) for p in params)
        # fused: one flat state tensor per slot and one update over all parameters (tinygrad's
        # fused path: gradients concatenated, one _step, the update split back per parameter)
        super().__init__(params, lr, device=device, fused=bool(fused) and not sharded)
        self.weight_decay = float(weight_decay)
        self.clip = None if clip is None else float(clip)
        self.clip_norm_type = float(clip_norm_type)
        self.step_count = _state((1,), 0.0, self.device)  # steps taken, float32 (exact to 2**24)
        self.slots: dict[str, list[Tensor]] = {}

    def _slot(self, name: str, init: float = 0.0) -> list[Tensor]:
        """One float32 state tensor per parameter, shaped like it, saved as ``optim.<name>.<i>``;
        fused: one flat tensor of all of them, in ``opt.params`` order (saved per parameter all the same)."""
        if self.fused:
            self.slots[name] = [_state((self.pos_params[-1],), init, self.device)]
        elif isinstance(self.device, tuple):  # sharded parameters: state sharded like them
            self.slots[name] = [
                Tensor.full_like(p, init, dtype=dtypes.float32).contiguous().is_param_(False).realize() for p in self.params
            ]
        else:
            self.slots[name] = [_state(p.shape, init, self.device) for p in self.params]
        return self.slots[name]

    def _step(self, params: list[Tensor], grads: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        grads = [g.float() for g in grads]
        if self.clip is not None:
            grads = clip_grad_norm(grads, self.clip, self.clip_norm_type)
        self.step_count.assign(self.step_count + 1)
        ups = []
        for i, (p, g) in enumerate(zip(params, grads)):
            w = p.detach().float()
            if self.weight_decay and not self.decoupled_weight_decay:
                g = g + self.weight_decay * w
            ups.append(self._update(i, w, g).reshape(p.shape).cast(p.dtype))
        return ups, [self.step_count] + [t for ts in self.slots.values() for t in ts]

    def _update(self, i: int, w: Tensor, g: Tensor) -> Tensor:
        raise NotImplementedError


class SGD(DLOptimizer):
    """PyTorch's SGD (dampening 0): ``b = μ·b + g``; ``d = g + μ·b`` (Nesterov) or ``b``; ``w -= lr·d``."""

    name = "sgd"

    def __init__(self, params: list[Tensor], lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **kw: Any):
        if momentum < 0:
            raise ValueError(f"momentum must be ≥ 0, got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs a momentum > 0")
        super().__init__(params, lr, **kw)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.buf = self._slot("momentum") if momentum else []

    def _update(self, i: int, w: Tensor, g: Tensor) -> Tensor:
        if self.momentum:
            self.buf[i].assign(self.momentum * self.buf[i] + g)
            g = g + self.momentum * self.buf[i] if self.nesterov else self.buf[i]
        return self.lr * g


class RMSProp(DLOptimizer):
    """PyTorch's RMSprop (not centered): ``s = α·s + (1−α)·g²``; ``u = g / (√s + eps)``;
    with momentum ``b = μ·b + u; w -= lr·b``, else ``w -= lr·u``."""

    name = "rmsprop"

    def __init__(self, params: list[Tensor], lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0, **kw: Any):
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        super().__init__(params, lr, **kw)
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)
        self.sq = self._slot("square_avg")
        self.buf = self._slot("momentum") if momentum else []

    def _update(self, i: int, w: Tensor, g: Tensor) -> Tensor:
        self.sq[i].assign(self.alpha * self.sq[i] + (1 - self.alpha) * g * g)
        u = g / (self.sq[i].sqrt() + self.eps)
        if self.momentum:
            self.buf[i].assign(self.momentum * self.buf[i] + u)
            u = self.buf[i]
        return self.lr * u


class AdaGrad(DLOptimizer):
    """PyTorch's Adagrad (lr_decay 0): ``s += g²``; ``w -= lr·g / (√s + eps)``; ``s`` starts at
    ``initial_accumulator``."""

    name = "adagrad"

    def __init__(self, params: list[Tensor], lr: float = 0.01, eps: float = 1e-10, initial_accumulator: float = 0.0, **kw: Any):
        if initial_accumulator < 0:
            raise ValueError(f"initial_accumulator must be ≥ 0, got {initial_accumulator}")
        super().__init__(params, lr, **kw)
        self.eps = float(eps)
        self.sum = self._slot("sum", float(initial_accumulator))

    def _update(self, i: int, w: Tensor, g: Tensor) -> Tensor:
        self.sum[i].assign(self.sum[i] + g * g)
        return self.lr * g / (self.sum[i].sqrt() + self.eps)


class FTRL(DLOptimizer):
    """FTRL-proximal (McMahan et al. 2013, "Ad Click Prediction: a View from the Trenches", Algorithm 1),
    per coordinate, in TensorFlow's/Keras' ``Ftrl`` form with ``learning_rate_power`` p ≤ 0 (−0.5 = the paper)::

        n' = n + g²
        σ  = (n'^(−p) − n^(−p)) / lr
        z += g − σ·w
        w  = (clip(z, −l1, l1) − z) / ((beta + n'^(−p)) / lr + 2·l2)      # 0 where |z| ≤ l1

    ``n`` starts at ``initial_accumulator`` (TF default 0.1), ``z`` at 0. ``l2`` follows TF (the
    paper's λ2 = 2·l2). The new weight is set directly rather than subtracted."""

    name = "ftrl"

    def __init__(
        self,
        params: list[Tensor],
        lr: float = 0.001,
        lr_power: float = -0.5,
        l1: float = 0.0,
        l2: float = 0.0,
        beta: float = 0.0,
        initial_accumulator: float = 0.1,
        **kw: Any,
    ):
        if lr_power > 0:
            raise ValueError(f"FTRL lr_power must be ≤ 0 (the paper: -0.5), got {lr_power}")
        if initial_accumulator < 0 or l1 < 0 or l2 < 0 or beta < 0:
            raise ValueError("FTRL initial_accumulator, l1, l2 and beta must be ≥ 0")
        super().__init__(params, lr, **kw)
        self.lr_power, self.l1, self.l2, self.beta = float(lr_power), float(l1), float(l2), float(beta)
        self.n = self._slot("accum", float(initial_accumulator))
        self.z = self._slot("linear")

    def _pow(self, n: Tensor) -> Tensor:
        return n.sqrt() if self.lr_power == -0.5 else n.pow(-self.lr_power)

    def _update(self, i: int, w: Tensor, g: Tensor) -> Tensor:
        n, z = self.n[i], self.z[i]
        n_new = n + g * g
        z.assign(z + g - (self._pow(n_new) - self._pow(n)) / self.lr * w)  # reads the old n: before n's assign
        n.assign(n_new)
        quadratic = (self.beta + self._pow(n)) / self.lr + 2 * self.l2
        return (z.clip(-self.l1, self.l1) - z) / quadratic

    def _apply_update(self, t: Tensor, up: Tensor) -> Tensor:
        return up.to(t.device)  # FTRL's "update" is the new weight


class Adam(DLOptimizer):
    """PyTorch's Adam: ``m = β1·m + (1−β1)·g``; ``v = β2·v + (1−β2)·g²``;
    ``w -= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)``; ``weight_decay`` is coupled (added to ``g``)."""

    name = "adam"

    def __init__(self, params: list[Tensor], lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **kw: Any):
        for k, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= b < 1:
                raise ValueError(f"{k} must be in [0, 1), got {b}")
        super().__init__(params, lr, **kw)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m, self.v = self._slot("m"), self._slot("v")

    def _update(self, i: int, w: Tensor, g: Tensor) -> Tensor:
        self.m[i].assign(self.beta1 * self.m[i] + (1 - self.beta1) * g)
        self.v[i].assign(self.beta2 * self.v[i] + (1 - self.beta2) * g * g)
        bc1 = 1 - self.beta1**self.step_count
        bc2 = 1 - self.beta2**self.step_count
        up = self.lr / bc1 * self.m[i] / (self.v[i].sqrt() / bc2.sqrt() + self.eps)
        if self.decoupled_weight_decay and self.weight_decay:
            up = up + self.lr * self.weight_decay * w
        return up


class AdamW(Adam):
    """PyTorch's AdamW: Adam plus decoupled decay ``w -= lr·wd·w`` (default ``weight_decay`` 0.01)."""

    name = "adamw"
    decoupled_weight_decay = True

    def __init__(self, params: list[Tensor], lr: float = 0.001, weight_decay: float = 0.01, **kw: Any):
        super().__init__(params, lr, weight_decay=weight_decay, **kw)


_CLASSES: dict[str, type[DLOptimizer]] = {c.name: c for c in (SGD, RMSProp, AdaGrad, FTRL, Adam, AdamW)}
if set(_CLASSES) != set(registry.OPTIMIZERS):  # pragma: no cover - a registry edit without its implementation
    raise ImportError(f"dlspec.optim implements {sorted(_CLASSES)}, the registry names {sorted(registry.OPTIMIZERS)}")

#: optimizer name (as written in a spec, :data:`dlspec.registry.OPTIMIZERS`) → class, in the registry's order
OPTIMIZERS: dict[str, type[DLOptimizer]] = {name: _CLASSES[name] for name in registry.OPTIMIZERS}

#: spec option names each optimizer takes (beyond ``lr``; every optimizer also takes
#: ``weight_decay``, ``clip``, ``clip_norm_type``)
OPTIONS: dict[str, frozenset[str]] = {name: frozenset(e.options) - {"lr", "weight_decay"} for name, e in registry.OPTIMIZERS.items()}
COMMON = frozenset({"weight_decay", "clip", "clip_norm_type", "device"})


def make_optimizer(name: str, params: list[Tensor], lr: float, **options: Any) -> DLOptimizer:
    """The optimizer a spec's ``optimizer NAME lr X opt v …`` names, over ``params`` (non-parameters
    such as running statistics are skipped). Options: see :data:`OPTIONS` and :data:`COMMON`;
    ``None`` values are dropped (defaults apply). Unknown names raise ``ValueError``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"{registry.OPTIMIZERS.unknown(name)}; one of {', '.join(OPTIMIZERS)}")
    opts = {k: v for k, v in options.items() if v is not None}
    bad = sorted(set(opts) - OPTIONS[name] - COMMON)
    if bad:
        raise ValueError(f"optimizer {name} has no option {', '.join(bad)}; options: {', '.join(sorted(OPTIONS[name] | COMMON))}")
    if lr < 0:
        raise ValueError(f"lr must be ≥ 0, got {lr}")
    return OPTIMIZERS[name](list(params), float(lr), **opts)


def _each(opt: Optimizer) -> list[Optimizer]:
    return list(opt.optimizers) if isinstance(opt, OptimizerGroup) else [opt]


def set_lr(opt: Optimizer, lr: float) -> None:
    """Write ``lr`` into ``opt.lr`` in place (every optimizer of a group): a TinyJit-captured step
    sees it on its next replay. Call it before each step with the schedule's value."""
    for o in _each(opt):
        o.lr.assign(Tensor([float(lr)], device=o.lr.device, dtype=o.lr.dtype)).realize()


def get_lr(opt: Optimizer) -> float:
    """The current learning rate (a host read: not inside a JIT)."""
    return float(_each(opt)[0].lr.reshape(-1).tolist()[0])


def trainable(state: Mapping[str, Tensor] | Iterable[Tensor]) -> list[Tensor]:
    """The tensors an optimizer and ``l2`` act on: drops ``is_param`` False ones and, in a state
    dict, keys ending in ``running_mean``, ``running_var``, ``num_batches_tracked``."""
    items = state.items() if isinstance(state, Mapping) else ((None, t) for t in state)
    out: list[Tensor] = []
    seen: set[int] = set()
    for k, t in items:
        if not getattr(t, "is_param", True) or (k is not None and k.rsplit(".", 1)[-1] in BUFFER_KEYS):
            continue
        if id(t) not in seen:  # tied weights once
            seen.add(id(t))
            out.append(t)
    return out


def l2_penalty(params: Iterable[Tensor], lam: float) -> Tensor:
    """The ``l2 λ`` loss term ``0.5·λ·Σ w²`` over ``params`` (pass :func:`trainable`'s list): its
    gradient ``λ·w`` is the same as coupled ``weight_decay λ``."""
    ps = list(params)
    if not ps or lam == 0:
        return Tensor(0.0)
    return 0.5 * lam * Tensor.stack(*[p.float().square().sum() for p in ps]).sum()


def optimizer_state(opt: Optimizer, prefix: str = "optim.") -> dict[str, Tensor]:
    """Every state tensor of ``opt`` by a stable name: ``optim.step`` (steps taken), ``optim.lr``,
    ``optim.<slot>.<i>`` (``i`` = index in ``opt.params``; slots: sgd ``momentum``; rmsprop
    ``square_avg``, ``momentum``; adagrad ``sum``; ftrl ``accum``, ``linear``; adam/adamw ``m``, ``v``).
    For an ``OptimizerGroup`` the names get ``<prefix><k>.`` with ``k`` the optimizer's index."""
    if isinstance(opt, OptimizerGroup):
        return {k: v for j, o in enumerate(opt.optimizers) for k, v in optimizer_state(o, f"{prefix}{j}.").items()}
    if not isinstance(opt, DLOptimizer):
        raise TypeError(f"optimizer_state needs a dlspec optimizer, got {type(opt).__name__}")
    out = {f"{prefix}step": opt.step_count, f"{prefix}lr": opt.lr}
    for slot, ts in opt.slots.items():
        for i, t in enumerate(_per_param(opt, ts)):
            out[f"{prefix}{slot}.{i}"] = t
    return out


def _per_param(opt: DLOptimizer, ts: list[Tensor]) -> list[Tensor]:
    """A slot's state per parameter: its tensors, or views of the fused flat one."""
    if not opt.fused:
        return ts
    pos, flat = opt.pos_params, ts[0]
    return [flat[pos[i] : pos[i + 1]].reshape(p.shape) for i, p in enumerate(opt.params)]


def state_tensors(opt: Optimizer, prefix: str = "optim.") -> dict[str, Tensor]:
    """The tensors holding ``opt``'s state themselves (not per-parameter views): ``optim.step``,
    ``optim.lr``, ``optim.<slot>`` (fused: one flat tensor) or ``optim.<slot>.<i>``. A compiled step
    cached across processes is bound to these (:mod:`dlspec.stepcache`)."""
    if isinstance(opt, OptimizerGroup):
        return {k: v for j, o in enumerate(opt.optimizers) for k, v in state_tensors(o, f"{prefix}{j}.").items()}
    out = {f"{prefix}step": opt.step_count, f"{prefix}lr": opt.lr} if isinstance(opt, DLOptimizer) else {f"{prefix}lr": opt.lr}
    for slot, ts in getattr(opt, "slots", {}).items():
        if getattr(opt, "fused", False):
            out[f"{prefix}{slot}"] = ts[0]
        else:
            out.update({f"{prefix}{slot}.{i}": t for i, t in enumerate(ts)})
    return out


def load_optimizer_state(opt: Optimizer, state: Mapping[str, Tensor], prefix: str = "optim.") -> None:
    """Copy saved state (as :func:`optimizer_state` named it; other keys in ``state`` are ignored)
    into ``opt`` in place — works after TinyJit capture and with tensors read from a file
    (:func:`dlspec.backends.tinygrad.read_weights`). Raises ``KeyError`` naming missing keys, ``ValueError`` on a shape mismatch."""
    mine = optimizer_state(opt, prefix)
    missing = [k for k in mine if k not in state]
    if missing:
        raise KeyError(f"optimizer state lacks {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    for k, t in mine.items():
        src = state[k]
        if tuple(src.shape) != tuple(t.shape):
            raise ValueError(f"optimizer state '{k}' has shape {tuple(src.shape)}, expected {tuple(t.shape)}")
    if isinstance(opt, OptimizerGroup):
        for j, o in enumerate(opt.optimizers):
            load_optimizer_state(o, state, f"{prefix}{j}.")
        return
    # the same per-parameter names whether fused or not: checkpoints of either load into both
    whole = {f"{prefix}step": opt.step_count, f"{prefix}lr": opt.lr}
    for k, t in whole.items():
        t.assign(state[k].to(t.device).cast(t.dtype).contiguous()).realize()
    for slot, ts in opt.slots.items():
        parts = [state[f"{prefix}{slot}.{i}"] for i in range(len(opt.params))]
        if opt.fused:
            flat = ts[0]
            flat.assign(Tensor.cat(*[p.to(flat.device).cast(flat.dtype).flatten() for p in parts])).realize()
        else:
            for t, src in zip(ts, parts):
                t.assign(src.to(t.device).cast(t.dtype).contiguous()).realize()
