"""Positions: dlspec's 1-based code-point spans ↔ LSP's 0-based positions in the negotiated
encoding (UTF-16 code units by default; UTF-8 bytes or UTF-32 code points when the client asks)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    """A 0-based LSP position (``character`` in the document's position encoding)."""

    line: int
    character: int


@dataclass(frozen=True)
class Range:
    start: Position
    end: Position

    def contains(self, p: Position) -> bool:
        return (self.start.line, self.start.character) <= (p.line, p.character) <= (self.end.line, self.end.character)


def _units(s: str, encoding: str) -> int:
    if encoding == "utf-32":
        return len(s)
    if encoding == "utf-8":
        return len(s.encode("utf-8", "surrogatepass"))
    return len(s) + sum(1 for c in s if ord(c) > 0xFFFF)  # utf-16: astral characters take two units


class Lines:
    """The lines of one text, for converting positions (lines split on ``\\n``, as the parser counts)."""

    def __init__(self, text: str, encoding: str = "utf-16"):
        self.text = text
        self.encoding = encoding
        raw = text.split("\n")
        self.lines = [ln[:-1] if ln.endswith("\r") else ln for ln in raw]
        self._starts = [0]
        for ln in raw[:-1]:
            self._starts.append(self._starts[-1] + len(ln) + 1)

    def line(self, n0: int) -> str:
        """Line ``n0`` (0-based), '' past the end."""
        return self.lines[n0] if 0 <= n0 < len(self.lines) else ""

    def to_lsp(self, line1: int, col1: int) -> Position:
        """A 1-based (line, code-point column) as an LSP position, clamped into the text."""
        n0 = min(max(line1 - 1, 0), max(len(self.lines) - 1, 0))
        if line1 - 1 > n0:  # past the last line: its end
            col1 = len(self.line(n0)) + 1
        src = self.line(n0)
        k = min(max(col1 - 1, 0), len(src))
        return Position(n0, _units(src[:k], self.encoding))

    def span_range(self, span) -> Range:
        """A :class:`dlspec.errors.Span` as an LSP range (a zero-width span widens to one character)."""
        start = self.to_lsp(span.line, span.col)
        end = self.to_lsp(span.end_line, span.end_col)
        if (end.line, end.character) <= (start.line, start.character):
            end = self.to_lsp(span.line, span.col + 1)
        return Range(start, end)

    def from_lsp(self, p: Position) -> tuple[int, int]:
        """An LSP position as a 1-based (line, code-point column)."""
        src = self.line(p.line)
        if self.encoding == "utf-32":
            return p.line + 1, min(p.character, len(src)) + 1
        units = 0
        for k, c in enumerate(src):
            if units >= p.character:
                return p.line + 1, k + 1
            units += _units(c, self.encoding)
        return p.line + 1, len(src) + 1

    def offset(self, p: Position) -> int:
        """The code-point offset of ``p`` in the text."""
        line1, col1 = self.from_lsp(p)
        n0 = min(line1 - 1, len(self.lines) - 1)
        return self._starts[n0] + col1 - 1

    def end(self) -> Position:
        """The position after the last character."""
        last = len(self.lines) - 1
        return Position(last, _units(self.line(last), self.encoding))

    def line_end(self, n0: int) -> Position:
        """The end of line ``n0``'s text, trailing blanks left out."""
        return Position(n0, _units(self.line(n0).rstrip(), self.encoding))
