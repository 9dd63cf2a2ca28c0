"""Structural nodes: model inputs and user-defined recurrent cells."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

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


class StateSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    shape: tuple[Dim, ...]
    #: path of the placeholder node that reads this state inside a step
    node: str
    #: path of the node whose output is the new state after a step
    update: str


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


class Cell(Op):
    """A user-defined ``cell`` run over time. Shape ``(N, T, F) → (N, T, H)`` (or ``(N, H)`` with
    ``sequences false``), ``H`` the step output's size; params are those of its body."""

    name = "cell"
    Params = CellParams
    category = "recurrent"


class StepInParams(OpParams):
    op: Literal["step_in"] = "step_in"
    #: 'x' for the step input, else the state's name
    role: str


class StepIn(Op):
    """Inside a cell: the step input ``x`` ``(N, F)`` or a state's value ``(N, *state)``."""

    name = "step_in"
    Params = StepInParams
    category = "io"
    arity = (0, 0)
