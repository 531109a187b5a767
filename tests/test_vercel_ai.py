"""The Vercel AI SDK (from npm) against a real `baton serve`: its OpenAI provider's default model speaks the Responses
API, `openai.chat(...)` chat completions, its Anthropic provider the Messages API; generated and streamed, on an alias
and on a multi-step flow (whose stream carries step progress the SDK must take in its stride)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.run.reader import list_runs
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import ROOT, WORKFLOWS
from tests.helpers import npm_packages, smart_reply
from tests.serve_harness import BatonServer, write_pool

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "tests" / "js" / "vercel_ai.mjs"
PACKAGES = ("ai@6", "@ai-sdk/openai@3", "@ai-sdk/anthropic@3")


@pytest.fixture(scope="module")
def ai_sdk(request: pytest.FixtureRequest) -> Path:
    folder = npm_packages(request, "vercel-ai-sdk", PACKAGES)
    shutil.copy(SCRIPT, folder / SCRIPT.name)  # beside its node_modules, where its imports resolve
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatonServer]:
    root = tmp_path_factory.mktemp("vercel")
    with ChatServer(responder=lambda body: Reply(text=smart_reply(body), chunk_delay=0.0005)) as upstream:
        pool = write_pool(upstream.url, root / "pool.toml")
        with BatonServer("--flows", str(WORKFLOWS), "--pool", str(pool), home=root / "home") as server:
            yield server


@pytest.mark.parametrize("model", ["fast", "flow/layered"])
def test_the_vercel_ai_sdk_generates_and_streams_through_all_three_apis(ai_sdk: Path, served: BatonServer, model: str) -> None:
    proc = subprocess.run(["node", SCRIPT.name, served.url, model], cwd=ai_sdk, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "AI_SDK_LOG_WARNINGS": "false"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    answers = {out[k]["text"] for k in ("responses", "responsesStream", "chat", "messages", "messagesStream")}
    assert len(answers) == 1 and next(iter(answers))  # one answer, whichever API and however it was read
    runs = list_runs(served.home, 50)
    assert any(r.output == next(iter(answers)) and r.input_tokens == out["responses"]["inputTokens"] for r in runs)
    assert out["responses"]["finishReason"] == "stop" and out["responses"]["modelId"] == model
    assert out["responsesStream"]["usage"]["outputTokens"] == out["responses"]["outputTokens"]
    assert (out["messages"]["inputTokens"], out["messages"]["outputTokens"]) == (out["responses"]["inputTokens"],
                                                                                 out["responses"]["outputTokens"])


def test_a_tool_round_trip_through_the_vercel_ai_sdk_over_each_api(ai_sdk: Path, tmp_path: Path) -> None:
    """The SDK offers a tool, runs the call the model makes and sends the result back, through a pool alias."""
    from tests.test_serve_tools import agent

    shutil.copy(SCRIPT.with_name("vercel_ai_tools.mjs"), ai_sdk / "vercel_ai_tools.mjs")
    with ChatServer(responder=agent) as upstream, \
            BatonServer("--pool", str(write_pool(upstream.url, tmp_path / "pool.toml")), home=tmp_path / "home") as server:
        proc = subprocess.run(["node", "vercel_ai_tools.mjs", server.url, "fast"], cwd=ai_sdk, capture_output=True, text=True,
                              timeout=180, env={**os.environ, "AI_SDK_LOG_WARNINGS": "false"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        tool_results = [r["messages"][-1] for r in upstream.requests if r["messages"][-1]["role"] == "tool"]
    assert out["calls"] == ["Paris", "Paris", "Paris"]
    for api in ("responses", "chat", "messages"):
        assert out[api] == {"text": "It is 18 degrees in Paris.", "steps": 2}, api
    assert len(tool_results) == 3 and all(json.loads(t["content"]) == {"celsius": 18} for t in tool_results)
