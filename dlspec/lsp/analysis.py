"""The language server's logic as plain data: a document's text → diagnostics, inlay hints,
hover, completion, definitions, references, symbols, renames and formatting.

Everything here comes from dlspec's own stages (parse, expand, shapes, report, fmt); nothing
re-implements a rule. No pygls here: :mod:`dlspec.lsp.server` turns these values into LSP
messages, so this module is tested without a client. Positions are LSP's (0-based lines,
columns in the negotiated encoding); spans are converted by :class:`dlspec.lsp.text.Lines`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, unquote, urlparse

from .. import ast as A
from ..errors import Diagnostic, DlspecError, Span
from .text import Lines, Position, Range

# ---- plain results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    uri: str
    range: Range


@dataclass(frozen=True)
class Related:
    location: Location
    message: str


@dataclass(frozen=True)
class Diag:
    """One LSP diagnostic: ``severity`` is "error" or "warning"."""

    range: Range
    severity: str
    message: str
    related: tuple[Related, ...] = ()


@dataclass(frozen=True)
class Hint:
    position: Position
    label: str
    tooltip: str = ""


@dataclass(frozen=True)
class Hover:
    markdown: str
    range: Range | None = None


@dataclass(frozen=True)
class Completion:
    """``kind``: op, key, word, block, cell, model, tensor, setting, option, choice or keyword."""

    label: str
    kind: str
    detail: str = ""
    documentation: str = ""
    insert_text: str | None = None


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: str  # model, block, cell, train
    range: Range
    selection_range: Range
    detail: str = ""
    children: tuple["Symbol", ...] = ()


@dataclass(frozen=True)
class Edit:
    range: Range
    new_text: str


class RenameError(Exception):
    """Why a rename cannot be done (shown to the user)."""


# ---- URIs -------------------------------------------------------------------------------------


def uri_to_path(uri: str) -> Path | None:
    """The file system path of a ``file:`` URI, else None."""
    u = urlparse(uri)
    if u.scheme != "file":
        return None
    path = unquote(u.path)
    if os.name == "nt" and re.match(r"^/[A-Za-z]:", path):  # pragma: no cover - Windows drive letters
        path = path[1:]
    return Path(path)


def path_to_uri(path: Path) -> str:
    return "file://" + quote(str(path.resolve()).replace(os.sep, "/"))


_IMPORT = re.compile(r'^[ \t]*import[ \t]+"((?:[^"\\\n]|\\.)*)"', re.M)


def import_closure(path: Path | None, text: str) -> dict[str, Path]:
    """Every file the text imports, directly or not: each name a span may carry (the import
    path as written, and the absolute path) → the file. Read lexically, so it works on text
    that does not parse."""
    out: dict[str, Path] = {}
    base = path.resolve().parent if path else Path.cwd()
    todo = [(base, text)]
    seen = {path.resolve()} if path else set()
    while todo:
        here, src = todo.pop()
        for m in _IMPORT.finditer(src):
            rel = m.group(1)
            target = (here / rel).resolve()
            out.setdefault(rel, target)
            out.setdefault(str(target), target)
            if target in seen or len(seen) > 200:
                continue
            seen.add(target)
            try:
                todo.append((target.parent, target.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError):
                continue
    return out


def closure_stamp(files: dict[str, Path]) -> tuple:
    """(path, mtime, size) of each imported file: an import edited elsewhere changes it."""
    out = []
    for p in sorted(set(files.values())):
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(p), None))
    return tuple(out)


# ---- the AST index: names, definitions, occurrences ------------------------------------------


@dataclass
class Occurrence:
    """A name written in the document: ``scope`` is the enclosing definition (None at top level)."""

    id: str
    span: Span
    scope: str | None
    defines: bool = False


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, tuple):
        for x in node:
            yield from _children(x)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        yield node


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, Span):
            continue
        kids = []
        for f in dataclasses.fields(n):
            v = getattr(n, f.name)
            if isinstance(v, (tuple, A.Node)):
                kids.extend(_children(v))
        stack.extend(reversed(kids))


def _name_span(span: Span, name: str) -> Span:
    return Span(file=span.file, line=span.line, col=span.col, end_line=span.line, end_col=span.col + len(name))


def index_module(module: A.Module) -> tuple[list[Occurrence], dict[str, dict[str, list[Span]]]]:
    """Every written name, and each definition's local names (params, tensors, ``as`` names)."""
    occ: list[Occurrence] = []
    local: dict[str, dict[str, list[Span]]] = {}
    for item in module.items:
        if isinstance(item, A.Def):
            scope = item.name
            names = local.setdefault(scope, {})
            occ.append(Occurrence(item.name, item.name_span, None, defines=True))
            for p in item.params or ():
                s = _name_span(p.span, p.name)
                names.setdefault(p.name, []).append(s)
                occ.append(Occurrence(p.name, s, scope, defines=True))
            body: Any = item.body
        elif isinstance(item, A.Train):
            scope, body = None, (item.groups, item.body)
        else:
            continue
        for n in _walk(body) if not isinstance(body, tuple) else (x for b in body for c in _children(b) for x in _walk(c)):
            if isinstance(n, (A.InputStmt, A.ParamStmt, A.StateStmt, A.AssignStmt)):
                if scope:
                    local[scope].setdefault(n.name, []).append(n.name_span)
                occ.append(Occurrence(n.name, n.name_span, scope, defines=True))
            elif isinstance(n, A.OutputStmt):
                for name, s in zip(n.names, n.name_spans):
                    occ.append(Occurrence(name, s, scope, defines=n.chain is not None))
                    if n.chain is not None and scope:
                        local[scope].setdefault(name, []).append(s)
            elif isinstance(n, A.Call):
                occ.append(Occurrence(n.func, n.func_span, scope))
            elif isinstance(n, A.Name):
                occ.append(Occurrence(n.id, n.span, scope))
            elif isinstance(n, (A.Apply, A.Part)):
                args = n.args
                for a, b in zip(args, args[1:]):
                    if isinstance(a, A.Name) and a.id == "as" and isinstance(b, A.Name) and scope:
                        local[scope].setdefault(b.id, []).append(b.span)
    # an `as NAME` is where that name is defined
    defined = {(s.line, s.col) for names in local.values() for spans in names.values() for s in spans}
    for o in occ:
        if (o.span.line, o.span.col) in defined:
            o.defines = True
    return occ, local


# ---- the analysis of one document version ---------------------------------------------------


@dataclass
class _Group:
    params: int = 0
    macs: int = 0
    shape: Any = None
    nodes: list = field(default_factory=list)


class Analysis:
    """Everything known about one version of one document; computed once, then queried."""

    def __init__(self, uri: str, text: str, encoding: str = "utf-16"):
        from ..api import Program, _collect, _gc_paused
        from ..parse import parse

        self.uri = uri
        self.text = text
        self.encoding = encoding
        self.lines = Lines(text, encoding)
        self.path = uri_to_path(uri)
        self.name = str(self.path) if self.path else uri
        self.imports = import_closure(self.path, text)
        self.stamp = closure_stamp(self.imports)
        self.module: A.Module | None = None
        self.prog: Program | None = None
        self.errors: list[Diagnostic] = []
        self.reports: dict[str, Any] = {}
        self._other: dict[str, Lines] = {}
        try:
            with _gc_paused():
                self.module = parse(text, self.name)
                defs: dict[str, A.Def] = {}
                trains: list[A.Train] = []
                top = [self.path.resolve()] if self.path else []
                base = self.path.resolve().parent if self.path else Path.cwd()
                _collect(self.module, self.name, base, defs, trains, set(top), top, top=True)
            self.prog = Program(self.name, self.module, defs, trains)
        except DlspecError as e:
            self.errors.extend(e.diagnostics)
        if self.prog is not None:
            self.errors.extend(self.prog.check())
            for m in self.prog.models:
                try:
                    self.reports[m] = self.prog.analyze(m)
                except DlspecError:
                    continue
        self.occurrences, self.local = index_module(self.module) if self.module else ([], {})
        self._by_line: dict[int, list] | None = None
        self._frames: dict | None = None

    @property
    def ok(self) -> bool:
        """Whether the document parsed and every model's shapes are known."""
        return self.module is not None and not any(d.severity == "error" for d in self.errors)

    # ---- spans ↔ locations ---------------------------------------------------------------------
    def _is_here(self, span: Span | None) -> bool:
        return span is not None and span.file == self.name

    def _file_of(self, span: Span) -> Path | None:
        if span.file == self.name:
            return self.path
        p = self.imports.get(span.file)
        if p is None and Path(span.file).is_absolute():
            p = Path(span.file)
        return p

    def _lines_of(self, path: Path) -> Lines:
        key = str(path)
        if key not in self._other:
            try:
                self._other[key] = Lines(path.read_text(encoding="utf-8"), self.encoding)
            except (OSError, UnicodeDecodeError):
                self._other[key] = Lines("", self.encoding)
        return self._other[key]

    def location(self, span: Span) -> Location | None:
        """Where a span is, in this document or in an imported file."""
        if span.file == self.name:
            return Location(self.uri, self.lines.span_range(span))
        p = self._file_of(span)
        if p is None:
            return None
        return Location(path_to_uri(p), self._lines_of(p).span_range(span))

    # ---- diagnostics ---------------------------------------------------------------------------
    def diagnostics(self) -> list[Diag]:
        """Every error and warning, as the CLI reports them: message, help; notes as related
        information. One in an imported file is shown at the import (or call) that brings it in."""
        out = []
        for d in self.errors:
            out.append(self._diag(d))
        return out

    def _diag(self, d: Diagnostic) -> Diag:
        message = d.message
        related: list[Related] = []
        for n in d.notes:
            loc = self.location(n.span) if n.span else None
            if loc is None:
                message += f"\nnote: {n.message}"
            else:
                related.append(Related(loc, n.message))
        if d.help:
            message += f"\nhelp: {d.help}"
        if self._is_here(d.span):
            rng = self.lines.span_range(d.span)
        else:
            elsewhere = self.location(d.span) if d.span else None
            if elsewhere is not None:
                related.insert(0, Related(elsewhere, d.message))
                message = f"{d.span}: {message}"
            here = next((n.span for n in d.notes if self._is_here(n.span)), None)
            if here is None and self.module is not None:
                here = next((i.span for i in self.module.items if isinstance(i, A.Import)), None)
            rng = self.lines.span_range(here) if here else Range(Position(0, 0), Position(0, 1))
        return Diag(rng, "warning" if d.severity == "warning" else "error", message, tuple(related))

    # ---- per-line figures ------------------------------------------------------------------------
    def _line_groups(self) -> dict[int, list[tuple[str, tuple, _Group]]]:
        """line (1-based, this file) → [(model, caller context, figures)] in execution order."""
        if self._by_line is not None:
            return self._by_line
        from ..shapes import macs_value

        by: dict[int, dict[tuple, _Group]] = {}
        for m, rep in self.reports.items():
            shapes = rep.shapes
            for n in rep.graph.top_level():
                c = shapes.costs.get(n.path)
                t = shapes.types.get(n.path)
                if c is None or t is None:
                    continue
                macs = macs_value(c.macs, {})
                ctxs = []
                if self._is_here(n.span):
                    ctxs.append((n.span.line, tuple(f.path for f in n.stack)))
                for j, f in enumerate(n.stack):
                    if self._is_here(f.span):
                        ctxs.append((f.span.line, tuple(x.path for x in n.stack[:j])))
                for line, ctx in dict.fromkeys(ctxs):
                    g = by.setdefault(line, {}).setdefault((m, ctx), _Group())
                    g.params += c.params
                    g.macs += macs
                    g.shape = t
                    g.nodes.append(n)
        self._by_line = {line: [(k[0], k[1], g) for k, g in gs.items()] for line, gs in by.items()}
        return self._by_line

    def hints(self, rng: Range | None = None) -> list[Hint]:
        """Each layer line's output shape and parameter count, at the end of the line; a block
        call's line shows the block's totals. A line used by several calls shows the first."""
        out = []
        lo, hi = (rng.start.line, rng.end.line) if rng else (0, len(self.lines.lines))
        for line, groups in sorted(self._line_groups().items()):
            if not lo <= line - 1 <= hi:
                continue
            _, ctx, g = groups[0]
            label = f"→ {_shape(g.shape)}" + (f" · {g.params:,}" if g.params else "")
            if len(groups) > 1:
                label += f" (1 of {len(groups)})"
            where = ".".join(ctx[-1:]) or groups[0][0]
            tip = f"{len(g.nodes)} layer{'s' * (len(g.nodes) != 1)} in {where}: params {g.params:,}, MACs {g.macs:,}"
            out.append(Hint(self.lines.line_end(line - 1), label, tip))
        return out

    # ---- lookups ---------------------------------------------------------------------------------
    def occurrence_at(self, pos: Position) -> Occurrence | None:
        line1, col1 = self.lines.from_lsp(pos)
        best = None
        for o in self.occurrences:
            s = o.span
            if s.file == self.name and s.line == line1 and s.col <= col1 <= s.end_col:
                if best is None or (s.end_col - s.col) < (best.span.end_col - best.span.col):
                    best = o
        return best

    def _defs(self) -> dict[str, A.Def]:
        if self.prog is not None:
            return self.prog.defs
        return {i.name: i for i in (self.module.items if self.module else ()) if isinstance(i, A.Def)}

    def resolve(self, o: Occurrence) -> tuple[str, str | None, str] | None:
        """What a name refers to: ("tensor", scope, name) or ("def", None, name)."""
        if o.scope is not None and o.id in self.local.get(o.scope, {}):
            return ("tensor", o.scope, o.id)
        if o.id in self._defs():
            return ("def", None, o.id)
        return None

    def definition(self, pos: Position) -> list[Location]:
        """Where the name at ``pos`` is defined (a block, cell, model, tensor, parameter, or an
        import's file)."""
        imp = self._import_at(pos)
        if imp is not None:
            p = self.imports.get(imp.path)
            return [Location(path_to_uri(p), Range(Position(0, 0), Position(0, 0)))] if p and p.is_file() else []
        o = self.occurrence_at(pos)
        r = self.resolve(o) if o else None
        if r is None:
            return []
        kind, scope, name = r
        if kind == "tensor":
            return [Location(self.uri, self.lines.span_range(s)) for s in self.local[scope][name][:1]]
        loc = self.location(self._defs()[name].name_span)
        return [loc] if loc else []

    def references(self, pos: Position, include_declaration: bool = True) -> list[Location]:
        """Every place in this document that names what ``pos`` names."""
        o = self.occurrence_at(pos)
        r = self.resolve(o) if o else None
        if r is None:
            return []
        out = []
        for x in self.occurrences:
            if x.id == r[2] and self.resolve(x) == r and (include_declaration or not x.defines):
                out.append(Location(self.uri, self.lines.span_range(x.span)))
        if r[0] == "def" and include_declaration:
            loc = self.location(self._defs()[r[2]].name_span)
            if loc and loc not in out:
                out.insert(0, loc)
        return sorted(set(out), key=lambda loc: (loc.uri != self.uri, loc.range.start.line, loc.range.start.character))

    def rename(self, pos: Position, new: str) -> list[Edit]:
        """Edits renaming the block, cell, model or tensor at ``pos`` throughout this document."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", new or ""):
            raise RenameError(f"'{new}' is not a name (letters, digits and _, not starting with a digit)")
        o = self.occurrence_at(pos)
        r = self.resolve(o) if o else None
        if r is None:
            raise RenameError("no block, cell, model or tensor name here")
        kind, scope, name = r
        if kind == "def":
            d = self._defs()[name]
            if not self._is_here(d.name_span):
                raise RenameError(f"'{name}' is defined in {d.name_span.file}: rename it there")
            if new in self._defs() and new != name:
                raise RenameError(f"'{new}' is already defined")
        elif new in self.local.get(scope, {}) and new != name:
            raise RenameError(f"'{new}' is already a name in {scope}")
        return [Edit(loc.range, new) for loc in self.references(pos) if loc.uri == self.uri]

    def _import_at(self, pos: Position) -> A.Import | None:
        line1, col1 = self.lines.from_lsp(pos)
        for i in self.module.items if self.module else ():
            if isinstance(i, A.Import) and i.span.line == line1 and i.span.col <= col1 <= i.span.end_col:
                return i
        return None

    # ---- hover -----------------------------------------------------------------------------------
    def _frame_totals(self) -> dict[tuple[str, str], list]:
        """(model, frame path) → [frame, params, macs, out type] of each block call."""
        if self._frames is not None:
            return self._frames
        from ..shapes import macs_value

        out: dict[tuple[str, str], list] = {}
        for m, rep in self.reports.items():
            for n in rep.graph.top_level():
                c = rep.shapes.costs.get(n.path)
                for f in n.stack:
                    e = out.setdefault((m, f.path), [f, 0, 0, None])
                    if c is not None:
                        e[1] += c.params
                        e[2] += macs_value(c.macs, {})
                    e[3] = rep.shapes.types.get(n.path, e[3])
        self._frames = out
        return out

    def hover(self, pos: Position) -> Hover | None:
        """The op's contract, parameters and this layer's figures; or a block's signature and totals."""
        o = self.occurrence_at(pos)
        line1, col1 = self.lines.from_lsp(pos)
        if o is not None:
            r = self.resolve(o)
            if r is not None and r[0] == "def":
                return Hover(self._hover_def(r[2], o), self.lines.span_range(o.span))
        layer = self._layer_at(line1, col1)
        if layer is not None:
            return layer
        if o is not None:
            from .. import ops

            if o.id in ops.USER_OPS:
                return Hover(_op_doc(o.id), self.lines.span_range(o.span))
        return None

    def _layer_at(self, line1: int, col1: int) -> Hover | None:
        best = None
        uses = []
        for m, rep in self.reports.items():
            for n in rep.graph.top_level():
                s = n.span
                if not self._is_here(s):
                    continue
                if (s.line, s.col) <= (line1, col1) <= (s.end_line, s.end_col):
                    size = (s.end_line - s.line, s.end_col - s.col if s.end_line == s.line else 10**6)
                    if best is None or size < best[0]:
                        best, uses = (size, s), [(m, rep, n)]
                    elif (s.line, s.col, s.end_line, s.end_col) == (best[1].line, best[1].col, best[1].end_line, best[1].end_col):
                        uses.append((m, rep, n))
        if not uses:
            return None
        m, rep, n = uses[0]
        return Hover(self._hover_layer(m, rep, n, len(uses)), self.lines.span_range(n.span))

    def _hover_layer(self, model: str, rep, n, uses: int) -> str:
        from .. import ops
        from ..shapes import macs_value

        op = ops.get(n.op)
        t = rep.shapes.types.get(n.path)
        c = rep.shapes.costs.get(n.path)
        row = next((r for r in rep.rows if r.path == n.path), None)
        summary = " ".join(ops.words(n.op, n.params, t))
        head = f"**{n.op}** `{summary}` — `{n.path}` in {model}"
        if uses > 1:
            head += f" (first of {uses} uses)"
        lines = [head, ""]
        if n.stack:
            lines += ["called through " + " → ".join(f"`{f.label()}`" for f in n.stack), ""]
        ins = [rep.shapes.types.get(i) for i in n.inputs]
        lines.append("| | |")
        lines.append("|---|---|")
        if ins:
            lines.append(f"| in | {', '.join(_shape(x) for x in ins)} |")
        lines.append(f"| out | {_shape(t)} |")
        if c is not None:
            lines.append(f"| params | {c.params:,}" + (f" (+{c.buffers:,} buffers)" if c.buffers else "") + " |")
            lines.append(f"| MACs | {macs_value(c.macs, {}):,} |")
        if row is not None and row.rf:
            lines.append(f"| receptive field | {row.rf[0]} px, stride {row.rf[1]} |")
        args = {k: v for k, v in n.params.model_dump().items() if k != "op"}
        if args:
            lines += ["", "arguments: " + ", ".join(f"`{k} {_val(v)}`" for k, v in args.items())]
        lines += ["", "---", "", _op_doc(n.op) if n.op in ops.CATALOGUE and n.op not in ops.INTERNAL else (op.__doc__ or "").strip()]
        return "\n".join(lines)

    def _hover_def(self, name: str, o: Occurrence) -> str:
        d = self._defs()[name]
        sig = f"{d.kind} {name}" + (f"({_params_text(d.params, self.source)})" if d.params is not None else "")
        lines = [f"```dl\n{sig}\n```"]
        if d.span.file != self.name:
            lines.append(f"defined in `{d.span.file}`")
        if d.kind == "model" and name in self.reports:
            rep = self.reports[name]
            ins = ", ".join(f"{p} {_shape(rep.shapes.types.get(p))}" for p in rep.graph.inputs)
            outs = ", ".join(f"{x.name} {_shape(rep.shapes.types.get(x.node))}" for x in rep.graph.outputs)
            lines.append(f"inputs {ins}; outputs {outs}")
            lines.append(f"params {rep.params:,}, MACs per sample {rep.macs():,}")
            return "\n\n".join(lines)
        calls = [(m, e) for (m, _), e in self._frame_totals().items() if e[0].block == name]
        at = (o.span.line, o.span.col)
        here = [
            (m, e)
            for m, e in calls
            if self._is_here(e[0].span) and (e[0].span.line, e[0].span.col) <= at < (e[0].span.end_line, e[0].span.end_col)
        ]
        show = here or calls
        if show:
            m, (f, params, macs, t) = show[0]
            what = "this call" if here else f"first of {len(calls)} calls"
            lines.append(f"{what}: `{f.label()}` as `{f.path}` in {m}")
            lines.append(f"→ {_shape(t)} · params {params:,} · MACs {macs:,}")
            if len(here) > 1:
                lines.append(f"(this call is made {len(here)} times)")
        elif d.kind in ("block", "cell"):
            lines.append("not called by any model of this file")
        return "\n\n".join(lines)

    # ---- symbols, formatting -------------------------------------------------------------------
    def symbols(self) -> list[Symbol]:
        """Models, blocks, cells and train sections, with their tensors as children."""
        out = []
        for i in self.module.items if self.module else ():
            if isinstance(i, A.Def):
                kids = tuple(
                    Symbol(n, "tensor", self.lines.span_range(ss[0]), self.lines.span_range(ss[0]))
                    for n, ss in self.local.get(i.name, {}).items()
                    if not any(p.name == n for p in i.params or ())
                )
                detail = f"({_params_text(i.params, self.source)})" if i.params else ""
                out.append(Symbol(i.name, i.kind, self.lines.span_range(i.span), self.lines.span_range(i.name_span), detail, kids))
            elif isinstance(i, A.Train):
                words = " ".join(self.text_of(a.span) for g in i.groups for a in g)
                name = f"train {words}".strip()
                out.append(Symbol(name, "train", self.lines.span_range(i.span), self.lines.span_range(i.span)))
        return out

    def text_of(self, span: Span) -> str:
        """The source text of a span of this document."""
        return self.source(span)

    def source(self, span: Span) -> str:
        """The source text of a span, in this document or an imported file."""
        if span.file == self.name:
            lines = self.lines
        else:
            p = self._file_of(span)
            if p is None:
                return ""
            lines = self._lines_of(p)
        a = lines.offset(lines.to_lsp(span.line, span.col))
        b = lines.offset(lines.to_lsp(span.end_line, span.end_col))
        return lines.text[a:b]

    def format(self) -> list[Edit]:
        """One edit with the canonical text (none when it is already formatted or does not parse)."""
        from ..fmt import format_text

        try:
            new = format_text(self.text, self.name)
        except DlspecError:
            return []
        if new == self.text:
            return []
        return [Edit(Range(Position(0, 0), self.lines.end()), new)]

    # ---- completion -----------------------------------------------------------------------------
    def complete(self, pos: Position, good: "Analysis | None" = None) -> list[Completion]:
        """What may be written at ``pos``, read from the text before it (it need not parse);
        ``good``: an earlier analysis that did parse, for the names of imported blocks."""
        from .complete import complete

        return complete(self, pos, good)


def stale_hints(good: Analysis | None, now: Analysis, rng: Range | None = None) -> list[Hint]:
    """While the text is broken: the last good analysis's hints on the lines that still read
    the same (marked stale in their tooltip)."""
    if good is None:
        return []
    out = []
    for h in good.hints(None):
        line = h.position.line
        if now.lines.line(line) == good.lines.line(line) and (rng is None or rng.start.line <= line <= rng.end.line):
            out.append(Hint(h.position, h.label, "(from the last version without errors) " + h.tooltip))
    return out


# ---- helpers ------------------------------------------------------------------------------------


def _shape(t) -> str:
    if t is None:
        return "?"
    s = "×".join(str(d) for d in t.shape)
    return s if t.is_float() else f"{s} {t.dtype}"


def _val(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    return str(v)


def _params_text(params: tuple[A.Param, ...] | None, source: Any = None) -> str:
    """``c, stride = 1``: each parameter as written (``source(span)`` gives a span's text)."""
    out = []
    for p in params or ():
        text = " ".join(source(p.span).split()) if source is not None else ""
        out.append(text if text.startswith(p.name) else p.name if p.default is None else f"{p.name} = …")
    return ", ".join(out)


def op_fields(name: str) -> list[tuple[str, str]]:
    """An op's keys with their defaults: ``[("filters", "required"), ("stride", "1"), …]``."""
    from .. import ops

    op = ops.get(name)
    out = []
    for f, info in op.Params.model_fields.items():
        if f == "op":
            continue
        out.append((f, "required" if info.is_required() else _val(info.default)))
    return out


def _op_doc(name: str) -> str:
    from .. import ops

    op = ops.get(name)
    doc = inspect.cleandoc(op.__doc__ or "")
    keys = ", ".join(f"`{k}`" + ("" if d == "required" else f" = {d}") for k, d in op_fields(name))
    words = sorted(op.words())
    out = [f"**{name}** — {doc}" if doc else f"**{name}**", "", f"keys: {keys}" if keys else "no keys"]
    if op.positional:
        out.append(f"positional: {', '.join(op.positional)}")
    if words:
        out.append(f"words: {', '.join(words)}")
    return "\n\n".join(out)
