"""The graph IR: a flat, fully resolved, frozen pydantic graph per model.

Every node has a unique path (``layer2.0.conv1``), its op and typed params, its input
node paths, its source span and the stack of block calls it came from. Blocks, repeats,
conditionals and imports are gone. ``Graph.model_dump_json()`` / ``Graph.model_validate_json``
round-trip losslessly.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from .errors import Span
from .ops import AnyParams


def _tuples(v: Any) -> Any:
    """Lists inside a value (a table's rows, read back from JSON) as tuples, as the expander makes them."""
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


Value = Annotated[int | float | bool | str | tuple[Any, ...] | None, AfterValidator(_tuples)]


class Frame(BaseModel):
    """One block call on the way to a node: ``Basic(128, stride=2)`` called at a span."""

    model_config = ConfigDict(frozen=True)

    block: str
    path: str
    args: dict[str, Value]
    span: Span
    #: the block's parameters that have no default
    required: tuple[str, ...] = ()

    def label(self) -> str:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.args.items())
        return f"{self.block}({args})"

    def call(self) -> str:
        """``Basic(128, stride=2)``: leading required params by position, the others by name."""
        pos, kw, positional = [], [], True
        for k, v in self.args.items():
            if positional and k in self.required:
                pos.append(_fmt(v))
            else:
                positional = False
                kw.append(f"{k}={_fmt(v)}")
        return f"{self.block}({', '.join(pos + kw)})"


class Node(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    op: str
    params: AnyParams
    inputs: tuple[str, ...] = ()
    span: Span
    stack: tuple[Frame, ...] = ()
    #: path of the node whose weights this one uses (a shared instance called again)
    shares: str | None = None
    #: path of the ``cell`` node this node is a step of
    in_cell: str | None = None
    #: the tensor name given in the spec (``d = …``), if any
    tensor: str | None = None
    #: the node is a cell's gate (``gate f = sigmoid(…)``): drawn as one
    gate: bool = False


class Output(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    node: str


class Graph(BaseModel):
    """One model, resolved."""

    model_config = ConfigDict(frozen=True)

    name: str
    file: str
    args: dict[str, Value] = {}
    inputs: tuple[str, ...]
    outputs: tuple[Output, ...]
    nodes: tuple[Node, ...]
    span: Span

    def node(self, path: str) -> Node:
        return self._index()[path]

    def _index(self) -> dict[str, Node]:
        idx = self.__dict__.get("_idx")
        if idx is None:
            idx = {n.path: n for n in self.nodes}
            object.__setattr__(self, "_idx", idx)  # cache on a frozen model
        return idx

    def top_level(self) -> list[Node]:
        """Nodes outside cells, in execution order."""
        return [n for n in self.nodes if n.in_cell is None]


class Setting(BaseModel):
    """One line of a ``train`` section: ``optimizer sgd lr 0.01 momentum 0.9``."""

    model_config = ConfigDict(frozen=True)

    key: str
    value: Value = None
    options: dict[str, Value] = {}
    span: Span


class TrainSpec(BaseModel):
    """A validated ``train`` section."""

    model_config = ConfigDict(frozen=True)

    kind: str
    models: dict[str, str]
    settings: dict[str, Setting]
    span: Span

    def get(self, key: str, default: Any = None) -> Any:
        s = self.settings.get(key)
        return default if s is None else s.value

    def options(self, key: str) -> dict[str, Value]:
        s = self.settings.get(key)
        return dict(s.options) if s else {}


def _fmt(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)
