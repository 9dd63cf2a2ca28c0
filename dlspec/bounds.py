"""Bounds on values and on work, checked before the work they bound is done.

One rule for values: every whole number a spec writes or computes is at most
:data:`MAX_INT` (2**63 − 1) in magnitude, and every decimal is finite. Arithmetic checks
it *before* computing (``**`` from the operands' bit lengths), so nothing huge is ever
built; literals are checked before they are converted; the same bound holds for what shape
inference derives (a layer's sizes, elements, parameters and MACs) and for the report's
figures. Work: a model expands to at most :data:`MAX_LAYERS` layers, its ``repeat`` loops
run at most :data:`MAX_ITERATIONS` iterations in all, it makes at most :data:`MAX_CALLS`
block calls, and a spec file is a regular file of at most :data:`MAX_SOURCE_BYTES` bytes.
docs/language.md ("Limits") documents them; nesting limits are in :mod:`dlspec.limits`.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

from .errors import SOURCES, Diagnostic, ParseError, Span, UsageError

#: the largest magnitude of a whole number (int64's maximum)
MAX_INT = 2**63 - 1
MAX_INT_TEXT = "2**63 − 1"
#: layers (graph nodes, a recurrent op counting once per stacked layer) one model expands to
MAX_LAYERS = 100_000
#: iterations of every ``repeat`` of one model together (nested repeats multiply)
MAX_ITERATIONS = 100_000
#: block (and model, cell, instance) calls one model expands
MAX_CALLS = 100_000
#: bytes of one spec file (the file named on the command line and each import)
MAX_SOURCE_BYTES = 1 << 20

_DECIMAL = "about 1.8e308 for a decimal"


def number_problem(v: Any) -> str | None:
    """Why ``v`` breaks the value rule (``"is too large (…)"``), or None when it keeps it."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        if -MAX_INT <= v <= MAX_INT:
            return None
        return f"is too large (about 2**{v.bit_length() - 1}; the limit for a number is {MAX_INT_TEXT})"
    if isinstance(v, float) and not math.isfinite(v):
        return f"is too large (not a finite number; the limit for a number is {MAX_INT_TEXT}, {_DECIMAL})"
    return None


def pow_problem(base: Any, exp: Any) -> str | None:
    """Why ``base ** exp`` would break the value rule, estimated without computing it (ints:
    from the base's bit length; decimals: from the logarithm), or None when it is safe to compute
    (the result is then at most ~2**126, and :func:`number_problem` decides)."""
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) >= 2:
        bits = (abs(base).bit_length() - 1) * exp  # |base| ** exp ≥ 2 ** bits
        if bits > 63:
            return f"is too large (at least 2**{bits}; the limit for a number is {MAX_INT_TEXT})"
        return None
    if base == 0 or exp == 0:
        return None
    try:
        size = float(exp) * math.log2(abs(float(base)))
    except (OverflowError, ValueError):
        return None
    if size >= 1024:  # a float is below 2**1024
        about = f"about 2**{int(size)}" if math.isfinite(size) else "not a finite number"
        return f"is too large ({about}; the limit for a number is {MAX_INT_TEXT}, {_DECIMAL})"
    return None


def literal_problem(text: str) -> str | None:
    """Why the number literal ``text`` breaks the rule, decided before converting it
    (a 5,000-digit literal is never turned into an int)."""
    digits = text.lstrip("+-")
    if not any(c in digits for c in ".eE"):
        significant = len(digits.lstrip("0"))
        if significant > len(str(MAX_INT)):
            return f"is too large ({significant:,} digits; the limit for a number is {MAX_INT_TEXT})"
        return number_problem(int(text))
    return number_problem(float(text))


def size_problem(v: Any) -> str | None:
    """``"about 2**k"`` when a derived size (an int, or each coefficient of a symbolic dim,
    i.e. its size at T = 1) exceeds :data:`MAX_INT`; else None."""
    coeffs = [v] if isinstance(v, int) else [a for _, a in getattr(v, "terms", ())]
    worst = max((abs(c) for c in coeffs), default=0)
    if worst > MAX_INT:
        return f"about 2**{int(worst).bit_length() - 1}"
    return None


# ---- spec files ---------------------------------------------------------------------------


class SourceProblem(Exception):
    """A spec file that cannot be read; ``kind`` is 'missing', 'special', 'size' or 'io'."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "a special file"


def read_bytes(path: Path) -> bytes:
    """The bytes of a spec file: a regular file (checked before it is opened, and again on the
    descriptor, opened non-blocking so that a pipe swapped in cannot block) of at most
    :data:`MAX_SOURCE_BYTES`, read in a bounded loop (a file may grow, or lie about its size)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceProblem("missing", "no such file") from None
    except OSError as e:
        raise SourceProblem("io", e.strerror or str(e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceProblem("special", f"{_kind(st.st_mode)}, not a regular file")
    limit = f"a spec file may have at most {MAX_SOURCE_BYTES:,} bytes (1 MiB)"
    if st.st_size > MAX_SOURCE_BYTES:
        raise SourceProblem("size", f"the file is {st.st_size:,} bytes; {limit}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise SourceProblem("io", e.strerror or str(e)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the stat and the open
            raise SourceProblem("special", f"{_kind(mode)}, not a regular file")
        chunks, size = [], 0
        while size <= MAX_SOURCE_BYTES:
            chunk = os.read(fd, MAX_SOURCE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_SOURCE_BYTES:
            raise SourceProblem("size", f"the file is more than {MAX_SOURCE_BYTES:,} bytes; {limit}")
        return b"".join(chunks)
    except OSError as e:
        raise SourceProblem("io", e.strerror or str(e)) from None
    finally:
        os.close(fd)


def decode(data: bytes, file: str) -> str:
    """UTF-8 text, or a :class:`ParseError` at the line and column of the first invalid byte
    (the snippet shows that line, the byte as U+FFFD)."""
    if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark (Windows editors write one): not part of the text
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start].decode("utf-8")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        SOURCES.add(file, data.decode("utf-8", errors="replace"))
        bad = " ".join(f"0x{b:02x}" for b in data[e.start : e.end])
        raise ParseError(
            Diagnostic(
                f"byte {bad} is not valid UTF-8",
                Span(file=file, line=line, col=col, end_line=line, end_col=col + 1),
                help="a spec is UTF-8 text: save the file as UTF-8",
            )
        ) from None


def read_source(path: Path, file: str) -> str:
    """The text of the spec file named on the command line (or given to ``dlspec.load``): a
    missing or special file is a :class:`UsageError` (exit 2); a file over the size limit or
    not valid UTF-8 is a :class:`ParseError` (exit 1), the latter at the byte's position."""
    try:
        data = read_bytes(path)
    except SourceProblem as p:
        if p.kind == "size":
            raise ParseError(Diagnostic(p.message, Span(file=file, line=1, col=1, end_line=1, end_col=2))) from None
        raise UsageError(f"no such file: {path}" if p.kind == "missing" else f"cannot read {path}: {p.message}") from None
    return decode(data, file)
