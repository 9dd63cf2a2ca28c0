"""Structural nodes: model inputs and user-defined recurrent cells."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..dims import N, ShapeFail, Sym, TensorType, dadd, dmul
from .base import Op, OpParams
from .types import Dim, Pos

DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "bool")
DTYPE_WORDS = {"float": "float32", "int": "int64", "long": "int64", "half": "float16"}


class InputParams(OpParams):
    op: Literal["input"] = "input"
    shape: tuple[Dim, ...]
    dtype: Literal["float32", "float16", "bfloat16", "int32", "int64", "bool", "float", "int", "long", "half"] = "float32"
    #: vocabulary size of integer token inputs
    vocab: Pos | None = None


class Input(Op):
    """``input name: [d1, d2, …] [int vocab V]``: a model input of shape ``(N, d1, d2, …)``."""

    name = "input"
    Params = InputParams
    category = "io"
    arity = (0, 0)

    @classmethod
    def infer(cls, p: InputParams, ins, ctx):
        dtype = DTYPE_WORDS.get(p.dtype, p.dtype)
        if p.vocab is not None and dtype.startswith(("float", "bfloat")):
            raise ShapeFail(f"input '{ctx.node.path}' has a vocab but is {dtype}", help="token ids are integers: add 'int'")
        shape = tuple(Sym.of(d) if isinstance(d, str) else d for d in p.shape)
        return TensorType((N, *shape), dtype, p.vocab)

    @classmethod
    def summary(cls, p: InputParams, dims: int = 2) -> list[str]:
        return ["input"]


class StateSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    shape: tuple[Dim, ...]
    #: path of the placeholder node that reads this state inside a step
    node: str
    #: path of the node whose output is the new state after a step
    update: str
    #: the ``context`` placeholder whose tensor is the state's value before the first step
    #: (``state memory: [128, 20] init memory0``); None: zeros
    init: str | None = None


class CellParams(OpParams):
    op: Literal["cell"] = "cell"
    #: the ``cell`` definition's name
    cell: str
    states: tuple[StateSpec, ...]
    #: placeholder node of the step input ``x``
    step_input: str
    #: node giving the step's output (default: the first state's update)
    step_output: str
    #: nodes of one step, in order
    body: tuple[str, ...]
    sequences: bool = True
    #: placeholder nodes of the cell's ``context`` tensors (the same at every step), in the order of
    #: the node's inputs after the sequence
    contexts: tuple[str, ...] = ()


class Cell(Op):
    """A user-defined ``cell`` run over time. Shape ``(N, T, F) → (N, T, H)`` (or ``(N, H)`` with
    ``sequences false``), ``H`` the step output's size; params are those of its body."""

    name = "cell"
    Params = CellParams
    category = "recurrent"
    arity = (1, None)  # the sequence, then the cell's contexts

    @classmethod
    def infer(cls, p: CellParams, ins, ctx):
        x, *given = ins
        if x.rank != 3:
            raise ShapeFail(f"cell {p.cell} '{ctx.node.path}' runs over a (T, F) sequence but gets {x.show()} from {ctx.source()}")
        seed = {p.step_input: TensorType((x.shape[0], x.shape[2]), x.dtype)}
        for node, t in zip(p.contexts, given):  # a context is seen whole at every step
            seed[node] = t
        for st in p.states:
            seed[st.node] = TensorType((x.shape[0], *(Sym.of(d) if isinstance(d, str) else d for d in st.shape)), x.dtype)
            if st.init is not None:
                start, want = seed[st.init], seed[st.node]
                if start.sample != want.sample or start.shape[0] not in (1, want.shape[0]) or not start.is_float():
                    raise ShapeFail(
                        f"cell {p.cell}: state '{st.name}' is {want.show()} but its initial value "
                        f"'{ctx.node.inputs[1 + p.contexts.index(st.init)]}' is {start.show()}",
                        help="the initial value needs the state's shape, with a batch of N or 1 (a param or a constant broadcasts)",
                    )
        costs = ctx.body(ctx, p.body, seed)
        for st in p.states:
            got, want = ctx.types[st.update], seed[st.node]
            if got.shape != want.shape:
                upd = next(n for n in ctx.graph.nodes if n.path == st.update)
                raise ShapeFail(
                    f"cell {p.cell}: state '{st.name}' is declared {want.show()} but its update gives {got.show()} (at {upd.span})",
                    help="the new state must have the declared shape",
                )
        ctx.node_costs = costs
        step = ctx.types[p.step_output]
        shape = (x.shape[0], x.shape[1], *step.sample) if p.sequences else step.shape
        return TensorType(shape, step.dtype)

    @classmethod
    def count(cls, p: CellParams, ins, out, ctx):
        costs = getattr(ctx, "node_costs", {})
        return sum(c.params for c in costs.values()), sum(c.buffers for c in costs.values())

    @classmethod
    def macs(cls, p: CellParams, ins, out, ctx):
        costs = getattr(ctx, "node_costs", {})
        per_step = 0
        for c in costs.values():
            per_step = dadd(per_step, c.macs)
        return dmul(ins[0].shape[1], per_step)

    @classmethod
    def summary(cls, p: CellParams, dims: int = 2) -> list[str]:
        return [f"cell {p.cell}", "sequences" if p.sequences else "last"]


class StepInParams(OpParams):
    op: Literal["step_in"] = "step_in"
    #: 'x' for the step input, else the state's (or the ``context``'s) name
    role: str


class StepIn(Op):
    """Inside a cell: the step input ``x`` ``(N, F)``, a state's value ``(N, *state)``, or a
    ``context`` tensor (as the cell is given it, the same at every step)."""

    name = "step_in"
    Params = StepInParams
    category = "io"
    arity = (0, 0)

    @classmethod
    def infer(cls, p, ins, ctx):  # seeded by the cell's rule
        raise ShapeFail("a cell's step input is only defined inside the cell")
