"""The op catalogue's base: typed params and how a layer's written arguments bind to them.

An op (layer kind) is a subclass of :class:`Op` in one module of :mod:`dlspec.ops`;
its ``Params`` pydantic model is the schema of what users may write after its word.
Later stages find the op's shape rule, cost, lowering and drawing style on the same class.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import Diagnostic, Span, suggest


@dataclass(frozen=True)
class Slot:
    """One tensor of a layer's state dict: its key under the layer's path (PyTorch's name, e.g.
    ``weight``, ``running_mean``, ``out_proj.bias``), its shape (PyTorch's layout), whether it is
    a buffer (not trained), its dtype, and how it is initialised (PyTorch's defaults):
    ``("uniform", bound)`` U(−bound, bound), ``("normal", std[, mean])``, ``("full", value)``,
    ``("uniform_range", low, high)`` U(low, high), ``("trunc_normal", std, mean, low, high)``
    (N(mean, std²) cut to [low, high], as ``torch.nn.init.trunc_normal_``), ``("normal_zero_row",
    std, row)`` N(0, std²) with one row zeroed (an embedding's padding row). An empty name means
    the layer's path itself is the key (a ``param``: ``class_token``, ``encoder.pos_embedding``)."""

    name: str
    shape: tuple[int, ...]
    init: tuple[Any, ...]
    buffer: bool = False
    dtype: str = "float32"

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def fan_in(shape: tuple[int, ...], fan: int, name: str) -> Slot:
    """PyTorch's default for Linear/Conv weights and biases: U(−1/√fan_in, 1/√fan_in)."""
    return Slot(name, shape, ("uniform", 1.0 / fan**0.5 if fan > 0 else 0.0))


class OpParams(BaseModel):
    """Base of every op's parameter model: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Op:
    """One layer kind. Subclasses set the class attributes below and document their
    shape contract in the docstring, e.g. ``(N, C_in, H, W) → (N, C_out, H', W')``."""

    name: ClassVar[str]
    Params: ClassVar[type[OpParams]]
    #: fields that may be given without their key, in this order
    positional: ClassVar[tuple[str, ...]] = ()
    #: other words for a key (``kernel_size`` → ``kernel``)
    key_aliases: ClassVar[dict[str, str]] = {}
    #: drawing/report category
    category: ClassVar[str] = "other"
    #: how many input tensors (min, max); max None = any
    arity: ClassVar[tuple[int, int | None]] = (1, 1)
    #: params whose values are tensors (extra inputs), e.g. attention's ``mask``
    tensor_params: ClassVar[tuple[str, ...]] = ()
    #: an activation-like op (merged into the layer it follows when drawn)
    activation: ClassVar[bool] = False
    #: where several inputs given as a tuple are concatenated (1: channels; -1: features)
    concat_axis: ClassVar[int] = 1

    # ---- shape rule and costs (overridden per op) --------------------------------

    @classmethod
    def infer(cls, p: Any, ins: list, ctx: Any) -> Any:
        """The output type. Default: elementwise on one input, shape kept."""
        return ins[0]

    @classmethod
    def count(cls, p: Any, ins: list, out: Any, ctx: Any) -> tuple[int, int]:
        """(trainable params, buffers)."""
        return 0, 0

    @classmethod
    def macs(cls, p: Any, ins: list, out: Any, ctx: Any) -> Any:
        """Multiply-accumulates per sample (a symbolic Dim where it depends on ``T``)."""
        return 0

    @classmethod
    def state(cls, p: Any, ins: list) -> tuple[Slot, ...]:
        """The layer's tensors (state-dict keys under its path, shapes, init), in the order they
        are initialised — the naming contract every target follows. Default: none."""
        return ()

    @classmethod
    def geometry(cls, p: Any, ins: list) -> Any:
        """A windowed layer's resolved :class:`~dlspec.ops.window.Window` (called after ``infer``
        succeeded); None for other ops."""
        return None

    @classmethod
    def layer_count(cls, p: Any) -> int:
        """How many layers one node of this op stands for, against the model's layer limit
        (dlspec.bounds.MAX_LAYERS): 1, or a recurrent op's stacked ``layers``."""
        return 1

    @classmethod
    def summary(cls, p: Any, dims: int = 2) -> list[str]:
        """Key params in glossary words, e.g. ``['conv 64', '3×3', '/2']``; ``dims``: spatial dims
        of the layer's output (a kernel 3 is ``3`` in 1-D, ``3×3`` in 2-D)."""
        return [cls.name]

    #: whether the layer's window (``geometry``) grows the receptive field (conv, pooling)
    field_window: ClassVar[bool] = False

    #: whether the receptive field passes through this op unchanged
    keeps_field: ClassVar[bool] = False

    # ---- argument binding -------------------------------------------------

    @classmethod
    def keys(cls) -> list[str]:
        return [f for f in cls.Params.model_fields if f != "op"]

    @classmethod
    def words(cls) -> dict[str, tuple[str, str]]:
        """Bare words that set a field: ``max`` → ``("kind", "max")`` for every Literal option."""
        cached = cls.__dict__.get("_words")  # per class: asked for at every layer, fixed by Params
        if cached is not None and cached[0] is cls.Params:
            return cached[1]
        out: dict[str, tuple[str, str]] = {}
        for fname, f in cls.Params.model_fields.items():
            if fname == "op":
                continue
            for lit in _literals(f.annotation):
                out.setdefault(lit, (fname, lit))
        cls._words = (cls.Params, out)
        return out

    @classmethod
    def is_bool_field(cls, fname: str) -> bool:
        ann = cls.Params.model_fields[fname].annotation
        return ann is bool or (get_origin(ann) in (Union, types.UnionType) and bool in get_args(ann))

    @classmethod
    def literal_ok(cls, fname: str, word: str) -> bool:
        return word in _literals(cls.Params.model_fields[fname].annotation)

    @classmethod
    def build(cls, values: dict[str, Any], spans: dict[str, Span], where: Span) -> OpParams:
        """Validate bound values into ``Params``; errors point at the offending argument."""
        diags = []
        for fname, v in values.items():  # pydantic would quietly take true for 1
            if isinstance(v, bool) and fname in cls.Params.model_fields and not cls.is_bool_field(fname):
                ann = cls.Params.model_fields[fname].annotation
                diags.append(Diagnostic(f"{cls.name} '{fname}' {_describe(ann)}, got {_show(v)}", spans.get(fname, where)))
        if diags:
            raise _BindError(diags)
        try:
            return cls.Params(op=cls.name, **values)
        except ValidationError as e:
            by_field: dict[str, list[dict]] = {}
            for err in e.errors():
                fname = str(err["loc"][0]) if err["loc"] else ""
                by_field.setdefault(fname, []).append(err)
            for fname, errs in by_field.items():
                if any(err["type"] == "missing" for err in errs):
                    diags.append(
                        Diagnostic(
                            f"{cls.name} needs '{fname}'",
                            where,
                            help=f"write it as '{cls.name} … {fname} VALUE'"
                            if fname not in cls.positional
                            else f"give it first: '{cls.name} {fname.upper()} …'",
                        )
                    )
                    continue
                got = values.get(fname, errs[0].get("input"))
                ranged = next((err for err in errs if err["type"] in _RANGE), None)
                if ranged is not None:
                    limit = next(iter(ranged.get("ctx", {}).values()), "?")
                    bad = ranged.get("input", got)
                    what = f"must be {_RANGE[ranged['type']]} {_show(limit)}"
                    item = "" if bad is got else f" (item {_show(bad)})"
                    diags.append(Diagnostic(f"{cls.name} '{fname}' {what}, got {_show(got)}{item}", spans.get(fname, where)))
                    continue
                ann = cls.Params.model_fields[fname].annotation if fname in cls.Params.model_fields else None
                diags.append(
                    Diagnostic(
                        f"{cls.name} '{fname}' {_describe(ann) if ann is not None else 'is invalid'}, got {_show(got)}",
                        spans.get(fname, where),
                        help=next((m for m in map(_custom_msg, errs) if m), None),
                    )
                )
            raise _BindError(diags) from None

    @classmethod
    def unknown_key_message(cls, word: str, env_names: list[str]) -> str:
        return f"unknown parameter '{word}' for {cls.name}{suggest(word, cls.keys() + list(cls.key_aliases) + list(cls.words()))}"


_RANGE = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<", "less_than_equal": "≤"}


class _BindError(Exception):
    def __init__(self, diags: list[Diagnostic]):
        self.diags = diags


def _custom_msg(err: dict) -> str | None:
    if err["type"] in ("value_error", "assertion_error"):
        msg = str(err.get("msg", ""))
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return None


def _literals(ann: Any) -> list[str]:
    if get_origin(ann) is Literal:
        return [a for a in get_args(ann) if isinstance(a, str)]
    if get_origin(ann) in (Union, types.UnionType, typing.Annotated):
        return [x for a in get_args(ann) for x in _literals(a)]
    return []


def _describe(ann: Any) -> str:
    """'must be an int', 'must be an int or a list of ints', 'must be one of max, avg'…"""
    return "must be " + _type_words(ann)


def _type_words(ann: Any) -> str:
    o = get_origin(ann)
    if ann is int:
        return "a whole number"
    if ann is float:
        return "a number"
    if ann is bool:
        return "true or false"
    if ann is str:
        return "a name"
    if ann is type(None):
        return "none"
    if o is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(ann))
    if o is typing.Annotated:
        base, *meta = get_args(ann)
        extra = next((m for m in meta if isinstance(m, str)), None)
        return extra or _type_words(base)
    if o in (tuple, list):
        args = [a for a in get_args(ann) if a is not Ellipsis]
        return "a list of " + " or ".join(_type_words(a) for a in args).replace("a whole number", "whole numbers")
    if o in (Union, types.UnionType):
        parts = [_type_words(a) for a in get_args(ann) if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    return getattr(ann, "__name__", str(ann))


def _show(v: Any) -> str:
    if isinstance(v, str):
        return f"'{v}'"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)
