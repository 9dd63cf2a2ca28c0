"""Recurrent layers: Elman RNN, LSTM, GRU — PyTorch's ``nn.RNN/LSTM/GRU`` with batch first."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..bounds import MAX_LAYERS
from ..dims import ShapeFail, TensorType, dmul, need_float, need_rank
from .base import Op, OpParams, Slot
from .types import Pos, Rate


class RecurrentParams(OpParams):
    hidden: Pos
    #: stacked layers; each counts against the model's layer limit, checked before any work
    layers: Annotated[int, Field(gt=0, le=MAX_LAYERS)] = 1
    bidirectional: bool = False
    #: True: all steps ``(N, T, H)``; False: the last step ``(N, H)``
    sequences: bool = True
    dropout: Rate = 0.0
    bias: bool = True


class RnnParams(RecurrentParams):
    op: Literal["rnn"] = "rnn"
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class LstmParams(RecurrentParams):
    op: Literal["lstm"] = "lstm"


class GruParams(RecurrentParams):
    op: Literal["gru"] = "gru"


class _Recurrent(Op):
    positional = ("hidden",)
    key_aliases = {"hidden_size": "hidden", "num_layers": "layers", "return_sequences": "sequences"}
    category = "recurrent"
    gates = 1
    concat_axis = -1

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        need_rank(ctx, x, (3,), "(T, F) sequence")
        if not isinstance(x.shape[2], int):
            raise ShapeFail(f"{ctx.name()} needs a known number of input features, got {x.shape[2]}")
        width = p.hidden * (2 if p.bidirectional else 1)
        if p.dropout and p.layers == 1:
            ctx.warn(f"{ctx.name()} dropout {p.dropout:g} has no effect with one layer (it applies between layers)", kind="dropout_unused")
        return TensorType((x.shape[0], x.shape[1], width) if p.sequences else (x.shape[0], width), x.dtype)

    @classmethod
    def layer_count(cls, p) -> int:
        return p.layers

    @classmethod
    def per_step(cls, p, f: int) -> tuple[int, int]:
        """(params, MACs per time step) over all layers and directions."""
        dirs = 2 if p.bidirectional else 1
        g, h = cls.gates, p.hidden
        params = macs = 0
        for layer in range(p.layers):
            fin = f if layer == 0 else dirs * h
            params += dirs * (g * h * (fin + h) + (2 * g * h if p.bias else 0))
            macs += dirs * g * h * (fin + h)
        return params, macs

    @classmethod
    def count(cls, p, ins, out, ctx):
        return cls.per_step(p, ins[0].shape[2])[0], 0

    @classmethod
    def macs(cls, p, ins, out, ctx):
        return dmul(ins[0].shape[1], cls.per_step(p, ins[0].shape[2])[1])

    @classmethod
    def state(cls, p, ins):
        """PyTorch's names and init: every weight and bias ~ U(−1/√H, 1/√H)."""
        h, g = p.hidden, cls.gates
        dirs = 2 if p.bidirectional else 1
        init = ("uniform", 1.0 / h**0.5)
        slots: tuple[Slot, ...] = ()
        for layer in range(p.layers):
            fin = ins[0].shape[2] if layer == 0 else dirs * h
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                slots += (Slot("weight_ih" + sfx, (g * h, fin), init), Slot("weight_hh" + sfx, (g * h, h), init))
                if p.bias:
                    slots += (Slot("bias_ih" + sfx, (g * h,), init), Slot("bias_hh" + sfx, (g * h,), init))
        return slots

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        words = [f"{cls.name} {p.hidden}"]
        if p.layers > 1:
            words.append(f"×{p.layers} layers")
        if p.bidirectional:
            words.append("bidirectional")
        words.append("sequences" if p.sequences else "last")
        return words


class Rnn(_Recurrent):
    """``rnn hidden [layers L] [bidirectional] [sequences false]``: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``.

    Shape ``(N, T, F) → (N, T, D·H)`` or ``(N, D·H)`` (``D = 2`` if bidirectional).
    Params per layer and direction ``g·H·(F_l + H) + 2·g·H`` with ``g = 1``."""

    name = "rnn"
    Params = RnnParams
    gates = 1


class Lstm(_Recurrent):
    """``lstm hidden …``: input, forget, cell and output gates (order i, f, g, o as PyTorch).

    Shape as ``rnn``; params per layer and direction ``4·H·(F_l + H) + 8·H``."""

    name = "lstm"
    Params = LstmParams
    gates = 4


class Gru(_Recurrent):
    """``gru hidden …``: reset, update and new gates (order r, z, n as PyTorch).

    Shape as ``rnn``; params per layer and direction ``3·H·(F_l + H) + 6·H``."""

    name = "gru"
    Params = GruParams
    gates = 3
