"""Nesting limits of a spec, and the stack the recursive passes need to stay within them.

The parser builds its tree without recursion, but the passes after it (expansion, shape
inference, the report, ``fmt``, ``draw``) walk the syntax tree recursively, a few Python
frames per level. So a spec's nesting is bounded, and checked before any of them runs:

- :func:`check_nesting` scans the text (token-wise, iteratively, before Lark sees it): at
  most :data:`MAX_BLOCK_DEPTH` nested ``{ … }`` bodies and at most :data:`MAX_EXPR_DEPTH`
  levels of brackets and operators in one expression (a long flat sum ``a + b + …`` is a
  left-deep tree, one level per operator). Beyond either, a located :class:`ParseError`.
- the expander counts the bodies it is inside, through block calls, against the same
  :data:`MAX_BLOCK_DEPTH` (a chain of blocks each calling the next nests without braces).
- :func:`headroom` gives the passes the Python stack these limits need (:data:`STACK_FRAMES`
  frames above the caller's), and :func:`deep` turns a :class:`RecursionError` that should
  not happen into a located error rather than an internal one.

The limits are documented in docs/language.md ("Limits").
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from .errors import Diagnostic, ParseError, ResolveError, Span

#: ``{ … }`` bodies nested in one another (the definition's own body counts), also through block calls
MAX_BLOCK_DEPTH = 200
#: levels of brackets ``( [`` and operators in one expression (``a + b + c`` is 3 levels)
MAX_EXPR_DEPTH = 1000
#: Python frames the expander may use before it stops with an error: a backstop for nesting
#: the counted limits do not see (block calls inside deep expressions inside block calls).
#: Measured (tests/test_nesting.py): at most 5 frames per body level and 4 per expression level.
EXPAND_FRAMES = 6 * MAX_BLOCK_DEPTH + 4 * MAX_EXPR_DEPTH + 800
#: Python frames the recursive passes get above their caller's: the expander's budget, one more
#: expression at the limit after it, and a margin
STACK_FRAMES = EXPAND_FRAMES + 4 * MAX_EXPR_DEPTH + 2000

# The tokens that open, close or separate, and the operators; strings and comments are matched
# so that their contents are skipped. Everything else (names, numbers, spaces) is not matched.
_SCAN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|->|[{}()\[\]\n;,]|\*\*|//|[-+*/%<>=!@]=?|\b(?:not|and|or|if|elif|else)\b')


def check_nesting(text: str, file: str) -> None:
    """Raise a located :class:`ParseError` if ``text`` nests deeper than the limits.

    The expression depth limited is an upper bound of the syntax tree's depth: along any path
    into an expression, one level per ``(`` or ``[`` plus every operator of each item passed
    through (operators before and after the bracket: ``[[1]] * 4`` is 3). An item ends at a
    ``,`` inside brackets; in a body, a statement ends at a newline or ``;`` (unless ``else``
    continues it), a stage at ``->``, a header at ``{``. One regular-expression scan and a
    stack; no recursion, so any text is safe to check."""
    # per open bracket: [kind, operators of its current item, deepest child of the item so far
    # (closed), deepest item so far, expression depth outside a '{']; entry 0 is the file's top level
    stack: list[list] = [["{", 0, 0, 0, 0]]
    blocks = 0  # open `{`
    depth = 0  # brackets and operators so far along the open path, from the innermost body
    head = 0  # where the current statement (or block header) of the innermost body began
    pending = False  # a newline in a body: it ends the statement unless `else` follows
    for m in _SCAN_RE.finditer(text):
        tok = m.group()
        c = tok[0]
        if c == "#":
            continue
        top = stack[-1]
        if pending:
            pending = False
            if tok != "else":
                depth -= top[1]
                top[1] = top[2] = 0
        if c == '"':
            continue
        if c == "{":
            blocks += 1
            if blocks > MAX_BLOCK_DEPTH:
                seg = text[head : m.start()]  # underline the header too: `group g {`
                start = m.start() if "\n" in seg else m.start() - len(seg.lstrip(" \t"))
                _fail(text, file, start, m.end(), f"blocks nested {blocks} deep; the limit is {MAX_BLOCK_DEPTH}")
            depth -= top[1]  # its header (`repeat n`, `if c`) is done
            top[1] = top[2] = 0
            stack.append(["{", 0, 0, 0, depth])
            depth = 0
            head = m.end()
        elif c == "(" or c == "[":
            if c == "[" and m.start() and (text[m.start() - 1].isalnum() or text[m.start() - 1] in "_)]"):
                top[1] += 1  # a subscript `x[0]` (a `[` glued to what it indexes) is an operator too
                depth += 1
            depth += 1
            if depth > MAX_EXPR_DEPTH:
                _expr_fail(text, file, m, depth)
            stack.append([c, 0, 0, 0, 0])
        elif c == "}" or c == ")" or c == "]":
            head = m.end()
            if len(stack) == 1:
                continue  # unmatched: the parser reports it
            frame = stack.pop()
            if frame[0] == "{":
                blocks -= 1
                depth = frame[4]
                continue
            depth -= 1 + frame[1]
            parent = stack[-1]
            parent[2] = max(parent[2], 1 + max(frame[3], frame[1] + frame[2]))
            if depth + parent[2] > MAX_EXPR_DEPTH:
                _expr_fail(text, file, m, depth + parent[2])
        elif c == "," or tok == "->" or c == "\n" or c == ";":
            if top[0] != "{":  # inside brackets: a ',' starts a new item; a newline means nothing
                if c == "," or tok == "->":
                    depth -= top[1]
                    top[3] = max(top[3], top[1] + top[2])
                    top[1] = top[2] = 0
            elif tok == "->":  # a new stage of a chain
                depth -= top[1]
                top[1] = top[2] = 0
            elif c != ",":  # a ',' in a body separates argument groups of one statement
                pending = True
                head = m.end()
        else:  # an operator (or a '=', counted too: an over-estimate is safe)
            top[1] += 1
            depth += 1
            if depth + top[2] > MAX_EXPR_DEPTH:
                _expr_fail(text, file, m, depth + top[2])


def _expr_fail(text: str, file: str, m: re.Match, depth: int) -> None:
    _fail(
        text,
        file,
        m.start(),
        m.end(),
        f"expression nested {depth} deep at '{m.group()}' (brackets and operators); the limit is {MAX_EXPR_DEPTH}",
        help="split it: name a part with 'name = …', or compute the value outside the spec",
    )


def _fail(text: str, file: str, start: int, end: int, message: str, help: str | None = None) -> None:
    line = text.count("\n", 0, start) + 1
    line_start = text.rfind("\n", 0, start) + 1
    span = Span(file=file, line=line, col=start - line_start + 1, end_line=line, end_col=end - line_start + 1)
    raise ParseError(Diagnostic(message, span, help=help or "move the inner part into a block of its own and call it"))


# ---- stack headroom --------------------------------------------------------------------

_lock = threading.Lock()
_active = 0
_saved: int | None = None


def _stack_depth() -> int:
    f = sys._getframe()
    n = 0
    while f is not None:
        n += 1
        f = f.f_back
    return n


@contextmanager
def headroom(frames: int | None = None) -> Iterator[None]:
    """Run with at least ``frames`` (default :data:`STACK_FRAMES`) Python frames of recursion
    allowed above the caller's; the interpreter's limit is restored when the outermost such
    block ends (only ever raised, never lowered, meanwhile)."""
    global _active, _saved
    need = _stack_depth() + (STACK_FRAMES if frames is None else frames)
    with _lock:
        if _active == 0:
            _saved = sys.getrecursionlimit()
        _active += 1
        if sys.getrecursionlimit() < need:
            sys.setrecursionlimit(need)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                sys.setrecursionlimit(_saved)
                _saved = None


F = TypeVar("F", bound=Callable[..., Any])


def deep(where: Callable[..., Span | None] | None = None) -> Callable[[F], F]:
    """Decorate a pass that recurses over a spec: run it with :func:`headroom`, and report a
    :class:`RecursionError` (which the limits should make impossible) as a spec error at
    ``where(*args, **kwargs)`` (a span, or None) instead of an internal error."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                with headroom():
                    return fn(*args, **kwargs)
            except RecursionError:
                span = None
                if where is not None:
                    try:
                        span = where(*args, **kwargs)
                    except Exception:  # noqa: BLE001 - the location is a courtesy
                        span = None
                raise ResolveError(
                    Diagnostic(
                        "the spec is nested too deeply to process (Python's stack ran out)",
                        span,
                        help=f"nest blocks at most {MAX_BLOCK_DEPTH} deep and expressions at most {MAX_EXPR_DEPTH}; "
                        "move inner parts into blocks of their own",
                    )
                ) from None

        return run  # type: ignore[return-value]

    return wrap


def too_deep(base: int) -> bool:
    """Whether the stack is more than :data:`EXPAND_FRAMES` frames deeper than ``base`` (a
    depth from :func:`stack_depth`); cheap: one walk of at most that many frames in C."""
    try:
        sys._getframe(base + EXPAND_FRAMES)
    except ValueError:
        return False
    return True


def stack_depth() -> int:
    """The number of frames on the Python stack here (including this call's caller)."""
    return _stack_depth() - 1


__all__ = [
    "EXPAND_FRAMES",
    "MAX_BLOCK_DEPTH",
    "MAX_EXPR_DEPTH",
    "STACK_FRAMES",
    "check_nesting",
    "deep",
    "headroom",
    "stack_depth",
    "too_deep",
]
