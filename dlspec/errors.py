"""One error root for every stage, diagnostics with spans, and their rendering.

Every user-facing mistake is a :class:`Diagnostic` carried by a :class:`DlspecError`
subclass (one per stage). Rendering lives here and nowhere else.
"""

from __future__ import annotations

import difflib
import json
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from pydantic import BaseModel, ConfigDict


class Span(BaseModel):
    """A region of a source file: 1-based line and column, end exclusive."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def merge(self, other: "Span") -> "Span":
        """The smallest span covering both (same file)."""
        start = min((self.line, self.col), (other.line, other.col))
        end = max((self.end_line, self.end_col), (other.end_line, other.end_col))
        return Span(file=self.file, line=start[0], col=start[1], end_line=end[0], end_col=end[1])


@dataclass
class Note:
    message: str
    span: Span | None = None


@dataclass
class Diagnostic:
    """One message about one place in a spec."""

    message: str
    span: Span | None
    severity: str = "error"
    notes: list[Note] = field(default_factory=list)
    help: str | None = None
    #: a warning's name that ``ok NAME`` silences (dlspec.silence.WARNINGS); not in the JSON
    kind: str | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        s = self.span
        return {
            "file": s.file if s else None,
            "line": s.line if s else None,
            "col": s.col if s else None,
            "end_line": s.end_line if s else None,
            "end_col": s.end_col if s else None,
            "severity": self.severity,
            "message": self.message,
            "notes": [
                {"message": n.message, **({"file": n.span.file, "line": n.span.line, "col": n.span.col} if n.span else {})}
                for n in self.notes
            ],
            **({"help": self.help} if self.help else {}),
        }


class DlspecError(Exception):
    """Root of every error dlspec reports to users; carries ``.diagnostics``."""

    stage = "dlspec"

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic] | str, span: Span | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics, span)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.sources = current_sources()  # the files of the program it was raised for, to render it with
        super().__init__("\n".join(_plain(d) for d in self.diagnostics))


class ParseError(DlspecError):
    """A syntax error in a spec."""

    stage = "parse"


class ResolveError(DlspecError):
    """An unknown name, a bad argument, a bad block call: anything found while expanding."""

    stage = "resolve"


class ShapeError(DlspecError):
    """A shape that does not fit, found by static shape inference."""

    stage = "shape"


class BackendError(DlspecError):
    """A problem building or running a model on a device."""

    stage = "backend"


class UsageError(DlspecError):
    """A bad command line or API call (exit code 2)."""

    stage = "usage"


class DataError(DlspecError):
    """A data set that cannot be found, downloaded or read (a missing, truncated or corrupt file)."""

    stage = "data"


def _plain(d: Diagnostic) -> str:
    where = f"{d.span}: " if d.span else ""
    return f"{where}{d.severity}: {d.message}"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word``, if any is close enough."""
    choices = sorted(set(choices))
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return lowered[word.lower()]
    best = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return best[0] if best else None


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` — did you mean 'x'?`` or the empty string."""
    best = did_you_mean(word, choices)
    return f" — did you mean '{best}'?" if best else ""


class Sources:
    """The text of every file seen, for rendering source lines under messages."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}

    def add(self, name: str, text: str) -> None:
        self.text[name] = text

    def line(self, name: str, line: int) -> str | None:
        text = self.text.get(name)
        if text is None:
            return None
        lines = source_lines(text)
        return lines[line - 1] if 0 < line <= len(lines) else ""


def source_lines(text: str) -> list[str]:
    r"""The lines of a spec as the lexer counts them: split at ``\n`` only (a form feed, ``\v``,
    U+2028 and the other breaks of ``str.splitlines`` are not line ends), a CRLF's ``\r`` dropped,
    no empty last line after a final newline (as ``splitlines``)."""
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


#: characters shown as a space in a snippet: controls and Unicode line breaks would move the
#: terminal's cursor or split the line, and the caret below would point elsewhere
_UNPRINTABLE = {c: " " for c in [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, 0x85, 0x2028, 0x2029]}


_CURRENT: ContextVar[Sources] = ContextVar("dlspec_sources")


def current_sources() -> Sources:
    """The source registry of this thread (or of the block of :func:`using_sources`): each thread
    starts with its own, so two threads never see each other's files."""
    try:
        return _CURRENT.get()
    except LookupError:
        s = Sources()
        _CURRENT.set(s)
        return s


@contextmanager
def using_sources(sources: Sources) -> Iterator[Sources]:
    """Inside the block, files are registered in (and errors remember) ``sources`` — a program's own."""
    token = _CURRENT.set(sources)
    try:
        yield sources
    finally:
        _CURRENT.reset(token)


class _CurrentSources(Sources):
    """``SOURCES``: the current registry (:func:`current_sources`), under the old global name."""

    def __init__(self) -> None:  # no text of its own
        pass

    @property
    def text(self) -> dict[str, str]:  # type: ignore[override]
        return current_sources().text

    def add(self, name: str, text: str) -> None:
        current_sources().add(name, text)

    def line(self, name: str, line: int) -> str | None:
        return current_sources().line(name, line)


SOURCES: Sources = _CurrentSources()


def render(d: Diagnostic, sources: Sources | None = None, color: bool = False) -> str:
    """``file:line:col: error: message``, the source line, a caret underline, notes and help."""
    bold, red, blue, cyan, reset = ("\x1b[1m", "\x1b[31m", "\x1b[34m", "\x1b[36m", "\x1b[0m") if color else ("",) * 5
    sev_color = red if d.severity == "error" else cyan
    out = []
    where = f"{d.span}: " if d.span else "dlspec: "
    out.append(f"{bold}{where}{sev_color}{d.severity}:{reset}{bold} {d.message}{reset}")
    if d.span:
        out.extend(_snippet(d.span, sources, blue, red, reset))
    for n in d.notes:
        where = f"{n.span}: " if n.span else ""
        out.append(f"{where}{cyan}note:{reset} {n.message}")
    if d.help:
        out.append(f"{cyan}help:{reset} {d.help}")
    return "\n".join(out)


def _snippet(span: Span, sources: Sources | None, blue: str, red: str, reset: str) -> list[str]:
    src = (sources or SOURCES).line(span.file, span.line)
    if src is None:
        return []
    src = src.expandtabs(1).translate(_UNPRINTABLE)
    width = len(str(span.line))
    end = span.end_col if span.end_line == span.line else len(src) + 1
    n = max(1, end - span.col)
    gutter = f"{blue}{' ' * width} |{reset}"
    return [
        gutter,
        f"{blue}{span.line} |{reset} {src}",
        f"{gutter} {' ' * (span.col - 1)}{red}^{'~' * (n - 1)}{reset}",
    ]


def render_all(diags: Iterable[Diagnostic], sources: Sources | None = None, color: bool = False) -> str:
    return "\n".join(render(d, sources, color) for d in diags)


def to_json(diags: Iterable[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diags], indent=2)
