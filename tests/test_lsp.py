"""`baton lsp` driven by a real LSP client (pytest-lsp) over stdio: every feature, on the reference flows,
a broken file, and a file edited incrementally."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")

from lsprotocol import types as lsp  # noqa: E402
from pygls.exceptions import JsonRpcException  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

from engine.pool import load_pool  # noqa: E402
from engine.syntax.fmt import format_source  # noqa: E402
from tests.conftest import ROOT, WORKFLOWS  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")
FLOWS = sorted(WORKFLOWS.glob("*.flow"))


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "engine.cli.main", "lsp"]))
async def client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                                             root_uri=WORKFLOWS.as_uri()))
    yield
    await lsp_client.shutdown_session()


async def open_doc(client: LanguageClient, path: Path, text: str | None = None) -> list[lsp.Diagnostic]:
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "flow", 1, text if text is not None else path.read_text())))
    return await diagnostics_for(client, uri)


def change(client: LanguageClient, params: lsp.DidChangeTextDocumentParams) -> None:
    """Send an edit, forgetting the document's last diagnostics first: `diagnostics_for` then waits for the new ones."""
    client.diagnostics.pop(params.text_document.uri, None)
    client.text_document_did_change(params)


async def diagnostics_for(client: LanguageClient, uri: str, timeout: float = 60.0) -> list[lsp.Diagnostic]:
    """The diagnostics published for `uri` since they were last forgotten (`open_doc`, `change`).

    pytest-lsp keeps the last diagnostics of every document, so they are found even when they arrived before this
    wait began (waiting for the next notification lost that race and hung); the wait is bounded, so a server that
    never publishes fails the test with a message instead of hanging the suite."""
    deadline = asyncio.get_running_loop().time() + timeout
    while uri not in client.diagnostics:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no diagnostics were published for {uri} within {timeout:g}s")
        await asyncio.sleep(0.01)
    return list(client.diagnostics[uri])


def close_doc(client: LanguageClient, path: Path) -> None:
    client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(path.as_uri())))


def beside_the_pool(tmp_path: Path, name: str, text: str) -> Path:
    """A flow in a folder with the reference pool beside it, as `validate` and the server find pools."""
    (tmp_path / "models.toml").write_text((WORKFLOWS / "models.toml").read_text())
    path = tmp_path / name
    path.write_text(text)
    return path


def at(text: str, needle: str, offset: int = 1, occurrence: int = 0) -> lsp.Position:
    """The position `offset` characters into the `occurrence`-th `needle` (ASCII text: characters are UTF-16 units)."""
    idx = -1
    for _ in range(occurrence + 1):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx)
    return lsp.Position(line, idx - (text.rfind("\n", 0, idx) + 1) + offset)


def validate_json(path: Path) -> list[dict[str, object]]:
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "validate", str(path), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return list(json.loads(proc.stdout)["diagnostics"])


@pytest.mark.parametrize("path", FLOWS, ids=[p.stem for p in FLOWS])
async def test_every_reference_flow_gets_what_validate_says(client: LanguageClient, path: Path) -> None:
    diagnostics = await open_doc(client, path)
    expected = validate_json(path)
    assert [(d.code, d.range.start.line + 1, d.range.start.character + 1) for d in diagnostics] == \
           [(e["code"], e["range"]["start"]["line"], e["range"]["start"]["column"]) for e in expected]  # type: ignore[index]
    close_doc(client, path)


BROKEN = """version 1
flow broken "Mistakes of every kind"

input question

step draft {
  model: fsat
  task: "Answer: {question} using {review}"
}

step draft {
  model: fast
  task: "again"
}

step review {
  model: strong
  sees: draft
  task: "Review it."
  retries: 2
  retries: 3
}
"""


async def test_a_broken_file_gets_validates_codes_spans_messages_and_related_places(client: LanguageClient, tmp_path: Path) -> None:
    path = beside_the_pool(tmp_path, "broken.flow", BROKEN)
    diagnostics = await open_doc(client, path)
    expected = validate_json(path)
    assert [(d.code, d.range.start.line + 1, d.range.start.character + 1, d.range.end.character + 1) for d in diagnostics] == \
           [(e["code"], e["range"]["start"]["line"], e["range"]["start"]["column"], e["range"]["end"]["column"]) for e in expected]  # type: ignore[index]
    for d, e in zip(diagnostics, expected, strict=True):
        assert d.message.startswith(str(e["message"])) and d.source == "baton"
        assert d.severity == (lsp.DiagnosticSeverity.Error if e["severity"] == "error" else lsp.DiagnosticSeverity.Warning)
    codes = {d.code for d in diagnostics}
    assert {"E202", "E200", "E204", "E302"} <= codes, codes
    duplicate = next(d for d in diagnostics if d.code == "E200")
    assert duplicate.related_information and duplicate.related_information[0].location.range.start.line == 5  # the first `draft`
    twice = next(d for d in diagnostics if d.code == "E204")
    assert twice.related_information and twice.related_information[0].location.range.start.line == BROKEN.split("\n").index("  retries: 2")
    unknown = next(d for d in diagnostics if d.code == "E202")
    assert "did you mean `fast`?" in unknown.message
    close_doc(client, path)


async def test_diagnostics_published_before_the_wait_begins_are_found(client: LanguageClient, tmp_path: Path) -> None:
    """The race that hung the suite for 18 minutes: the server published before the test began to wait."""
    path = beside_the_pool(tmp_path, "early.flow", (WORKFLOWS / "hello.flow").read_text())
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "flow", 1, path.read_text())))
    for _ in range(500):  # until the server has published: only then does this test begin to wait
        if uri in client.diagnostics:
            break
        await asyncio.sleep(0.01)
    assert await diagnostics_for(client, uri, timeout=10) == []
    close_doc(client, path)


async def test_an_incremental_edit_updates_the_diagnostics(client: LanguageClient, tmp_path: Path) -> None:
    text = (WORKFLOWS / "conductor.flow").read_text()
    path = beside_the_pool(tmp_path, "edited.flow", text)
    assert not await open_doc(client, path)
    uri = path.as_uri()
    start = at(text, "model: reasoner", offset=len("model: "))
    end = lsp.Position(start.line, start.character + len("reasoner"))
    change(client, lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version=2, uri=uri),
        [lsp.TextDocumentContentChangePartial(range=lsp.Range(start, end), text="reasonr")]))
    (problem,) = await diagnostics_for(client, uri)
    assert problem.code == "E202" and problem.range.start == start and "did you mean `reasoner`?" in problem.message
    change(client, lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version=3, uri=uri),
        [lsp.TextDocumentContentChangePartial(range=lsp.Range(start, lsp.Position(start.line, start.character + 7)), text="reasoner")]))
    assert await diagnostics_for(client, uri) == []
    close_doc(client, path)


async def test_hover_on_an_alias_a_step_and_a_property(client: LanguageClient) -> None:
    path = WORKFLOWS / "conductor.flow"
    text = path.read_text()
    await open_doc(client, path)
    doc = lsp.TextDocumentIdentifier(path.as_uri())
    coder = load_pool(WORKFLOWS / "models.toml").models["coder"]
    alias = await client.text_document_hover_async(lsp.HoverParams(doc, at(text, "model: coder", offset=len("model: c"))))
    assert alias is not None and isinstance(alias.contents, lsp.MarkupContent)
    assert coder.id in alias.contents.value and "openrouter" in alias.contents.value and "per million tokens" in alias.contents.value
    step = await client.text_document_hover_async(lsp.HoverParams(doc, at(text, "sees: algorithm", offset=len("sees: al"))))
    assert step is not None and isinstance(step.contents, lsp.MarkupContent)
    assert "step `algorithm`" in step.contents.value and "worst case 3 calls" in step.contents.value
    prop = await client.text_document_hover_async(lsp.HoverParams(doc, at(text, "retries: 2", offset=2)))
    assert prop is not None and isinstance(prop.contents, lsp.MarkupContent)
    assert "extra attempts per model" in prop.contents.value and "a whole number" in prop.contents.value
    close_doc(client, path)


COMPLETING = """version 1
flow completing "A flow being written"

input question
input style

step first {
  model: fast
  task: "Answer {question}"
}

step second {
  model:\x20
  sees: first
  task: "Improve the answer in the style {"
\x20\x20
}
"""


async def test_completion_offers_what_may_be_written_here(client: LanguageClient, tmp_path: Path) -> None:
    path = beside_the_pool(tmp_path, "completing.flow", COMPLETING)
    await open_doc(client, path)
    doc = lsp.TextDocumentIdentifier(path.as_uri())

    async def labels(position: lsp.Position) -> set[str]:
        result = await client.text_document_completion_async(lsp.CompletionParams(doc, position))
        assert isinstance(result, lsp.CompletionList)
        return {item.label for item in result.items}

    aliases = await labels(at(COMPLETING, "model: \n", offset=len("model: ")))
    assert set(load_pool(WORKFLOWS / "models.toml").models) <= aliases  # the pool beside the file
    names = await labels(at(COMPLETING, "sees: first", offset=len("sees: ")))
    assert {"first", "question", "style", "all", "none"} <= names and "second" not in names
    template = await labels(at(COMPLETING, "style {", offset=len("style {")))
    assert template == {"question", "style", "first"}  # only what `second` may see
    props = await labels(lsp.Position(COMPLETING.split("\n").index("  "), 2))
    assert {"model", "task", "sees", "expect", "retries"} <= props and "panel" not in props
    keywords = await labels(lsp.Position(len(COMPLETING.split("\n")) - 1, 0))
    assert {"step", "fuse", "route", "loop", "input", "output"} <= keywords
    close_doc(client, path)


async def test_definition_references_and_rename(client: LanguageClient, tmp_path: Path) -> None:
    text = (WORKFLOWS / "route_label.flow").read_text()
    path = beside_the_pool(tmp_path, "route.flow", text)
    await open_doc(client, path)
    doc = lsp.TextDocumentIdentifier(path.as_uri())
    found = await client.text_document_definition_async(lsp.DefinitionParams(doc, at(text, "by triage", offset=len("by t"))))
    assert isinstance(found, lsp.Location) and found.range.start == at(text, "step triage", offset=len("step "))
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=doc, position=at(text, "step triage", offset=len("step t")), context=lsp.ReferenceContext(include_declaration=True)))
    assert refs is not None and len(refs) == 2  # its definition and the route's `by`
    question_refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=doc, position=at(text, "input question", offset=len("input q")), context=lsp.ReferenceContext(include_declaration=False)))
    assert question_refs is not None and len(question_refs) == text.count("{question}")  # every template that names it
    edit = await client.text_document_rename_async(lsp.RenameParams(text_document=doc, position=at(text, "step triage", offset=len("step t")), new_name="classify"))
    assert edit is not None and edit.changes is not None
    renamed = _apply(text, edit.changes[doc.uri])
    assert "step classify" in renamed and "route solved by classify" in renamed and "triage" not in renamed
    with pytest.raises(JsonRpcException, match="already names a step") as refused:
        await client.text_document_rename_async(lsp.RenameParams(text_document=doc, position=at(text, "step triage", offset=len("step t")), new_name="solve_code"))
    assert refused.value.code == -32803 and "Traceback" not in str(refused.value)  # RequestFailed, not an internal error
    with pytest.raises(Exception, match="reserved"):
        await client.text_document_rename_async(lsp.RenameParams(text_document=doc, position=at(text, "step triage", offset=len("step t")), new_name="else"))
    close_doc(client, path)


def _apply(text: str, edits: list[lsp.TextEdit]) -> str:
    lines = text.split("\n")
    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        assert e.range.start.line == e.range.end.line
        row = lines[e.range.start.line]
        lines[e.range.start.line] = row[: e.range.start.character] + e.new_text + row[e.range.end.character:]
    return "\n".join(lines)


async def test_formatting_symbols_folding_and_the_cost_lens(client: LanguageClient, tmp_path: Path) -> None:
    source = (WORKFLOWS / "verify_loop.flow").read_text()
    messy = source.replace("  step draft {", "step   draft{").replace("max_tokens: 800", "max_tokens:800")
    path = beside_the_pool(tmp_path, "messy.flow", messy)
    await open_doc(client, path)
    doc = lsp.TextDocumentIdentifier(path.as_uri())
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(doc, lsp.FormattingOptions(2, True)))
    assert edits and len(edits) == 1 and edits[0].new_text == format_source(messy, str(path))
    symbols = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(doc))
    assert symbols is not None
    (loop,) = [s for s in symbols if isinstance(s, lsp.DocumentSymbol)]
    assert loop.name == "refine" and [c.name for c in loop.children or []] == ["draft", "check"]
    folds = await client.text_document_folding_range_async(lsp.FoldingRangeParams(doc))
    assert folds and any(f.start_line == messy.split("\n").index("loop refine max 3 {") for f in folds)
    lenses = await client.text_document_code_lens_async(lsp.CodeLensParams(doc))
    assert lenses and lenses[0].command is not None and lenses[0].command.title.startswith("worst case ")
    assert lenses[0].range.start.line == messy.split("\n").index(next(row for row in messy.split("\n") if row.startswith("flow ")))
    close_doc(client, path)


async def test_positions_are_utf16_when_the_line_has_wide_characters(client: LanguageClient, tmp_path: Path) -> None:
    text = 'version 1\nflow wide "w"\n\ninput question\n\nstep a {\n  model: fast\n  task: "\U0001F600\U0001F600 {nope} {question}"\n}\n'
    path = beside_the_pool(tmp_path, "wide.flow", text)
    (problem,) = [d for d in await open_doc(client, path) if d.code == "E201"]
    line = text.split("\n")[7]
    start_utf16 = len(line[: line.index("{nope}")].encode("utf-16-le")) // 2
    assert problem.range.start == lsp.Position(7, start_utf16)  # two emoji are four UTF-16 units
    close_doc(client, path)
