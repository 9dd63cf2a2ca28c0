"""Recurrences over time without an unrolled graph.

tinygrad 0.14 schedules and generates code for one lazy graph at a time. An unrolled recurrence
of T steps is one big graph whose steps differ (each reads another time slice, and the scheduler
fuses across steps), so every step generates its own kernels: an LSTM of 32 steps took 30–60 s
to its first forward and 70–90 s to its first training step on 2 CPU cores, almost all of it
tinygrad's Python (scheduling and code generation), which the on-disk kernel cache does not save.

:func:`scan` runs the step eagerly instead, one realized step at a time on whole buffers
(time slices are zero-copy views of a time-major copy), so all steps have the same graph: one
schedule (tinygrad's schedule cache) and one set of kernels, whatever T is. The result is a
node of the caller's lazy graph with a custom gradient (a tinygrad ``function`` with
``grad_fxn``): when ``loss.backward()`` reaches it, back-propagation through time runs one step
at a time as well — each step recomputed from its saved input states, differentiated by
tinygrad's autograd, and the state gradients fed back — and returns the gradients of the
sequence input and of every parameter to the rest of the graph. So a plain
``loss.backward()`` still fills every parameter's ``.grad``, and under ``TinyJit`` the whole
thing is captured as a list of kernels like any other step.

The step's arithmetic is exactly the caller's step function (PyTorch's formulas for LSTM/GRU/RNN),
so forward values equal the unrolled graph's.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from tinygrad import Tensor, function

from .tree import Hidden

#: Set to False to build the old unrolled graph instead (for comparisons and debugging).
ENABLED = True

Step = Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]]


@contextmanager
def unrolled() -> Iterator[None]:
    """Build recurrences as the lazy unrolled graph inside this block (nothing runs while the
    graph is built: for shape checks that never realize the outputs)."""
    global ENABLED
    old, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = old


def _views(t: Tensor) -> list[Tensor]:
    """The time slices of a realized time-major tensor as zero-copy buffer views (one realize)."""
    if 1 in t.shape[1:]:
        # tinygrad 0.14 crashes (SIGSEGV) on later steps that read views of a slice with a size-1
        # axis (a batch of 1 through a cell that concatenates x and h): copy those slices instead
        parts = [(t[i] + 0).contiguous() for i in range(t.shape[0])]
    else:
        parts = [t[i].contiguous() for i in range(t.shape[0])]
    Tensor.realize(*parts)
    return parts


def _hold(base: Tensor) -> None:
    """Keep the base of time-slice views alive as long as a TinyJit being captured. The JIT's
    memory planner does not see reads through views: a base whose tensor dies during the capture
    would get its memory reused while later steps still read it (wrong values on replay)."""
    from tinygrad.engine.realize import capturing

    if capturing:
        held = getattr(capturing[0], "_dlspec_held", None)
        if held is None:
            held = []
            capturing[0]._dlspec_held = held
        held.append(base)


def _realize(*ts: Tensor) -> None:
    seen: dict[int, Tensor] = {}
    for t in ts:
        seen.setdefault(id(t), t)
    Tensor.realize(*seen.values())


def _dedup(params: Sequence[Tensor]) -> list[Tensor]:
    out: list[Tensor] = []
    for p in params:
        if not any(p is q or p.uop is q.uop for q in out):
            out.append(p)
    return out


def parameters_of(*objs) -> list[Tensor]:
    """Every trainable float tensor reachable from ``objs`` (layer attributes, lists, dicts, and
    the references a :class:`~dlspec.backends.tinygrad.tree.Hidden` holds, such as a tied weight's
    owner): what a step function built from these layers may read."""
    out: list[Tensor] = []
    seen: set[int] = set()

    def walk(o, depth=0):
        if id(o) in seen or depth > 8:
            return
        seen.add(id(o))
        if isinstance(o, Tensor):
            if getattr(o, "is_param", True) and o.is_floating_point():
                out.append(o)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v, depth + 1)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v, depth + 1)
        elif isinstance(o, Hidden):
            walk(o.value, depth + 1)
        elif hasattr(o, "__dict__") and not isinstance(o, type):
            for v in vars(o).values():
                walk(v, depth + 1)

    for o in objs:
        walk(o)
    return _dedup(out)


def scan(step: Step, xs: Tensor, params: Sequence[Tensor], init: Sequence[Tensor], reverse: bool = False) -> Tensor:
    """Run ``step(x_t, states) -> (y_t, new_states)`` over the time axis (1) of ``xs`` ``(N, T, …)``
    from the states ``init``; returns ``ys`` ``(N, T, …)`` with gradients w.r.t. ``xs`` and
    ``params`` (every tensor ``step`` reads other than its arguments must be in ``params``).
    ``reverse``: run from the last step to the first (``ys`` stays in time order)."""
    T = xs.shape[1]
    params = _dedup(params)
    x_float = xs.is_floating_point()
    order = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    xr = xs.detach().transpose(0, 1).contiguous().realize()  # a copy: xs keeps its graph
    _hold(xr)
    x_t = _views(xr)
    states = [tuple(s.contiguous().realize() for s in init)]  # states[k]: input states of the k-th step run
    outs: list[Tensor | None] = [None] * T
    for t in order:
        y, new = step(x_t[t], states[-1])
        new = tuple(new)
        _realize(y, *new)
        outs[t] = y
        states.append(new)
    ys = Tensor.stack(*outs, dim=1).realize()  # type: ignore[misc]

    def grad_fxn(g, call):
        gy_base = Tensor(g).transpose(0, 1).contiguous().realize()
        _hold(gy_base)
        gy = _views(gy_base)
        dstates = [s.zeros_like().contiguous().realize() for s in init]
        dparams = [p.zeros_like().contiguous().realize() for p in params]
        dxs: list[Tensor | None] = [None] * T
        for k in range(T - 1, -1, -1):
            t = order[k]
            s_in = states[k]
            y, new = step(x_t[t], s_in)
            # a scalar whose gradient is the vector-Jacobian product with (dy, dstates)
            obj = (y * gy[t]).sum()
            for n, d in zip(new, dstates):
                obj = obj + (n * d).sum()
            grads = obj.gradient(*((x_t[t],) if x_float else ()), *s_in, *params)
            dx = grads.pop(0) if x_float else None
            ds, dp = grads[: len(s_in)], grads[len(s_in) :]
            dstates = [d.contiguous() for d in ds]
            dparams = [a + b for a, b in zip(dparams, dp)]
            dxs[t] = dx.contiguous() if dx is not None else None
            _realize(*(d for d in (dxs[t], *dstates, *dparams) if d is not None))
        by_uop = {u: d.uop for u, d in zip(arg_uops[1:], dparams)}
        if x_float:
            by_uop[arg_uops[0]] = Tensor.stack(*dxs, dim=1).uop  # type: ignore[misc]
        return tuple(by_uop.get(a) for a in call.src[1:])

    arg_uops = [xs.uop, *(p.uop for p in params)]
    return function(lambda *_: ys, allow_implicit=True, grad_fxn=grad_fxn)(xs, *params)
