"""Window arithmetic shared by convolution, transposed convolution and pooling
(PyTorch's formulas; ``same`` as TensorFlow for stride > 1)."""

from __future__ import annotations

from dataclasses import dataclass

from ..dims import Dim, ShapeFail, dadd, dceildiv, dfloordiv, dmul, dsub

AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


@dataclass(frozen=True)
class Window:
    """A windowed layer's geometry, one value per spatial dim, resolved once from its params and
    its input's shape by the shape pass (``Shapes.windows``): every target and the drawing read
    it instead of re-deriving ``same`` padding or broadcasting scalars.

    ``pads`` are (before, after) per dim; ``output_padding`` is a transposed convolution's rows
    added at the end (zeros for other ops)."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    output_padding: tuple[int, ...]

    @property
    def dims(self) -> int:
        return len(self.kernel)

    def effective(self) -> tuple[int, ...]:
        """The dilated kernel, ``d·(k − 1) + 1`` per dim."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def padded(self) -> bool:
        return any(a or b for a, b in self.pads)


def resolve(kernel, stride, dilation, padding, sizes: tuple[Dim, ...], op: str, output_padding=0) -> Window:
    """The :class:`Window` of a layer over input spatial ``sizes``."""
    n = len(sizes)
    k = per_dim(kernel, n, "kernel", op)
    s = per_dim(stride, n, "stride", op)
    d = per_dim(dilation, n, "dilation", op)
    pairs = tuple((a, b) for a, b in pads(padding, n, k, d, s, sizes, op))
    return Window(tuple(k), tuple(s), tuple(d), pairs, tuple(per_dim(output_padding, n, "output_padding", op)))


def per_dim(value, n: int, what: str, op: str) -> tuple:
    """An int for every spatial dim, or one per dim."""
    if isinstance(value, tuple):
        if len(value) != n:
            raise ShapeFail(f"{op} '{what}' has {len(value)} values but the input has {n} spatial dim{'s' * (n != 1)}")
        return value
    return (value,) * n


def pads(padding, n: int, kernel: tuple, dilation: tuple, stride: tuple, sizes: tuple[Dim, ...], op: str) -> list[tuple[Dim, Dim]]:
    """(before, after) padding per spatial dim."""
    if padding == "valid":
        return [(0, 0)] * n
    if padding == "same":
        out = []
        for k, d, s, size in zip(kernel, dilation, stride, sizes):
            if s == 1:
                total = d * (k - 1)
            elif isinstance(size, int):
                total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
            else:
                raise ShapeFail(f"{op} padding 'same' with stride {s} needs a known input size, got {size}")
            out.append((total // 2, total - total // 2))
        return out
    if isinstance(padding, int):
        return [(padding, padding)] * n
    if len(padding) != n:
        raise ShapeFail(f"{op} 'padding' has {len(padding)} values but the input has {n} spatial dim{'s' * (n != 1)}")
    return [(p, p) if isinstance(p, int) else (p[0], p[1]) for p in padding]


def window_out(size: Dim, k: int, s: int, d: int, pb: int, pa: int, ceil: bool = False) -> Dim:
    """``⌊(S + pb + pa − d·(k−1) − 1) / s⌋ + 1`` (``⌈…⌉`` with ceil, minus one if the last
    window would start in the right padding, as PyTorch)."""
    if isinstance(size, int) and not ceil:  # the common case, without symbolic arithmetic
        return (size + pb + pa - d * (k - 1) - 1) // s + 1
    span = dsub(dadd(size, pb + pa), d * (k - 1) + 1)
    if not ceil:
        return dadd(dfloordiv(span, s), 1)
    out = dadd(dceildiv(span, s), 1)
    if isinstance(out, int) and isinstance(size, int) and (out - 1) * s >= size + pb:
        out -= 1
    return out


def show_arith(size: Dim, k_eff: int, s: int, pb: int, pa: int) -> str:
    pad = pb + pa
    inner = f"{size} + {pad} - {k_eff}" if pad else f"{size} - {k_eff}"
    return f"({inner}) / {s} + 1"


def check_fits(op: str, axis: str, size: Dim, k_eff: int, pb: int, pa: int) -> None:
    if isinstance(size, int) and size + pb + pa < k_eff:
        raise ShapeFail(
            f"{op} window of {k_eff} does not fit the input {axis} {size}" + (f" padded to {size + pb + pa}" if pb + pa else ""),
            help="use a smaller kernel, or padding, or remove a downsampling layer before it",
        )


def dropped(size: Dim, k_eff: int, s: int, pb: int, pa: int, out: Dim) -> bool:
    """Whether floor division leaves real (non-padding) input elements at the end in no
    window. Windows smaller than the stride skip elements by design (a 1×1 stride-2
    shortcut), so only windows that tile or overlap (``k_eff ≥ s``) count."""
    if not (isinstance(size, int) and isinstance(out, int)) or k_eff < s:
        return False
    return (out - 1) * s + k_eff < pb + size


def upsampled(size: Dim, k: int, s: int, d: int, pb: int, pa: int, opad: int) -> Dim:
    """Transposed convolution: ``(S − 1)·s − pb − pa + d·(k − 1) + opad + 1``."""
    return dadd(dmul(dsub(size, 1), s), d * (k - 1) + opad + 1 - pb - pa)
