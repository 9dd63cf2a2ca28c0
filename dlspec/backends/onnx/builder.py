"""The graph builder behind the ONNX export: names, initialisers, constants, value types, and the
per-layer context (:class:`Layer`) that each lowering in :data:`dlspec.backends.onnx.TRANSFORMS`
emits its ONNX nodes through.

Naming: a layer's output value is named after its path (``layer1.0.conv1``), graph inputs
after the spec's inputs, graph outputs after the model's outputs, initialisers after the
state-dict keys (``layer1.0.conv1.weight``). The ONNX node that computes a layer's output is
named after the layer's path; the helper nodes before it ``PATH/what`` (``lstm/l0``,
``att/scores``). Every node's ``doc_string`` is the layer's spec line and op (``lenet5.dl:9:3: conv``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...errors import BackendError, Diagnostic
from ...ir import Graph, Node
from ...shapes import Shapes, Sym, TensorType
from .. import unsupported

TARGET = "onnx"

#: dlspec dtype → ONNX element type (float tensors compute in float32)
ELEM = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "bool": TensorProto.BOOL,
}
#: ONNX element type → NumPy dtype of constants made for it
NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.INT32: np.int32, TensorProto.INT64: np.int64, TensorProto.BOOL: np.bool_}

Lowering = Callable[["Layer", list[str]], str]


def failure(node: Node, message: str, help: str | None = None) -> BackendError:
    """A located export error about one layer (raise it)."""
    return BackendError(Diagnostic(f"export to onnx: {node.op} '{node.path}': {message}", node.span, help=help))


def elem_type(t: TensorType) -> int:
    """The ONNX element type a value of static type ``t`` has in the exported graph."""
    return TensorProto.FLOAT if t.is_float() else ELEM[t.dtype]


def dim_name(d: Any) -> int | str:
    """An ONNX dim: a size, the symbol's name (``N``, ``T``), or for a compound symbolic size
    (``T-2``, ``⌊(T-3)/2⌋``) its expression, a name of its own."""
    if isinstance(d, int):
        return d
    if isinstance(d, Sym) and len(d.terms) == 1:
        mono, coef = d.terms[0]
        if coef == 1 and len(mono) == 1:
            return mono[0]
    return str(d)


def value_info(name: str, t: TensorType, elem: int | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type(t) if elem is None else elem, [dim_name(d) for d in t.shape])


@dataclass(frozen=True)
class Geometry:
    """A windowed layer's per-dim kernel, stride, dilation, (before, after) pads and output padding
    (the fields of :class:`dlspec.ops.window.Window`)."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    output_padding: tuple[int, ...]


@dataclass
class Scope:
    """One ONNX graph being filled: the main graph or a ``Scan`` body."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    value_info: list[onnx.ValueInfoProto] = field(default_factory=list)


class GraphBuilder:
    """Lowers a dlspec graph, node by node through ``table``, into ONNX nodes and initialisers."""

    def __init__(self, graph: Graph, shapes: Shapes, weights: Mapping[str, Any], opset: int, table: Mapping[str, Lowering]):
        self.graph, self.shapes, self.weights, self.opset, self.table = graph, shapes, weights, opset, table
        self.types = shapes.types
        self.index = {n.path: n for n in graph.nodes}
        #: state-dict key → its array, made into the graph's initialisers once, in place (no copies
        #: of the weights beyond the one serialisation needs)
        self.initializers: dict[str, np.ndarray] = {}
        #: node path → the value name of its output
        self.values: dict[str, str] = {}
        self._value_names: set[str] = set(weights) | set(graph.inputs) | {o.name for o in graph.outputs}
        self._node_names: set[str] = set()
        self.scope = Scope()
        self._outputs = {o.name: o.node for o in graph.outputs}

    # ---- names -----------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """An unused value name: ``base``, else ``base_1``, ``base_2``…"""
        name, k = base, 0
        while name in self._value_names:
            k += 1
            name = f"{base}_{k}"
        self._value_names.add(name)
        return name

    def fresh_node(self, base: str) -> str:
        name, k = base, 0
        while name in self._node_names:
            k += 1
            name = f"{base}_{k}"
        self._node_names.add(name)
        return name

    def layer_value(self, node: Node) -> tuple[str, bool]:
        """The value name for ``node``'s output and whether it is a graph output itself."""
        if self._outputs.get(node.path) == node.path:
            return node.path, True
        return self.fresh(node.path), False

    # ---- tensors -----------------------------------------------------------------------------
    def initializer(self, key: str, node: Node, shape: Sequence[int] | None) -> str:
        """The initialiser of state-dict ``key`` (made once), checked against ``shape``."""
        if key in self.initializers:
            return key
        if key not in self.weights:
            raise failure(node, f"the weights have no '{key}'", help="export the weights of this model (its state dict)")
        arr = np.asarray(self.weights[key])
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise failure(node, f"weight '{key}' has shape {tuple(arr.shape)} but the layer needs {tuple(shape)}")
        if arr.dtype.kind not in "iub":
            arr = arr.astype(np.float32, copy=False)  # float16/bfloat16/float64 weights: the graph computes in float32
        self.initializers[key] = np.ascontiguousarray(arr)
        return key

    # ---- lowering ------------------------------------------------------------------------------
    def lower(self, node: Node) -> str:
        """Emit ``node``'s ONNX nodes into the current scope; returns its output value's name."""
        fn = self.table.get(node.op)
        if fn is None:
            raise unsupported(TARGET, node)
        layer = Layer(self, node)
        result = fn(layer, [self.values[i] for i in node.inputs])
        self.values[node.path] = layer.finish(result)
        return self.values[node.path]

    @contextmanager
    def subgraph(self) -> Iterator[Scope]:
        """Emit into a new graph (a ``Scan`` body) inside the block."""
        outer, self.scope = self.scope, Scope()
        try:
            yield self.scope
        finally:
            self.scope = outer


class Layer:
    """What a lowering works with: the node, its params and static types, and ``emit`` for its
    ONNX nodes (named ``PATH/what``; :meth:`finish` gives the last one the layer's path)."""

    def __init__(self, builder: GraphBuilder, node: Node):
        self.b = builder
        self.node = node
        self.p = node.params
        #: the node whose weights this layer uses (itself, or the instance it shares)
        self.owner = builder.index[node.shares] if node.shares is not None else node
        self.ins: list[TensorType] = [builder.types[i] for i in node.inputs]
        self.out: TensorType = builder.types[node.path]
        self.scope = builder.scope
        self.doc = f"{node.span}: {node.op}"
        self._emitted: list[onnx.NodeProto] = []
        self._consts: dict[tuple, str] = {}

    @property
    def opset(self) -> int:
        return self.b.opset

    def fail(self, message: str, help: str | None = None) -> BackendError:
        return failure(self.node, message, help)

    # ---- emitting -------------------------------------------------------------------------------
    def emit(self, op_type: str, inputs: Sequence[str], what: str | None = None, outputs: int = 1, omit: Sequence[int] = (), **attrs: Any):
        """One ONNX node; returns its output name (a list with ``outputs > 1``; outputs listed in
        ``omit`` are left out, as ONNX allows for optional outputs)."""
        base = f"{self.node.path}/{what or op_type.lower()}"
        names = ["" if i in omit else self.b.fresh(base if outputs == 1 else f"{base}:{i}") for i in range(outputs)]
        node = helper.make_node(op_type, list(inputs), names, name=self.b.fresh_node(base), doc_string=self.doc, **attrs)
        self.scope.nodes.append(node)
        self._emitted.append(node)
        return names[0] if outputs == 1 else names

    def finish(self, result: str) -> str:
        """Give the layer's output its value name (its path) and type, and the node computing it the path."""
        name, is_output = self.b.layer_value(self.node)
        last = self._emitted[-1] if self._emitted else None
        if last is not None and result in last.output:
            last.output[list(last.output).index(result)] = name
            self.b._node_names.discard(last.name)
            last.name = self.b.fresh_node(self.node.path)
        else:
            self.scope.nodes.append(
                helper.make_node("Identity", [result], [name], name=self.b.fresh_node(self.node.path), doc_string=self.doc)
            )
        if not is_output:
            self.scope.value_info.append(value_info(name, self.out))
        return name

    # ---- weights and constants ----------------------------------------------------------------------
    def weight(self, slot: str, shape: Sequence[int] | None = None) -> str:
        """The initialiser of this layer's state-dict slot (``weight``, ``out_proj.bias``…; ``""``: the
        entry named by the path alone, a ``param``), the owner's when the layer shares another's weights."""
        return self.b.initializer(f"{self.owner.path}.{slot}" if slot else self.owner.path, self.node, shape)

    def const(self, value: Any, dtype: Any = np.float32, what: str = "const") -> str:
        """A ``Constant`` node holding ``value``."""
        arr = np.asarray(value, dtype=dtype)
        key = (what, arr.dtype.str, arr.shape, arr.tobytes())
        if key in self._consts:  # one node per value (this layer's nodes all lie in one graph)
            return self._consts[key]
        name = self._consts[key] = self.b.fresh(f"{self.node.path}/{what}")
        tensor = numpy_helper.from_array(arr, name)
        node = helper.make_node(
            "Constant", [], [name], name=self.b.fresh_node(f"{self.node.path}/{what}"), doc_string=self.doc, value=tensor
        )
        self.scope.nodes.append(node)
        self._emitted.append(node)
        return name

    def ints(self, values: Sequence[int], what: str = "shape") -> str:
        """A 1-D int64 constant (shapes, axes, pads)."""
        return self.const(list(values), np.int64, what)

    # ---- shapes ---------------------------------------------------------------------------------------
    def shape(self, x: str, start: int, end: int | None = None) -> str:
        """``Shape(x)[start:end]`` as a 1-D int64 tensor."""
        attrs = {"start": start} if end is None else {"start": start, "end": end}
        return self.emit("Shape", [x], "shape", **attrs)

    def reshape(self, x: str, src: TensorType, dims: Sequence[Any]) -> str:
        """Reshape ``x`` (of static type ``src``) to ``dims``: ints (one may be -1) or symbolic
        dims of ``src``, taken from ``x``'s runtime shape."""
        spec: list[int | tuple[int]] = []  # a size, -1, or (j,): dim j of x at run time
        for d in dims:
            j = None if isinstance(d, int) else next((k for k, s in enumerate(src.shape) if s == d), None)
            spec.append((j,) if j is not None else d if isinstance(d, int) else -1)
        if sum(1 for d in spec if d == -1) > 1:
            raise self.fail(f"cannot reshape {src.show(True)} to ({', '.join(map(str, dims))}): more than one size is unknown")
        if all(d == (i,) for i, d in enumerate(spec) if isinstance(d, tuple)):  # Reshape's 0 copies the dim in place
            return self.emit("Reshape", [x, self.ints([0 if isinstance(d, tuple) else d for d in spec])], "reshape")
        pieces: list[list[int] | str] = []
        for d in spec:
            if isinstance(d, tuple):
                pieces.append(self.shape(x, d[0], d[0] + 1))
            elif pieces and isinstance(pieces[-1], list):
                pieces[-1].append(d)
            else:
                pieces.append([d])
        parts = [self.ints(p) if isinstance(p, list) else p for p in pieces]
        target = parts[0] if len(parts) == 1 else self.emit("Concat", parts, "target_shape", axis=0)
        return self.emit("Reshape", [x, target], "reshape")

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.emit("Unsqueeze", [x, self.ints(axes, "axes")], "unsqueeze") if axes else x

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool) -> str:
        """``ReduceMax``/``ReduceMean``/``ReduceSum`` (axes an attribute before opset 18, an input since)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.emit(op_type, [x, self.ints(axes, "axes")], op_type.lower(), keepdims=int(keepdims))
        return self.emit(op_type, [x], op_type.lower(), axes=list(axes), keepdims=int(keepdims))

    def geometry(self) -> Geometry:
        """This windowed layer's geometry, resolved once by the shape pass (``Shapes.windows``)."""
        win = self.b.shapes.windows[self.node.path]
        return Geometry(
            tuple(win.kernel), tuple(win.stride), tuple(win.dilation), tuple(tuple(pr) for pr in win.pads), tuple(win.output_padding)
        )


def flat_pads(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """ONNX's pads: every dim's start, then every dim's end."""
    return [int(a) for a, _ in pairs] + [int(b) for _, b in pairs]
