"""One lowering per dlspec op: ``fn(layer, inputs) -> output`` emits the ONNX nodes of one layer
(``inputs`` and the result are value names; ``layer`` is a :class:`~.builder.Layer`). The graph is
the evaluation model: dropout is the identity, ``sample`` gives ``mu``, batch norm uses its running
statistics. The numerics follow dlspec's tinygrad layers (PyTorch's definitions)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from onnx import TensorProto, helper

from ...ops.window import per_dim, window_out
from .builder import NUMPY, Geometry, Layer, Lowering, elem_type, flat_pads, value_info

# ---- elementwise -------------------------------------------------------------------------------


def _unary(op_type: str) -> Lowering:
    def lower(layer: Layer, xs: list[str]) -> str:
        return layer.emit(op_type, [xs[0]])

    lower.__doc__ = f"``{op_type}`` on the input."
    return lower


def identity(layer: Layer, xs: list[str]) -> str:
    """The identity (also dropout, which does nothing in evaluation, and ``sample``, which gives ``mu``)."""
    return layer.emit("Identity", [xs[0]])


def silu(layer: Layer, xs: list[str]) -> str:
    return layer.emit("Mul", [xs[0], layer.emit("Sigmoid", [xs[0]])])


def step(layer: Layer, xs: list[str]) -> str:
    """``1 if x > threshold else 0``."""
    above = layer.emit("Greater", [xs[0], layer.const(layer.p.threshold, what="threshold")], "above")
    return layer.emit("Cast", [above], to=TensorProto.FLOAT)


def softmax(layer: Layer, xs: list[str]) -> str:
    return layer.emit("Softmax", [xs[0]], axis=layer.p.axis)


def log_softmax(layer: Layer, xs: list[str]) -> str:
    return layer.emit("LogSoftmax", [xs[0]], axis=layer.p.axis)


def elu(layer: Layer, xs: list[str]) -> str:
    return layer.emit("Elu", [xs[0]], alpha=float(layer.p.alpha))


def leaky_relu(layer: Layer, xs: list[str]) -> str:
    return layer.emit("LeakyRelu", [xs[0]], alpha=float(layer.p.slope))


def prelu(layer: Layer, xs: list[str]) -> str:
    """``PRelu`` with the learned slope (1, or one per channel on axis 1)."""
    x = layer.ins[0]
    n = x.shape[1] if layer.p.per_channel else 1
    slope = layer.weight("weight", (n,))
    if n != 1 and x.rank > 2:
        slope = layer.unsqueeze(slope, list(range(1, x.rank - 1)))  # (C, 1, …): channels on axis 1
    return layer.emit("PRelu", [xs[0], slope])


def gelu(layer: Layer, xs: list[str]) -> str:
    """Exact ``x·Φ(x)`` or the tanh approximation; ONNX's ``Gelu`` from opset 20."""
    x, tanh = xs[0], layer.p.approximate == "tanh"
    if layer.opset >= 20:
        return layer.emit("Gelu", [x], approximate="tanh" if tanh else "none")
    if tanh:  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        cube = layer.emit("Pow", [x, layer.const(3.0)], "cube")
        inner = layer.emit("Add", [x, layer.emit("Mul", [cube, layer.const(0.044715)])])
        t = layer.emit("Tanh", [layer.emit("Mul", [inner, layer.const(math.sqrt(2 / math.pi))])])
    else:  # 0.5·x·(1 + erf(x/√2))
        t = layer.emit("Erf", [layer.emit("Mul", [x, layer.const(0.7071067811865476)])])
    half = layer.emit("Mul", [x, layer.const(0.5)], "half")
    return layer.emit("Mul", [half, layer.emit("Add", [t, layer.const(1.0)])])


def softplus(layer: Layer, xs: list[str]) -> str:
    """``log(1 + e^(beta·x)) / beta``."""
    beta = float(layer.p.beta)
    if beta == 1.0:
        return layer.emit("Softplus", [xs[0]])
    y = layer.emit("Softplus", [layer.emit("Mul", [xs[0], layer.const(beta, what="beta")])])
    return layer.emit("Div", [y, layer.const(beta, what="beta")])


def relu6(layer: Layer, xs: list[str]) -> str:
    """``Clip`` to [0, 6]."""
    return layer.emit("Clip", [xs[0], layer.const(0.0, what="zero"), layer.const(6.0, what="six")])


def hardsigmoid(layer: Layer, xs: list[str]) -> str:
    """PyTorch's ``relu6(x + 3) / 6``: ``HardSigmoid`` with alpha 1/6, beta 1/2."""
    return layer.emit("HardSigmoid", [xs[0]], alpha=1 / 6, beta=0.5)


def mish(layer: Layer, xs: list[str]) -> str:
    """``x·tanh(softplus(x))``; ONNX's ``Mish`` from opset 18."""
    if layer.opset >= 18:
        return layer.emit("Mish", [xs[0]])
    return layer.emit("Mul", [xs[0], layer.emit("Tanh", [layer.emit("Softplus", [xs[0]])])])


def glu(layer: Layer, xs: list[str]) -> str:
    """``a·sigmoid(b)``, ``a`` and ``b`` the halves of ``axis``."""
    x = layer.ins[0]
    k = layer.p.axis + x.rank if layer.p.axis < 0 else layer.p.axis
    half = x.shape[k] // 2
    a = layer.emit("Slice", [xs[0], layer.ints([0], "starts"), layer.ints([half], "half"), layer.ints([k], "axes")], "a")
    b = layer.emit("Slice", [xs[0], layer.ints([half], "half"), layer.ints([2 * half], "ends"), layer.ints([k], "axes")], "b")
    return layer.emit("Mul", [a, layer.emit("Sigmoid", [b], "gate")])


def maxout(layer: Layer, xs: list[str]) -> str:
    """The maximum over each group of ``pieces`` channels: ``(N, C, *) → (N, C/k, k, *) → max``."""
    x, k = layer.ins[0], layer.p.pieces
    grouped = layer.reshape(xs[0], x, [x.shape[0], x.shape[1] // k, k, *x.shape[2:]])
    return layer.reduce("ReduceMax", grouped, [2], keepdims=False)


ARITH = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow"}


def arith(layer: Layer, xs: list[str]) -> str:
    """Arithmetic on tensors, a number on the left or the right as a constant."""
    p, it = layer.p, iter(xs)
    a = layer.const(p.left, what="left") if p.left is not None else next(it)
    b = layer.const(p.right, what="right") if p.right is not None else next(it)
    return layer.emit(ARITH[p.fn], [a, b])


def _chain(op_type: str) -> Lowering:
    def lower(layer: Layer, xs: list[str]) -> str:
        y = xs[0]
        for x in xs[1:]:
            y = layer.emit(op_type, [y, x])
        return y if len(xs) > 1 else layer.emit("Identity", [y])

    lower.__doc__ = f"``{op_type}`` of the inputs, left to right."
    return lower


def concat(layer: Layer, xs: list[str]) -> str:
    """``Concat``; learned or constant tensors (a batch of 1) are first expanded to the others' batch."""
    if len(xs) == 1:
        return layer.emit("Identity", xs)
    batched = next((x for x, t in zip(xs, layer.ins) if t.shape[0] != 1), None)
    if batched is not None and any(t.shape[0] == 1 for t in layer.ins):
        size = layer.emit("Concat", [layer.shape(batched, 0, 1), layer.ints([1] * (layer.out.rank - 1), "ones")], "batch", axis=0)
        xs = [layer.emit("Expand", [x, size], "expand") if t.shape[0] == 1 else x for x, t in zip(xs, layer.ins)]
    return layer.emit("Concat", xs, axis=layer.p.axis)


# ---- dense, embeddings ---------------------------------------------------------------------------


def dense(layer: Layer, xs: list[str]) -> str:
    """``x Wᵀ + b``: ``Gemm`` on (N, F), ``MatMul`` + ``Add`` on more axes. A tied layer uses its
    embedding's (vocab, dim) weight."""
    p, x = layer.owner.params, layer.ins[0]
    f = x.shape[-1]
    if p.tied:
        emb = _tied_embedding(layer, p.tied)
        w = layer.b.initializer(f"{emb}.weight", layer.node, (p.units, f))
    else:
        w = layer.weight("weight", (p.units, f))
    b = [layer.weight("bias", (p.units,))] if p.bias else []
    if x.rank == 2:
        return layer.emit("Gemm", [xs[0], w, *b], transB=1)
    y = layer.emit("MatMul", [xs[0], layer.emit("Transpose", [w], "weight_t", perm=[1, 0])])
    return layer.emit("Add", [y, *b]) if b else y


def _tied_embedding(layer: Layer, tied: str) -> str:
    """The path of the layer owning the weight of embedding ``tied`` (a path, or a path's last part)."""
    nodes = layer.b.graph.nodes
    emb = next((n for n in nodes if n.op == "embedding" and n.path == tied), None) or next(
        (n for n in nodes if n.op == "embedding" and n.path.endswith("." + tied)), None
    )
    if emb is None:
        raise layer.fail(f"it is tied to '{tied}', which is not an embedding layer")
    return emb.shares or emb.path


def embedding(layer: Layer, xs: list[str]) -> str:
    return layer.emit("Gather", [layer.weight("weight"), xs[0]], axis=0)


def posembed(layer: Layer, xs: list[str]) -> str:
    """``x + weight[:T]``, ``T`` read from the input at run time."""
    rows = layer.emit("Slice", [layer.weight("weight"), layer.ints([0], "starts"), layer.shape(xs[0], 1, 2), layer.ints([0], "axes")])
    return layer.emit("Add", [xs[0], rows])


# ---- convolution and pooling -------------------------------------------------------------------------


def _window_attrs(g: Geometry) -> dict:
    attrs = {"kernel_shape": list(g.kernel), "strides": list(g.stride)}
    if any(d != 1 for d in g.dilation):
        attrs["dilations"] = list(g.dilation)
    return attrs


def conv(layer: Layer, xs: list[str]) -> str:
    """``Conv`` with explicit (asymmetric where ``same`` needs it) pads."""
    p, x, g = layer.p, layer.ins[0], layer.geometry()
    w = layer.weight("weight", (p.filters, x.shape[1] // p.groups, *g.kernel))
    b = [layer.weight("bias", (p.filters,))] if p.bias else []
    return layer.emit("Conv", [xs[0], w, *b], **_window_attrs(g), pads=flat_pads(g.pads), group=p.groups)


def deconv(layer: Layer, xs: list[str]) -> str:
    """``ConvTranspose``: ``S' = (S − 1)·s − p_before − p_after + d·(k − 1) + output_padding + 1``."""
    p, x, g = layer.p, layer.ins[0], layer.geometry()
    w = layer.weight("weight", (x.shape[1], p.filters // p.groups, *g.kernel))
    b = [layer.weight("bias", (p.filters,))] if p.bias else []
    attrs = _window_attrs(g) | {"pads": flat_pads(g.pads), "group": p.groups}
    if any(g.output_padding):
        attrs["output_padding"] = list(g.output_padding)
    return layer.emit("ConvTranspose", [xs[0], w, *b], **attrs)


def pool(layer: Layer, xs: list[str]) -> str:
    """Max/avg pooling with PyTorch's arithmetic: global, adaptive (where the sizes divide) and
    windowed, with ``ceil`` windows overhanging the end (given as explicit pads, ONNX's ``ceil_mode``
    where the sizes are symbolic) and ``count_include_pad``."""
    p, x = layer.p, layer.ins[0]
    n, kind = x.rank - 2, "Max" if p.kind == "max" else "Average"
    if p.scope == "global":
        return layer.emit(f"Global{kind}Pool", [xs[0]])
    if p.scope == "adaptive":
        size = per_dim(p.size, n, "size", "pool")
        if all(s == 1 for s in size):
            return layer.emit(f"Global{kind}Pool", [xs[0]])
        if not all(isinstance(s, int) for s in x.shape[2:]):
            raise layer.fail(f"adaptive pooling of {x.show()} needs known spatial sizes", help="use a window pool with kernel and stride")
        k = [s_in // s_out for s_in, s_out in zip(x.shape[2:], size)]
        return layer.emit(f"{kind}Pool", [xs[0]], kernel_shape=k, strides=k)
    g = layer.geometry()
    sizes = x.shape[2:]
    known = all(isinstance(s, int) for s in sizes)
    extra = [0] * n  # ceil mode: how far the last window overhangs the (padded) input, per dim
    if p.ceil and known:
        for i, (size, kk, ss, dd, (pb, pa)) in enumerate(zip(sizes, g.kernel, g.stride, g.dilation, g.pads)):
            o = window_out(size, kk, ss, dd, pb, pa, True)
            extra[i] = max(0, (o - 1) * ss + dd * (kk - 1) + 1 - (size + pb + pa))
    ceil_attr = {"ceil_mode": 1} if p.ceil and not known else {}  # symbolic sizes: ONNX's ceil mode
    full = [(pb, pa + e) for (pb, pa), e in zip(g.pads, extra)]
    fits = all(max(a, b) < kk for (a, b), kk in zip(full, g.kernel))  # onnxruntime needs pads < kernel
    if p.kind == "max":
        if fits:
            return layer.emit("MaxPool", [xs[0]], **_window_attrs(g), pads=flat_pads(full), **ceil_attr)
        padded = _pad(layer, xs[0], x.rank, full, -np.inf)
        return layer.emit("MaxPool", [padded], **_window_attrs(g), **ceil_attr)
    include = p.count_include_pad if p.count_include_pad is not None else p.padding != "same"
    if not fits or (layer.opset < 19 and any(d != 1 for d in g.dilation)):  # AveragePool has dilations from opset 19
        return _avg_by_conv(layer, xs[0], g, full, include)
    if include and any(a or b for a, b in g.pads):
        if not any(extra):
            return layer.emit("AveragePool", [xs[0]], **_window_attrs(g), pads=flat_pads(g.pads), count_include_pad=1, **ceil_attr)
        # zeros for the padding (counted), then the overhang (not counted)
        padded = _pad(layer, xs[0], x.rank, g.pads, 0.0)
        return layer.emit("AveragePool", [padded], **_window_attrs(g), pads=flat_pads([(0, e) for e in extra]), count_include_pad=0)
    return layer.emit("AveragePool", [xs[0]], **_window_attrs(g), pads=flat_pads(full), count_include_pad=0, **ceil_attr)


def _pad(layer: Layer, x: str, rank: int, spatial: Sequence[tuple[int, int]], value: float) -> str:
    pairs = [(0, 0), (0, 0), *spatial]
    return layer.emit("Pad", [x, layer.ints(flat_pads(pairs), "pads"), layer.const(value, what="fill")], "pad", mode="constant")


def _avg_by_conv(layer: Layer, x: str, g: Geometry, full: list[tuple[int, int]], include: bool) -> str:
    """Average pooling as a depthwise sum over the zero-padded input divided by each window's
    count (a constant): for dilated windows, which ``AveragePool`` lacks before opset 19 (and
    onnxruntime's whose padding reaches the kernel size)."""
    t = layer.ins[0]
    c, sizes = t.shape[1], t.shape[2:]
    if not isinstance(c, int) or not all(isinstance(s, int) for s in sizes):
        raise layer.fail(
            f"dilated average pooling of {t.show()} needs known channels and sizes here",
            help="export with opset 19 or later" if layer.opset < 19 else None,
        )
    ones = np.ones((c, 1, *g.kernel), np.float32)
    summed = layer.emit("Conv", [_pad(layer, x, t.rank, full, 0.0), layer.const(ones, what="ones")], "sum", **_window_attrs(g), group=c)
    # which positions count: the input, and (count_include_pad) the padding, never the overhang
    mask = np.ones(sizes, np.float64)
    mask = np.pad(mask, g.pads, constant_values=1.0 if include else 0.0)
    mask = np.pad(mask, [(0, b - pa) for (_, pa), (_, b) in zip(g.pads, full)])
    counts = _window_sums(mask, g)
    return layer.emit("Div", [summed, layer.const(counts[None, None].astype(np.float32), what="counts")])


def _window_sums(a: np.ndarray, g: Geometry) -> np.ndarray:
    """Sums of ``a`` over every (dilated, strided) window."""
    eff = [d * (k - 1) + 1 for k, d in zip(g.kernel, g.dilation)]
    win = np.lib.stride_tricks.sliding_window_view(a, eff)
    win = win[tuple(slice(None, None, s) for s in g.stride) + tuple(slice(None, None, d) for d in g.dilation)]
    return win.sum(axis=tuple(range(a.ndim, 2 * a.ndim)))


# ---- layout ------------------------------------------------------------------------------------------


def flatten(layer: Layer, xs: list[str]) -> str:
    return layer.emit("Reshape", [xs[0], layer.ints([0] * layer.p.start + [-1])])


def reshape(layer: Layer, xs: list[str]) -> str:
    return layer.reshape(xs[0], layer.ins[0], layer.out.shape)


def permute(layer: Layer, xs: list[str]) -> str:
    return layer.emit("Transpose", [xs[0]], perm=[0, *layer.p.dims])


def upsample(layer: Layer, xs: list[str]) -> str:
    """``Resize`` by integer scales: nearest repeats each element, linear is PyTorch's ``align_corners=False``."""
    p, x = layer.p, layer.ins[0]
    n = x.rank - 2
    scales = layer.const([1.0, 1.0, *(float(s) for s in per_dim(p.scale, n, "scale", "upsample"))], what="scales")
    if p.mode == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    else:  # linear and bilinear: PyTorch's align_corners true or false
        attrs = {"mode": "linear", "coordinate_transformation_mode": "align_corners" if p.align_corners else "half_pixel"}
    return layer.emit("Resize", [xs[0], "", scales], **attrs)


def tile(layer: Layer, xs: list[str]) -> str:
    """``Tile`` by the copies that take the input's static shape to the output's (the batch's 1 first)."""
    from ...ops.tiling import reps

    counts = reps(layer.ins[0], layer.out)
    if all(c == 1 for c in counts):
        return layer.emit("Identity", [xs[0]])
    return layer.emit("Tile", [xs[0], layer.ints(counts, "repeats")])


def roll(layer: Layer, xs: list[str]) -> str:
    """Per axis, the last ``shift mod size`` values moved to the front: two ``Slice``s and a ``Concat``
    (the size read at run time where it is symbolic)."""
    p, x = layer.p, layer.ins[0]
    shifts = p.shifts if isinstance(p.shifts, tuple) else (p.shifts,)
    axes = [a + x.rank if a < 0 else a for a in (p.axis if isinstance(p.axis, tuple) else (p.axis,))]
    y = xs[0]
    for shift, k in zip(shifts, axes):
        size = x.shape[k]
        if isinstance(size, int):
            if shift % size == 0:
                continue
            cut = layer.ints([size - shift % size], "cut")
        else:  # size − (shift mod size); ONNX's integer Mod takes the divisor's sign, as Python's %
            n = layer.shape(y, k, k + 1)
            cut = layer.emit("Sub", [n, layer.emit("Mod", [layer.ints([shift], "shift"), n], "shift")], "cut")
        axis = layer.ints([k], "axes")
        tail = layer.emit("Slice", [y, cut, layer.ints([_END], "end"), axis], "tail")
        head = layer.emit("Slice", [y, layer.ints([0], "start"), cut, axis], "head")
        y = layer.emit("Concat", [tail, head], "rolled", axis=k)
    return y if y != xs[0] else layer.emit("Identity", [y])


def pad(layer: Layer, xs: list[str]) -> str:
    """``Pad``: spatial dims and channels; constant, reflect or edge (``replicate``)."""
    p, x = layer.p, layer.ins[0]
    spatial = p.padding if isinstance(p.padding, tuple) else (p.padding,) * (x.rank - 2)
    pairs = [(0, 0), p.channels if isinstance(p.channels, tuple) else (p.channels, p.channels)]
    pairs += [(q, q) if isinstance(q, int) else (q[0], q[1]) for q in spatial]
    pairs += [(0, 0)] * (x.rank - len(pairs))
    ins = [xs[0], layer.ints(flat_pads(pairs), "pads")]
    if p.mode == "constant":
        ins.append(layer.const(p.value, NUMPY[elem_type(x)], "value"))
    return layer.emit("Pad", ins, mode={"constant": "constant", "reflect": "reflect", "replicate": "edge"}[p.mode])


# ---- normalisation ------------------------------------------------------------------------------------


def batchnorm(layer: Layer, xs: list[str]) -> str:
    """``BatchNormalization`` with the running statistics (evaluation)."""
    c = layer.ins[0].shape[1]
    scale, bias = _affine(layer, c)
    mean, var = layer.weight("running_mean", (c,)), layer.weight("running_var", (c,))
    return layer.emit("BatchNormalization", [xs[0], scale, bias, mean, var], epsilon=float(layer.p.eps))


def _affine(layer: Layer, c: int) -> tuple[str, str]:
    if layer.p.affine:
        return layer.weight("weight", (c,)), layer.weight("bias", (c,))
    return layer.const(np.ones(c), what="ones"), layer.const(np.zeros(c), what="zeros")


def layernorm(layer: Layer, xs: list[str]) -> str:
    scale, bias = _affine(layer, layer.ins[0].shape[-1])
    return layer.emit("LayerNormalization", [xs[0], scale, bias], axis=-1, epsilon=float(layer.p.eps))


def groupnorm(layer: Layer, xs: list[str]) -> str:
    """``(N, C, *) → (N, G, ·)``, ``InstanceNormalization`` per group, back, then the per-channel affine."""
    p, x = layer.p, layer.ins[0]
    grouped = layer.emit("Reshape", [xs[0], layer.ints([0, p.groups, -1])], "grouped")
    ones, zeros = layer.const(np.ones(p.groups), what="ones"), layer.const(np.zeros(p.groups), what="zeros")
    normed = layer.emit("InstanceNormalization", [grouped, ones, zeros], "normalised", epsilon=float(p.eps))
    y = layer.emit("Reshape", [normed, layer.emit("Shape", [xs[0]], "shape")], "ungrouped")
    if not p.affine:
        return y
    c, axes = x.shape[1], list(range(1, x.rank - 1))
    w = layer.unsqueeze(layer.weight("weight", (c,)), axes)
    b = layer.unsqueeze(layer.weight("bias", (c,)), axes)
    return layer.emit("Add", [layer.emit("Mul", [y, w]), b])


# ---- attention -----------------------------------------------------------------------------------------


def attention(layer: Layer, xs: list[str]) -> str:
    """``torch.nn.MultiheadAttention`` (batch first) as MatMul/Softmax: ``causal`` keeps keys ≤ the
    query's step; a bool ``mask`` (True = attend) broadcasts to (N, heads, T_q, T_k); a query whose
    keys are all masked gives 0. With ``kv_heads`` or ``rope``: HuggingFace LlamaAttention's separate
    projections, queries and keys rotated (:func:`_rotary`), each key/value head repeated for its
    group of query heads (``Tile``)."""
    p = layer.p
    n_main = len(xs) - (1 if p.mask else 0)
    q, kv = xs[0], xs[1] if n_main == 2 else xs[0]
    d = layer.ins[0].shape[2]
    h = p.heads
    if p.separate():
        g, dh = p.groups(), d // h

        def proj(x: str, name: str, k: int, what: str) -> str:
            w = layer.emit("Transpose", [layer.weight(f"{name}.weight", (k * dh, d))], f"w_{what}_t", perm=[1, 0])
            y = layer.emit("MatMul", [x, w], what)
            if p.bias:
                y = layer.emit("Add", [y, layer.weight(f"{name}.bias", (k * dh,))], what)
            y = layer.emit("Reshape", [y, layer.ints([0, 0, k, dh])], f"{what}_heads")  # (N, T, k, D/heads)
            if p.rope and what != "v":
                y = _rotary(layer, y, 4, dh, p.rope_base, what)
            y = layer.emit("Transpose", [y], f"{what}_heads", perm=[0, 2, 1, 3])  # (N, k, T, D/heads)
            if k == h:
                return y
            # key/value head j for query heads j·r … j·r + r − 1: (N, g, 1, T, dh) tiled r times on axis 2
            tiled = layer.emit("Tile", [layer.unsqueeze(y, [2]), layer.ints([1, 1, h // g, 1, 1], "repeats")], f"{what}_groups")
            return layer.emit("Reshape", [tiled, layer.ints([0, h, -1, dh])], f"{what}_heads")

        qh, kh, vh = proj(q, "q_proj", h, "q"), proj(kv, "k_proj", g, "k"), proj(kv, "v_proj", g, "v")
        out_name = "o_proj"
    else:
        w_in = layer.weight("in_proj_weight", (3 * d, d))
        b_in = layer.weight("in_proj_bias", (3 * d,)) if p.bias else None

        def heads(x: str, i: int, what: str) -> str:
            rows = [layer.ints([i * d], "start"), layer.ints([(i + 1) * d], "end"), layer.ints([0], "axes")]
            w = layer.emit("Transpose", [layer.emit("Slice", [w_in, *rows], f"w_{what}")], f"w_{what}_t", perm=[1, 0])
            y = layer.emit("MatMul", [x, w], what)
            if b_in is not None:
                y = layer.emit("Add", [y, layer.emit("Slice", [b_in, *rows], f"b_{what}")], what)
            y = layer.emit("Reshape", [y, layer.ints([0, 0, h, d // h])], f"{what}_heads")
            return layer.emit("Transpose", [y], f"{what}_heads", perm=[0, 2, 1, 3])  # (N, heads, T, D/heads)

        qh, kh, vh = heads(q, 0, "q"), heads(kv, 1, "k"), heads(kv, 2, "v")
        out_name = "out_proj"
    kt = layer.emit("Transpose", [kh], "k_t", perm=[0, 1, 3, 2])
    scores = layer.emit("Div", [layer.emit("MatMul", [qh, kt], "qk"), layer.const(math.sqrt(d // h), what="scale")], "scores")
    keep = seen = None
    if p.causal:  # keep[i, j] = j ≤ i (top-left aligned, as PyTorch's is_causal)
        rows = layer.unsqueeze(_steps(layer, q), [1])
        cols = layer.unsqueeze(_steps(layer, kv), [0])
        keep = layer.emit("LessOrEqual", [cols, rows], "causal")
    if p.mask:
        m, mt = xs[-1], layer.ins[-1]
        if mt.dtype != "bool":
            m = layer.emit("Cast", [m], "mask", to=TensorProto.BOOL)
        m = layer.unsqueeze(m, list(range(1, 5 - mt.rank)))  # (N, *sample) → (N, 1…, T_q?, T_k)
        keep = m if keep is None else layer.emit("And", [keep, m], "keep")
        # a query that may see no key: attend everywhere, then output 0 (not a softmax over −∞ alone)
        any_key = layer.reduce("ReduceMax", layer.emit("Cast", [keep], "keep_f", to=TensorProto.FLOAT), [-1], keepdims=True)
        seen = layer.emit("Cast", [any_key], "seen", to=TensorProto.BOOL)
        keep = layer.emit("Or", [keep, layer.emit("Not", [seen], "unseen")], "keep")
    if keep is not None:
        scores = layer.emit("Where", [keep, scores, layer.const(-np.inf, what="minus_inf")], "masked")
    att = layer.emit("MatMul", [layer.emit("Softmax", [scores], "weights", axis=-1), vh], "context")
    if seen is not None:
        att = layer.emit("Where", [seen, att, layer.const(0.0, what="zero")], "context")
    y = layer.emit("Reshape", [layer.emit("Transpose", [att], "merge", perm=[0, 2, 1, 3]), layer.ints([0, 0, d])], "merge")
    w_out = layer.emit("Transpose", [layer.weight(f"{out_name}.weight", (d, d))], "w_out_t", perm=[1, 0])
    y = layer.emit("MatMul", [y, w_out], "out")
    return layer.emit("Add", [y, layer.weight(f"{out_name}.bias", (d,))]) if p.bias else y


# ---- positions and RMS norm ------------------------------------------------------------------------------


def _angles(layer: Layer, x: str, d: int, base: float, what: str) -> str:
    """``t·base^(−2j/d)`` for the positions ``t`` of axis 1 of ``x`` (read at run time) and ``j < d/2``: (T, d/2)."""
    from ...ops.position import frequencies

    steps = layer.emit("Cast", [_steps(layer, x)], f"{what}_positions", to=TensorProto.FLOAT)
    freqs = layer.const(np.asarray(frequencies(d, base), np.float32).reshape(1, d // 2), what="frequencies")
    return layer.emit("Mul", [layer.unsqueeze(steps, [1]), freqs], f"{what}_angles")


def _rotary(layer: Layer, x: str, rank: int, d: int, base: float, what: str = "rope") -> str:
    """``x·cos + rotate_half(x)·sin`` for ``x`` (N, T, *, d) of ``rank`` axes (HuggingFace's LLaMA)."""
    a = _angles(layer, x, d, base, what)
    a = layer.unsqueeze(layer.emit("Concat", [a, a], f"{what}_angles", axis=-1), list(range(1, rank - 2)))  # (T, 1…, d)
    half = d // 2
    axis = layer.ints([-1], "last_axis")
    first = layer.emit("Slice", [x, layer.ints([0], "zero"), layer.ints([half], "half"), axis], f"{what}_first")
    second = layer.emit("Slice", [x, layer.ints([half], "half"), layer.ints([d], "end"), axis], f"{what}_second")
    rotated = layer.emit("Concat", [layer.emit("Neg", [second], f"{what}_neg"), first], f"{what}_rotated", axis=-1)
    cos = layer.emit("Mul", [x, layer.emit("Cos", [a], f"{what}_cos")], f"{what}_x_cos")
    return layer.emit("Add", [cos, layer.emit("Mul", [rotated, layer.emit("Sin", [a], f"{what}_sin")], f"{what}_rot_sin")], what)


def rope(layer: Layer, xs: list[str]) -> str:
    x = layer.ins[0]
    return _rotary(layer, xs[0], x.rank, x.shape[-1], layer.p.base)


def posenc(layer: Layer, xs: list[str]) -> str:
    """``x`` plus the sinusoids: ``sin`` and ``cos`` of the angles interleaved on the last axis."""
    d = layer.ins[0].shape[2]
    a = _angles(layer, xs[0], d, layer.p.base, "posenc")
    pairs = layer.emit(
        "Concat",
        [layer.unsqueeze(layer.emit("Sin", [a], "sin"), [-1]), layer.unsqueeze(layer.emit("Cos", [a], "cos"), [-1])],
        "pairs",
        axis=-1,
    )
    table = layer.emit("Reshape", [pairs, layer.ints([0, d])], "table")  # (T, d/2, 2) → (T, d)
    return layer.emit("Add", [xs[0], table])


def rmsnorm(layer: Layer, xs: list[str]) -> str:
    """``x / √(mean(x²) + eps) · weight`` over the last axis (ONNX's own RMSNormalization is opset 23)."""
    mean = layer.reduce("ReduceMean", layer.emit("Mul", [xs[0], xs[0]], "square"), [-1], keepdims=True)
    rms = layer.emit("Sqrt", [layer.emit("Add", [mean, layer.const(float(layer.p.eps), what="eps")], "mean_eps")], "rms")
    y = layer.emit("Div", [xs[0], rms], "normalised")
    return layer.emit("Mul", [y, layer.weight("weight", (layer.ins[0].shape[-1],))]) if layer.p.affine else y


def _steps(layer: Layer, x: str) -> str:
    """``0, 1, …, T−1`` for the time axis of ``x`` (N, T, D)."""
    t = layer.emit("Squeeze", [layer.shape(x, 1, 2), layer.ints([0], "axes")], "length")
    return layer.emit("Range", [layer.const(0, np.int64, "zero"), t, layer.const(1, np.int64, "one")], "steps")


# ---- recurrent layers -----------------------------------------------------------------------------------

#: ONNX's gate order in PyTorch's gate chunks: LSTM i, o, f, c from i, f, g, o; GRU z, r, h from r, z, n
GATE_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
ONNX_RNN = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def recurrent(layer: Layer, xs: list[str]) -> str:
    """``nn.RNN/LSTM/GRU(batch_first=True)`` as one ONNX ``RNN``/``LSTM``/``GRU`` node per stacked
    layer, time-major, W/R/B packed from the state dict in ONNX's gate order (``linear_before_reset``
    for PyTorch's GRU); ``sequences false`` gives the last step (the reverse direction's step 0)."""
    kind, p, x = layer.node.op, layer.p, layer.ins[0]
    h, dirs = p.hidden, 2 if p.bidirectional else 1
    order = GATE_ORDER[kind]
    g = len(order)
    rows = layer.ints(np.concatenate([np.arange(h) + c * h for c in order]), "gate_order") if g > 1 else None

    def packed(name: str, shape: tuple[int, ...], sfxs: list[str]) -> list[str]:
        """One direction's tensor per suffix, its gate chunks in ONNX's order."""
        out = []
        for sfx in sfxs:
            w = layer.weight(name + sfx, shape)
            out.append(layer.emit("Gather", [w, rows], f"{name}{sfx}_gates", axis=0) if rows is not None else w)
        return out

    def stack(ws: list[str], what: str) -> str:
        """(num_directions, …)"""
        ws = [layer.unsqueeze(w, [0]) for w in ws]
        return layer.emit("Concat", ws, what, axis=0) if len(ws) > 1 else ws[0]

    seq = layer.emit("Transpose", [xs[0]], "time_major", perm=[1, 0, 2])  # (T, N, F)
    attrs: dict = {"hidden_size": h, "direction": "bidirectional" if dirs == 2 else "forward"}
    if kind == "rnn":
        attrs["activations"] = [p.nonlinearity.title()] * dirs
    if kind == "gru":
        attrs["linear_before_reset"] = 1
    n_out = 3 if kind == "lstm" else 2
    last = None
    for i in range(p.layers):
        fin = x.shape[2] if i == 0 else dirs * h
        sfxs = [f"_l{i}", f"_l{i}_reverse"][:dirs]
        ins = [seq, stack(packed("weight_ih", (g * h, fin), sfxs), f"W_l{i}"), stack(packed("weight_hh", (g * h, h), sfxs), f"R_l{i}")]
        if p.bias:
            both = zip(packed("bias_ih", (g * h,), sfxs), packed("bias_hh", (g * h,), sfxs))
            ins.append(stack([layer.emit("Concat", [a, b], f"B_l{i}", axis=0) for a, b in both], f"B_l{i}"))
        final = i == p.layers - 1 and not p.sequences
        keep = 1 if final else 0  # the last layer's final state (Y_h), else all steps (Y)
        outs = layer.emit(ONNX_RNN[kind], ins, f"l{i}", outputs=n_out, omit=[k for k in range(n_out) if k != keep], **attrs)
        if final:
            last = outs[1]  # (dirs, N, H)
            break
        y = layer.emit("Transpose", [outs[0]], f"l{i}_steps", perm=[0, 2, 1, 3])  # (T, dirs, N, H) → (T, N, dirs, H)
        seq = layer.emit("Reshape", [y, layer.ints([0, 0, dirs * h])], f"l{i}_steps")
    if last is not None:
        y = layer.emit("Transpose", [last], "last", perm=[1, 0, 2])
        return layer.emit("Reshape", [y, layer.ints([0, dirs * h])], "last")
    return layer.emit("Transpose", [seq], "batch_major", perm=[1, 0, 2])


# ---- user cells --------------------------------------------------------------------------------------------


def cell(layer: Layer, xs: list[str]) -> str:
    """A user ``cell`` as an ONNX ``Scan`` over axis 1 (any ``T``): the body is the step's layers,
    lowered like any others; states start at zero; ``sequences false`` takes the last step. The
    cell's ``context`` tensors (the inputs after the sequence) are non-scanned: the body reads them
    from the enclosing graph, whole at every step, as it reads the weights."""
    b, p = layer.b, layer.p
    batch = layer.shape(xs[0], 0, 1)
    inits = []
    given = dict(zip(p.contexts, xs[1:]))
    for st in p.states:
        size = layer.emit("Concat", [batch, layer.ints(list(st.shape))], f"{st.name}_shape", axis=0)
        if st.init is not None:  # `state m: [...] init m0`: the context, broadcast over the batch
            inits.append(layer.emit("Expand", [given[st.init], size], f"{st.name}_init"))
            continue
        zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
        inits.append(layer.emit("ConstantOfShape", [size], f"{st.name}_init", value=zero))
    with b.subgraph() as body:
        inputs = []
        for path in [st.node for st in p.states] + [p.step_input]:
            b.values[path] = b.fresh(path)
            inputs.append(value_info(b.values[path], b.types[path]))
        for path, outer in zip(p.contexts, xs[1:]):
            b.values[path] = outer  # an outer-scope value of the body
        outer_names = set(xs[1:])
        for path in p.body:
            if b.index[path].op != "step_in":
                b.lower(b.index[path])
        outputs, seen = [], {v.name for v in inputs} | outer_names
        for path in [st.update for st in p.states] + [p.step_output]:
            name = b.values[path]
            if name in seen:  # a value listed twice, or a state passed on unchanged: a body output of its own
                copy = b.fresh(f"{path}/out")
                body.nodes.append(helper.make_node("Identity", [name], [copy], name=b.fresh_node(f"{layer.node.path}/step_out")))
                name = copy
            seen.add(name)
            outputs.append(value_info(name, b.types[path]))
        graph = helper.make_graph(body.nodes, f"{layer.node.path}/step", inputs, outputs, value_info=body.value_info)
    outs = layer.emit(
        "Scan",
        [*inits, xs[0]],
        "scan",
        outputs=len(p.states) + 1,
        body=graph,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_output_axes=[1],
    )
    ys = outs[-1] if isinstance(outs, list) else outs
    if p.sequences:
        return ys
    return layer.emit("Gather", [ys, layer.const(-1, np.int64, "last")], "last", axis=1)


# ---- tensor surgery, constant and learned tensors, reductions ---------------------------------------------

#: an end that lies past any axis (ONNX clamps it)
_END = 2**63 - 1


def _slice(layer: Layer, x: str, starts: list[int], ends: list[int], axes: list[int], steps: list[int] | None = None) -> str:
    ins = [x, layer.ints(starts, "starts"), layer.ints(ends, "ends"), layer.ints(axes, "axes")]
    return layer.emit("Slice", ins + ([layer.ints(steps, "steps")] if steps and any(s != 1 for s in steps) else []), "slice")


def subscript(layer: Layer, xs: list[str]) -> str:
    """``x[:, 0]``, ``x[..., 1:5:2]``: one ``Slice`` (Python's bounds), then ``Squeeze`` of the indexed axes."""
    from ...ops.tensor import resolve_items

    items = resolve_items(layer.p.items, layer.ins[0].rank, layer.node.path)
    cuts, drop = [], []  # (axis, start, end, step)
    for k, it in enumerate(items[1:], start=1):
        if isinstance(it, int):
            cuts.append((k, it, it + 1 if it != -1 else _END, 1))
            drop.append(k)
        elif it != (None, None, None):
            a, b, step = it
            cuts.append((k, 0 if a is None else a, _END if b is None else b, 1 if step is None else step))
    axes, starts, ends, steps = (list(c) for c in zip(*cuts)) if cuts else ([], [], [], [])
    y = _slice(layer, xs[0], starts, ends, axes, steps) if axes else xs[0]
    return layer.emit("Squeeze", [y, layer.ints(drop, "axes")]) if drop else layer.emit("Identity", [y])


def piece(layer: Layer, xs: list[str]) -> str:
    """One piece of ``split``/``chunk`` (the expander makes one node per piece)."""
    from ... import ops

    p, x = layer.p, layer.ins[0]
    axis = p.axis + x.rank if p.axis < 0 else p.axis
    a, b = ops.get(layer.node.op).bounds(p, x.shape[axis], None)[p.piece]
    return _slice(layer, xs[0], [a], [b], [axis])


def crop(layer: Layer, xs: list[str]) -> str:
    """The centre of the spatial axes, offset ``⌊(S − S') / 2⌋`` (a ``like`` tensor gives only the size)."""
    x, out = layer.ins[0], layer.out
    cut = [(k, (d - o) // 2, o) for k, (d, o) in enumerate(zip(x.shape, out.shape)) if k >= 2 and d != o]
    if not cut:
        return layer.emit("Identity", [xs[0]])
    return _slice(layer, xs[0], [a for _, a, _ in cut], [a + o for _, a, o in cut], [k for k, _, _ in cut])


def param(layer: Layer, xs: list[str]) -> str:
    """A learned tensor: its initialiser (the state-dict entry named by the layer's path), ``(1, *shape)``."""
    return layer.unsqueeze(layer.weight("", tuple(layer.p.shape)), [0])


def constant(layer: Layer, xs: list[str]) -> str:
    """``zeros``, ``ones``, ``full``: a constant ``(1, *shape)``."""
    from ... import ops

    value = {"zeros": 0, "ones": 1}.get(layer.node.op, getattr(layer.p, "value", 0))
    dtype = NUMPY[elem_type(layer.out)]
    return layer.const(np.full((1, *layer.p.shape), value), dtype, ops.get(layer.node.op).name)


def arange(layer: Layer, xs: list[str]) -> str:
    """``start + i·step`` for ``i < L`` (float steps not accumulated, as ``torch.arange``), ``(1, L)``."""
    p, n = layer.p, layer.out.shape[1]
    if layer.out.is_float():
        values = np.arange(n).astype(np.float32) * np.float32(p.step) + np.float32(p.start)
    else:
        values = np.arange(n) * p.step + p.start
    return layer.const(values.reshape(1, n), NUMPY[elem_type(layer.out)], "values")


def triangle(layer: Layer, xs: list[str]) -> str:
    """``tril``/``triu`` of the last two axes: ``Trilu``."""
    k = layer.const(layer.p.diagonal, np.int64, "diagonal")
    return layer.emit("Trilu", [xs[0], k], upper=int(layer.node.op == "triu"))


REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin"}


def reduce(layer: Layer, xs: list[str]) -> str:
    """Over the axes given (default every axis of a sample); integer and boolean sums in int64."""
    p, x = layer.p, layer.ins[0]
    axes = (
        list(range(1, x.rank))
        if p.axis is None
        else [a + x.rank if a < 0 else a for a in (p.axis if isinstance(p.axis, tuple) else (p.axis,))]
    )
    y = xs[0]
    if layer.node.op == "sum" and not x.is_float():
        y = layer.emit("Cast", [y], "int64", to=TensorProto.INT64)
    elif x.dtype == "bool":  # no boolean max/min before opset 20
        y = layer.emit("Cast", [y], "int32", to=TensorProto.INT32)
    y = layer.reduce(REDUCE[layer.node.op], y, sorted(axes), keepdims=p.keepdim)
    return layer.emit("Cast", [y], "bool", to=TensorProto.BOOL) if x.dtype == "bool" and layer.node.op != "sum" else y


def matmul(layer: Layer, xs: list[str]) -> str:
    """``torch.matmul`` per sample: a ``(N, k)`` vector is a row on the left, a column on the right."""
    a, b = layer.ins
    va, vb = a.rank == 2, b.rank == 2
    y = layer.emit("MatMul", [layer.unsqueeze(xs[0], [-2] if va else []), layer.unsqueeze(xs[1], [-1] if vb else [])])
    drop = ([-1] if vb else []) + ([-2] if va else [])
    return layer.emit("Squeeze", [y, layer.ints(drop, "axes")]) if drop else y


def transpose(layer: Layer, xs: list[str]) -> str:
    rank = layer.ins[0].rank
    a, b = (d + rank if d < 0 else d for d in (layer.p.dim0, layer.p.dim1))
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return layer.emit("Transpose", [xs[0]], perm=perm)


# ---- the table -------------------------------------------------------------------------------------------

TRANSFORMS: dict[str, Lowering] = {
    **{op: identity for op in ("identity", "linear", "dropout", "sample", "droppath")},
    **{op: _unary(t) for op, t in {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "abs": "Abs", "exp": "Exp"}.items()},
    **{op: _unary(t) for op, t in {"log": "Log", "sqrt": "Sqrt", "neg": "Neg"}.items()},
    **{op: _unary(t) for op, t in {"sin": "Sin", "cos": "Cos", "hardswish": "HardSwish"}.items()},
    "relu6": relu6,
    "hardsigmoid": hardsigmoid,
    "mish": mish,
    "glu": glu,
    "tile": tile,
    "roll": roll,
    "silu": silu,
    "step": step,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "elu": elu,
    "leaky_relu": leaky_relu,
    "prelu": prelu,
    "gelu": gelu,
    "softplus": softplus,
    "maxout": maxout,
    "arith": arith,
    "add": _chain("Add"),
    "multiply": _chain("Mul"),
    "concat": concat,
    "dense": dense,
    "embedding": embedding,
    "posembed": posembed,
    "conv": conv,
    "deconv": deconv,
    "pool": pool,
    "flatten": flatten,
    "reshape": reshape,
    "permute": permute,
    "upsample": upsample,
    "pad": pad,
    "batchnorm": batchnorm,
    "layernorm": layernorm,
    "groupnorm": groupnorm,
    "attention": attention,
    "rmsnorm": rmsnorm,
    "posenc": posenc,
    "rope": rope,
    "rnn": recurrent,
    "lstm": recurrent,
    "gru": recurrent,
    "cell": cell,
    "slice": subscript,
    "split": piece,
    "chunk": piece,
    "crop": crop,
    "param": param,
    **{op: constant for op in ("zeros", "ones", "full")},
    "arange": arange,
    "tril": triangle,
    "triu": triangle,
    **{op: reduce for op in REDUCE},
    "matmul": matmul,
    "transpose": transpose,
}
