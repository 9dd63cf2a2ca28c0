"""Fixed position signals: the Transformer's sinusoidal encoding (``posenc``) and the rotary
position embedding (``rope``). Both are functions of a step's position along axis 1 (the
sequence), with no params; the same rotation is an option of ``attention`` (``rope``).

- ``posenc`` adds Vaswani et al. (2017, §3.5)'s sinusoids to ``(N, T, D)``:
  ``PE[t, 2i] = sin(t / base^(2i/D))``, ``PE[t, 2i+1] = cos(t / base^(2i/D))``.
- ``rope`` rotates each pair ``(x_j, x_{j+D/2})`` of the last axis by the angle ``t·θ_j``,
  ``θ_j = base^(−2j/D)``, as LLaMA in HuggingFace's ``rotate_half`` form (Su et al., 2021):
  ``y = x·cos(tθ) + rotate_half(x)·sin(tθ)``, ``rotate_half(x) = (−x₂, x₁)`` for the halves
  ``x₁, x₂`` of the last axis, the angles ``tθ`` repeated for both halves.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..dims import ShapeFail, need_float
from .base import Op, OpParams

#: the wavelength base (10000 in the papers)
Base = Annotated[float, Field(gt=1)]


def frequencies(d: int, base: float) -> list[float]:
    """``base^(−2j/d)`` for ``j < d/2``: the angle per position of each pair (float64)."""
    return [base ** (-2.0 * j / d) for j in range(d // 2)]


def _even_features(ctx, x, what: str) -> int:
    d = x.shape[-1]
    if not isinstance(d, int):
        raise ShapeFail(f"{ctx.name()} needs a known feature size, got {d} from {ctx.source()}")
    if d % 2:
        raise ShapeFail(
            f"{ctx.name()} pairs the {what} of its last axis, but it has {d} (an odd number)",
            help=f"give it an even size, e.g. {d + 1}",
        )
    return d


class PosEncParams(OpParams):
    op: Literal["posenc"] = "posenc"
    base: Base = 10000.0


class PosEnc(Op):
    """``posenc [base 10000]``: adds the fixed sinusoidal position encoding of "Attention Is All
    You Need" (even features ``sin``, odd ``cos``). Shape ``(N, T, D) → (N, T, D)``, ``D`` even;
    any ``T``; no params."""

    name = "posenc"
    Params = PosEncParams
    key_aliases = {"theta": "base"}
    category = "embedding"
    concat_axis = -1

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        if x.rank != 3:
            raise ShapeFail(
                f"{ctx.name()} expects a (T, D) sequence but gets {x.show()} from {ctx.source()}",
                help="posenc adds one vector per step of axis 1: reshape to (T, D) first",
            )
        _even_features(ctx, x, "features")
        return x

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return ["posenc"] + ([f"base {p.base:g}"] if p.base != 10000.0 else [])


class RopeParams(OpParams):
    op: Literal["rope"] = "rope"
    base: Base = 10000.0


class Rope(Op):
    """``rope [base 10000]``: the rotary position embedding of a ``(T, D)`` or ``(T, heads,
    head_dim)`` sample: positions along axis 1, pairs ``(j, j + D/2)`` of the last axis rotated
    (HuggingFace's ``rotate_half``). Shape ``(N, T, *, D) → (N, T, *, D)``, ``D`` even; no params."""

    name = "rope"
    Params = RopeParams
    key_aliases = {"theta": "base"}
    category = "embedding"
    concat_axis = -1

    @classmethod
    def infer(cls, p, ins, ctx):
        (x,) = ins
        need_float(ctx, x)
        if x.rank < 3:
            raise ShapeFail(
                f"{ctx.name()} expects a (T, D) or (T, heads, head_dim) sequence but gets {x.show()} from {ctx.source()}",
                help="rope rotates the last axis by the position along axis 1",
            )
        _even_features(ctx, x, "features")
        return x

    @classmethod
    def summary(cls, p, dims: int = 2) -> list[str]:
        return ["rope"] + ([f"base {p.base:g}"] if p.base != 10000.0 else [])
