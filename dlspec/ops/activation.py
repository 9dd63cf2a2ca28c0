"""Activation functions of the glossary (and elementwise functions used in cells).

Every op here keeps the shape, ``(N, *) → (N, *)``, except ``maxout k``
(``(N, C, *) → (N, C/k, *)``) and ``glu`` (the gated axis halved). Only ``prelu`` has params (1, or C with ``per_channel``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..dims import ShapeFail, TensorType, need_float
from .base import Op, OpParams, Slot
from .types import Pos


class _Act(Op):
    """Elementwise on a float tensor; the receptive field passes through."""

    category = "activation"
    activation = True
    keeps_field = True

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        return x


def _simple(word: str, doc: str, category: str = "activation") -> type[Op]:
    params = type(f"{word.title().replace('_', '')}Params", (OpParams,), {"__annotations__": {"op": Literal[word]}, "op": word})
    return type(
        word.title().replace("_", ""),
        (_Act,),
        {
            "__doc__": doc,
            "name": word,
            "Params": params,
            "category": category,
            "activation": category == "activation",
            "__module__": __name__,
        },
    )


Linear = _simple("linear", "``linear``: identity, ``f(x) = x``.")
Identity = _simple("identity", "``identity``: ``f(x) = x`` (same as ``linear``).")
Sigmoid = _simple("sigmoid", "``sigmoid``: ``1 / (1 + e^−x)``.")
Tanh = _simple("tanh", "``tanh``: hyperbolic tangent.")
Relu = _simple("relu", "``relu``: ``max(0, x)``.")
Silu = _simple("silu", "``silu`` (swish): ``x·sigmoid(x)``.")
Abs = _simple("abs", "``abs``: ``|x|``.", "elementwise")
Exp = _simple("exp", "``exp``: ``e^x``.", "elementwise")
Log = _simple("log", "``log``: natural logarithm.", "elementwise")
Sqrt = _simple("sqrt", "``sqrt``: square root.", "elementwise")
Neg = _simple("neg", "``neg``: ``−x``.", "elementwise")
Relu6 = _simple("relu6", "``relu6``: ``min(max(0, x), 6)`` (MobileNetV2's activation).")
Hardswish = _simple("hardswish", "``hardswish``: ``x·relu6(x + 3) / 6`` (MobileNetV3).")
Hardsigmoid = _simple("hardsigmoid", "``hardsigmoid``: ``relu6(x + 3) / 6``, PyTorch's (slope 1/6, not Keras' 0.2).")
Mish = _simple("mish", "``mish``: ``x·tanh(softplus(x))`` (Misra, 2019).")
Sin = _simple("sin", "``sin``: sine.", "elementwise")
Cos = _simple("cos", "``cos``: cosine.", "elementwise")


class StepParams(OpParams):
    op: Literal["step"] = "step"
    threshold: float = 0.0


class Step(_Act):
    """``step [threshold 0]``: binary step, ``1 if x > threshold else 0``; trained with a
    straight-through gradient (the gradient of the identity)."""

    name = "step"
    Params = StepParams
    category = "activation"
    activation = True


class AxisParams(OpParams):
    axis: int = -1


class SoftmaxParams(AxisParams):
    op: Literal["softmax"] = "softmax"


class Softmax(_Act):
    """``softmax [axis -1]``: ``e^x_i / Σ_j e^x_j`` along ``axis``."""

    name = "softmax"
    Params = SoftmaxParams
    key_aliases = {"dim": "axis"}
    category = "activation"
    activation = True

    @classmethod
    def infer(cls, p, ins, ctx):
        return _axis_checked(p, ins, ctx)


class LogSoftmaxParams(AxisParams):
    op: Literal["log_softmax"] = "log_softmax"


class LogSoftmax(_Act):
    """``log_softmax [axis -1]``: ``x_i − log Σ_j e^x_j``."""

    name = "log_softmax"
    Params = LogSoftmaxParams
    key_aliases = {"dim": "axis"}
    category = "activation"
    activation = True

    @classmethod
    def infer(cls, p, ins, ctx):
        return _axis_checked(p, ins, ctx)


class MaxoutParams(OpParams):
    op: Literal["maxout"] = "maxout"
    pieces: Pos


class Maxout(_Act):
    """``maxout k``: the maximum over each group of ``k`` consecutive channels (axis 1)
    (Goodfellow et al., 2013). Shape ``(N, C, *) → (N, C/k, *)``, ``C % k == 0``. No params;
    the linear pieces are the preceding layer's (``dense 1200 -> maxout 5``)."""

    name = "maxout"
    Params = MaxoutParams
    positional = ("pieces",)
    key_aliases = {"k": "pieces"}
    category = "activation"
    activation = True
    keeps_field = False

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        if x.rank < 2:
            raise ShapeFail(f"{ctx.name()} needs channels to group")
        c = x.shape[1]
        if not isinstance(c, int) or c % p.pieces:
            raise ShapeFail(
                f"{ctx.name()} cannot split {c} channels into groups of {p.pieces}",
                help=f"the layer before it needs a multiple of {p.pieces} outputs",
            )
        return TensorType((x.shape[0], c // p.pieces, *x.shape[2:]), x.dtype)

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return [f"maxout {p.pieces}"]


class EluParams(OpParams):
    op: Literal["elu"] = "elu"
    alpha: float = 1.0


class Elu(_Act):
    """``elu [alpha 1]``: ``x if x > 0 else alpha·(e^x − 1)``."""

    name = "elu"
    Params = EluParams
    positional = ("alpha",)
    category = "activation"
    activation = True


class LeakyReluParams(OpParams):
    op: Literal["leaky_relu"] = "leaky_relu"
    slope: Annotated[float, Field(ge=0)] = 0.01


class LeakyRelu(_Act):
    """``leaky_relu [slope 0.01]``: ``x if x > 0 else slope·x``."""

    name = "leaky_relu"
    Params = LeakyReluParams
    positional = ("slope",)
    key_aliases = {"negative_slope": "slope", "alpha": "slope"}
    category = "activation"
    activation = True


class PreluParams(OpParams):
    op: Literal["prelu"] = "prelu"
    per_channel: bool = False
    init: float = 0.25


class Prelu(_Act):
    """``prelu [per_channel]``: ``x if x > 0 else a·x`` with a learned ``a`` (He et al., 2015);
    one ``a`` (PyTorch's default) or one per channel (axis 1). Params 1 or C."""

    name = "prelu"
    Params = PreluParams
    category = "activation"
    activation = True

    @classmethod
    def count(cls, p, ins, out, ctx):
        if not p.per_channel:
            return 1, 0
        c = ins[0].shape[1] if ins[0].rank > 1 else 1
        if not isinstance(c, int):
            raise ShapeFail(f"{ctx.name()} per channel needs a known number of channels, got {c}")
        return c, 0

    @classmethod
    def state(cls, p, ins):
        n = (ins[0].shape[1] if ins[0].rank > 1 else 1) if p.per_channel else 1
        return (Slot("weight", (n,), ("full", p.init)),)


class GeluParams(OpParams):
    op: Literal["gelu"] = "gelu"
    #: 'none' = exact ``x·Φ(x)`` (PyTorch's default); 'tanh' = the tanh approximation
    approximate: Literal["none", "tanh"] = "none"


class Gelu(_Act):
    """``gelu [approximate tanh]``: ``x·Φ(x)``, exact unless ``approximate tanh``."""

    name = "gelu"
    Params = GeluParams
    category = "activation"
    activation = True


class SoftplusParams(OpParams):
    op: Literal["softplus"] = "softplus"
    beta: Annotated[float, Field(gt=0)] = 1.0


class Softplus(_Act):
    """``softplus [beta 1]``: ``log(1 + e^(beta·x)) / beta``."""

    name = "softplus"
    Params = SoftplusParams
    category = "activation"
    activation = True


def _axis_checked(p, ins, ctx):
    (x,) = ins
    need_float(ctx, x)
    if not (-x.rank < p.axis < x.rank) or p.axis in (0, -x.rank):
        raise ShapeFail(f"{ctx.name()} axis {p.axis} is not a feature axis of {x.show()} (axis 0 is the batch N)")
    return x


class GluParams(OpParams):
    op: Literal["glu"] = "glu"
    #: the axis cut into halves a, b (default the last, as ``torch.nn.GLU(dim=-1)``)
    axis: int = -1


class Glu(_Act):
    """``glu [axis -1]``: the gated linear unit (Dauphin et al., 2017), ``a·sigmoid(b)`` with ``a``
    the first and ``b`` the second half of ``axis``, as ``torch.nn.functional.glu`` (default the
    last axis, as PyTorch). Shape: ``axis`` halved, its size even. No params."""

    name = "glu"
    Params = GluParams
    positional = ("axis",)
    key_aliases = {"dim": "axis"}
    keeps_field = False

    @classmethod
    def infer(cls, p, ins, ctx):
        from .tensor import feature_axis

        (x,) = ins
        need_float(ctx, x)
        k = feature_axis(ctx, x, p.axis, "gated")
        d = x.shape[k]
        if not isinstance(d, int):
            raise ShapeFail(f"{ctx.name()} cannot halve axis {k} of {x.show(True)}: its size {d} is known only at run time")
        if d % 2:
            raise ShapeFail(
                f"{ctx.name()} halves axis {k} of {x.show(True)}, but its size {d} is odd ({d} = 2·{d // 2} + 1)",
                help=f"the layer before it needs an even size on axis {k}, e.g. {d + 1} (twice the output's {(d + 1) // 2})",
            )
        shape = list(x.shape)
        shape[k] = d // 2
        return TensorType(tuple(shape), x.dtype)

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return ["glu"] + ([f"axis {p.axis}"] if p.axis != -1 else [])
