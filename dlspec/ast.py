"""Typed syntax tree of a ``.dl`` file, as written, with a source span on every node.

Built by :mod:`dlspec.parse`; consumed by :mod:`dlspec.expand` (to the graph IR) and
:mod:`dlspec.fmt` (back to canonical text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .errors import Span


@dataclass(frozen=True)
class Node:
    span: Span


# ---- expressions -----------------------------------------------------------


@dataclass(frozen=True)
class Num(Node):
    value: int | float
    text: str


@dataclass(frozen=True)
class Str(Node):
    value: str


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class ListE(Node):
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class TupleE(Node):
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class Paren(Node):
    expr: "Expr"


@dataclass(frozen=True)
class Kwarg(Node):
    name: str
    value: "Expr"


@dataclass(frozen=True)
class Call(Node):
    """``f(a, k = v)`` — a block call, an instance call or a function."""

    func: str
    func_span: Span
    args: tuple["Expr", ...]
    kwargs: tuple[Kwarg, ...]


@dataclass(frozen=True)
class Apply(Node):
    """``op arg arg key value, key value`` — a layer (or a setting) by juxtaposition.

    ``groups`` keeps the comma-separated groups as written (for ``fmt``)."""

    head: "Name | Call"
    groups: tuple[tuple["Expr", ...], ...]

    @cached_property  # read many times per layer by the expander; the node is immutable
    def args(self) -> tuple["Expr", ...]:
        return tuple(a for g in self.groups for a in g)


@dataclass(frozen=True)
class BinOp(Node):
    op: str
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class UnOp(Node):
    op: str
    operand: "Expr"


@dataclass(frozen=True)
class BoolOp(Node):
    op: str  # 'and' | 'or'
    values: tuple["Expr", ...]


@dataclass(frozen=True)
class Not(Node):
    operand: "Expr"


@dataclass(frozen=True)
class Ternary(Node):
    then: "Expr"
    cond: "Expr"
    orelse: "Expr"


@dataclass(frozen=True)
class SliceE(Node):
    """``start:stop:step`` inside a subscript; each part may be omitted (None)."""

    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"


@dataclass(frozen=True)
class EllipsisE(Node):
    """``...`` inside a subscript: as many ``:`` as the tensor's rank needs."""


@dataclass(frozen=True)
class Index(Node):
    """``x[:, 0]``, ``cfg[i][0]``: a subscript of a tensor, a list or a tuple."""

    value: "Expr"
    items: tuple["Expr | SliceE | EllipsisE", ...]


Expr = Num | Str | Bool | Name | ListE | TupleE | Paren | Call | Apply | BinOp | UnOp | BoolOp | Not | Ternary | Index


@dataclass(frozen=True)
class Chain(Node):
    """``a -> b -> c``: each stage applied to the previous one's output."""

    stages: tuple[Expr, ...]


# ---- statements --------------------------------------------------------------


@dataclass(frozen=True)
class InputStmt(Node):
    name: str
    name_span: Span
    shape: ListE
    groups: tuple[tuple[Expr, ...], ...]


@dataclass(frozen=True)
class StateStmt(Node):
    name: str
    name_span: Span
    shape: ListE
    groups: tuple[tuple[Expr, ...], ...]


@dataclass(frozen=True)
class OutputStmt(Node):
    names: tuple[str, ...]
    name_spans: tuple[Span, ...]
    chain: Chain | None


@dataclass(frozen=True)
class ParamStmt(Node):
    """``param NAME: [d1, …] init …``: a learned tensor of the block or model."""

    name: str
    name_span: Span
    shape: ListE
    groups: tuple[tuple[Expr, ...], ...]


@dataclass(frozen=True)
class AssignStmt(Node):
    """``NAME = chain``; ``a, b = chain`` (``more`` holds the names after the first);
    ``h = repeat 3 { … }`` (``compound`` instead of ``chain``)."""

    name: str
    name_span: Span
    chain: Chain | None
    gate: bool = False
    more: tuple[tuple[str, Span], ...] = ()
    compound: "CompoundStmt | None" = None

    @property
    def targets(self) -> tuple[tuple[str, Span], ...]:
        return ((self.name, self.name_span), *self.more)


@dataclass(frozen=True)
class ChainStmt(Node):
    chain: Chain


@dataclass(frozen=True)
class IfStmt(Node):
    branches: tuple[tuple[Expr, "Body"], ...]
    orelse: "Body | None"


@dataclass(frozen=True)
class Part(Node):
    """One ``word args [when cond] { … }`` part of a compound statement."""

    word: str
    word_span: Span
    args: tuple[Expr, ...]
    when: Expr | None
    body: "Body"


@dataclass(frozen=True)
class CompoundStmt(Node):
    """``residual { … } shortcut { … }``, ``concat { branch { … } … }``, ``repeat 3 { … }``…"""

    parts: tuple[Part, ...]


Stmt = InputStmt | ParamStmt | StateStmt | OutputStmt | AssignStmt | ChainStmt | IfStmt | CompoundStmt


@dataclass(frozen=True)
class Body(Node):
    stmts: tuple[Stmt, ...]


# ---- top level ---------------------------------------------------------------


@dataclass(frozen=True)
class Param(Node):
    name: str
    default: Expr | None


@dataclass(frozen=True)
class Import(Node):
    path: str


@dataclass(frozen=True)
class Def(Node):
    """``model``, ``block`` or ``cell`` definition."""

    kind: str
    name: str
    name_span: Span
    params: tuple[Param, ...] | None  # None: written without parentheses
    body: Body


@dataclass(frozen=True)
class Train(Node):
    groups: tuple[tuple[Expr, ...], ...]
    body: Body


Item = Import | Def | Train


@dataclass(frozen=True)
class Module(Node):
    items: tuple[Item, ...]
    comments: tuple[tuple[int, int, str], ...] = field(default=())  # (line, col, text)
