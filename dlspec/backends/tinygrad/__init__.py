"""Stage 4: graph IR → a runnable tinygrad model.

Each op lowers itself (``Op.lower`` in its module in :mod:`dlspec.ops`); this module
builds the layer tree whose attribute names are the spec's layer paths — so
``tinygrad.nn.state.get_state_dict(net)`` gives keys such as ``layer2.0.conv1.weight``
— runs the graph, and handles phases, devices, dtypes, compiled (TinyJit) steps,
runtime shape verification and weights files.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from tinygrad import Context, Device, Tensor, TinyJit, dtypes
from tinygrad.helpers import TRAINING
from tinygrad.nn.state import get_state_dict, inverse_safe_dtypes

from ... import ops, state, weightfile
from ...errors import BackendError, Diagnostic, UsageError, suggest
from ...ir import Graph, Node
from ...runfiles import atomic_write
from ...shapes import Shapes, TensorType, dvalue
from .. import unsupported
from .layers import TRANSFORMS
from .tree import Container, Hidden

DTYPES = {
    "float32": dtypes.float32,
    "float16": dtypes.float16,
    "bfloat16": dtypes.bfloat16,
    "int32": dtypes.int32,
    "int64": dtypes.int64,
    "bool": dtypes.bool,
}


def buffer(t: Tensor) -> Tensor:
    """A non-trainable tensor (running statistics)."""
    return t.is_param_(False) if hasattr(t, "is_param_") else t


# ---- lowering context --------------------------------------------------------------------------


class Lowering:
    """What a lowering in :data:`~dlspec.backends.tinygrad.layers.TRANSFORMS` may use: the graph,
    the static types and windows, the node's initial tensors, the layers built so far, the device
    (or devices: a tuple) the net runs on, and whether batch norm syncs its statistics across them."""

    def __init__(
        self,
        graph: Graph,
        shapes: Shapes,
        init: dict[str, np.ndarray] | None,
        device: str | tuple[str, ...] | None = None,
        sync_bn: bool = False,
    ):
        self.graph = graph
        self.shapes = shapes
        self.device = device
        self.sync_bn = sync_bn
        self.index = {n.path: n for n in graph.nodes}
        self.layers: dict[str, Any] = {}
        self.entries = state.entries(graph, shapes)
        self.init = init

    def types_in(self, node: Node) -> list[TensorType]:
        return [self.shapes.types[i] for i in node.inputs]

    def layer(self, path: str) -> Any:
        return self.layers[path]

    def node(self, path: str) -> Node:
        return self.index[path]

    def window(self, node: Node):
        return self.shapes.windows.get(node.path)

    def arrays(self, node: Node) -> dict[str, Tensor]:
        """The node's initial tensors by slot name (buffers not trainable)."""
        out = {}
        for slot in ops.get(node.op).state(node.params, self.types_in(node)):
            if self.init is None:  # the NULL device computes nothing: no values to draw
                t = Tensor.empty(*slot.shape, dtype=DTYPES[slot.dtype])
            elif slot.init[0] == "full":  # as tinygrad's own layers make them: a 0-d array would be a constant, not a buffer
                t = Tensor.full(slot.shape, slot.init[1], dtype=DTYPES[slot.dtype])
            else:
                t = Tensor(self.init[f"{node.path}.{slot.name}"])
            out[slot.name] = buffer(t) if slot.buffer else t
        return out

    def build(self, node: Node) -> Any:
        """The callable for ``node`` (a new layer, or the owner's when weights are shared)."""
        if node.shares is not None:
            layer = self.layers[node.shares]
        else:
            lower = TRANSFORMS.get(node.op)
            if lower is None:
                raise unsupported("tinygrad", node)
            layer = lower(node, node.params, self.types_in(node), self.shapes.types.get(node.path), self)
        self.layers[node.path] = layer
        return layer


# ---- the model ------------------------------------------------------------------------------------


class Net:
    """A dlspec model on tinygrad. Call it with input tensors (positionally in the spec's
    ``input`` order, or by name); it returns the output tensor (or a tuple of them).

    Layers are attributes named after the spec's layer paths, so
    ``get_state_dict(net)`` gives PyTorch-style keys (``conv1.weight``, ``layer1.0.bn1.running_mean``)."""

    def __init__(self, graph: Graph, shapes: Shapes, device: str | None = None, dtype: str = "float32"):
        object.__setattr__(
            self, "_meta", Hidden({"graph": graph, "shapes": shapes, "device": device, "dtype": dtype, "train": None, "jits": {}})
        )

    # metadata lives outside __dict__ so that get_state_dict only sees layers
    @property
    def graph(self) -> Graph:
        return self._meta.value["graph"]

    @property
    def shapes(self) -> Shapes:
        return self._meta.value["shapes"]

    @property
    def device(self) -> str | tuple[str, ...]:
        """The device the net runs on; a tuple when it runs data parallel on several (as
        tinygrad's ``Tensor.device`` of a sharded tensor): every weight on each of them, each batch
        split across them on its first axis (:func:`place`)."""
        return self._meta.value["device"]

    @property
    def dtype(self) -> str:
        return self._meta.value["dtype"]

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.graph.outputs]

    # ---- phases ----------------------------------------------------------------------------
    # The phase of a call: its ``train=`` argument, else the net's own (``train()``/``eval()``),
    # else tinygrad's ``Context(TRAINING=…)`` (a new net follows the context: evaluation by default).
    def train(self, mode: bool | None = True) -> "Net":
        """Run in the training phase (dropout on, batch statistics); ``train(None)``: follow
        tinygrad's ``TRAINING`` context again."""
        self._meta.value["train"] = None if mode is None else bool(mode)
        return self

    def eval(self) -> "Net":
        """Run in the evaluation phase (dropout off, running statistics)."""
        return self.train(False)

    @property
    def training(self) -> bool:
        """The phase a call without ``train=`` runs in now."""
        mode = self._meta.value["train"]
        return bool(TRAINING) if mode is None else mode

    @contextmanager
    def phase(self, train: bool) -> Iterator["Net"]:
        """``with net.phase(True): …``: the net runs in that phase inside the block."""
        old = self._meta.value["train"]
        self._meta.value["train"] = bool(train)
        try:
            yield self
        finally:
            self._meta.value["train"] = old

    # ---- running -----------------------------------------------------------------------------
    def __call__(self, *args: Tensor, train: bool | None = None, **kwargs: Tensor) -> Tensor | tuple[Tensor, ...]:
        values = self.trace(*args, train=train, **kwargs)
        outs = tuple(values[o.node] for o in self.graph.outputs)
        return outs[0] if len(outs) == 1 else outs

    def trace(self, *args: Tensor, train: bool | None = None, **kwargs: Tensor) -> dict[str, Tensor]:
        """Every top-level node's (lazy) output tensor, by path."""
        train = self.training if train is None else train
        feeds = self._feeds(args, kwargs)
        values: dict[str, Tensor] = {}
        layers = self._meta.value["layers"]
        with Context(TRAINING=int(train)):
            for node in self.graph.nodes:
                if node.in_cell is not None:
                    continue
                if node.op == "input":
                    values[node.path] = feeds[node.path]
                    continue
                values[node.path] = layers[node.path](*(values[i] for i in node.inputs))
        return values

    def _feeds(self, args: tuple, kwargs: dict) -> dict[str, Tensor]:
        names = self.input_names
        if len(args) > len(names):
            raise UsageError(f"{self.graph.name} takes {len(names)} input{'s' * (len(names) != 1)} ({', '.join(names)}), got {len(args)}")
        feeds = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise UsageError(f"{self.graph.name} has no input '{k}'{suggest(k, names)}")
            feeds[k] = v
        missing = [n for n in names if n not in feeds]
        if missing:
            raise UsageError(f"{self.graph.name} needs input{'s' * (len(missing) > 1)} {', '.join(missing)}")
        out = {}
        for name, t in feeds.items():
            want = self.shapes.types[name]
            if not isinstance(t, Tensor):
                t = Tensor(t)
            if t.ndim != want.rank:
                raise UsageError(f"input '{name}' must be {want.show(True)} but got a tensor of shape {tuple(t.shape)}")
            for k, (d, w) in enumerate(zip(t.shape, want.shape)):
                if isinstance(w, int) and d != w:
                    raise UsageError(f"input '{name}' must be {want.show(True)} but got {tuple(t.shape)} (dim {k}: {d} ≠ {w})")
            if want.is_float() and t.dtype != DTYPES[self.dtype]:
                t = t.cast(DTYPES[self.dtype])
            elif want.dtype == "bool" and t.dtype != dtypes.bool:
                raise UsageError(
                    f"input '{name}' is a bool mask (True = attend/keep), got a {t.dtype.name} tensor; an additive mask"
                    " (0 = attend, −inf = masked) is the opposite: pass 'mask == 0'"
                )
            elif not want.is_float() and dtypes.is_float(t.dtype):
                raise UsageError(f"input '{name}' takes integer ids ({want.dtype}), got a {t.dtype.name} tensor; cast it: x.cast('int32')")
            out[name] = place(t, self.device)
        return out

    def compiled(self, train: bool | None = None):
        """A TinyJit-compiled forward, called like the net. One compiled step per input
        shapes/dtypes/phase (a new batch size gets its own, never a stale replay); the phase is
        ``train`` if given, else the net's at each call. Each call returns new tensors (the JIT's
        own output buffers are overwritten by the next call). In the training phase batch-norm
        statistics update on every call. Weights replaced behind the net's back (tinygrad's
        ``load_state_dict``, or a new tensor assigned to a layer's attribute) are noticed, and
        the steps compiled again. For inference: outputs carry no gradient (train with ``net(x)``
        inside your own ``TinyJit``, or ``dlspec train``)."""

        def run(*args: Tensor, **kwargs: Tensor):
            if "train" in kwargs:
                raise UsageError("a compiled forward's phase is set when it is made: net.compiled(train=True)")
            feeds = self._feeds(args, kwargs)
            named = self.state_dict()  # again each call: a layer's tensor may have been replaced
            tensors = list(named.values())
            buffers = [t for k, t in named.items() if _is_buffer(k)]
            phase = self.training if train is None else bool(train)
            pending = [t for t in tensors if not t.uop.is_realized]
            if pending:
                Tensor.realize(*pending)
            meta = self._meta.value
            jits, held = meta["jits"], _buffers_of(tensors)
            if meta.get("jit_buffers") != held:  # new weight buffers: the compiled steps read the old ones
                jits.clear()
                meta["jit_buffers"] = held
            key = (phase, tuple((n, tuple(t.shape), t.dtype) for n, t in sorted(feeds.items())))
            if key not in jits:

                def step(**kw: Tensor) -> tuple[Tensor, ...]:
                    out = self(train=phase, **kw)
                    outs = out if isinstance(out, tuple) else (out,)
                    Tensor.realize(*outs, *(buffers if phase else ()))
                    return outs

                jits[key] = TinyJit(step)
            outs = jits[key](**{k: v.contiguous().realize() for k, v in feeds.items()})
            outs = tuple(o.clone().realize() for o in outs)
            return outs if len(outs) > 1 else outs[0]

        return run

    # ---- parameters ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return get_state_dict(self)

    def parameters(self) -> list[Tensor]:
        """Trainable tensors (batch-norm statistics excluded)."""
        return [t for k, t in self.state_dict().items() if not _is_buffer(k)]

    def num_params(self) -> tuple[int, int]:
        """(trainable, buffers) element counts at runtime."""
        p = b = 0
        for k, t in self.state_dict().items():
            if _is_buffer(k):
                b += t.numel()
            else:
                p += t.numel()
        return p, b

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write every tensor to a safetensors file, atomically."""
        if Path(path).suffix.lower() in TORCH_SUFFIXES:
            raise UsageError(
                f"net.save writes safetensors, not PyTorch pickles: name the file '{Path(path).with_suffix('.safetensors').name}'"
                " (PyTorch files can be read by dlspec.load_weights, not written)"
            )
        save_state(self.state_dict(), path, metadata, what="weights")

    def __repr__(self) -> str:
        p, b = self.num_params()
        return f"<dlspec Net {self.graph.name}: {p:,} params, {b:,} buffers, device {describe_device(self.device)}>"


def _buffers_of(tensors: list[Tensor]) -> tuple[int, ...]:
    """Identities of the device buffers behind realized tensors."""
    out = []
    for t in tensors:
        try:
            out.append(id(t.uop.buffer))
        except Exception:  # noqa: BLE001 - a multi-device tensor: its uop stands for it
            out.append(id(t.uop))
    return tuple(out)


def _is_buffer(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")


def _canon(device: str) -> str:
    return Device.canonicalize(device)


# ---- several devices (data parallel) ----------------------------------------------------------------


def place(t: Tensor, device: str | tuple[str, ...] | None) -> Tensor:
    """A batch tensor on a net's ``device``. On several devices (a tuple) it is split on its first
    axis, an equal share each (tinygrad's ``shard``); a batch whose size does not divide by their
    number is copied whole to each instead (each computes all of it: an evaluation's last few
    samples), as tinygrad cannot split unevenly. A tensor already there is returned as it is."""
    if device is None or t.device is None:  # tinygrad's own choice, or a constant (no buffer yet)
        return t
    if not isinstance(device, tuple):
        return t if t.device == _canon(device) else t.to(device)
    if t.device == device:
        return t
    if isinstance(t.device, tuple):
        raise UsageError(f"a tensor on devices {', '.join(t.device)} cannot be moved to {', '.join(device)}; pass it on one device")
    axis = 0 if t.ndim and t.shape[0] % len(device) == 0 else None
    return t.shard(device, axis)


def check_devices(devices: Any) -> tuple[str, ...]:
    """The canonical names of the devices a net runs data parallel on (in the order given), or a
    :class:`~dlspec.errors.UsageError` for one that is not available here or is listed twice."""
    names = [str(d).strip() for d in devices]
    if not names or any(not n for n in names):
        raise UsageError(f"--devices needs device names separated by commas (CPU:0,CPU:1), got {','.join(names)!r}")
    out: list[str] = []
    for name in names:
        canon = check_device(name)  # an unknown one: the error lists the available devices
        if canon in out:
            raise UsageError(f"device '{name}' is listed twice in the devices {', '.join(names)} (as {canon})")
        out.append(canon)
    return tuple(out)


def describe_device(device: str | tuple[str, ...] | None) -> str:
    """``CPU``, or ``CPU, CPU:1 (data parallel: each batch split in 2)`` for a log line."""
    if isinstance(device, tuple):
        return f"{', '.join(device)} (data parallel: each batch split in {len(device)})"
    return str(device or Device.DEFAULT)


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (a compiler subprocess's messages) inside the block."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_DTYPE_OK: dict[tuple[str, str], bool] = {}


def _check_dtype(dev: str, dtype: str) -> None:
    """A one-value kernel in ``dtype`` first, its compiler quiet: a device that cannot run the
    dtype (clang without ``__bf16`` on this CPU) is a clear usage error, not pages of compiler output."""
    if (dev, dtype) not in _DTYPE_OK:
        try:
            with _quiet_stderr(), Context(DEV=dev):
                (Tensor([1.0], dtype=DTYPES[dtype]) * 3).realize()
            _DTYPE_OK[(dev, dtype)] = True
        except Exception:  # noqa: BLE001 - a compiler or runtime refusing the dtype
            _DTYPE_OK[(dev, dtype)] = False
    if not _DTYPE_OK[(dev, dtype)]:
        raise UsageError(f"device {dev} cannot run {dtype} kernels here (its compiler rejects them); use float32 or float16")


#: tinygrad devices that store tensors but run no kernels
STORAGE_DEVICES = ("DISK", "NPY", "TINYFS")


def check_device(device: str | None) -> str:
    """The canonical device name, or a clear error listing the available ones."""
    what = f"device '{device}'"
    if device is None:  # tinygrad's choice, or its DEV environment variable (which it does not check)
        import os

        from .devicepick import default_device

        try:
            device = default_device()
        except Exception:  # noqa: BLE001 - no device at all
            device = os.environ.get("DEV", "")
        what = f"tinygrad's device setting DEV={os.environ['DEV']!r}" if os.environ.get("DEV") else f"device '{device}'"
    if device.split(":")[0].upper() in STORAGE_DEVICES:
        raise UsageError(f"{what} stores tensors but runs no models; available: {', '.join(available_devices())}")
    try:
        Device[device]
        return Device.canonicalize(device)
    except Exception:  # noqa: BLE001 - tinygrad raises many kinds here
        raise UsageError(f"{what} is not available here; available: {', '.join(available_devices())}") from None


def available_devices() -> list[str]:
    """Devices that can run models here: those tinygrad finds, plus NULL (runs nothing, for
    shape checks) and PYTHON (a slow emulator), which it never picks by itself."""
    try:
        found = list(Device.get_available_devices())
    except Exception:  # noqa: BLE001
        found = []
    return [d for d in found if d not in STORAGE_DEVICES] + ["NULL", "PYTHON"]


def build(
    graph: Graph,
    shapes: Shapes,
    device: str | tuple[str, ...] | list[str] | None = None,
    seed: int = 0,
    dtype: str = "float32",
    sync_bn: bool = False,
) -> Net:
    """Lower ``graph`` to a :class:`Net` with seeded PyTorch-default initialisation.

    ``device`` may name several devices (a tuple or list): the net then runs data parallel, as
    PyTorch's ``DataParallel`` — every weight and buffer copied to each device (tinygrad's ``shard_``
    with no axis), each batch split across them on its first axis (:func:`place`), so tinygrad's
    multi-device tensors sum the gradients and every device takes the same optimizer step. Batch
    norm in training then normalises each device's share with that share's own statistics and
    updates its running statistics from the first device's (as ``DataParallel`` does), or, with
    ``sync_bn``, uses the statistics of the whole batch (as ``SyncBatchNorm``)."""
    if dtype not in ("float32", "float16", "bfloat16"):
        raise UsageError(f"dtype must be float32, float16 or bfloat16, got '{dtype}'")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a whole number ≥ 0, got {seed!r}")
    devices: tuple[str, ...] | None = None
    if isinstance(device, (tuple, list)):
        devices = check_devices(device)
        device = devices[0]  # built there, then copied to the others
        if len(devices) == 1:
            devices = None
    dev = check_device(device)
    if dtype != "float32":
        for d in devices or (dev,):
            _check_dtype(d, dtype)
    net = Net(graph, shapes, devices or dev, dtype)
    with Context(DEV=dev) if device is not None else _null():
        Tensor.manual_seed(seed)  # dropout and sampling at run time
        try:
            # on the NULL device (shape and count checks of models too big to initialise here) no values are drawn
            null = (dev or Device.DEFAULT).split(":")[0] == "NULL"
            init = None if null else state.initial(graph, shapes, seed)
            low = Lowering(graph, shapes, init, device=devices or (dev if device is not None else None), sync_bn=sync_bn)
        except MemoryError:
            total = sum(c.params + c.buffers for c in shapes.costs.values())
            raise BackendError(
                Diagnostic(
                    f"not enough memory to build {graph.name}: {total:,} values ({total * 4 / 2**30:.1f} GiB as float32)",
                    graph.span,
                )
            ) from None
        for node in graph.nodes:
            if node.op in ("input", "step_in"):
                continue
            try:
                low.build(node)
            except MemoryError:
                total = sum(c.params + c.buffers for c in shapes.costs.values())
                raise BackendError(
                    Diagnostic(
                        f"not enough memory to build {graph.name}: {total:,} values ({total * 4 / 2**30:.1f} GiB as float32),"
                        f" initialised on the host in float64 ({total * 8 / 2**30:.1f} GiB); '{node.path}' did not fit",
                        node.span,
                    )
                ) from None
    net._meta.value["layers"] = low.layers
    # place owned layers in the tree by path
    for node in graph.nodes:
        if node.op in ("input", "step_in") or node.shares is not None:
            continue
        _place(net, node.path, low.layers[node.path])
    sd = get_state_dict(net)
    for t in sd.values():
        if device is not None and t.device != dev:
            t.replace(t.to(dev))
        if dtype != "float32" and dtypes.is_float(t.dtype) and t.dtype != DTYPES[dtype]:
            t.replace(t.cast(DTYPES[dtype]))
    if devices is not None:  # data parallel: a copy of every tensor on each device (tied ones once)
        for t in {id(t): t for t in sd.values()}.values():
            t.shard_(devices)
    if sd:
        try:
            Tensor.realize(*sd.values())
        except Exception as e:  # noqa: BLE001 - e.g. clang without __bf16 support on this CPU
            why = "its compiler rejected the kernels" if type(e).__name__ == "CalledProcessError" else f"{type(e).__name__}: {str(e)[:200]}"
            raise BackendError(
                Diagnostic(
                    f"cannot build {graph.name} with dtype {dtype} on device {dev}: {why}",
                    None,
                    help="this device may not support the dtype; use float32 or float16",
                )
            ) from None
    return net


@contextmanager
def _null():
    yield


def _place(root: Any, path: str, layer: Any) -> None:
    """Attach ``layer`` at ``path`` (``a.b.c``), merging with a container already there."""
    *parents, leaf = path.split(".")
    obj = root
    for part in parents:
        nxt = obj.__dict__.get(part)
        if nxt is None:
            nxt = Container()
            obj.__dict__[part] = nxt
        obj = nxt
    existing = obj.__dict__.get(leaf)
    if isinstance(existing, Container) and hasattr(layer, "__dict__"):
        for k, v in existing.__dict__.items():
            layer.__dict__.setdefault(k, v)
    obj.__dict__[leaf] = layer


# ---- verification --------------------------------------------------------------------------------


def verify(net: Net, batch: int = 2, seq: dict[str, int] | None = None, run: bool = True) -> list[str]:
    """Build random inputs, trace the model and compare every runtime shape with the static
    one and the runtime parameter count with the report's. Returns the mismatches."""
    env = {"N": batch, **{k: v for k, v in (seq or {}).items()}}
    problems = []
    inputs = {}
    # a free length (T) defaults to 8, or less where a positional embedding encodes fewer positions
    free = min([8] + [n.params.length for n in net.graph.nodes if n.op == "posembed"])
    for name in net.input_names:
        t = net.shapes.types[name]
        dims = []
        for d in t.shape:
            v = dvalue(d, env)
            if v is None:
                for s in sorted(_names(d)):
                    env.setdefault(s, free)
                v = dvalue(d, env)
            dims.append(v)
        if t.is_float():
            inputs[name] = Tensor.randn(*dims, device=net.device)
        elif t.dtype == "bool":
            inputs[name] = Tensor.rand(*dims, device=net.device) < 0.5
        else:
            high = t.vocab or 2
            inputs[name] = Tensor.randint(*dims, low=0, high=high, device=net.device, dtype=DTYPES.get(t.dtype, dtypes.int32))
    from . import scan

    # shapes only: recurrences as a lazy unrolled graph (nothing runs), not step by step
    with scan.unrolled() if not run else _null():
        values = net.trace(**inputs)
    for path, tensor in values.items():
        want = net.shapes.types[path]
        exp = tuple(dvalue(d, env) for d in want.shape)
        if tuple(tensor.shape) != exp:
            problems.append(f"{path}: runtime shape {tuple(tensor.shape)} but static {exp} ({want.show(True)})")
    static_p = sum(c.params for c in net.shapes.costs.values())
    static_b = sum(c.buffers for c in net.shapes.costs.values())
    rp, rb = net.num_params()
    if (rp, rb) != (static_p, static_b):
        problems.append(f"params: runtime {rp:,} (+{rb:,} buffers) but static {static_p:,} (+{static_b:,} buffers)")
    if run and not problems:
        outs = [values[o.node] for o in net.graph.outputs]
        Tensor.realize(*outs)
    return problems


def _names(d) -> set[str]:
    from ...shapes import free_names

    return free_names(d)


# ---- weights files ----------------------------------------------------------------------------------


# ---- safetensors, written by dlspec (tinygrad's safe_save maps the file: SIGBUS on a full disk) ----------------------------------------------------------------------------------


def _encode_header(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors header (8-byte little-endian length + JSON, space-padded to a multiple of
    8) of tinygrad tensors, exactly as ``tinygrad.nn.state.safe_save`` writes it."""
    headers: dict[str, Any] = {}
    if metadata:
        headers["__metadata__"] = dict(metadata)
    offset = 0
    for k, v in tensors.items():
        if v.dtype in dtypes.weaks:
            raise ValueError("safetensors needs concrete dtypes")
        n = v.nbytes()
        headers[k] = {"dtype": inverse_safe_dtypes[v.dtype], "shape": list(v.shape), "data_offsets": [offset, offset + n]}
        offset += n
    j = json.dumps(headers, separators=(",", ":"))
    j += " " * (-len(j) % 8)
    raw = j.encode("utf-8")
    return len(raw).to_bytes(8, "little") + raw


def tensor_bytes(t: Any) -> memoryview:
    """A tinygrad tensor's values as little-endian, C-contiguous bytes (copied to the host)."""
    n = t.nbytes()
    if n == 0:
        return memoryview(b"")
    mv = t.contiguous()._data().cast("B")
    if len(mv) != n:  # pragma: no cover - a buffer of another size than the tensor
        raise ValueError(f"tensor of {n} bytes read back as {len(mv)}")
    if sys.byteorder == "big" and t.dtype.itemsize > 1:  # pragma: no cover - no big-endian CI
        return memoryview(np.frombuffer(mv, dtype=f">u{t.dtype.itemsize}").byteswap().tobytes())
    return mv


def save_safetensors(
    path: Path | str, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None, what: str | None = None
) -> None:
    """tinygrad tensors to a safetensors file (the format and metadata ``safe_save`` writes),
    through :func:`dlspec.runfiles.atomic_write`: header, then each tensor's bytes in order, one at a time."""
    header = _encode_header(tensors, metadata)

    def write(out) -> None:
        out.write(header)
        for t in tensors.values():
            out.write(tensor_bytes(t))

    atomic_write(path, write, what)


def save_state(sd: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None, what: str = "checkpoint") -> None:
    """safetensors (the format ``tinygrad.nn.state.safe_save`` writes), written with plain
    ``write()`` calls to a temporary file, fsynced, then renamed over ``path``
    (:func:`save_safetensors`): a full disk is a :class:`~dlspec.runfiles.WriteError`
    naming the file, the temporary file removed and the old ``path`` intact."""
    path = Path(path)
    if not path.resolve().parent.is_dir():
        raise UsageError(f"cannot write {path}: folder {path.parent} does not exist")
    save_safetensors(path, {k: v.contiguous() for k, v in sd.items()}, metadata, what)


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WRAPPERS = weightfile.WRAPPERS  # keys under which PyTorch checkpoints keep the model's state dict
is_torch_file = weightfile.is_torch_file
_is_safetensors = weightfile.is_safetensors

#: tinygrad dtype → the NumPy dtype a loaded array is cast to on the host (bfloat16: none)
_HOST = {
    dtypes.float32: np.float32,
    dtypes.float16: np.float16,
    dtypes.float64: np.float64,
    dtypes.int8: np.int8,
    dtypes.int16: np.int16,
    dtypes.int32: np.int32,
    dtypes.int64: np.int64,
    dtypes.uint8: np.uint8,
    dtypes.uint16: np.uint16,
    dtypes.uint32: np.uint32,
    dtypes.uint64: np.uint64,
    dtypes.bool: np.bool_,
}


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """A safetensors or PyTorch state dict as NumPy arrays, read by :mod:`dlspec.weightfile`
    (PyTorch pickles through an allow-list; nothing in the file runs; every size checked)."""
    return weightfile.read(path).tensors


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A safetensors or PyTorch state dict (no PyTorch needed), told apart by content; a
    checkpoint's ``state_dict``/``model_state_dict``/… is unwrapped. Clear errors for anything
    else. float64 arrays become float32 tensors (no dlspec model computes in float64)."""
    return {k: _tensor(v) for k, v in read_arrays(path).items()}


def _tensor(a: np.ndarray, like: Tensor | None = None) -> Tensor:
    """``a`` as a tensor: with ``like``, in its dtype (cast on the host where NumPy has the dtype)
    and on its device."""
    if like is None:
        return Tensor(a.astype(np.float32) if a.dtype == np.float64 else a)
    host = _HOST.get(like.dtype)
    one = like.device if isinstance(like.device, str) else None  # a sharded tensor: copied to its devices below
    t = Tensor(a.astype(host if host is not None else np.float32, copy=False), device=one)
    t = t if host is not None else t.cast(like.dtype)
    return t if one is not None else t.to(like.device)


def load_weights(net: Net, path: str | Path, name_map: dict[str, str] | str | Path | None = None, strict: bool = True) -> None:
    """Load weights into ``net``: every key checked first (missing, unexpected, shape
    mismatches reported together); nothing is assigned unless all is well.

    ``name_map``: ``{"file prefix or key": "spec prefix or key"}`` (or a path to a text file
    with ``file_name  spec_name`` lines) applied as prefix rewrites, longest first. A dlspec
    run's checkpoint is unwrapped to its model (:func:`dlspec.state.read`)."""
    load_state(net, state.read(path), str(path), name_map, strict)


def load_state(
    net: Net, sd: dict[str, Tensor | np.ndarray], source: str, name_map: dict[str, str] | str | Path | None = None, strict: bool = True
) -> None:
    """:func:`load_weights` on a state dict already read (``source`` names it in errors); values are
    tensors or NumPy arrays, cast to the model's dtypes. The keys are checked by :func:`dlspec.state.fit`."""
    mine = net.state_dict()
    renamed = state.fit(sd, {k: tuple(t.shape) for k, t in mine.items()}, source, net.graph.name, name_map, strict)
    new = {}
    for k, t in mine.items():
        if k in renamed:
            v = renamed[k]
            if isinstance(v, np.ndarray):
                new[k] = _tensor(v, t)
                continue
            src = v.to(t.device)
            new[k] = src.cast(t.dtype) if src.dtype != t.dtype else src
    for k, v in new.items():
        mine[k].assign(v)
    Tensor.realize(*mine.values())
    net._meta.value["jits"].clear()  # compiled steps captured the old buffers' values
