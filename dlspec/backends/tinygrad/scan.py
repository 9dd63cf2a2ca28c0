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
from contextvars import ContextVar
from typing import Callable, Iterator, Sequence

from tinygrad import Tensor, function

from .tree import Hidden

#: Set to False to build the old unrolled graph instead, process-wide (for comparisons and debugging);
#: the library itself never changes it: :func:`unrolled` switches this thread's (context's) builds only
ENABLED = True
_UNROLLED: ContextVar[bool] = ContextVar("dlspec_scan_unrolled", default=False)


def enabled() -> bool:
    """Whether recurrences are built as scans here (not inside :func:`unrolled`, and ``ENABLED``)."""
    return ENABLED and not _UNROLLED.get()


Step = Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]]


@contextmanager
def unrolled() -> Iterator[None]:
    """Build recurrences as the lazy unrolled graph inside this block (nothing runs while the
    graph is built: for shape checks that never realize the outputs)."""
    token = _UNROLLED.set(True)
    try:
        yield
    finally:
        _UNROLLED.reset(token)


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


def scan(
    step: Step,
    xs: Tensor,
    params: Sequence[Tensor],
    init: Sequence[Tensor],
    reverse: bool = False,
    context: Sequence[Tensor] = (),
    init_grad: Sequence[bool] = (),
) -> Tensor:
    """Run ``step(x_t, states) -> (y_t, new_states)`` over the time axis (1) of ``xs`` ``(N, T, …)``
    from the states ``init``; returns ``ys`` ``(N, T, …)`` with gradients w.r.t. ``xs`` and
    ``params`` (every tensor ``step`` reads other than its arguments must be in ``params``).
    ``reverse``: run from the last step to the first (``ys`` stays in time order).
    ``context``: tensors of the caller's graph that every step reads whole (a cell's ``context``,
    an encoder's outputs): realized once and given to ``step(x_t, states, context)``; their
    gradients (summed over the steps) flow back into the caller's graph like ``xs``'s, and so do
    those of the ``init`` states flagged in ``init_grad`` (a learned initial memory)."""
    T = xs.shape[1]
    params = _dedup(params)
    ctx_in = list(context)
    # a realized copy, read by every step; the call below keeps the originals' graphs for backward
    ctx = [c.detach().contiguous().realize() for c in ctx_in]
    for c in ctx:
        _hold(c)
    ctx_float = [c.is_floating_point() for c in ctx]
    if ctx_in:
        inner = step
        step = lambda x_t, s: inner(x_t, s, tuple(ctx))  # noqa: E731
    x_float = xs.is_floating_point()
    order = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    xr = xs.detach().transpose(0, 1).contiguous().realize()  # a copy: xs keeps its graph
    _hold(xr)
    x_t = _views(xr)
    # float initial states that are not constants (a learned memory): their gradients go back too
    init_in = [s for s, g in zip(init, init_grad) if g and s.is_floating_point()]
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
        dctx = [c.zeros_like().contiguous().realize() for c, f in zip(ctx, ctx_float) if f]
        float_ctx = [c for c, f in zip(ctx, ctx_float) if f]
        dxs: list[Tensor | None] = [None] * T
        for k in range(T - 1, -1, -1):
            t = order[k]
            s_in = states[k]
            y, new = step(x_t[t], s_in)
            # a scalar whose gradient is the vector-Jacobian product with (dy, dstates)
            obj = (y * gy[t]).sum()
            for n, d in zip(new, dstates):
                obj = obj + (n * d).sum()
            grads = obj.gradient(*((x_t[t],) if x_float else ()), *s_in, *params, *float_ctx)
            dx = grads.pop(0) if x_float else None
            ds, dp, dc = grads[: len(s_in)], grads[len(s_in) : len(s_in) + len(params)], grads[len(s_in) + len(params) :]
            dstates = [d.contiguous() for d in ds]
            dparams = [a + b for a, b in zip(dparams, dp)]
            dctx = [a + b for a, b in zip(dctx, dc)]
            dxs[t] = dx.contiguous() if dx is not None else None
            _realize(*(d for d in (dxs[t], *dstates, *dparams, *dctx) if d is not None))
        by_uop: dict = {}

        def add(u, d: Tensor) -> None:
            # a tensor given twice (a context that is also a parameter, or an initial state): the gradients add up
            by_uop[u] = (Tensor(by_uop[u]) + d).uop if u in by_uop else d.uop

        for u, d in zip(arg_uops[1 : 1 + len(params)], dparams):
            add(u, d)
        for c, d in zip([c for c, f in zip(ctx_in, ctx_float) if f], dctx):
            add(c.uop, d)
        for s0, d in zip(init_in, [d for (s, g), d in zip(zip(init, init_grad), dstates) if g and s.is_floating_point()]):
            add(s0.uop, d)
        if x_float:
            by_uop[arg_uops[0]] = Tensor.stack(*dxs, dim=1).uop  # type: ignore[misc]
        return tuple(by_uop.get(a) for a in call.src[1:])

    arg_uops = [xs.uop, *(p.uop for p in params)]
    return function(lambda *_: ys, allow_implicit=True, grad_fxn=grad_fxn)(xs, *params, *ctx_in, *init_in)
