"""The pygls wiring of ``dlspec lsp``: LSP messages in, :mod:`dlspec.lsp.analysis` values out.

Every handler is wrapped: an internal error is logged to the client (window/logMessage) and
answered with an empty result; it never stops the server. One analysis is made per document
version (and per state of its imports on disk) and shared by every request on that version.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from typing import Any, Callable

from lsprotocol import types as T
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from .analysis import Analysis, Completion, Diag, Edit, Location, RenameError, Symbol, closure_stamp, stale_hints
from .text import Position, Range

DEBOUNCE_S = 0.3

_SYMBOL_KIND = {"model": T.SymbolKind.Class, "block": T.SymbolKind.Function, "cell": T.SymbolKind.Struct, "train": T.SymbolKind.Event}
_COMPLETION_KIND = {
    "op": T.CompletionItemKind.Function,
    "key": T.CompletionItemKind.Property,
    "word": T.CompletionItemKind.EnumMember,
    "block": T.CompletionItemKind.Class,
    "cell": T.CompletionItemKind.Struct,
    "model": T.CompletionItemKind.Class,
    "tensor": T.CompletionItemKind.Variable,
    "parameter": T.CompletionItemKind.Variable,
    "setting": T.CompletionItemKind.Property,
    "option": T.CompletionItemKind.Property,
    "choice": T.CompletionItemKind.EnumMember,
    "keyword": T.CompletionItemKind.Keyword,
}


class DlspecServer(LanguageServer):
    """A language server holding one analysis per open document."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.analyses: dict[str, Analysis] = {}
        self.good: dict[str, Analysis] = {}  # the last analysis whose shapes were all known
        self.pending: dict[str, asyncio.TimerHandle] = {}

    def analysis(self, uri: str) -> Analysis:
        """The analysis of the document's current text (made now if it is not cached)."""
        doc = self.workspace.get_text_document(uri)
        text = doc.source
        kind = self.workspace.position_encoding
        enc = str(getattr(kind, "value", kind) or "utf-16")  # an enum member or its string
        a = self.analyses.get(uri)
        if a is None or a.text != text or a.encoding != enc or closure_stamp(a.imports) != a.stamp:
            a = Analysis(uri, text, enc)
            self.analyses[uri] = a
            if a.ok and a.reports:
                self.good[uri] = a
        return a

    def cancel_pending(self, uri: str) -> None:
        """Drop the debounced publication waiting for ``uri``, if any."""
        h = self.pending.pop(uri, None)
        if h is not None:
            h.cancel()

    def publish(self, uri: str) -> None:
        self.pending.pop(uri, None)
        a = self.analysis(uri)
        self.text_document_publish_diagnostics(
            T.PublishDiagnosticsParams(
                uri=uri, diagnostics=[_diag(d) for d in a.diagnostics()], version=self.workspace.get_text_document(uri).version
            )
        )

    def log(self, message: str, kind: T.MessageType = T.MessageType.Error) -> None:
        try:
            self.window_log_message(T.LogMessageParams(type=kind, message=message))
        except Exception:  # noqa: BLE001 - the client is gone: nothing more to tell it
            pass


def _pos(p: T.Position) -> Position:
    return Position(p.line, p.character)


def _rng(r: Range) -> T.Range:
    return T.Range(
        start=T.Position(line=r.start.line, character=r.start.character), end=T.Position(line=r.end.line, character=r.end.character)
    )


def _loc(loc: Location) -> T.Location:
    return T.Location(uri=loc.uri, range=_rng(loc.range))


def _diag(d: Diag) -> T.Diagnostic:
    return T.Diagnostic(
        range=_rng(d.range),
        message=d.message,
        severity=T.DiagnosticSeverity.Warning if d.severity == "warning" else T.DiagnosticSeverity.Error,
        source="dlspec",
        related_information=[T.DiagnosticRelatedInformation(location=_loc(r.location), message=r.message) for r in d.related] or None,
    )


def _edit(e: Edit) -> T.TextEdit:
    return T.TextEdit(range=_rng(e.range), new_text=e.new_text)


def _symbol(s: Symbol) -> T.DocumentSymbol:
    return T.DocumentSymbol(
        name=s.name,
        kind=_SYMBOL_KIND.get(s.kind, T.SymbolKind.Variable),
        range=_rng(s.range),
        selection_range=_rng(s.selection_range),
        detail=s.detail or None,
        children=[_symbol(c) for c in s.children] or None,
    )


def _completion(c: Completion) -> T.CompletionItem:
    return T.CompletionItem(
        label=c.label,
        kind=_COMPLETION_KIND.get(c.kind, T.CompletionItemKind.Text),
        detail=c.detail or None,
        documentation=c.documentation or None,
        insert_text=c.insert_text,
    )


def guarded(default: Any = None) -> Callable:
    """Run a handler; an internal error is logged to the client and ``default`` answered."""

    def wrap(f: Callable) -> Callable:
        @functools.wraps(f)
        def run(ls: DlspecServer, *args: Any) -> Any:
            try:
                return f(ls, *args)
            except JsonRpcException:
                raise
            except Exception as e:  # noqa: BLE001 - the server must outlive any bug
                ls.log(f"dlspec: internal error in {f.__name__}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
                return default() if callable(default) else default

        return run

    return wrap


def make_server(version: str = "0.1.0") -> DlspecServer:
    """The server with every feature registered."""
    server = DlspecServer("dlspec", version, text_document_sync_kind=T.TextDocumentSyncKind.Incremental)

    @server.feature(T.TEXT_DOCUMENT_DID_OPEN)
    @guarded()
    def did_open(ls: DlspecServer, params: T.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(T.TEXT_DOCUMENT_DID_CHANGE)
    @guarded()
    def did_change(ls: DlspecServer, params: T.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.cancel_pending(uri)
        loop = asyncio.get_running_loop()
        ls.pending[uri] = loop.call_later(DEBOUNCE_S, _safe_publish, ls, uri)

    @server.feature(T.TEXT_DOCUMENT_DID_SAVE)
    @guarded()
    def did_save(ls: DlspecServer, params: T.DidSaveTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(T.TEXT_DOCUMENT_DID_CLOSE)
    @guarded()
    def did_close(ls: DlspecServer, params: T.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.cancel_pending(uri)
        ls.analyses.pop(uri, None)
        ls.good.pop(uri, None)
        ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(T.TEXT_DOCUMENT_INLAY_HINT, T.InlayHintOptions(resolve_provider=False))
    @guarded(list)
    def inlay_hint(ls: DlspecServer, params: T.InlayHintParams) -> list[T.InlayHint]:
        uri = params.text_document.uri
        a = ls.analysis(uri)
        r = Range(_pos(params.range.start), _pos(params.range.end))
        hints = a.hints(r) if a.reports else stale_hints(ls.good.get(uri), a, r)
        return [
            T.InlayHint(
                position=T.Position(line=h.position.line, character=h.position.character),
                label=h.label,
                padding_left=True,
                tooltip=h.tooltip or None,
            )
            for h in hints
        ]

    @server.feature(T.TEXT_DOCUMENT_HOVER)
    @guarded()
    def hover(ls: DlspecServer, params: T.HoverParams) -> T.Hover | None:
        h = ls.analysis(params.text_document.uri).hover(_pos(params.position))
        if h is None:
            return None
        return T.Hover(contents=T.MarkupContent(kind=T.MarkupKind.Markdown, value=h.markdown), range=_rng(h.range) if h.range else None)

    @server.feature(T.TEXT_DOCUMENT_COMPLETION, T.CompletionOptions(trigger_characters=[" ", "(", ">"]))
    @guarded()
    def completion(ls: DlspecServer, params: T.CompletionParams) -> T.CompletionList:
        uri = params.text_document.uri
        items = ls.analysis(uri).complete(_pos(params.position), ls.good.get(uri))
        return T.CompletionList(is_incomplete=False, items=[_completion(c) for c in items])

    @server.feature(T.TEXT_DOCUMENT_DEFINITION)
    @guarded(list)
    def definition(ls: DlspecServer, params: T.DefinitionParams) -> list[T.Location]:
        return [_loc(x) for x in ls.analysis(params.text_document.uri).definition(_pos(params.position))]

    @server.feature(T.TEXT_DOCUMENT_REFERENCES)
    @guarded(list)
    def references(ls: DlspecServer, params: T.ReferenceParams) -> list[T.Location]:
        a = ls.analysis(params.text_document.uri)
        return [_loc(x) for x in a.references(_pos(params.position), params.context.include_declaration)]

    @server.feature(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    @guarded(list)
    def document_symbol(ls: DlspecServer, params: T.DocumentSymbolParams) -> list[T.DocumentSymbol]:
        return [_symbol(s) for s in ls.analysis(params.text_document.uri).symbols()]

    @server.feature(T.TEXT_DOCUMENT_RENAME, T.RenameOptions(prepare_provider=False))
    @guarded()
    def rename(ls: DlspecServer, params: T.RenameParams) -> T.WorkspaceEdit | None:
        uri = params.text_document.uri
        try:
            edits = ls.analysis(uri).rename(_pos(params.position), params.new_name)
        except RenameError as e:
            raise JsonRpcException(str(e), code=-32803) from None  # RequestFailed: the client shows the reason
        return T.WorkspaceEdit(changes={uri: [_edit(e) for e in edits]})

    @server.feature(T.TEXT_DOCUMENT_FORMATTING)
    @guarded(list)
    def formatting(ls: DlspecServer, params: T.DocumentFormattingParams) -> list[T.TextEdit]:
        return [_edit(e) for e in ls.analysis(params.text_document.uri).format()]

    return server


def _safe_publish(ls: DlspecServer, uri: str) -> None:
    try:
        ls.publish(uri)
    except Exception as e:  # noqa: BLE001 - a debounced check must not take the loop down
        ls.log(f"dlspec: internal error while checking {uri}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
