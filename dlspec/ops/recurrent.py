"""Recurrent layers: Elman RNN, LSTM, GRU — PyTorch's ``nn.RNN/LSTM/GRU`` with batch first."""

from __future__ import annotations

from typing import Literal

from .base import Op, OpParams
from .types import Pos, Rate


class RecurrentParams(OpParams):
    hidden: Pos
    layers: Pos = 1
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
