"""Compiled steps cached across processes: the second ``dlspec train``/``eval``/``bench`` of a spec
replays the kernels the first one captured, with no tracing, autograd, scheduling or code generation.

A training or evaluation step is a ``TinyJit``; once it has captured its kernels (its second call),
the capture — tinygrad's ``CapturedJit``: the memory-planned list of kernel calls with their compiled
programs — is pickled to ``$XDG_CACHE_HOME/dlspec/steps/<key>.step`` (written atomically,
:func:`dlspec.runfiles.atomic_write`). The key (:func:`step_key`) is the SHA-256 of the model's
resolved IR and the training settings inside the kernels (:func:`dlspec.tuning.spec_digest`), the
step kind and its input shapes and dtypes, the device and its renderer, the CPU thread count, the
BEAM value of tuned kernels, and the dlspec (its sources' digest) and tinygrad versions.

A captured step holds buffers: the weights, batch-norm statistics, optimizer state, the learning
rate and tinygrad's random-stream state, besides scratch memory. None of their values are stored.
Each buffer is written as one of:

* **bound** — a tensor dlspec knows by name (:func:`named_state`: ``model.<key>``, the optimizer's
  state, ``rng.*``): when the step is loaded it reads and writes *that process's* tensor's buffer,
  so the model built and initialised (or resumed, or reseeded in place) as usual is the one trained;
* **constant** — a buffer that existed before the capture and that the step only reads (a mask
  or a table a layer made once): its bytes are stored;
* **scratch** — made during the capture (activations, gradients, the outputs): a fresh, empty
  buffer of the same size.

A step that writes a buffer of the third kind dlspec cannot name is not cached (one warning); so is
a step on several devices. Results are bit-identical to an uncached run: the same programs run in
the same order on the same values (``tests/test_stepcache.py``).

A file that does not unpickle, fails its digest, or whose bound buffers do not fit (a stale entry)
is ignored with one warning, removed, and the step is compiled and cached again. A cache that cannot
be written (a full disk, a read-only folder) is a warning; training goes on. The files are pickles
read through an allow-list of tinygrad's classes (:class:`_Unpickler`); they live in the user's own
cache folder, as tinygrad's kernel cache does. ``DLSPEC_STEPCACHE=0`` turns the cache off.
``dlspec cache info`` lists the entries; ``dlspec cache clear`` removes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable

#: file format, in every file's first line
MAGIC = b"dlspec-step-1\n"
#: ``DLSPEC_STEPCACHE=0``: no compiled step is loaded or saved
ENV_SWITCH = "DLSPEC_STEPCACHE"
SUFFIX = ".step"


def _warn(message: str) -> None:
    print(f"dlspec: warning: {message}", file=sys.stderr, flush=True)


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "").strip() != "0"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/dlspec/steps`` (default ``~/.cache/dlspec/steps``)."""
    from .data import cache_dir

    return cache_dir("steps")


# ---- the key ----------------------------------------------------------------------------------------

_SOURCE_DIGEST: str | None = None


def source_digest() -> str:
    """SHA-256 of dlspec's own Python sources: a changed lowering or optimizer is another step."""
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        root = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes())
        _SOURCE_DIGEST = h.hexdigest()
    return _SOURCE_DIGEST


def step_key(trainer: Any, kind: str, inputs: tuple[Any, ...]) -> dict[str, Any]:
    """What a cached step is looked up by (see the module docstring); ``inputs`` are the step's
    input tensors (their shapes and dtypes)."""
    import importlib.metadata

    from tinygrad import Device
    from tinygrad.helpers import BEAM, JIT, NOOPT, NUM_CPU_THREADS, getenv

    from . import __version__
    from .tuning import spec_digest

    net, cfg = trainer.net, trainer.cfg
    device = net.device
    dev = Device[device]
    hook = getattr(trainer, "kernels", None)
    return {
        "format": MAGIC.decode().strip(),
        "kind": kind,
        "model": cfg.model,
        "digest": spec_digest(trainer.prog.ir(cfg.model), cfg),
        "inputs": [[list(t.shape), str(t.dtype)] for t in inputs],
        "device": device,
        "dtype": net.dtype,
        "renderer": f"{type(dev.renderer).__name__}/{type(dev.compiler).__name__}",
        "threads": int(NUM_CPU_THREADS.value) if device.split(":")[0] == "CPU" else 0,
        "beam": int(getattr(hook, "beam", 0) or BEAM.value),
        "knobs": [int(JIT.value), int(NOOPT.value), int(getenv("JITBEAM", -1))],
        "dlspec": f"{__version__}+{source_digest()[:16]}",
        "tinygrad": importlib.metadata.version("tinygrad"),
    }


def key_name(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


# ---- the state a step is bound to -------------------------------------------------------------------


def named_state(trainer: Any) -> dict[str, Any]:
    """The tensors a compiled step is bound to by name: the model's state dict, the optimizer's
    state (:func:`dlspec.optim.state_tensors`) and tinygrad's random-stream buffers."""
    from tinygrad import Tensor

    out: dict[str, Any] = {f"model.{k}": t for k, t in trainer.net.state_dict().items()}
    opt = getattr(trainer, "opt", None)
    if opt is not None:
        from .optim import state_tensors

        out.update(state_tensors(opt))
    for dev, t in Tensor._device_seeds.items():
        out[f"rng.seed.{dev}"] = t
    for dev, t in Tensor._device_rng_counters.items():
        out[f"rng.counter.{dev}"] = t
    return out


def _base(t: Any) -> Any:
    """The BUFFER uop holding tensor ``t`` (realized), or None."""
    from tinygrad.uop.ops import Ops

    u = t.uop.base
    return u if u.op is Ops.BUFFER and u.realized is not None else None


class Uncacheable(Exception):
    """The step cannot be saved (its reason is the message)."""


class Stale(Exception):
    """A cache entry that does not fit this process's tensors."""


# ---- saving -----------------------------------------------------------------------------------------


class _Pickler(pickle.Pickler):
    """Pickles a ``CapturedJit`` with its buffers as bound / constant / scratch references."""

    def __init__(self, f: Any, names: dict[Any, str], before: Any, written: set):
        super().__init__(f, protocol=5)
        self.names, self.before, self.written = names, before, written
        self.memo_ids: dict[int, tuple] = {}
        self.counts = {"bound": 0, "constant": 0, "scratch": 0}

    def persistent_id(self, obj: Any) -> Any:
        from tinygrad.device import Buffer, MultiBuffer
        from tinygrad.uop.ops import AddrSpace, Ops, UOp

        if isinstance(obj, (Buffer, MultiBuffer)):
            raise Uncacheable("it holds a device buffer outside its kernel calls")
        if not isinstance(obj, UOp) or obj.op is not Ops.BUFFER or obj.arg.addrspace is not AddrSpace.GLOBAL:
            return None
        pid = self.memo_ids.get(id(obj))
        if pid is not None:
            return pid
        if isinstance(obj.device, tuple):
            raise Uncacheable("it runs on several devices")
        idx = len(self.memo_ids)
        name = self.names.get(obj)
        if name is not None:
            pid = ("bound", idx, name, obj.max_numel(), obj.dtype)
            self.counts["bound"] += 1
        elif obj in self.before:
            if obj in self.written:
                raise Uncacheable("it updates a tensor dlspec does not know by name")
            buf = obj.realized
            if buf is None:
                raise Uncacheable("it reads a buffer that is not realized")
            pid = ("constant", idx, obj.src, obj.arg, obj.dtype, buf.options, bytes(buf.as_memoryview()))
            self.counts["constant"] += 1
        else:
            buf = obj.realized
            pid = ("scratch", idx, obj.src, obj.arg, obj.dtype, buf.options if buf is not None else None)
            self.counts["scratch"] += 1
        self.memo_ids[id(obj)] = pid
        self._keep = getattr(self, "_keep", [])
        self._keep.append(obj)  # ids stay unique while pickling
        return pid


def _written(captured: Any) -> set:
    """Every BUFFER uop a kernel call of ``captured`` writes (also those it reads: ``CapturedJit._written_uops``
    leaves out buffers updated in place)."""
    from tinygrad.engine.realize import get_call_arg_uops, get_call_outs_ins
    from tinygrad.uop.ops import Ops

    out: set = set()
    for call in captured._linear.toposort():
        if call.op is not Ops.CALL:
            continue
        args = get_call_arg_uops(call)
        outs, _ = get_call_outs_ins(call)
        for k in outs:
            u = args[k]
            cv = u.contiguous_view()
            b = u if cv is None else cv[0]
            while b.op is not Ops.BUFFER and b.src:
                b = b.src[0]
            if b.op is Ops.BUFFER:
                out.add(b)
    return out


def dump(captured: Any, names: dict[Any, str], before: Any) -> tuple[bytes, dict[str, int]]:
    """The pickled bytes of ``captured`` (a ``CapturedJit``) and how many buffers of each kind it holds."""
    buf = io.BytesIO()
    p = _Pickler(buf, names, before, _written(captured))
    p.dump(captured)
    return buf.getvalue(), p.counts


# ---- loading ----------------------------------------------------------------------------------------

#: modules whose classes a step file may name (tinygrad's own, and these standard ones)
_ALLOWED_STD = {
    ("builtins", "slice"),
    ("builtins", "frozenset"),
    ("builtins", "set"),
    ("builtins", "bytearray"),
    ("builtins", "getattr"),
    ("builtins", "object"),
    ("builtins", "tuple"),
    ("copyreg", "_reconstructor"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("functools", "partial"),
    ("operator", "getitem"),
    ("math", "inf"),
}


class _Unpickler(pickle.Unpickler):
    """Loads a step file: classes from tinygrad (and a few standard ones) only; buffers bound to
    this process's tensors or made fresh."""

    def __init__(self, f: Any, tensors: dict[str, Any]):
        super().__init__(f)
        self.tensors = tensors
        self.made: dict[int, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "tinygrad" or module.startswith("tinygrad.") or (module, name) in _ALLOWED_STD:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a step file may not name {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        from dataclasses import replace

        from tinygrad.device import Buffer
        from tinygrad.uop.ops import Ops, UOp, buffers

        kind, idx = pid[0], pid[1]
        if idx in self.made:
            return self.made[idx]
        if kind == "bound":
            _, _, name, size, dtype = pid
            t = self.tensors.get(name)
            u = _base(t) if t is not None else None
            if u is None:
                raise Stale(f"it was bound to '{name}', which this model has not")
            if u.max_numel() != size or u.dtype != dtype:
                raise Stale(f"'{name}' has {u.max_numel()} {u.dtype} values here, {size} {dtype} in the cached step")
            u.buffer.ensure_allocated()
        elif kind in ("constant", "scratch"):
            src, arg, dtype, options = pid[2], pid[3], pid[4], pid[5]
            u = UOp(Ops.BUFFER, dtype, src, replace(arg, slot=next(UOp.unique_num)))
            initial = pid[6] if kind == "constant" else None
            buffers[u] = Buffer(arg.device, u.max_numel(), dtype, options=options, initial_value=initial).ref(1)
        else:
            raise pickle.UnpicklingError(f"unknown buffer reference {kind!r}")
        self.made[idx] = u
        return u


def load(data: bytes, tensors: dict[str, Any]) -> Any:
    """A ``TinyJit`` replaying the captured step in ``data``, bound to ``tensors`` (:func:`named_state`)."""
    from tinygrad import Tensor
    from tinygrad.engine.jit import CapturedJit, _TinyJit

    realize = [t for t in tensors.values() if not t.uop.is_realized]
    if realize:
        Tensor.realize(*realize)
    captured = _Unpickler(io.BytesIO(data), tensors).load()
    if not isinstance(captured, CapturedJit):
        raise pickle.UnpicklingError(f"not a captured step ({type(captured).__name__})")
    return _TinyJit(None, captured)


# ---- files ------------------------------------------------------------------------------------------


def _pack(key: dict, counts: dict, payload: bytes) -> bytes:
    head = {
        "key": key,
        "buffers": counts,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    return MAGIC + json.dumps(head, sort_keys=True).encode() + b"\n" + payload


def read_head(path: Path) -> tuple[dict, int]:
    """A step file's header and the offset of its payload (``ValueError`` if it is not one)."""
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            raise ValueError("not a dlspec step file")
        line = fh.readline(1 << 20)
    head = json.loads(line)
    if not isinstance(head, dict) or "sha256" not in head:
        raise ValueError("no header")
    return head, len(MAGIC) + len(line)


def _read(path: Path) -> bytes:
    head, start = read_head(path)
    data = path.read_bytes()[start:]
    if len(data) != head.get("bytes") or hashlib.sha256(data).hexdigest() != head["sha256"]:
        raise ValueError("its contents do not match their digest (truncated or damaged)")
    return data


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class StepCache:
    """Loads and saves one trainer's compiled steps (one instance per trainer)."""

    def __init__(self, trainer: Any, log: Callable[[str], None] | None = None, warn: Callable[[str], None] = _warn):
        self.trainer, self.warn = trainer, warn
        self.log = log or (lambda m: None)
        self.root = cache_root()
        self.loaded: list[str] = []
        self.saved: list[str] = []
        self._write_failed = False

    def path(self, key: dict) -> Path:
        return self.root / f"{key['kind']}-{key['model']}-{key_name(key)}{SUFFIX}"

    def step(self, kind: str, make: Callable[[], Any]) -> Callable[..., Any]:
        """A step for the trainer: the cached one when there is one, else ``make()``'s TinyJit,
        saved once it has captured."""
        return _Step(self, kind, make)

    def fetch(self, key: dict) -> Any | None:
        path = self.path(key)
        if not path.is_file():
            return None
        t0 = time.perf_counter()
        try:
            from tinygrad import Tensor

            device = self.trainer.net.device
            if device not in Tensor._device_seeds:  # the random stream a step may be bound to, as reseed makes it
                Tensor._next_counter(device, 0)
            jit = load(_read(path), named_state(self.trainer))
        except Stale as e:
            self.warn(f"{path}: stale compiled step ({e}); compiling it again")
            _remove(path)
            return None
        except Exception as e:  # noqa: BLE001 - anything unreadable is a damaged entry
            self.warn(f"{path}: damaged compiled step ({type(e).__name__}: {e}); compiling it again")
            _remove(path)
            return None
        self.loaded.append(key["kind"])
        self.log(f"compiled {key['kind']} step from the step cache ({time.perf_counter() - t0:.2f} s)")
        return jit

    def store(self, key: dict, captured: Any, before: Any) -> bool:
        from .runfiles import WriteError, atomic_write

        if self._write_failed:
            return False
        names: dict[Any, str] = {}
        for name, t in named_state(self.trainer).items():
            u = _base(t)
            if u is not None:
                names.setdefault(u, name)
        try:
            payload, counts = dump(captured, names, before)
        except Uncacheable as e:
            self.warn(f"the compiled {key['kind']} step is not cached: {e}")
            self._write_failed = True
            return False
        except Exception as e:  # noqa: BLE001 - tinygrad could not pickle something: keep training
            self.warn(f"the compiled {key['kind']} step is not cached: {type(e).__name__}: {e}")
            self._write_failed = True
            return False
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, _pack(key, counts, payload), what="compiled-step cache")
        except WriteError as e:
            self.warn(f"{e.diagnostics[0].message}; training goes on without caching the compiled step")
            self._write_failed = True
            return False
        except OSError as e:
            self.warn(f"{path}: cannot write compiled-step cache: {e.strerror or e}; training goes on without caching the compiled step")
            self._write_failed = True
            return False
        self.saved.append(key["kind"])
        return True


def cached_step(trainer: Any, kind: str, make: Callable[[], Any]) -> Any:
    """The hook where a trainer builds a compiled step: ``make()`` (a ``TinyJit``) wrapped so that
    it is loaded from and saved to the step cache (:class:`StepCache`, one per trainer). A trainer
    with ``step_cache = False`` (``dlspec tune``) or ``DLSPEC_STEPCACHE=0`` gets ``make()`` itself."""
    if not enabled() or not getattr(trainer, "step_cache", True):
        return make()
    if isinstance(getattr(getattr(trainer, "net", None), "device", None), tuple):  # data parallel: not cached (see above)
        return make()
    cache = getattr(trainer, "_step_cache", None)
    if cache is None:
        cache = trainer._step_cache = StepCache(trainer, log=getattr(trainer, "log", None))
    return cache.step(kind, make)


class _Step:
    """A compiled step: the cached capture if there is one, else a TinyJit that is cached once it
    has captured (``cnt`` and ``captured`` are the JIT's)."""

    def __init__(self, cache: StepCache, kind: str, make: Callable[[], Any]):
        self.cache, self.kind, self.make = cache, kind, make
        self.jit: Any = None
        self.key: dict | None = None
        self._before: Any = None
        self.from_cache = False

    @property
    def cnt(self) -> int:
        """The JIT's call count (0 before the first call: whether the cache holds the step is
        known only then, from the inputs)."""
        return self.jit.cnt if self.jit is not None else 0

    @property
    def captured(self) -> Any:
        return None if self.jit is None else self.jit.captured

    def __call__(self, *args: Any) -> Any:
        from tinygrad import Tensor

        if self.jit is None:
            from tinygrad.helpers import JIT

            if enabled() and JIT.value:  # JIT=0: every call eager, as the TinyJit would run it
                inputs = tuple(a for a in args if isinstance(a, Tensor))
                try:
                    self.key = step_key(self.cache.trainer, self.kind, inputs)
                except Exception as e:  # noqa: BLE001 - no key: no cache, never a failed run
                    self.cache.warn(f"compiled-step cache not used: {type(e).__name__}: {e}")
                    self.key = None
                if self.key is not None:
                    self.jit = self.cache.fetch(self.key)
                    self.from_cache = self.jit is not None
            if self.jit is None:
                self.jit = self.make()
        jit = self.jit
        if self.key is not None and not self.from_cache and jit.cnt == 1:
            from tinygrad.uop.ops import buffers

            self._before = weakref.WeakSet(buffers.keys())  # what existed before the capture (no strong references)
        out = jit(*args)
        if self._before is not None and jit.captured is not None:
            before, self._before = self._before, None
            assert self.key is not None
            self.cache.store(self.key, jit.captured, before)
        return out


# ---- dlspec cache info|clear ------------------------------------------------------------------------


def entries(root: Path | None = None) -> list[tuple[Path, dict | None, int]]:
    """``(path, header or None if unreadable, size)`` of every step file."""
    root = root or cache_root()
    out = []
    if not root.is_dir():
        return out
    for p in sorted(root.glob(f"*{SUFFIX}")):
        try:
            head, _ = read_head(p)
        except (OSError, ValueError):
            head = None
        try:
            size = p.stat().st_size
        except OSError:
            size = 0
        out.append((p, head, size))
    return out


def cache_command(args: Any) -> int:
    """``dlspec cache info`` / ``dlspec cache clear``."""
    from .tuning import index_path, read_index

    root = cache_root()
    found = entries(root)
    if args.action == "clear":
        removed = 0
        for p, _, _ in found:
            try:
                p.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as e:
                _warn(f"{p}: cannot remove: {e.strerror or e}")
        print(f"removed {removed} compiled step{'s' * (removed != 1)} from {root}")
        from .backends.tinygrad.devicepick import cache_path as device_file

        try:
            device_file().unlink()
            print(f"removed {device_file()} (tinygrad's default device, probed again by the next run)")
        except FileNotFoundError:
            pass
        except OSError as e:
            _warn(f"{device_file()}: cannot remove: {e.strerror or e}")
        print("(tinygrad's kernel cache and the tuned-kernels index are kept: remove ~/.cache/tinygrad to drop compiled kernels)")
        return 0
    total = sum(s for _, _, s in found)
    print(f"compiled steps: {root} ({len(found)} entr{'ies' if len(found) != 1 else 'y'}, {total / 1e6:.1f} MB)")
    for p, head, size in found:
        if head is None:
            print(f"  {p.name}: unreadable (ignored and rebuilt when met)")
            continue
        k = head.get("key", {})
        shapes = " ".join("x".join(map(str, s)) for s, _ in k.get("inputs", []))
        b = head.get("buffers", {})
        print(
            f"  {k.get('kind', '?')} {k.get('model', '?')} [{shapes}] on {k.get('device', '?')}"
            f"{' BEAM=' + str(k['beam']) if k.get('beam') else ''}: {size / 1e3:.0f} kB, {b.get('bound', 0)} bound buffers,"
            f" {b.get('constant', 0)} constant, {b.get('scratch', 0)} scratch; {head.get('date', '?')}; tinygrad {k.get('tinygrad', '?')}"
        )
    tuned = read_index()
    print(f"tuned kernels: {index_path()} ({len(tuned)} entr{'ies' if len(tuned) != 1 else 'y'})")
    from .backends.tinygrad.devicepick import remembered

    known = remembered()
    print(f"default device: {known} (remembered for this machine)" if known else "default device: not remembered (probed by the next run)")
    return 0
