"""`baton lsp` whose diagnostics arrive late, for the suite's own test of its waits.

Every diagnostics notification is held back `DELAY` seconds on the server's event loop (other
requests are answered meanwhile, as a busy server would): a helper that waits for diagnostics
must find them whenever they come, within its bound, and never hang.
"""

from __future__ import annotations

import asyncio

from lsprotocol import types as lsp

from engine.lsp import server

DELAY = 1.5
_publish = server.FlowServer.text_document_publish_diagnostics


def _later(self: server.FlowServer, params: lsp.PublishDiagnosticsParams) -> None:
    asyncio.get_running_loop().call_later(DELAY, _publish, self, params)


server.FlowServer.text_document_publish_diagnostics = _later  # type: ignore[method-assign]

if __name__ == "__main__":
    server.lsp_main()
