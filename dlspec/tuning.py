"""Tuned kernels: ``dlspec tune`` and the runs that use what it found.

``dlspec tune FILE`` runs a classifier's training and evaluation steps (its ``train`` section's
loss and optimizer, random data of the model's input shape, at one batch size) under tinygrad's
BEAM search: every kernel of the two steps is searched for faster optimisations (``BEAM=K``:
K candidates kept per round, each compiled and timed on the device), and tinygrad keeps the
choices in its own cache (``CACHEDB``, table ``beam_search``, keyed by the kernel's AST, K and
the device). ``--budget SECONDS`` bounds the search: once it is spent no further kernel is
searched (those keep tinygrad's default, hand-coded optimisations) and the search under way
stops before timing its next candidate. The step times before and after are measured, and the
tuned (spec digest, model, batch, device, dtype, input sample shape) recorded in a small JSON
index beside dlspec's other caches (:func:`index_path`, written atomically).

A later ``dlspec train``/``eval``/``bench`` of the same spec, batch and device finds the index
entry (:func:`use_tuned`, called once by :meth:`dlspec.objectives.classifier.Classifier.build`), says so in its
first lines, and runs its compiled steps with that BEAM value — reading the choices from the
cache only: a kernel the cache lacks (another batch size, the last partial batch, a budget that
ran out) gets the default optimisations, so no search ever starts outside ``dlspec tune``.
Where the search measured no gain on the training step, the entry is recorded but not used
(the run says so); ``DLSPEC_TUNED=1`` uses tuned kernels anyway, ``DLSPEC_TUNED=0`` never.

The spec digest is the SHA-256 of the model's resolved IR (source positions left out: a
re-formatted spec keeps its tuned kernels) and of the training settings that shape the kernels
(loss, optimizer and its options, weight decay, l2, clipping); the learning rate lives in a
tensor and does not.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator

#: the index file in dlspec's cache directory
INDEX_NAME = "tuned.json"
INDEX_FORMAT = "dlspec-tuned-1"
#: ``DLSPEC_TUNED=0``: runs ignore tuned kernels
ENV_SWITCH = "DLSPEC_TUNED"
#: training settings that are constants inside the step's kernels
KERNEL_SETTINGS = ("loss", "loss_options", "optimizer", "optimizer_options", "weight_decay", "l2", "clip", "clip_norm_type")
#: default search budget of ``dlspec tune``, seconds
DEFAULT_BUDGET = 600.0
#: steps timed before and after the search
TIMED_STEPS = 10


def _warn(message: str) -> None:
    print(f"dlspec: warning: {message}", file=sys.stderr, flush=True)


# ---- the index -------------------------------------------------------------------------------------


def index_path() -> Path:
    """``$XDG_CACHE_HOME/dlspec/tuned.json`` (default ``~/.cache/dlspec/tuned.json``)."""
    from .data import cache_dir

    return cache_dir() / INDEX_NAME


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("span", "file")}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    return obj


def spec_digest(graph: Any, cfg: Any) -> str:
    """SHA-256 of ``graph`` (the resolved IR, without source positions) and of ``cfg``'s
    :data:`KERNEL_SETTINGS`."""
    doc = {"ir": _strip(graph.model_dump(mode="json")), "train": {k: getattr(cfg, k, None) for k in KERNEL_SETTINGS}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode("utf-8")).hexdigest()


#: what an index entry is looked up by
KEY_FIELDS = ("digest", "model", "batch", "device", "dtype", "sample", "threads")


def make_key(graph: Any, cfg: Any, device: str, dtype: str, sample: tuple[int, ...], batch: int) -> dict[str, Any]:
    """What an index entry is looked up by (:data:`KEY_FIELDS`). ``threads`` is tinygrad's CPU
    thread count (``NUM_CPU_THREADS``): the best kernels for one thread are not those for two,
    yet tinygrad's cache does not tell them apart."""
    from tinygrad.helpers import NUM_CPU_THREADS

    return {
        "digest": spec_digest(graph, cfg),
        "model": cfg.model,
        "batch": int(batch),
        "device": device,
        "dtype": dtype,
        "sample": [int(d) for d in sample],
        "threads": int(NUM_CPU_THREADS.value) if device.split(":")[0] == "CPU" else 0,
    }


def _matches(entry: dict, key: dict) -> bool:
    return all(entry.get(k) == v for k, v in key.items())


def read_index(path: Path | None = None, warn: Callable[[str], None] = _warn) -> list[dict]:
    """The index's entries (none when it is missing; a damaged one is ignored with a warning)."""
    path = path or index_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as e:
        warn(f"{path}: cannot read the tuned-kernels index ({e.strerror or e}); ignored")
        return []
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT or not isinstance(doc.get("entries"), list):
            raise ValueError("not a dlspec tuned-kernels index")
        return [e for e in doc["entries"] if isinstance(e, dict)]
    except ValueError as e:
        warn(f"{path}: damaged tuned-kernels index ({e}); ignored, and rewritten by the next dlspec tune")
        return []


def lookup(key: dict, path: Path | None = None) -> dict | None:
    """The index entry for ``key``, if one was recorded."""
    return next((e for e in reversed(read_index(path)) if _matches(e, key) and e.get("beam")), None)


def wanted(entry: dict) -> bool:
    """Whether runs use ``entry``'s kernels: when the search measured a gain (``DLSPEC_TUNED=1``:
    always; ``0``: never)."""
    switch = os.environ.get(ENV_SWITCH, "").strip()
    return switch != "0" and (switch == "1" or bool(entry.get("use")))


def record(entry: dict, path: Path | None = None, warn: Callable[[str], None] = _warn) -> bool:
    """Add ``entry`` to the index (replacing one with the same key), atomically. A file that
    cannot be written (a full disk, a read-only cache) is a warning: False."""
    from .runfiles import WriteError, atomic_write

    path = path or index_path()
    key = {k: entry.get(k) for k in KEY_FIELDS}
    entries = [e for e in read_index(path, warn) if not _matches(e, key)] + [entry]
    text = json.dumps({"format": INDEX_FORMAT, "entries": entries}, indent=1) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text, what="tuned-kernels index")
    except WriteError as e:
        warn(f"{e.diagnostics[0].message}; the tuned kernels stay in tinygrad's cache but later runs will not know of them")
        return False
    except OSError as e:
        warn(f"{path}: cannot write tuned-kernels index: {e.strerror or e}; later runs will not know of the tuned kernels")
        return False
    return True


# ---- hooks into tinygrad's BEAM search --------------------------------------------------------------

_ORIGINAL: Callable | None = None
#: the hooks active in this thread (context), innermost last; none: tinygrad's own search
_ACTIVE: ContextVar[tuple[Any, ...]] = ContextVar("dlspec_tuning_hooks", default=())


def _install() -> None:
    """Route tinygrad's ``beam_search`` through :func:`_dispatch` (once per process). Outside a
    hook's block it is tinygrad's own search, unchanged."""
    global _ORIGINAL
    from tinygrad.codegen.opt import search

    if _ORIGINAL is None:
        _ORIGINAL = search.beam_search
        search.beam_search = _dispatch  # apply_opts imports it from the module at each call


def _dispatch(s: Any, rawbufs: Any, var_vals: Any, amt: int, allow_test_size: bool = True, disable_cache: bool | None = None) -> Any:
    from tinygrad.helpers import IGNORE_BEAM_CACHE

    assert _ORIGINAL is not None
    if disable_cache is None:
        disable_cache = bool(IGNORE_BEAM_CACHE.value)
    active = _ACTIVE.get()
    if not active:
        return _ORIGINAL(s, rawbufs, var_vals, amt, allow_test_size, disable_cache)
    return active[-1].kernel(s, rawbufs, var_vals, amt, allow_test_size, disable_cache)


def _cached(s: Any, amt: int, allow_test_size: bool) -> bool:
    """Whether tinygrad's cache holds a BEAM choice for this kernel (the key ``beam_search`` uses)."""
    from tinygrad.helpers import CACHELEVEL, IGNORE_BEAM_CACHE, diskcache_get

    if CACHELEVEL < 1 or IGNORE_BEAM_CACHE:
        return False
    key = {"ast": s.ast.key, "amt": amt, "allow_test_size": allow_test_size, "device": s.ren.target.device, "suffix": s.ren.suffix}
    return diskcache_get("beam_search", key) is not None


def _default_opts(s: Any) -> Any:
    """What tinygrad does without BEAM: its hand-coded optimisations."""
    from tinygrad.codegen.opt.heuristic import hand_coded_optimizations
    from tinygrad.helpers import NOOPT
    from tinygrad.uop.ops import Ops

    if NOOPT or any(u.op is Ops.STAGE for u in s.ast.backward_slice):
        return s
    return hand_coded_optimizations(s)


class _Hook:
    beam = 0

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inside the block tinygrad searches (or reads) with this hook's BEAM value."""
        from tinygrad import Context

        _install()
        token = _ACTIVE.set((*_ACTIVE.get(), self))
        try:
            with Context(BEAM=self.beam):
                yield
        finally:
            _ACTIVE.reset(token)

    def kernel(self, s: Any, rawbufs: Any, var_vals: Any, amt: int, allow_test_size: bool, disable_cache: bool) -> Any:
        raise NotImplementedError


class CacheOnly(_Hook):
    """BEAM choices from the cache; a kernel it lacks gets the default optimisations (no search)."""

    def __init__(self, beam: int):
        self.beam = int(beam)
        self.hits = self.misses = 0

    def kernel(self, s: Any, rawbufs: Any, var_vals: Any, amt: int, allow_test_size: bool, disable_cache: bool) -> Any:
        if not disable_cache and _cached(s, amt, allow_test_size):
            self.hits += 1
            assert _ORIGINAL is not None
            return _ORIGINAL(s, rawbufs, var_vals, amt, allow_test_size, disable_cache)  # a cache hit: no search
        self.misses += 1
        return _default_opts(s)

    def wrap(self, make_step: Callable[[int], Any]) -> Callable[[int], Any]:
        """``make_step(n) -> TinyJit`` whose steps run inside :meth:`active`."""

        def made(n: int) -> Any:
            return _Scoped(make_step(n), self)

        return made


class _Scoped:
    """A compiled step that runs with its hook active (``cnt`` is the JIT's)."""

    def __init__(self, jit: Any, hook: _Hook):
        self.jit, self.hook = jit, hook

    @property
    def cnt(self) -> int:
        return self.jit.cnt

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.hook.active():
            return self.jit(*args, **kwargs)


class _OutOfTime(Exception):
    """Raised inside tinygrad's search when the budget is spent (not a RuntimeError: it is not swallowed)."""


class Budget(_Hook):
    """Search kernels until ``seconds`` have passed; ``on_kernel(outcome)`` after each kernel
    (``searched``, ``cached``, ``skipped``: the budget was spent, ``stopped``: spent during its search)."""

    def __init__(self, beam: int, seconds: float, on_kernel: Callable[[str], None] = lambda outcome: None):
        self.beam = int(beam)
        self.seconds = float(seconds)
        self.deadline = math.inf
        self.on_kernel = on_kernel
        self.counts = {"searched": 0, "cached": 0, "skipped": 0, "stopped": 0}
        self.search_s = 0.0

    def start(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    @property
    def spent(self) -> bool:
        return time.monotonic() >= self.deadline

    def kernel(self, s: Any, rawbufs: Any, var_vals: Any, amt: int, allow_test_size: bool, disable_cache: bool) -> Any:
        from tinygrad.codegen.opt import search

        assert _ORIGINAL is not None
        if not disable_cache and _cached(s, amt, allow_test_size):
            outcome, result = "cached", _ORIGINAL(s, rawbufs, var_vals, amt, allow_test_size, disable_cache)
        elif self.spent:
            outcome, result = "skipped", _default_opts(s)
        else:
            timer = search._time_program

            def timed(*args: Any, **kwargs: Any) -> Any:
                if self.spent:
                    raise _OutOfTime
                return timer(*args, **kwargs)

            t0 = time.monotonic()
            search._time_program = timed
            try:
                outcome, result = "searched", _ORIGINAL(s, rawbufs, var_vals, amt, allow_test_size, disable_cache)
            except _OutOfTime:  # nothing stored for this kernel: default optimisations
                from tinygrad.engine.worker import terminate_worker_pool

                terminate_worker_pool()  # drop the candidates still compiling
                outcome, result = "stopped", _default_opts(s)
            finally:
                search._time_program = timer
                self.search_s += time.monotonic() - t0
        self.counts[outcome] += 1
        self.on_kernel(outcome)
        return result


# ---- runs that use tuned kernels --------------------------------------------------------------------


def use_tuned(trainer: Any) -> CacheOnly | None:
    """If ``dlspec tune`` recorded kernels for this trainer's spec, batch, device and dtype: run
    its compiled steps with them (:class:`CacheOnly`) and log one line saying so."""
    if os.environ.get(ENV_SWITCH, "").strip() == "0":
        return None
    net, cfg = trainer.net, trainer.cfg
    try:
        key = make_key(trainer.prog.ir(cfg.model), cfg, net.device, net.dtype, tuple(trainer.reshape), cfg.batch)
        entry = lookup(key)
    except Exception as e:  # noqa: BLE001 - an unreadable index never stops a run
        _warn(f"tuned kernels ignored: {type(e).__name__}: {e}")
        return None
    if entry is None:
        return None
    if not wanted(entry):
        trainer.log(describe_entry(entry))
        return None
    hook = CacheOnly(int(entry["beam"]))
    trainer._train_step = hook.wrap(trainer._train_step)
    trainer._eval_step = hook.wrap(trainer._eval_step)
    trainer.kernels = hook
    trainer.log(describe_entry(entry))
    return hook


def describe_entry(entry: dict) -> str:
    """The line a run prints when ``dlspec tune`` recorded kernels for it."""
    train = entry.get("train") or {}
    times = ""
    if train.get("before_ms") and train.get("after_ms"):
        times = f"training step {train['before_ms']:.2f} → {train['after_ms']:.2f} ms at batch {entry['batch']}"
    if not wanted(entry):
        why = (
            f"{ENV_SWITCH}=0"
            if os.environ.get(ENV_SWITCH, "").strip() == "0"
            else f"it measured no gain ({times}); {ENV_SWITCH}=1 uses them"
        )
        return f"tuned kernels not used: dlspec tune ({entry.get('date', '?')}) found BEAM={entry['beam']} choices, but {why}"
    parts = [f"tuned kernels: BEAM={entry['beam']} choices from tinygrad's cache (dlspec tune, {entry.get('date', '?')}"]
    if times:
        parts.append(f"; {times}")
    if not entry.get("complete", True):
        parts.append("; its budget ran out: some kernels keep the default optimisations")
    return "".join(parts) + ")"


# ---- dlspec tune ------------------------------------------------------------------------------------


def _time_steps(step: Callable[[], Any], n: int) -> float:
    """Median milliseconds of ``n`` calls of ``step`` (each synchronised by its caller)."""
    import statistics

    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def tune_command(args: Any) -> int:
    """``dlspec tune FILE [--model M] [--batch B] [--seq T=LEN] [--beam K] [--budget SECONDS] [--device D]``."""
    from . import load
    from .benchmark import measurable, resolve_run, synthetic_batch, synthetic_trainer
    from .errors import UsageError

    if args.beam < 1:
        raise UsageError("--beam must be at least 1 (the number of candidates BEAM keeps per round)")
    if not args.budget > 0 or not math.isfinite(args.budget):
        raise UsageError("--budget must be a positive number of seconds")
    prog = load(Path(args.file))
    cfg, sample = resolve_run(prog, args.file, args.model, args.batch, args.device, dict(args.seq), "tune")
    from tinygrad.helpers import CACHEDB, CACHELEVEL

    from .backends.tinygrad import check_device

    if CACHELEVEL < 1:
        raise UsageError("tinygrad's cache is off (CACHELEVEL=0): tuned kernels could not be kept; unset CACHELEVEL")
    device = measurable(check_device(cfg.device), "tune")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    say(
        f"tuning {cfg.model} (batch {cfg.batch}, input {list(sample)}, {cfg.loss}, {cfg.optimizer}) on {device}: BEAM={args.beam}, budget {args.budget:g} s"
    )
    trainer = synthetic_trainer(prog, cfg, sample, log=say, tuned=False)
    trainer.step_cache = False  # the search compiles the steps itself (a cached step would skip it)
    graph = prog.ir(cfg.model)
    x, y = synthetic_batch(trainer, sample, cfg.batch, cfg.seed)

    def train_once(jit: Any) -> Callable[[], Any]:
        return lambda: jit(x, y)[0].item()

    def eval_once(jit: Any) -> Callable[[], Any]:
        return lambda: jit(x, y)[0].item()

    # before: tinygrad's default optimisations
    t0 = time.perf_counter()
    train_jit, eval_jit = trainer._train_step(cfg.batch), trainer._eval_step(cfg.batch)
    for _ in range(3):  # eager, capture, one replay
        train_once(train_jit)()
        eval_once(eval_jit)()
    before = {"train": _time_steps(train_once(train_jit), TIMED_STEPS), "eval": _time_steps(eval_once(eval_jit), TIMED_STEPS)}
    kernels = _count_kernels(train_jit) + _count_kernels(eval_jit)
    say(
        f"default kernels: training step {before['train']:.2f} ms, evaluation step {before['eval']:.2f} ms"
        f" ({kernels} kernels, compiled in {time.perf_counter() - t0:.1f} s)"
    )

    # the search: the same steps again, compiled under BEAM
    trainer.steps.clear()
    trainer.evals.clear()
    with _progress(kernels, args.beam, args.budget) as bar:
        hook = Budget(args.beam, args.budget, bar.kernel)
        bar.hook = hook
        hook.start()
        started = time.perf_counter()
        train_jit, eval_jit = _Scoped(trainer._train_step(cfg.batch), hook), _Scoped(trainer._eval_step(cfg.batch), hook)
        for _ in range(2):  # eager (searches), capture (the JIT's kernels: mostly found again)
            train_once(train_jit)()
        for _ in range(2):
            eval_once(eval_jit)()
        wall = time.perf_counter() - started
    train_once(train_jit)()  # one replay each before timing
    eval_once(eval_jit)()
    after = {"train": _time_steps(train_once(train_jit), TIMED_STEPS), "eval": _time_steps(eval_once(eval_jit), TIMED_STEPS)}
    c = hook.counts
    untuned = c["skipped"] + c["stopped"]
    say(
        f"searched {c['searched']} kernel{'s' * (c['searched'] != 1)} in {hook.search_s:.0f} s ({c['cached']} already tuned"
        + (f", {untuned} left with the default optimisations: the budget ran out" if untuned else "")
        + f"); {wall:.0f} s in all"
    )
    gain = before["train"] / after["train"] if after["train"] > 0 else math.inf
    print(
        f"{cfg.model} at batch {cfg.batch} on {device}: training step {before['train']:.2f} → {after['train']:.2f} ms ({gain:.2f}×),"
        f" evaluation step {before['eval']:.2f} → {after['eval']:.2f} ms"
    )
    key = make_key(graph, cfg, device, trainer.net.dtype, sample, cfg.batch)
    if c["searched"] + c["cached"] == 0:
        print("no kernel was searched within the budget: nothing recorded; give a larger --budget")
        return 0
    import importlib.metadata

    entry = {
        **key,
        "spec": str(args.file),
        "beam": int(args.beam),
        "complete": untuned == 0,
        "use": after["train"] < before["train"],
        "kernels": dict(c),
        "train": {"before_ms": round(before["train"], 3), "after_ms": round(after["train"], 3)},
        "eval": {"before_ms": round(before["eval"], 3), "after_ms": round(after["eval"], 3)},
        "search_s": round(hook.search_s, 1),
        "budget_s": float(args.budget),
        "cachedb": str(CACHEDB),
        "tinygrad": importlib.metadata.version("tinygrad"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if record(entry):
        where = f"dlspec train/eval/bench of {args.file} at batch {cfg.batch} on {device}"
        if entry["use"]:
            print(f"recorded in {index_path()}: {where} use these kernels")
        else:
            print(f"recorded in {index_path()}, but no gain: {where} keep the default kernels ({ENV_SWITCH}=1 uses the tuned ones)")
    return 0


def _count_kernels(jit: Any) -> int:
    """Distinct kernels of a captured TinyJit."""
    from tinygrad.uop.ops import Ops

    captured = getattr(jit, "captured", None)
    if captured is None:
        return 0
    return len({u.key for u in captured._linear.toposort() if u.op is Ops.PROGRAM})


class _Bar:
    """The search's progress: a rich bar on a terminal, one line per kernel searched otherwise."""

    def __init__(self, total: int, beam: int, budget: float):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.total, self.done, self.budget = max(total, 1), 0, budget
        self.hook: Budget | None = None
        self.progress = Progress(
            TextColumn(f"BEAM={beam} kernels"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.live,
        )
        self.task = self.progress.add_task("search", total=self.total, info="")

    def kernel(self, outcome: str) -> None:
        self.done += 1
        if self.done > self.total:  # kernels beyond the estimate (the capture found a few more)
            self.total = self.done
            self.progress.update(self.task, total=self.total)
        c = self.hook.counts if self.hook else {}
        left = max(0.0, self.hook.deadline - time.monotonic()) if self.hook else self.budget
        info = f"searched {c.get('searched', 0)}, cached {c.get('cached', 0)}, untuned {c.get('skipped', 0) + c.get('stopped', 0)}; budget left {left:.0f} s"
        self.progress.update(self.task, completed=self.done, info=info)
        if not self.live and outcome in ("searched", "stopped"):
            print(f"kernel {self.done}/{self.total}: {outcome}; {info}", file=sys.stderr, flush=True)


@contextmanager
def _progress(total: int, beam: int, budget: float) -> Iterator[_Bar]:
    bar = _Bar(total, beam, budget)
    with bar.progress:
        yield bar
