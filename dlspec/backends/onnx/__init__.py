"""The ONNX target: a dlspec model, with its weights, as an ONNX model of its evaluation phase.

:func:`build_model` lowers the graph IR node by node through :data:`TRANSFORMS` (op name →
lowering, :mod:`.lowerings`); :func:`export` writes the result atomically. The batch ``N`` and
symbolic sizes (``T``) are dynamic axes named after their symbols; every layer output has a
``value_info`` with its static shape; initialisers are the state-dict tensors, under their keys
(``layer1.0.conv1.weight``); node names are layer paths and each node's ``doc_string`` is its spec
line and op. Imported only when exporting: it needs the ``onnx`` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ... import __version__
from ...errors import BackendError, Diagnostic, UsageError

try:
    import onnx
    from onnx import helper
except ImportError:  # pragma: no cover - tested in a subprocess without onnx
    raise UsageError("exporting to ONNX needs the onnx package: pip install 'dlspec[onnx]'") from None

from ...ir import Graph
from ...runfiles import atomic_write
from ...shapes import Shapes
from .. import unsupported
from .builder import ELEM, TARGET, GraphBuilder, value_info
from .lowerings import TRANSFORMS

__all__ = ["MIN_OPSET", "TRANSFORMS", "build_model", "export", "unsupported"]

#: the oldest opset the lowerings use (LayerNormalization, Shape with start/end)
MIN_OPSET = 17
#: protobuf's limit on one serialised message
_MAX_BYTES = 2**31 - 1


def build_model(graph: Graph, shapes: Shapes, weights: Mapping[str, np.ndarray], *, opset: int = 17) -> onnx.ModelProto:
    """The ONNX model of ``graph``'s evaluation phase with ``weights`` (its state dict as NumPy
    arrays, PyTorch layouts) as initialisers, in ONNX ``opset`` (≥ 17)."""
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise UsageError(f"the ONNX opset must be a whole number from {MIN_OPSET} to {newest}, got {opset!r}")
    b = GraphBuilder(graph, shapes, weights, opset, TRANSFORMS)
    inputs = []
    for path in graph.inputs:
        t = shapes.types[path]
        inputs.append(value_info(path, t, elem=ELEM[t.dtype]))  # the spec's dtype
        b.values[path] = path
        if t.is_float() and t.dtype != "float32":  # computed in float32, as the runtime does
            cast = b.fresh(f"{path}/float32")
            doc = f"{graph.node(path).span}: input {t.dtype} → float32"
            b.scope.nodes.append(
                helper.make_node("Cast", [path], [cast], name=b.fresh_node(f"{path}/cast"), doc_string=doc, to=onnx.TensorProto.FLOAT)
            )
            b.values[path] = cast
    for node in graph.nodes:
        if node.in_cell is None and node.op not in ("input", "step_in"):
            b.lower(node)
    outputs = []
    for o in graph.outputs:
        value = b.values[o.node]
        if value != o.name:
            doc = f"{graph.node(o.node).span}: output {o.name} = {o.node}"
            b.scope.nodes.append(helper.make_node("Identity", [value], [o.name], name=b.fresh_node(o.name), doc_string=doc))
        outputs.append(value_info(o.name, shapes.types[o.node]))
    # built in place: make_graph/make_model would copy every initialiser twice more
    opsets = [helper.make_opsetid("", opset)]
    model = onnx.ModelProto(
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="dlspec",
        producer_version=__version__,
        doc_string=f"dlspec model {graph.name} (evaluation phase)",
    )
    model.opset_import.extend(opsets)
    g = model.graph
    g.name = graph.name
    g.doc_string = f"{graph.name} from {graph.file} ({graph.span})"
    g.node.extend(b.scope.nodes)
    g.input.extend(inputs)
    g.output.extend(outputs)
    g.value_info.extend(b.scope.value_info)
    for key, arr in b.initializers.items():
        t = g.initializer.add()
        t.name = key
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.raw_data = arr.tobytes()
    return model


def export(graph: Graph, shapes: Shapes, weights: Mapping[str, np.ndarray], path: str | Path, *, opset: int = 17) -> None:
    """Write ``graph`` with ``weights`` to the ONNX file ``path`` (:func:`build_model`), atomically."""
    model = build_model(graph, shapes, weights, opset=opset)
    size = model.ByteSize()
    if size > _MAX_BYTES:
        raise BackendError(
            Diagnostic(
                f"export to {TARGET}: {graph.name} is {size / 2**30:.1f} GiB, more than the 2 GiB a single ONNX file can hold",
                graph.span,
                help="ONNX's external-data format is not supported by dlspec's export yet",
            )
        )
    atomic_write(path, model.SerializeToString(), what="ONNX model")
