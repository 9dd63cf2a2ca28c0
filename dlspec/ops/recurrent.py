"""Recurrent layers: Elman RNN, LSTM, GRU — PyTorch's ``nn.RNN/LSTM/GRU`` with batch first."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..bounds import MAX_LAYERS
from ..shapes import ShapeFail, TensorType, dmul, need_float, need_rank
from .base import Op, OpParams
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
            ctx.warn(f"{ctx.name()} dropout {p.dropout:g} has no effect with one layer (it applies between layers)")
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
    def lower(cls, p, ins, out, low, node):
        from ..backend.tinygrad import uniform

        layer = RecurrentLayer(cls.name, p)
        h, g = p.hidden, cls.gates
        dirs = 2 if p.bidirectional else 1
        bound = 1.0 / h**0.5  # PyTorch: every weight and bias ~ U(−1/√H, 1/√H)
        f = ins[0].shape[2]
        for layer_i in range(p.layers):
            fin = f if layer_i == 0 else dirs * h
            for d in range(dirs):
                sfx = f"_l{layer_i}" + ("_reverse" if d else "")
                setattr(layer, "weight_ih" + sfx, uniform((g * h, fin), bound))
                setattr(layer, "weight_hh" + sfx, uniform((g * h, h), bound))
                if p.bias:
                    setattr(layer, "bias_ih" + sfx, uniform((g * h,), bound))
                    setattr(layer, "bias_hh" + sfx, uniform((g * h,), bound))
        return layer

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


class RecurrentLayer:
    """``torch.nn.RNN/LSTM/GRU`` with ``batch_first``: parameters ``weight_ih_l{k}[_reverse]``
    (g·H, F_k), ``weight_hh_l{k}`` (g·H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}``; LSTM gates in the
    order i, f, g, o, GRU r, z, n. ``(N, T, F) → (N, T, D·H)`` or the last step ``(N, D·H)``.

    Compiled as a compiler would: the input projection of every step is one matmul, and each
    step's state is a kernel boundary (``contiguous``) so that every step reuses the same kernels."""

    def __init__(self, kind: str, p):
        self._cfg = (kind, p)

    def _step(self, kind, p, gx, h, c, w_hh, b_hh):
        gh = h.linear(w_hh.T, b_hh)
        if kind == "lstm":
            i, f, g, o = (gx + gh).chunk(4, dim=-1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
        elif kind == "gru":
            xr, xz, xn = gx.chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
            n = (xn + r * hn).tanh()
            h = (1 - z) * n + z * h
        else:
            h = (gx + gh).tanh() if p.nonlinearity == "tanh" else (gx + gh).relu()
        return h, c

    def _scan(self, kind, p, xp, h, c, w_hh, b_hh, reverse):
        """All steps of one layer and direction as :func:`dlspec.backend.scan.scan`: one compiled
        step replayed T times, back-propagation through time one step at a time."""
        from ..backend.scan import scan

        def step(gx, st):
            h2, c2 = self._step(kind, p, gx, st[0], st[1] if kind == "lstm" else None, w_hh, b_hh)
            return h2, ((h2, c2) if kind == "lstm" else (h2,))

        init = (h, c) if kind == "lstm" else (h,)
        return scan(step, xp, [w for w in (w_hh, b_hh) if w is not None], init, reverse=reverse)

    def __call__(self, x):
        from tinygrad import Tensor
        from tinygrad.helpers import TRAINING

        from ..backend import scan

        kind, p = self._cfg
        n, t = x.shape[0], x.shape[1]
        dirs = 2 if p.bidirectional else 1
        inp = x
        last = []
        for layer_i in range(p.layers):
            outs = []
            last = []
            for d in range(dirs):
                sfx = f"_l{layer_i}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
                b_ih, b_hh = getattr(self, "bias_ih" + sfx, None), getattr(self, "bias_hh" + sfx, None)
                xp = inp.linear(w_ih.T, b_ih)  # (N, T, g·H): all steps in one matmul
                h = Tensor.zeros(n, p.hidden, device=x.device, dtype=x.dtype)
                c = h if kind == "lstm" else None
                if scan.ENABLED:
                    ys_t = self._scan(kind, p, xp, h, c, w_hh, b_hh, reverse=d == 1)
                    outs.append(ys_t)
                    last.append(ys_t[:, t - 1] if d == 0 else ys_t[:, 0])
                    continue
                ys: list = [None] * t
                for step in range(t) if d == 0 else reversed(range(t)):
                    h, c = self._step(kind, p, xp[:, step].contiguous(), h, c, w_hh, b_hh)
                    h = h.contiguous()
                    if c is not None:
                        c = c.contiguous()
                    ys[step] = h
                outs.append(Tensor.stack(*ys, dim=1))
                last.append(h)
            inp = outs[0] if dirs == 1 else outs[0].cat(outs[1], dim=2)
            if p.dropout and TRAINING and layer_i < p.layers - 1:
                inp = inp.dropout(p.dropout)
        if p.sequences:
            return inp
        return last[0] if dirs == 1 else last[0].cat(last[1], dim=1)
