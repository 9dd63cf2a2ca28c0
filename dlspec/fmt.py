"""Canonical layout of a ``.dl`` file, printed from its AST; comments kept.

Rules: two-space indent; one statement per line; ``a -> b`` on one line (wrapped
before ``->`` past 100 columns); single spaces around operators and ``=`` in calls;
one blank line between top-level items; runs of blank lines collapse to one; a
one-statement body stays on its line when it was written so and fits.
``fmt(fmt(x)) == fmt(x)`` and ``fmt(x)`` parses to the same IR as ``x``.
"""

from __future__ import annotations

import json

from . import ast as A
from .errors import source_lines
from .limits import deep
from .parse import parse

WIDTH = 100
INDENT = "  "

# precedence for deciding where parentheses are *needed* (the AST keeps written parens)
_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "u": 7, "**": 8}


@deep(lambda text, file="<string>": None)
def format_text(text: str, file: str = "<string>") -> str:
    """The canonical form of ``text`` (raises :class:`dlspec.ParseError` if it does not parse)."""
    module = parse(text, file)
    return _Printer(module, text).module()


class _Printer:
    def __init__(self, module: A.Module, text: str):
        self.m = module
        self.lines = source_lines(text)  # lines as the lexer counts them (\n only)
        self.comments = sorted(module.comments)
        self.done: set[int] = set()
        self.flats: dict[int, str | None] = {}  # id(statement) → its one-line form (see flat)

    # ---- comments and blank lines ----------------------------------------------

    def leading(self, line: int, indent: str) -> list[str]:
        """Unprinted comments before ``line``, keeping one blank line where the source had
        blank lines between them or before ``line``."""
        out: list[str] = []
        last = None
        for i, (ln, _col, txt) in enumerate(self.comments):
            if i not in self.done and ln < line:
                self.done.add(i)
                if last is not None and self.blank_before(ln, last):
                    out.append("")
                out.append(indent + txt.rstrip())
                last = ln
        if last is not None and line < 10**9 and self.blank_before(line, last):
            out.append("")
        return out

    def trailing(self, line: int) -> str:
        for i, (ln, _col, txt) in enumerate(self.comments):
            if i not in self.done and ln == line:
                self.done.add(i)
                return "  " + txt.rstrip()
        return ""

    def blank_before(self, line: int, prev_end: int | None) -> bool:
        """Whether the original had an empty line between ``prev_end`` and ``line``
        (looking through comment lines)."""
        if prev_end is None:
            return False
        for ln in range(prev_end + 1, line):
            if 0 < ln <= len(self.lines) and self.lines[ln - 1].strip() == "":
                return True
        return False

    def first_line(self, node: A.Node) -> int:
        """The line where ``node`` starts, or where its first leading comment starts."""
        line = node.span.line
        for i, (ln, _, _) in enumerate(self.comments):
            if i not in self.done and ln < line:
                return ln
        return line

    # ---- top level -----------------------------------------------------------------

    def module(self) -> str:
        out: list[str] = []
        for k, item in enumerate(self.m.items):
            lead = self.leading(item.span.line, "")
            if k > 0:
                out.append("")
            out.extend(lead)
            out.extend(self.item(item))
        rest = self.leading(10**9, "")
        if rest:
            if out:
                out.append("")
            out.extend(rest)
        return "\n".join(out) + "\n" if out else ""

    def item(self, it: A.Item) -> list[str]:
        if isinstance(it, A.Import):
            return [f"import {_str(it.path)}{self.trailing(it.span.end_line)}"]
        if isinstance(it, A.Def):
            head = f"{it.kind} {it.name}"
            if it.params is not None:
                head += "(" + ", ".join(p.name + (f" = {self.expr(p.default)}" if p.default else "") for p in it.params) + ")"
            return self.block(head, it.body, "", it.span)
        if isinstance(it, A.Train):
            head = "train" + (" " + self.groups(it.groups) if any(it.groups) else "")
            return self.block(head, it.body, "", it.span)
        raise TypeError(it)  # pragma: no cover

    def block(self, head: str, body: A.Body, indent: str, span: A.Span, tail: bool = True, head_indent: str | None = None) -> list[str]:
        """``head { … }``: on one line when written so, short, and comment-free.

        ``head_indent`` ('' for a continuation such as ``} shortcut {``) defaults to ``indent``."""
        hi = indent if head_indent is None else head_indent
        inner = body.stmts
        text = self.flat_body(body)
        if text is not None:
            line = f"{hi}{head} {text}"
            if len(line) <= WIDTH:
                return [line + (self.trailing(body.span.end_line) if tail else "")]
        out = [f"{hi}{head} {{"]
        prev_end = None
        for st in inner:
            if self.blank_before(self.first_line(st), prev_end):
                out.append("")
            out.extend(self.leading(st.span.line, indent + INDENT))
            out.extend(self.stmt(st, indent + INDENT))
            prev_end = st.span.end_line
        out.extend(self.leading(body.span.end_line, indent + INDENT))
        out.append(f"{indent}}}" + (self.trailing(body.span.end_line) if tail else ""))
        return out

    def flat_body(self, body: A.Body) -> str | None:
        """``{ stmt }`` on one line, or None when the body may not stay on one line: it was
        written over several lines, has more than one statement, holds a comment, or is too long."""
        inner = body.stmts
        if body.span.line != body.span.end_line or len(inner) > 1:
            return None
        # a comment inside the braces forces a block; one after the closing brace trails it
        for i, c in enumerate(self.comments):
            if i not in self.done and body.span.line <= c[0] <= body.span.end_line:
                if not (c[0] == body.span.end_line and c[1] >= body.span.end_col):
                    return None
        if not inner:
            return "{ }"
        text = self.flat(inner[0])
        return None if text is None else "{ " + text + " }"

    def flat(self, st: A.Stmt) -> str | None:
        """``st`` on one line, with no indent and no comment, as a one-line body holds it; None
        when it cannot be (or is longer than a line). Computed once per statement: trying each
        body on one line and then over several must not format its inside again per level of
        nesting (that doubled the work per level: 28 nested one-line groups took 47 s)."""
        key = id(st)
        if key in self.flats:
            return self.flats[key]
        text: str | None
        if isinstance(st, A.CompoundStmt):
            pieces = []
            for part in st.parts:
                body = self.flat_body(part.body)
                if body is None:
                    break
                pieces.append(self.part_head(part) + " " + body)
            text = " ".join(pieces) if len(pieces) == len(st.parts) else None
        elif isinstance(st, A.IfStmt):
            pieces = []
            for k, (cond, body) in enumerate(st.branches):
                b = self.flat_body(body)
                if b is None:
                    break
                pieces.append(f"{'if' if k == 0 else 'elif'} {self.expr(cond)} {b}")
            if len(pieces) == len(st.branches) and st.orelse is not None:
                b = self.flat_body(st.orelse)
                pieces.append(f"else {b}" if b is not None else "")
            ok = len(pieces) == len(st.branches) + (st.orelse is not None) and all(pieces)
            text = " ".join(pieces) if ok else None
        elif isinstance(st, A.AssignStmt) and st.compound is not None:
            inner = self.flat(st.compound)
            text = None if inner is None else self.targets(st) + inner
        else:
            parts = self.simple(st)
            text = parts if isinstance(parts, str) else " -> ".join(parts)
        if text is not None and len(text) > WIDTH:
            text = None
        self.flats[key] = text
        return text

    def part_head(self, part: A.Part) -> str:
        """``word args [when cond]`` of one part of a compound statement."""
        head = part.word
        if part.args:
            head += " " + " ".join([self.expr(a, arg=True) for a in part.args])
        if part.when is not None:
            head += f" when {self.expr(part.when)}"
        return head

    # ---- statements -------------------------------------------------------------------

    def targets(self, st: A.AssignStmt) -> str:
        """``a, b = `` / ``gate f = ``: the left of an assignment."""
        return "gate " * st.gate + ", ".join(n for n, _ in st.targets) + " = "

    def stmt(self, st: A.Stmt, indent: str) -> list[str]:
        if isinstance(st, A.AssignStmt) and st.compound is not None:  # `h = repeat 3 { … }`
            lines = self.stmt(st.compound, indent)
            lines[0] = indent + self.targets(st) + lines[0][len(indent) :]
            return lines
        if isinstance(st, A.CompoundStmt):
            out: list[str] = []
            for k, part in enumerate(st.parts):
                head = self.part_head(part)
                last = k == len(st.parts) - 1
                lines = self.block(head, part.body, indent, part.span, tail=last, head_indent=None if k == 0 else "")
                if k > 0:
                    out[-1] = out[-1] + " " + lines[0]
                    out.extend(lines[1:])
                else:
                    out.extend(lines)
            return out
        if isinstance(st, A.IfStmt):
            out = []
            for k, (cond, body) in enumerate(st.branches):
                word = "if" if k == 0 else "elif"
                lines = self.block(f"{word} {self.expr(cond)}", body, indent, body.span, tail=False, head_indent=None if k == 0 else "")
                if k > 0:
                    out[-1] += " " + lines[0]
                    out.extend(lines[1:])
                else:
                    out.extend(lines)
            if st.orelse is not None:
                lines = self.block("else", st.orelse, indent, st.orelse.span, tail=False, head_indent="")
                out[-1] += " " + lines[0]
                out.extend(lines[1:])
            out[-1] += self.trailing(st.span.end_line)
            return out
        text = self.simple(st)
        lines = self.wrap(indent, text)
        lines[-1] += self.trailing(st.span.end_line)
        return lines

    def simple(self, st: A.Stmt) -> list[str] | str:
        if isinstance(st, A.ChainStmt):
            return self.chain(st.chain)
        if isinstance(st, A.AssignStmt):
            c = self.chain(st.chain)
            return [self.targets(st) + c[0], *c[1:]]
        if isinstance(st, A.OutputStmt):
            if st.chain is not None:
                c = self.chain(st.chain)
                return [f"output {st.names[0]} = {c[0]}", *c[1:]]
            return "output " + ", ".join(st.names)
        if isinstance(st, (A.InputStmt, A.StateStmt, A.ParamStmt)):
            word = "input" if isinstance(st, A.InputStmt) else "state" if isinstance(st, A.StateStmt) else "param"
            rest = self.groups(st.groups)
            return f"{word} {st.name}: {self.expr(st.shape)}" + (f" {rest}" if rest else "")
        raise TypeError(st)  # pragma: no cover

    def chain(self, c: A.Chain) -> list[str]:
        return [self.expr(s) for s in c.stages]

    def wrap(self, indent: str, parts: list[str] | str) -> list[str]:
        if isinstance(parts, str):
            return [indent + parts]
        line = indent + " -> ".join(parts)
        if len(line) <= WIDTH or len(parts) == 1:
            return [line]
        return [indent + parts[0]] + [indent + INDENT * 2 + "-> " + p for p in parts[1:]]

    # ---- expressions ------------------------------------------------------------------

    def groups(self, groups: tuple[tuple[A.Expr, ...], ...]) -> str:
        return ", ".join([" ".join([self.expr(a, arg=True) for a in g]) for g in groups if g])

    def expr(self, e: A.Expr, arg: bool = False) -> str:
        if isinstance(e, A.Num):
            return e.text
        if isinstance(e, A.Str):
            return _str(e.value)
        if isinstance(e, A.Bool):
            return "true" if e.value else "false"
        if isinstance(e, A.Name):
            return e.id
        if isinstance(e, A.Paren):
            return f"({self.expr(e.expr)})"
        if isinstance(e, A.ListE):
            return "[" + ", ".join([self.expr(x) for x in e.items]) + "]"
        if isinstance(e, A.TupleE):
            inner = ", ".join([self.expr(x) for x in e.items])
            return f"({inner},)" if len(e.items) == 1 else f"({inner})"
        if isinstance(e, A.Call):
            args = [self.expr(a) for a in e.args] + [f"{k.name} = {self.expr(k.value)}" for k in e.kwargs]
            return f"{e.func}({', '.join(args)})"
        if isinstance(e, A.Apply):
            head = self.expr(e.head)
            return head + " " + self.groups(e.groups)
        if isinstance(e, A.BinOp):
            return f"{self.expr(e.left)} {e.op} {self.expr(e.right)}"
        if isinstance(e, A.UnOp):
            inner = self.expr(e.operand)
            # keep '- 1' apart from a negative literal '-1' so it parses back the same
            sep = " " if inner[:1].isdigit() or inner[:1] in "-+." else ""
            return f"{e.op}{sep}{inner}"
        if isinstance(e, A.Not):
            return f"not {self.expr(e.operand)}"
        if isinstance(e, A.BoolOp):
            return f" {e.op} ".join([self.expr(v) for v in e.values])
        if isinstance(e, A.Ternary):
            return f"{self.expr(e.then)} if {self.expr(e.cond)} else {self.expr(e.orelse)}"
        if isinstance(e, A.Index):
            return self.expr(e.value) + "[" + ", ".join(self.subscript(i) for i in e.items) + "]"
        raise TypeError(e)  # pragma: no cover

    def subscript(self, it: A.Expr | A.SliceE | A.EllipsisE) -> str:
        if isinstance(it, A.EllipsisE):
            return "..."
        if isinstance(it, A.SliceE):
            text = ("" if it.start is None else self.expr(it.start)) + ":" + ("" if it.stop is None else self.expr(it.stop))
            return text + (":" + self.expr(it.step) if it.step is not None else "")
        return self.expr(it)


def _str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)
