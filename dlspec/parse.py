"""Stage 1: text → typed AST (:mod:`dlspec.ast`) with source spans.

The Lark grammar lives in ``grammar/dlspec.lark`` (shipped inside the wheel as
``dlspec/grammar/dlspec.lark``) and is built once, LALR, with positions.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast as A
from .bounds import literal_problem
from .errors import SOURCES, Diagnostic, DlspecError, Note, ParseError, Span, source_lines
from .limits import check_nesting


def grammar_path() -> Path:
    """The grammar file: inside the package when installed, else the repository's."""
    here = Path(__file__).resolve().parent
    for p in (here / "grammar" / "dlspec.lark", here.parent / "grammar" / "dlspec.lark"):
        if p.is_file():
            return p
    raise FileNotFoundError("dlspec grammar file dlspec.lark not found beside the package")


_OPEN = {"LPAR": "RPAR", "LSQB": "RSQB", "LSUB": "RSQB", "LBRACE": "RBRACE"}
_CLOSE = {"RPAR": ("LPAR",), "RSQB": ("LSQB", "LSUB"), "RBRACE": ("LBRACE",)}
# After these, a newline cannot end a statement.
_NO_NL_AFTER = {None, "_NL", "LBRACE", "_ARROW"}
# Before these, a newline is not a statement end either.
_NO_NL_BEFORE = {"_ARROW", "RBRACE", "ELSE", "ELIF"}


class _PostLex:
    """Drops newlines that cannot end a statement; marks top-level commas.

    Inside ``()`` and ``[]`` newlines are insignificant and a comma separates
    items; outside them a comma separates argument groups (``ACOMMA``)."""

    always_accept = ("_NL", "COMMA")

    def __init__(self) -> None:
        self.local = threading.local()

    def process(self, stream):
        stack: list[Token] = []
        self.local.open_stack = stack
        pending: Token | None = None
        prev: str | None = None
        for tok in stream:
            t = tok.type
            if t == "_NL":
                if any(s.type != "LBRACE" for s in stack) or prev in _NO_NL_AFTER:
                    continue
                pending = pending or tok
                continue
            if pending is not None:
                # `}` newline `shortcut {` continues the residual, as `else` continues an `if`
                if t not in _NO_NL_BEFORE and not (t == "NAME" and tok == "shortcut" and prev == "RBRACE"):
                    yield pending
                    prev = "_NL"
                pending = None
            if t in _OPEN:
                stack.append(tok)
            elif t in _CLOSE and stack and stack[-1].type in _CLOSE[t]:
                stack.pop()
            if t == "COMMA" and not any(s.type != "LBRACE" for s in stack):
                tok = Token.new_borrow_pos("ACOMMA", tok.value, tok)
                t = "ACOMMA"
            yield tok
            prev = t


_comments = threading.local()


def _on_comment(tok: Token) -> None:
    _comments.items.append((tok.line, tok.column, str(tok)))


@lru_cache(maxsize=1)
def _parser() -> tuple[Lark, _PostLex]:
    post = _PostLex()
    lark = Lark.open(
        str(grammar_path()),
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        postlex=post,
        maybe_placeholders=True,
        lexer_callbacks={"COMMENT": _on_comment},
        cache=_cache_file(),
    )
    return lark, post


def _cache_file() -> str | bool:
    """Where Lark keeps the analysed grammar (a pickle, checked against the grammar's hash):
    it makes building the parser ~10× faster in each new process. In the user's own cache
    directory rather than the shared temp directory; no cache if that cannot be made."""
    import os
    import sys

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    d = os.path.join(base, "dlspec")
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return os.path.join(d, f"grammar-py{sys.version_info[0]}{sys.version_info[1]}.lark-cache")


def parse(text: str, file: str = "<string>") -> A.Module:
    """Parse one ``.dl`` source into a :class:`dlspec.ast.Module`; raises :class:`ParseError`."""
    SOURCES.add(file, text)
    check_nesting(text, file)  # before Lark: the passes after it recurse per nesting level
    lark, post = _parser()
    _comments.items = []
    try:
        tree = lark.parse(text)
    except UnexpectedInput as e:
        raise ParseError(_explain(e, file, text, getattr(post.local, "open_stack", []))) from None
    try:
        module = _transform(_Build(file), tree)
    except VisitError as e:
        if isinstance(e.orig_exc, DlspecError):
            raise e.orig_exc from None
        raise
    return A.Module(module.span, module.items, tuple(_comments.items))


# ---- syntax errors -------------------------------------------------------------

_TOKEN_WORDS = {
    "_NL": "end of line",
    "$END": "end of file",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "LSUB": "'['",
    "ELLIPSIS": "'...'",
    "RSQB": "']'",
    "COMMA": "','",
    "ACOMMA": "','",
    "_ARROW": "'->'",
    "EQUAL": "'='",
    "COLON": "':'",
    "NAME": "a name",
    "CALLNAME": "a call",
    "NUMBER": "a number",
    "STRING": "a string",
}


#: the grammar's keywords: never names (``'gate' is a reserved word``)
RESERVED = (
    "model",
    "block",
    "cell",
    "import",
    "train",
    "input",
    "param",
    "state",
    "output",
    "gate",
    "if",
    "elif",
    "else",
    "when",
    "and",
    "or",
    "not",
    "true",
    "false",
)


#: reserved words that a spec writes where a name goes by mistake rather than as a misplaced keyword
_NAME_LIKE = ("model", "block", "cell", "train", "input", "param", "state", "output", "gate", "true", "false")


def _reserved(word: str, span: Span) -> Diagnostic:
    return Diagnostic(
        f"'{word}' is a reserved word and cannot be a name",
        span,
        help=f"choose another name, e.g. '{word}_' or 'my_{word}'; reserved: {' '.join(RESERVED)}",
    )


def _word(t: str) -> str:
    return _TOKEN_WORDS.get(t, f"'{t.lower()}'" if t.isalpha() else t)


def _tok_span(file: str, tok: Token, text: str) -> Span:
    if tok.type == "$END" or tok.line is None:
        lines = source_lines(text) or [""]  # lines as the lexer counts them (``\n`` only)
        n = len(lines)
        col = len(lines[-1]) + 1
        return Span(file=file, line=n, col=col, end_line=n, end_col=col + 1)
    end_line = tok.end_line or tok.line
    end_col = tok.end_column or tok.column + max(1, len(tok))
    if tok.type == "_NL":
        end_line, end_col = tok.line, tok.column + 1
    return Span(file=file, line=tok.line, col=tok.column, end_line=end_line, end_col=end_col)


#: the line breaks of ``str.splitlines`` other than ``\n``, ``\r`` and the form feed (whitespace)
_LINE_BREAKS = "\v\x1c\x1d\x1e\x85\u2028\u2029"


def _explain(e: UnexpectedInput, file: str, text: str, open_stack: list[Token]) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        span = Span(file=file, line=e.line, col=e.column, end_line=e.line, end_col=e.column + 1)
        if ch in '"':
            return Diagnostic("unterminated string", span, help='close the string with " on the same line')
        if ch in _LINE_BREAKS:  # what str.splitlines() would break at: not a line end in a spec, nor a space
            return Diagnostic(f"unexpected character {ch!r}", span, help="a line ends only at a newline; remove this character")
        return Diagnostic(f"unexpected character {ch!r}", span)
    tok: Token = e.token if isinstance(e, (UnexpectedToken, UnexpectedEOF)) and hasattr(e, "token") else None
    if tok is None:
        tok = Token("$END", "")
    expected = set(getattr(e, "expected", None) or getattr(e, "accepts", None) or ())
    span = _tok_span(file, tok, text)
    t = tok.type
    unclosed = [s for s in open_stack]
    if t == "$END" and unclosed:
        o = unclosed[-1]
        closer = {"LBRACE": "}", "LPAR": ")", "LSQB": "]", "LSUB": "]"}[o.type]
        return Diagnostic(
            f"'{o}' is never closed",
            Span(file=file, line=o.line, col=o.column, end_line=o.line, end_col=o.column + 1),
            notes=[Note("the file ends here", span)],
            help=f"add '{closer}' to close it",
        )
    prev = _prev_token_type(text, tok)
    word, wspan = _prev_word(file, text, tok)
    if str(tok) in RESERVED and t != "NAME" and ("NAME" in expected or "CALLNAME" in expected):
        # `as gate`, `block B(input)`, `a, output = …`; a misplaced `else` or `and` keeps the usual message
        after = text[tok.end_pos :].lstrip(" \t")[:1] if tok.end_pos is not None else ""
        if (
            str(tok) in _NAME_LIKE
            or word in ("as", "input", "param", "state", "output", "gate", "model", "block", "cell")
            or after in "=:,)"
        ):
            return _reserved(str(tok), span)
    if word in RESERVED and t in ("EQUAL", "ACOMMA", "COMMA") and ("NAME" in expected or word in ("true", "false")):
        return _reserved(word, wspan)  # `gate = …`, `input, b = …`, `true = 1`
    if prev == "," and t in ("_NL", "$END", "RBRACE", "_ARROW", "RPAR", "RSQB"):
        return Diagnostic("stray ',' at the end of the arguments", _prev_span(file, text, tok), help="remove the ','")
    if t == "RBRACE" and unclosed and unclosed[-1].type != "LBRACE":  # `[3, 4` then `}`
        o = unclosed[-1]
        closer = {"LPAR": ")", "LSQB": "]", "LSUB": "]"}[o.type]
        return Diagnostic(
            f"'{o}' is never closed",
            Span(file=file, line=o.line, col=o.column, end_line=o.line, end_col=o.column + 1),
            notes=[Note("'}' comes before it is closed", span)],
            help=f"add '{closer}' to close it",
        )
    if t == "RBRACE" and "RBRACE" not in expected and _braces_before(text, tok.start_pos) <= 0:
        return Diagnostic("unmatched '}'", span, help="remove it, or add the '{' it should close")
    if t in ("RPAR", "RSQB") and t not in expected:
        return Diagnostic(f"unmatched '{tok}'", span)
    if prev == "->" and t in ("_NL", "$END", "RBRACE"):
        return Diagnostic("'->' must be followed by a layer", _prev_span(file, text, tok))
    if t == "ACOMMA" or t == "COMMA":
        return Diagnostic("unexpected ','", span, help="arguments are separated by spaces; ',' separates groups of 'key value' pairs")
    if t == "EQUAL":
        return Diagnostic("unexpected '='", span, help="a tensor name goes first: 'name = layer …'; inside a call write 'key = value'")
    if t == "NUMBER" and "_NL" in expected:
        return Diagnostic(f"unexpected number {tok}", span, help="two statements on one line need ';' or a newline between them")
    if t == "_NL" and "RPAR" in expected:
        return Diagnostic("')' expected", span)
    words = sorted({_word(x) for x in expected if not x.startswith("__")})
    exp = ""
    if words and len(words) <= 8:
        exp = "; expected " + ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]
    what = _word(t) if t in ("_NL", "$END") else f"'{tok}'"
    return Diagnostic(f"unexpected {what}{exp}", span)


def code_chars(text: str, end: int | None = None) -> Iterator[tuple[int, str]]:
    """``(index, char)`` of ``text[:end]`` outside comments and strings (an unclosed string
    ends at its line's end)."""
    i, n = 0, len(text) if end is None else min(end, len(text))
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        yield i, c
        i += 1


def _braces_before(text: str, pos: int) -> int:
    """Open minus closed braces in ``text[:pos]``, ignoring comments and strings."""
    return sum((c == "{") - (c == "}") for _, c in code_chars(text, pos))


def _prev_index(text: str, tok: Token) -> int:
    pos = tok.start_pos if tok.type != "$END" and tok.start_pos is not None else len(text)
    i = pos - 1
    while i >= 0 and text[i] in " \t\r\n":
        i -= 1
    return i


def _prev_token_type(text: str, tok: Token) -> str:
    i = _prev_index(text, tok)
    if i < 0:
        return ""
    if text[i] == ">" and i > 0 and text[i - 1] == "-":
        return "->"
    return text[i]


def _prev_word(file: str, text: str, tok: Token) -> tuple[str, Span | None]:
    """The name or keyword just before ``tok`` (on any line), with its span."""
    end = _prev_index(text, tok) + 1
    start = end
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    if start == end or text[start].isdigit():
        return "", None
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return text[start:end], Span(file=file, line=line, col=col, end_line=line, end_col=col + end - start)


def _prev_span(file: str, text: str, tok: Token) -> Span:
    i = _prev_index(text, tok)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return Span(file=file, line=line, col=col, end_line=line, end_col=col + 1)


# ---- tree → AST ------------------------------------------------------------------


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")


def _unescape(raw: str, span: Span) -> str:
    """A string literal's value: JSON's escapes (what ``fmt`` writes), the text kept as is otherwise."""

    def one(m: re.Match) -> str:
        e = m.group(1)
        if e in _ESCAPES:
            return _ESCAPES[e]
        if len(e) == 5 and not 0xD800 <= int(e[1:], 16) <= 0xDFFF:  # a lone surrogate is no character
            return chr(int(e[1:], 16))
        col = span.col + 1 + m.start()
        raise ParseError(
            Diagnostic(
                f"unknown escape '\\{e}' in a string",
                Span(file=span.file, line=span.line, col=col, end_line=span.line, end_col=col + 1 + len(e)),
                help='escapes are \\" \\\\ \\n \\t \\r \\b \\f \\uXXXX',
            )
        )

    return _ESCAPE_RE.sub(one, raw) if "\\" in raw else raw


def _num(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


@v_args(meta=True, inline=True)
class _Build(Transformer):
    def __init__(self, file: str):
        super().__init__(visit_tokens=False)  # no token callbacks: skip a failing getattr per token
        self.file = file
        # v_args re-wraps a method (functools.update_wrapper) on every lookup, i.e. per tree node:
        # bind each callback once per parse instead.
        for k, v in vars(_Build).items():
            if hasattr(v, "visit_wrapper"):
                setattr(self, k, getattr(self, k))

    def sp(self, meta) -> Span:
        return Span(file=self.file, line=meta.line, col=meta.column, end_line=meta.end_line, end_col=meta.end_column)

    def tsp(self, tok: Token) -> Span:
        return Span(file=self.file, line=tok.line, col=tok.column, end_line=tok.end_line, end_col=tok.end_column)

    # expressions
    def name(self, meta, tok):
        return A.Name(self.tsp(tok), str(tok))

    def number(self, meta, tok):
        problem = literal_problem(str(tok))  # the value rule, before converting: no 5,000-digit ints
        if problem is not None:
            shown = str(tok) if len(tok) <= 30 else f"{str(tok)[:12]}…{str(tok)[-6:]}"
            raise ParseError(Diagnostic(f"the number {shown} {problem}", self.tsp(tok)))
        return A.Num(self.tsp(tok), _num(str(tok)), str(tok))

    def string(self, meta, tok):
        return A.Str(self.tsp(tok), _unescape(str(tok)[1:-1], self.tsp(tok)))

    def true(self, meta):
        return A.Bool(self.sp(meta), True)

    def false(self, meta):
        return A.Bool(self.sp(meta), False)

    def list(self, meta, *items):
        return A.ListE(self.sp(meta), tuple(i for i in items if i is not None))

    def paren(self, meta, e):
        return A.Paren(self.sp(meta), e)

    def tuple(self, meta, *items):
        return A.TupleE(self.sp(meta), tuple(i for i in items if i is not None))

    def index(self, meta, value, _open, *items):
        return A.Index(self.sp(meta), value, tuple(i for i in items if i is not None and not isinstance(i, Token)))

    def slice(self, meta, start, stop, step=None):
        return A.SliceE(self.sp(meta), start, stop, step)

    def ellipsis(self, meta):
        return A.EllipsisE(self.sp(meta))

    def kwarg(self, meta, name, value):
        return A.Kwarg(self.sp(meta), str(name), value)

    def call(self, meta, fname, *args):
        args = [a for a in args if a is not None]
        pos = tuple(a for a in args if not isinstance(a, A.Kwarg))
        kws = tuple(a for a in args if isinstance(a, A.Kwarg))
        return A.Call(self.sp(meta), str(fname), self.tsp(fname), pos, kws)

    def apply(self, meta, head, *rest):
        head = self.name(meta, head) if isinstance(head, Token) else head
        return A.Apply(self.sp(meta), head, _split_groups(rest))

    def arg_groups(self, meta, *args):
        return _split_groups(args)

    def binop(self, meta, left, op, right):
        return A.BinOp(self.sp(meta), str(op), left, right)

    def unop(self, meta, op, operand):
        return A.UnOp(self.sp(meta), str(op), operand)

    def pow_(self, meta, left, right):
        return A.BinOp(self.sp(meta), "**", left, right)

    def compare(self, meta, left, op=None, right=None):
        if op is None:
            return left
        return A.BinOp(self.sp(meta), str(op), left, right)

    def and_(self, meta, *vals):
        return vals[0] if len(vals) == 1 else A.BoolOp(self.sp(meta), "and", vals)

    def or_(self, meta, *vals):
        return vals[0] if len(vals) == 1 else A.BoolOp(self.sp(meta), "or", vals)

    def not_(self, meta, operand):
        return A.Not(self.sp(meta), operand)

    def ternary(self, meta, then, cond, orelse):
        return A.Ternary(self.sp(meta), then, cond, orelse)

    def chain(self, meta, *stages):
        return A.Chain(self.sp(meta), tuple(stages))

    # statements
    def input_stmt(self, meta, name, shape, groups):
        return A.InputStmt(self.sp(meta), str(name), self.tsp(name), shape, groups)

    def state_stmt(self, meta, name, shape, groups):
        return A.StateStmt(self.sp(meta), str(name), self.tsp(name), shape, groups)

    def output_assign(self, meta, name, chain):
        return A.OutputStmt(self.sp(meta), (str(name),), (self.tsp(name),), chain)

    def output_names(self, meta, *names):
        names = [n for n in names if n.type == "NAME"]
        return A.OutputStmt(self.sp(meta), tuple(map(str, names)), tuple(map(self.tsp, names)), None)

    def assign_stmt(self, meta, *parts):
        names = [p for p in parts[:-1] if isinstance(p, Token) and p.type == "NAME"]
        value = parts[-1]
        more = tuple((str(n), self.tsp(n)) for n in names[1:])
        first = names[0]
        if isinstance(value, A.CompoundStmt):
            return A.AssignStmt(self.sp(meta), str(first), self.tsp(first), None, more=more, compound=value)
        return A.AssignStmt(self.sp(meta), str(first), self.tsp(first), value, more=more)

    def param_stmt(self, meta, name, shape, groups):
        return A.ParamStmt(self.sp(meta), str(name), self.tsp(name), shape, groups)

    def gate_stmt(self, meta, name, chain):
        return A.AssignStmt(self.sp(meta), str(name), self.tsp(name), chain, gate=True)

    def chain_stmt(self, meta, chain):
        return A.ChainStmt(self.sp(meta), chain)

    def elif_part(self, meta, cond, body):
        return (cond, body)

    def if_stmt(self, meta, cond, body, *rest):
        elifs = [r for r in rest[:-1] if r is not None]
        orelse = rest[-1] if rest else None
        return A.IfStmt(self.sp(meta), ((cond, body), *elifs), orelse)

    def part(self, meta, word, *rest):
        body = rest[-1]
        when = rest[-2]
        args = tuple(a for a in rest[:-2] if a is not None)
        return A.Part(self.sp(meta), str(word), self.tsp(word), args, when, body)

    def compound_stmt(self, meta, *parts):
        return A.CompoundStmt(self.sp(meta), tuple(parts))

    def body(self, meta, *stmts):
        return A.Body(self.sp(meta), tuple(s for s in stmts if s is not None))

    # top level
    def param(self, meta, name, default):
        return A.Param(self.sp(meta), str(name), default)

    def bare_name(self, meta, tok):
        return (str(tok), self.tsp(tok), None)

    def param_name(self, meta, tok, *params):
        return (str(tok), self.tsp(tok), tuple(p for p in params if p is not None))

    def def_kind(self, meta, tok):
        return str(tok)

    def def_stmt(self, meta, kind, name, body):
        return A.Def(self.sp(meta), kind, name[0], name[1], name[2], body)

    def import_stmt(self, meta, tok):
        return A.Import(self.sp(meta), _unescape(str(tok)[1:-1], self.tsp(tok)))  # a string like any other

    def train_stmt(self, meta, groups, body):
        return A.Train(self.sp(meta), groups, body)

    def start(self, meta, *items):
        items = tuple(i for i in items if i is not None)
        span = self.sp(meta) if not meta.empty else Span(file=self.file, line=1, col=1, end_line=1, end_col=1)
        return A.Module(span, items)


def _transform(builder: Transformer, tree: Tree) -> A.Module:
    """``builder.transform(tree)`` without recursion: Lark's transformer recurses once per tree
    level, and a deeply nested spec (a long sum is a left-deep tree) overflowed Python's stack.
    Callbacks run children first, exactly as Lark runs them (wrapped in ``VisitError``)."""
    order: list[Tree] = []
    todo = [tree]
    while todo:
        t = todo.pop()
        order.append(t)
        todo.extend(c for c in t.children if isinstance(c, Tree))
    done: dict[int, object] = {}
    for t in reversed(order):  # every subtree comes before its parent
        kids = [done.pop(id(c)) if isinstance(c, Tree) else c for c in t.children]
        done[id(t)] = builder._call_userfunc(t, kids)
    return done[id(tree)]


def _split_groups(args) -> tuple[tuple, ...]:
    """Split a flat list of arguments at ``ACOMMA`` tokens into groups."""
    groups: list[list] = [[]]
    for a in args:
        if isinstance(a, Token) and a.type == "ACOMMA":
            groups.append([])
        elif a is not None:
            groups[-1].append(a)
    return tuple(tuple(g) for g in groups if g) or ((),)
