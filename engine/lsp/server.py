"""`baton lsp`: the Language Server Protocol over stdio (pygls), for editors that open `.flow` files.

Each change re-checks the whole document with the checker (a 200-step flow checks in
tens of milliseconds; docs/editors.md has the figures) and publishes the same diagnostics
`baton validate` prints. The pool is found for each file as `validate` finds it (beside
the file, `$BATON_POOL`, the built-in pool), once per folder. Positions: the checker
counts characters, LSP counts UTF-16 units; pygls' position codec converts both ways.
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path
from pygls.workspace import TextDocument

from engine.diagnostics import Diagnostic
from engine.errors import PoolError
from engine.lsp import features
from engine.lsp.index import Definition
from engine.pool import Pool, default_pool, discover_pool
from engine.syntax.ast import Span

#: LSP's `RequestFailed` error code: a request that was understood and refused (a rename to a name in use).
REQUEST_FAILED = -32803
SEVERITY = {"error": lsp.DiagnosticSeverity.Error, "warning": lsp.DiagnosticSeverity.Warning}
SYMBOL_KIND = {"step": lsp.SymbolKind.Function, "verify": lsp.SymbolKind.Boolean, "fuse": lsp.SymbolKind.Class,
               "route": lsp.SymbolKind.Enum, "loop": lsp.SymbolKind.Namespace}
COMPLETION_KIND = {"keyword": lsp.CompletionItemKind.Keyword, "property": lsp.CompletionItemKind.Property,
                   "alias": lsp.CompletionItemKind.Module, "name": lsp.CompletionItemKind.Variable, "value": lsp.CompletionItemKind.EnumMember,
                   "field": lsp.CompletionItemKind.Field}


class FlowServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("baton-lsp", "1", text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.analyses: dict[str, features.Analysis] = {}
        self.pools: dict[str, Pool] = {}

    def pool_for(self, uri: str) -> Pool:
        path = to_fs_path(uri)
        folder = str(Path(path).parent) if path else ""
        if folder not in self.pools:
            try:
                self.pools[folder] = discover_pool(path) if path else default_pool()
            except PoolError as err:
                self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Warning, f"baton: {err}; using the built-in pool"))
                self.pools[folder] = default_pool()
        return self.pools[folder]

    def refresh(self, doc: TextDocument) -> features.Analysis:
        analysis = features.analyse(doc.source, self.pool_for(doc.uri), _filename(doc.uri))
        self.analyses[doc.uri] = analysis
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
            uri=doc.uri, version=doc.version, diagnostics=[_diagnostic(doc, d) for d in analysis.check.diagnostics]))
        return analysis

    def analysis(self, uri: str) -> tuple[TextDocument, features.Analysis]:
        doc = self.workspace.get_text_document(uri)
        current = self.analyses.get(uri)
        if current is None or current.source != doc.source:
            current = self.refresh(doc)
        return doc, current


def _filename(uri: str) -> str:
    path = to_fs_path(uri)
    return path or uri


def to_range(doc: TextDocument, span: Span) -> lsp.Range:
    """A checker span (1-based, characters) as an LSP range (0-based, the client's units)."""
    server = lsp.Range(lsp.Position(max(0, span.line - 1), max(0, span.column - 1)),
                       lsp.Position(max(0, span.end_line - 1), max(0, span.end_column - 1)))
    return doc.position_codec.range_to_client_units(doc.lines, server)


def from_position(doc: TextDocument, position: lsp.Position) -> tuple[int, int]:
    """An LSP position as the checker's (line, column)."""
    if position.line >= len(doc.lines):  # the empty line after the last newline (the codec would clamp it to the line before)
        return position.line + 1, position.character + 1
    server = doc.position_codec.position_from_client_units(doc.lines, position)
    return server.line + 1, server.character + 1


def _diagnostic(doc: TextDocument, d: Diagnostic) -> lsp.Diagnostic:
    related = [lsp.DiagnosticRelatedInformation(lsp.Location(doc.uri, to_range(doc, span)), message) for message, span in d.related]
    message = d.message + (f"\n{d.hint}" if d.hint else "")
    return lsp.Diagnostic(range=to_range(doc, d.span), message=message, severity=SEVERITY[d.severity], code=d.code,
                          source="baton", related_information=related or None)


server = FlowServer()


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: FlowServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.refresh(ls.workspace.get_text_document(params.text_document.uri))


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: FlowServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.refresh(ls.workspace.get_text_document(params.text_document.uri))


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: FlowServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.pools.clear()  # a saved models.toml beside the flow takes effect
    ls.refresh(ls.workspace.get_text_document(params.text_document.uri))


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: FlowServer, params: lsp.DidCloseTextDocumentParams) -> None:
    ls.analyses.pop(params.text_document.uri, None)
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: FlowServer, params: lsp.HoverParams) -> lsp.Hover | None:
    doc, a = ls.analysis(params.text_document.uri)
    found = features.hover(a, *from_position(doc, params.position))
    if found is None:
        return None
    text, span = found
    return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text), to_range(doc, span))


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[":", " ", "{", ","]))
def completion(ls: FlowServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    doc, a = ls.analysis(params.text_document.uri)
    items = [lsp.CompletionItem(c.label, kind=COMPLETION_KIND[c.kind], detail=c.detail or None)
             for c in features.complete(a, *from_position(doc, params.position))]
    return lsp.CompletionList(is_incomplete=False, items=items)


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: FlowServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    doc, a = ls.analysis(params.text_document.uri)
    found = features.definition(a, *from_position(doc, params.position))
    return lsp.Location(doc.uri, to_range(doc, found.span)) if found is not None else None


@server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
def references(ls: FlowServer, params: lsp.ReferenceParams) -> list[lsp.Location]:
    doc, a = ls.analysis(params.text_document.uri)
    spans = features.references(a, *from_position(doc, params.position), params.context.include_declaration)
    return [lsp.Location(doc.uri, to_range(doc, s)) for s in spans]


@server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
def prepare_rename(ls: FlowServer, params: lsp.PrepareRenameParams) -> lsp.Range | None:
    doc, a = ls.analysis(params.text_document.uri)
    line, column = from_position(doc, params.position)
    found = features.definition(a, line, column)
    hit = a.index.at(line, column) if a.index is not None else None
    return to_range(doc, hit.span) if found is not None and hit is not None else None


@server.feature(lsp.TEXT_DOCUMENT_RENAME)
def rename(ls: FlowServer, params: lsp.RenameParams) -> lsp.WorkspaceEdit:
    doc, a = ls.analysis(params.text_document.uri)
    try:
        edits = features.rename(a, *from_position(doc, params.position), params.new_name)
    except features.RenameRefused as err:
        # LSP's RequestFailed: an editor shows the message as a refusal, not as a crash with a Python traceback
        raise JsonRpcException(str(err), code=REQUEST_FAILED) from None
    return lsp.WorkspaceEdit(changes={doc.uri: [lsp.TextEdit(to_range(doc, span), text) for span, text in edits]})


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: FlowServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    doc, a = ls.analysis(params.text_document.uri)
    text = features.formatted(a, _filename(doc.uri))
    if text is None or text == doc.source:
        return [] if text is not None else None
    lines = doc.lines
    end = lsp.Position(len(lines), 0)
    return [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), end), text)]


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def symbols(ls: FlowServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    doc, a = ls.analysis(params.text_document.uri)
    children: dict[str, list[lsp.DocumentSymbol]] = {}
    for d in features.outline(a):  # a loop's members come after it
        if d.loop:
            children.setdefault(d.loop, []).append(_symbol(doc, d, []))
    return [_symbol(doc, d, children.get(d.name, [])) for d in features.outline(a) if not d.loop]


def _symbol(doc: TextDocument, d: Definition, children: list[lsp.DocumentSymbol]) -> lsp.DocumentSymbol:
    return lsp.DocumentSymbol(name=d.name, kind=SYMBOL_KIND.get(d.kind, lsp.SymbolKind.Object), range=to_range(doc, d.whole),
                              selection_range=to_range(doc, d.span), detail=d.kind, children=children)


@server.feature(lsp.TEXT_DOCUMENT_FOLDING_RANGE)
def folding(ls: FlowServer, params: lsp.FoldingRangeParams) -> list[lsp.FoldingRange]:
    _doc, a = ls.analysis(params.text_document.uri)
    return [lsp.FoldingRange(start_line=first - 1, end_line=last - 1) for first, last in features.folding(a)]


@server.feature(lsp.TEXT_DOCUMENT_CODE_LENS)
def code_lens(ls: FlowServer, params: lsp.CodeLensParams) -> list[lsp.CodeLens]:
    _doc, a = ls.analysis(params.text_document.uri)
    found = features.lens(a)
    if found is None:
        return []
    line, text = found
    return [lsp.CodeLens(lsp.Range(lsp.Position(line - 1, 0), lsp.Position(line - 1, 0)), lsp.Command(text, ""))]


def lsp_main() -> None:
    """Serve over stdio until the client exits."""
    server.start_io()
