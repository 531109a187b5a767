"""Every reference flow runs to completion, on the loopback HTTP server and on the in-process provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.pool import load_pool
from engine.providers.scripted import ScriptedProvider
from engine.run.protocol import ChatRequest
from engine.testing.chat_server import ChatServer
from tests.conftest import WORKFLOWS, loopback_pool
from tests.helpers import run, shape, smart_reply

FLOWS = sorted(WORKFLOWS.glob("*.flow"))
INPUTS = {"question": "Write def total(xs) that sums a list; what is 2 + 2?"}


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_reference_flow_on_loopback_server(path: Path, home: Path, snapshot) -> None:  # type: ignore[no-untyped-def]
    with ChatServer(responder=smart_reply) as server:
        summary = run(path, INPUTS, loopback_pool(server.url), home)
        assert summary.status == "ok"
        assert summary.output
        assert server.count() == summary.calls
        assert all(s.status in ("ok", "skipped") for s in summary.steps.values())
        run_dir = home / "runs" / summary.run_id
        for name in ("flow.flow", "inputs.json", "pool.json", "events.jsonl", "summary.json"):
            assert (run_dir / name).exists(), name
        assert shape(summary) == snapshot


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_reference_flow_in_process(path: Path, home: Path, snapshot) -> None:  # type: ignore[no-untyped-def]
    def reply(request: ChatRequest) -> str:
        return smart_reply({"model": request.alias, "messages": list(request.messages), "response_format": request.response_format})

    provider = ScriptedProvider(default=reply)
    summary = run(path, INPUTS, load_pool(WORKFLOWS / "models.toml"), home, providers={"*": provider})
    assert summary.status == "ok"
    assert len(provider.requests) == summary.calls
    assert shape(summary) == snapshot
