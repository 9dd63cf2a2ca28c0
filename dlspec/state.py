"""The state-dict naming contract, shared by every target, and the seeded initialisation.

A model's state dict has one entry per slot of every layer that owns its weights
(:meth:`dlspec.ops.Op.state`): key ``<layer path>.<slot name>`` (``layer1.0.conv1.weight``,
``att.out_proj.bias``, ``rnn.weight_ih_l0``), PyTorch's layouts and buffer names. A layer that
shares another's weights (``node.shares``) or a tied ``dense`` (``params.tied``) adds no entry.
The tinygrad runtime, the ONNX and PyTorch exports and weight loading all follow it.

:func:`initial` draws PyTorch's default initialisation with NumPy, from a generator that belongs
to the call (no process-wide state), in graph order — the same values on every device and target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from . import ops
from .errors import BackendError, UsageError
from .ops.base import Slot

if TYPE_CHECKING:
    from .ir import Graph, Node
    from .shapes import Shapes

#: nodes that hold no layer
STRUCTURAL = ("input", "step_in")


@dataclass(frozen=True)
class Entry:
    """One state-dict key: the slot and the layer (node path) it belongs to."""

    key: str
    node: str
    slot: Slot


def owners(graph: Graph) -> list[Node]:
    """The nodes that own a layer's tensors, in graph (initialisation) order."""
    return [n for n in graph.nodes if n.op not in STRUCTURAL and n.shares is None]


def entries(graph: Graph, shapes: Shapes) -> dict[str, Entry]:
    """Every state-dict key of the model, in initialisation order."""
    out: dict[str, Entry] = {}
    for node in owners(graph):
        ins = [shapes.types[i] for i in node.inputs]
        for slot in ops.get(node.op).state(node.params, ins):
            key = f"{node.path}.{slot.name}" if slot.name else node.path  # a `param`: its path is its name
            out[key] = Entry(key, node.path, slot)
    return out


def draw(slot: Slot, rng: np.random.Generator) -> np.ndarray:
    """A slot's initial value (float32, or the slot's integer dtype)."""
    kind, arg, *more = slot.init
    if kind == "uniform":
        return rng.uniform(-arg, arg, size=slot.shape).astype(np.float32)
    if kind == "normal":
        return (rng.standard_normal(size=slot.shape) * arg + (more[0] if more else 0.0)).astype(np.float32)
    if kind == "normal_zero_row":  # an embedding's padding row: N(0, std²), then row `more[0]` zeroed
        a = (rng.standard_normal(size=slot.shape) * arg).astype(np.float32)
        a[more[0]] = 0.0
        return a
    if kind == "full":
        return np.full(slot.shape, arg, dtype=np.dtype(slot.dtype))
    if kind == "uniform_range":
        return rng.uniform(arg, more[0], size=slot.shape).astype(np.float32)
    if kind == "trunc_normal":
        return _trunc_normal(rng, slot.shape, arg, *more).astype(np.float32)
    raise ValueError(f"unknown initialiser '{kind}' for slot '{slot.name}'")


def _trunc_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float, mean: float, low: float, high: float) -> np.ndarray:
    """N(mean, std²) restricted to [low, high] (``torch.nn.init.trunc_normal_``'s distribution),
    by redrawing the values that fall outside."""
    out = rng.standard_normal(size=shape) * std + mean
    for _ in range(1000):
        bad = (out < low) | (out > high)
        if not bad.any():
            return out
        out[bad] = rng.standard_normal(size=int(bad.sum())) * std + mean
    return np.clip(out, low, high)  # a cut far from the mean: the few values left sit on its edges


def initial(graph: Graph, shapes: Shapes, seed: int = 0) -> dict[str, np.ndarray]:
    """The seeded initial state dict (PyTorch's default initialisers), keyed by :func:`entries`."""
    rng = np.random.default_rng(seed)
    return {key: draw(e.slot, rng) for key, e in entries(graph, shapes).items()}


# ---- weights files against the contract ---------------------------------------------------------


def read(path: str | Path) -> dict[str, np.ndarray]:
    """A safetensors or PyTorch state dict as NumPy arrays (:mod:`dlspec.weightfile`: nothing in
    the file runs, every size is checked); a dlspec run's checkpoint (``model.*`` and ``optim.*``
    keys) is unwrapped to its model."""
    from . import weightfile

    sd = weightfile.read(path).tensors
    run = all(k.startswith(("model.", "optim.")) for k in sd) and any(k.startswith("optim.") for k in sd)
    if run and any(k.startswith("model.") for k in sd):  # a dlspec run's checkpoint: the model, not the optimizer
        sd = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    return sd


def fit(
    sd: Mapping[str, Any],
    want: Mapping[str, tuple[int, ...]],
    source: str,
    model: str,
    name_map: dict[str, str] | str | Path | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """``sd`` renamed by ``name_map`` and checked against the model's keys and shapes ``want``:
    missing, unexpected and mismatched tensors reported together in one :class:`BackendError`
    (nothing is loaded); with ``strict`` false only shapes must agree."""
    rules = read_map(name_map)
    renamed: dict[str, Any] = {}
    sources: dict[str, list[str]] = {}
    for k, v in sd.items():
        new_key = rename(k, rules)
        renamed[new_key] = v
        sources.setdefault(new_key, []).append(k)
    clashes = {k: v for k, v in sources.items() if len(v) > 1}
    if clashes:
        shown = "; ".join(f"{', '.join(v)} → {k}" for k, v in list(clashes.items())[:10])
        raise BackendError(f"{source}: the name map gives several of the file's tensors the same name ({shown}); nothing was loaded")
    missing = [k for k in want if k not in renamed]
    unexpected = [k for k in renamed if k not in want]
    mismatched = [(k, tuple(renamed[k].shape), tuple(want[k])) for k in want if k in renamed and tuple(renamed[k].shape) != tuple(want[k])]
    if not strict:
        missing = []
        unexpected = []
    if missing or unexpected or mismatched:
        lines = []
        if missing:
            lines.append(
                f"missing in {Path(source).name} ({len(missing)}): "
                + ", ".join(f"{k} {tuple(want[k])}" for k in missing[:20])
                + (" …" if len(missing) > 20 else "")
            )
        if unexpected:
            lines.append(
                f"unexpected ({len(unexpected)}): "
                + ", ".join(f"{k} {tuple(renamed[k].shape)}" for k in unexpected[:20])
                + (" …" if len(unexpected) > 20 else "")
            )
        if mismatched:
            lines.append("shape mismatches: " + ", ".join(f"{k} file {a} vs model {b}" for k, a, b in mismatched[:20]))
        raise BackendError(f"{source}: weights do not fit model {model}; nothing was loaded\n  " + "\n  ".join(lines))
    return {k: v for k, v in renamed.items() if k in want}


def weights(graph: Graph, shapes: Shapes, path: str | Path | None = None, seed: int = 0, name_map=None) -> dict[str, np.ndarray]:
    """The model's state dict as NumPy arrays in the contract's order: read from ``path`` (checked
    by :func:`fit`; float64 as float32) or, without one, the seeded initialisation."""
    if path is None:
        return initial(graph, shapes, seed)
    want = {k: e.slot.shape for k, e in entries(graph, shapes).items()}
    got = fit(read(path), want, str(path), graph.name, name_map)
    return {k: (got[k].astype(np.float32) if got[k].dtype == np.float64 else got[k]) for k in want}


def read_map(name_map) -> list[tuple[str, str]]:
    """A name map (a dict, or a file of ``FILE_NAME SPEC_NAME`` lines) as rules, longest first."""
    if name_map is None:
        return []
    if not isinstance(name_map, (str, Path, dict)):
        raise UsageError(f"name_map must be a dict {{'file name': 'spec name'}} or a file's path, got {type(name_map).__name__}")
    if isinstance(name_map, (str, Path)):
        p = Path(name_map)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot read name map {p}: {e}") from None
        pairs = {}
        for i, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise UsageError(f"{p}:{i}: a name-map line is 'FILE_NAME SPEC_NAME', got {line!r}")
            pairs[parts[0]] = parts[1]
        name_map = pairs
    return sorted(name_map.items(), key=lambda kv: -len(kv[0]))


def rename(key: str, rules: list[tuple[str, str]]) -> str:
    """``key`` after the first rule whose source is the key or a prefix of it."""
    for src, dst in rules:
        if key == src:
            return dst
        if key.startswith(src + ".") or (src.endswith(".") and key.startswith(src)):
            return dst.rstrip(".") + "." + key[len(src.rstrip(".")) + 1 :] if dst else key[len(src.rstrip(".")) + 1 :]
    return key
