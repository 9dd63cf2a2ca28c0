"""Symbolic dimensions and tensor types: what an op's shape rule works with.

Dims are ints or :class:`Sym` — polynomials over symbolic names (``N``, ``T``, user names) with
opaque atoms for what is not polynomial (``⌊(T−3)/2⌋``). :class:`TensorType` is a tensor's static
type; :class:`Ctx` is what a rule may look at besides its inputs. The op catalogue imports this
module and nothing of the shape pass (:mod:`dlspec.shapes`), which runs the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Union

from .bounds import MAX_INT, MAX_INT_TEXT, size_problem

if TYPE_CHECKING:
    from .ir import Graph, Node

# ---- symbolic dimensions --------------------------------------------------------------


Mono = tuple[str, ...]  # a product of symbol names, sorted; () is the constant


class Sym:
    """A polynomial ``Σ aᵢ·mᵢ`` over symbol names (immutable, hashable). Non-polynomial
    results (``⌊(T−3)/2⌋``) are opaque atoms that remember how to evaluate themselves: a Sym
    carries the definitions of the atoms it uses (``atoms``: name → (floor|ceil, numerator,
    divisor)), so no table outside the value is needed and two programs, or two threads, never
    share one. An atom's name spells its definition: equality and hashing need only ``terms``."""

    __slots__ = ("terms", "atoms")

    def __init__(self, terms: dict[Mono, Fraction], atoms: dict[str, tuple[str, Any, int]] | None = None):
        self.terms = tuple(sorted((m, Fraction(a)) for m, a in terms.items() if a != 0))
        used = {n for m, _ in self.terms for n in m}
        self.atoms = {n: d for n, d in (atoms or {}).items() if n in used}

    @staticmethod
    def of(name: str, atom: tuple[str, Any, int] | None = None) -> "Sym":
        return Sym({(name,): Fraction(1)}, {name: atom} if atom is not None else None)

    @property
    def const(self) -> Fraction:
        return dict(self.terms).get((), Fraction(0))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sym) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(self.terms)

    def __str__(self) -> str:
        parts = []
        for mono, a in sorted(self.terms, key=lambda t: (len(t[0]) == 0, t[0])):
            if not mono:
                parts.append(_frac(a))
                continue
            m = "·".join(_power(mono))
            parts.append(m if a == 1 else f"-{m}" if a == -1 else f"{_frac(a)}·{m}")
        if not parts:
            return "0"
        out = parts[0]
        for p in parts[1:]:
            out += p if p.startswith("-") else "+" + p
        return out

    __repr__ = __str__

    def names(self) -> set[str]:
        return {n for m, _ in self.terms for n in m}


def _power(mono: Mono) -> list[str]:
    out = []
    for n in dict.fromkeys(mono):
        k = mono.count(n)
        out.append(n if k == 1 else f"{n}{'²' if k == 2 else '³' if k == 3 else '^' + str(k)}")
    return out


def _frac(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


Dim = Union[int, Sym]


def _poly(d: Dim) -> dict[Mono, Fraction]:
    if isinstance(d, Sym):
        return dict(d.terms)
    return {(): Fraction(d)} if d else {}


def _atoms(*dims: Dim) -> dict[str, tuple[str, Dim, int]]:
    out: dict[str, tuple[str, Dim, int]] = {}
    for d in dims:
        if isinstance(d, Sym):
            out.update(d.atoms)
    return out


def _mk(terms: dict[Mono, Fraction], *srcs: Dim) -> Dim:
    terms = {m: a for m, a in terms.items() if a != 0}
    if not terms:
        return 0
    if set(terms) == {()} and terms[()].denominator == 1:
        return int(terms[()])
    return Sym(terms, _atoms(*srcs))


def dadd(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    t = _poly(a)
    for m, v in _poly(b).items():
        t[m] = t.get(m, 0) + v
    return _mk(t, a, b)


def dsub(a: Dim, b: Dim) -> Dim:
    return dadd(a, dmul(b, -1))


def dmul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    out: dict[Mono, Fraction] = {}
    for ma, va in _poly(a).items():
        for mb, vb in _poly(b).items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0) + va * vb
    return _mk(out, a, b)


def _div(a: Dim, b: int, kind: str) -> Dim:
    if isinstance(a, int):
        return a // b if kind == "floor" else -((-a) // b)
    t = _poly(a)
    if all((v / b).denominator == 1 for v in t.values()):
        return _mk({m: v / b for m, v in t.items()}, a)
    name = f"⌊({a})/{b}⌋" if kind == "floor" else f"⌈({a})/{b}⌉"
    return Sym.of(name, (kind, a, b))


def dfloordiv(a: Dim, b: int) -> Dim:
    """``⌊a / b⌋`` for a positive int ``b``."""
    return _div(a, b, "floor")


def dceildiv(a: Dim, b: int) -> Dim:
    """``⌈a / b⌉`` for a positive int ``b``."""
    return _div(a, b, "ceil")


def dvalue(d: Dim, env: dict[str, int]) -> int | None:
    """The value of ``d`` with symbols bound by ``env`` (None if something is unbound)."""
    if isinstance(d, int):
        return d
    total = Fraction(0)
    for mono, a in d.terms:
        term = a
        for n in mono:
            if n in env:
                v = env[n]
            elif n in d.atoms:
                kind, num, b = d.atoms[n]
                x = dvalue(num, env)
                if x is None:
                    return None
                v = x // b if kind == "floor" else -((-x) // b)
            else:
                return None
            term *= v
        total += term
    return int(total) if total.denominator == 1 else None


def free_names(d: Dim) -> set[str]:
    """The user-visible symbols ``d`` depends on (looking inside opaque atoms)."""
    if isinstance(d, int):
        return set()
    out: set[str] = set()
    for n in d.names():
        out |= free_names(d.atoms[n][1]) if n in d.atoms else {n}
    return out


def dim_json(d: Dim) -> int | str:
    return d if isinstance(d, int) else str(d)


# ---- tensor types ------------------------------------------------------------------------

N = Sym.of("N")


@dataclass(frozen=True)
class TensorType:
    """A tensor's static type: shape (``N`` first) and dtype; ``vocab`` for token ids."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"
    vocab: int | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def sample(self) -> tuple[Dim, ...]:
        """The shape without the batch dim."""
        return self.shape[1:]

    def show(self, with_batch: bool = False) -> str:
        dims = self.shape if with_batch else self.sample
        return "(" + ", ".join(map(str, dims)) + ")"

    def json(self) -> list[int | str]:
        return [dim_json(d) for d in self.shape]

    def is_float(self) -> bool:
        return self.dtype.startswith(("float", "bfloat"))


class ShapeFail(Exception):
    """Raised by an op's rule; becomes a diagnostic at the node's span."""

    def __init__(self, message: str, help: str | None = None, severity: str = "error", kind: str | None = None):
        super().__init__(message)
        self.message = message
        self.help = help
        self.severity = severity
        #: a warning's name in dlspec.silence.WARNINGS (``ok NAME`` silences it at its layer)
        self.kind = kind


class Ctx:
    """What an op's rule may look at besides its inputs (one per node: kept light)."""

    __slots__ = ("graph", "node", "inputs", "types", "warnings", "node_costs", "body")

    def __init__(
        self,
        graph: Graph,
        node: Node,
        inputs: list[Node],
        types: dict[str, TensorType],
        warnings: list | None = None,
        body: Callable[..., dict] | None = None,
    ):
        self.graph, self.node, self.inputs, self.types = graph, node, inputs, types
        self.warnings: list[ShapeFail] = [] if warnings is None else warnings
        #: runs a cell's step: ``body(ctx, paths, seed) → costs by path`` (given by the shape pass)
        self.body = body

    def name(self) -> str:
        return f"{self.node.op} '{self.node.path}'"

    def source(self, i: int = 0) -> str:
        """``dense 'fc1' at lenet.dl:9:3`` — where input ``i`` comes from."""
        src = self.inputs[i]
        if src.op == "input":
            return f"input '{src.path}'"
        return f"{src.op} '{src.path}' at {src.span}"

    def warn(self, message: str, help: str | None = None, kind: str | None = None) -> None:
        """A warning of this node; ``kind`` (a name in dlspec.silence.WARNINGS) lets ``ok KIND``
        at the layer silence it, and the help says so."""
        if kind is not None:
            from .silence import hint

            help = f"{help}, {hint(kind)}" if help else hint(kind)
        self.warnings.append(ShapeFail(message, help, severity="warning", kind=kind))


def need_rank(ctx: Ctx, t: TensorType, ranks: tuple[int, ...], want: str, i: int = 0) -> None:
    if t.rank not in ranks:
        raise ShapeFail(f"{ctx.name()} expects a {want} input but gets {t.show()} from {ctx.source(i)}")


def need_float(ctx: Ctx, t: TensorType, i: int = 0) -> None:
    if not t.is_float():
        raise ShapeFail(
            f"{ctx.name()} expects a float input but gets {t.dtype} from {ctx.source(i)}",
            help="integer token ids go through 'embedding' first",
        )


def broadcast(ctx: Ctx, types: list[TensorType], what: str) -> TensorType:
    """NumPy broadcasting of several shapes (equal dims, or 1)."""
    shapes = [t.shape for t in types]
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        real = [d for d in dims if d != 1]
        d0 = real[0] if real else 1
        for d in real[1:]:
            if d != d0:
                shown = " and ".join(t.show() for t in types)
                raise ShapeFail(f"{what}: shapes {shown} do not match or broadcast (dim {k}: {d0} vs {d})")
        out.append(d0)
    dtype = types[0].dtype
    return TensorType(tuple(out), dtype)


def check_sizes(ctx: Ctx, out: TensorType, params: int, buffers: int, macs: Dim) -> None:
    """The value rule (dlspec.bounds) for what a layer derives: each dim, the elements per sample,
    params, buffers and MACs at most 2**63 − 1 (a symbolic size: each coefficient, its size at T = 1)."""
    fast = 1  # the common case, all sizes known: one product and four comparisons
    for d in out.shape[1:]:
        if d.__class__ is not int:
            break
        fast *= d
    else:
        if 0 < fast <= MAX_INT and params <= MAX_INT and buffers <= MAX_INT and macs.__class__ is int and macs <= MAX_INT:
            return
    numel: Dim = 1
    symbolic = []  # multiplied in last: one polynomial product per symbolic dim (N·T·2048: one)
    for k, d in enumerate(out.shape):
        about = size_problem(d) if d.__class__ is not int or not -MAX_INT <= d <= MAX_INT else None
        if about is not None:
            raise ShapeFail(f"{ctx.name()}: output dim {k} is too large ({about}; the limit for a size is {MAX_INT_TEXT})")
        if k:
            if d.__class__ is int:
                numel *= d
            else:
                symbolic.append(d)
    for d in symbolic:
        numel = dmul(numel, d)
    for what, v in (("elements per sample", numel), ("parameters", params), ("buffers", buffers), ("MACs per sample", macs)):
        about = size_problem(v)
        if about is not None:
            raise ShapeFail(f"{ctx.name()} has too many {what} ({about}; the limit is {MAX_INT_TEXT})")


def macs_value(m: Dim, env: dict[str, int]) -> int:
    """MACs with symbols bound (``T`` from ``--seq``); unbound symbols count as 1 (per step)."""
    if isinstance(m, int):
        return m
    full = dict(env)
    for n in free_names(m):
        full.setdefault(n, 1)
    v = dvalue(m, full)
    # a window over T shrinks it (``T−2``): at T = 1 that would be negative, and it counts as none
    return max(v, 0) if v is not None else 0


def elements(shape: tuple[Dim, ...]) -> Dim:
    total: Dim = 1
    for d in shape:
        total = dmul(total, d)
    return total


def prod(xs: Any) -> int:
    out = 1
    for x in xs:
        out *= x
    return out
