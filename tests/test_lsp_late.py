"""The LSP helpers against a server whose diagnostics arrive late (`tests/late_lsp_server.py`): the suite's
waits find them when they come, and a wait with a bound shorter than the delay fails with a message, never hangs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")

from lsprotocol import types as lsp  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

from tests.conftest import ROOT, WORKFLOWS  # noqa: E402
from tests.late_lsp_server import DELAY  # noqa: E402
from tests.test_lsp import beside_the_pool, change, close_doc, diagnostics_for, open_doc  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, str(ROOT / "tests" / "late_lsp_server.py")]))
async def client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                                             root_uri=WORKFLOWS.as_uri()))
    yield
    await lsp_client.shutdown_session()


async def test_late_diagnostics_are_found_when_they_come(client: LanguageClient, tmp_path: Path) -> None:
    path = beside_the_pool(tmp_path, "late.flow", 'input q\nstep a { model: fsat  task: "{q}" }\n')
    found = await open_doc(client, path)
    assert [d.code for d in found] == ["E202"]
    uri = path.as_uri()
    change(client, lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version=2, uri=uri),
        [lsp.TextDocumentContentChangeWholeDocument(text='input q\nstep a { model: fast  task: "{q}" }\n')]))
    assert await diagnostics_for(client, uri) == []
    close_doc(client, path)


async def test_a_wait_shorter_than_the_delay_fails_with_a_message(client: LanguageClient, tmp_path: Path) -> None:
    path = beside_the_pool(tmp_path, "later.flow", (WORKFLOWS / "hello.flow").read_text())
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "flow", 1, path.read_text())))
    with pytest.raises(TimeoutError, match="no diagnostics were published"):
        await diagnostics_for(client, uri, timeout=DELAY / 5)
    assert await diagnostics_for(client, uri) == []  # and they still come
    close_doc(client, path)
