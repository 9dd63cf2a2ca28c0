"""Targets that take the graph IR somewhere: one package per target, each a table from op name
to lowering (:mod:`dlspec.backends.tinygrad` runs it). Imported lazily, so that checking a
spec never loads a target."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BackendError, Diagnostic, UsageError, suggest

if TYPE_CHECKING:
    from ..ir import Graph, Node
    from ..shapes import Shapes

#: how each target is named in messages
TARGET_NAMES = {"tinygrad": "tinygrad", "onnx": "ONNX", "pytorch": "PyTorch"}

#: the export targets: name → (module, what it writes, the file suffix it suggests, whether the
#: weights are always written: ONNX holds them as initialisers; a PyTorch module initialises
#: itself and gets a ``.safetensors`` file beside it only when weights are given)
EXPORTS = {
    "onnx": ("dlspec.backends.onnx", "an ONNX model (opset 17, dynamic batch and sequence axes)", ".onnx", True),
    "pytorch": ("dlspec.backends.torch", "a standalone PyTorch module (one nn.Module per block; dlspec's state-dict keys)", ".py", False),
}


def unsupported(target: str, node: Node, why: str | None = None) -> BackendError:
    """The located error for an op a target has no lowering for (sqlglot's ``unsupported``):
    ``export to onnx: op 'rope' at spec.dl:12:3 has no ONNX lowering yet``; with ``why``, for a
    variant of an op it cannot lower (``… pool 'p1' at spec.dl:3:3: PyTorch's average pooling has no dilation``)."""
    what = "build for tinygrad" if target == "tinygrad" else f"export to {target}"
    if why is not None:
        return BackendError(Diagnostic(f"{what}: {node.op} '{node.path}' at {node.span}: {why}", node.span))
    return BackendError(
        Diagnostic(f"{what}: op '{node.op}' at {node.span} has no {TARGET_NAMES.get(target, target)} lowering yet", node.span)
    )


def export(
    target: str,
    graph: Graph,
    shapes: Shapes,
    path: str | Path,
    *,
    weights: str | Path | None = None,
    name_map=None,
    seed: int = 0,
    fixed: dict[str, int] | None = None,
) -> Path:
    """Write ``graph`` for ``target`` (a key of :data:`EXPORTS`) to ``path``, atomically, with the
    weights of the file ``weights`` (checked against the model first) or the seeded
    initialisation; ``fixed`` binds symbolic sizes (``N``, ``T``) to values instead of dynamic
    axes. Returns the path written."""
    from .. import state

    if target not in EXPORTS:
        raise UsageError(f"unknown export target '{target}'{suggest(target, list(EXPORTS))} (targets: {', '.join(EXPORTS)})")
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give the file to write, e.g. {path / (graph.name + EXPORTS[target][2])}")
    if fixed:
        shapes = shapes.bind(fixed)
    module_name, _, _, always = EXPORTS[target]
    arrays = state.weights(graph, shapes, weights, seed=seed, name_map=name_map) if weights is not None or always else None
    module = importlib.import_module(module_name)
    module.export(graph, shapes, weights=arrays, path=path)
    return path
