"""Provider faults, injected by a real HTTP server on loopback: each is classified, retried per policy, recorded."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from engine.errors import ProviderError
from engine.pool import ModelSpec, Pool, ProviderSpec
from engine.run.calls import RetryPolicy
from engine.run.store import read_step_journal
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import loopback_pool
from tests.helpers import flow_from, run

FAST = RetryPolicy(base=0.001, cap=0.01)

FAULTS = {
    "429_retry_after": (Reply(status=429, headers={"Retry-After": "0"}), "rate_limited"),
    "429_plain": (Reply(status=429), "rate_limited"),
    "500": (Reply(status=500), "server_error"),
    "502": (Reply(status=502), "server_error"),
    "503": (Reply(status=503), "server_error"),
    "408": (Reply(status=408), "rate_limited"),
    "reset": (Reply(reset=True), "connect"),
    "read_timeout": (Reply(text="late", delay=1.5), "timeout"),
    "malformed_json": (Reply(raw=b'{"choices": [ {"message": '), "bad_response"),
    "no_choices": (Reply(raw=b'{"id": "x", "choices": []}'), "bad_response"),
    "empty_message": (Reply(text=""), "empty_reply"),
    "truncated_body": (Reply(text="a complete reply that is cut in half", truncate=True), "connect"),
    "html_error_page": (Reply(raw=b"<html><body>Bad gateway</body></html>", content_type="text/html"), "bad_response"),
    "error_object": (Reply(raw=b'{"error": {"message": "overloaded"}}'), "server_error"),
}

FLOW = """
input q
step a { model: fast  task: "first {q}" }
step b { model: coder  fallback: cheap  sees: a  task: "second"  retries: 1  timeout: 0.5s }
output b
"""
FLOW_NO_FALLBACK = FLOW.replace("  fallback: cheap", "")


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_is_retried_then_falls_back(name: str, home: Path) -> None:
    fault, cause = FAULTS[name]
    with ChatServer() as server:
        server.script["coder"] = [fault]
        server.script["cheap"] = [Reply(text="rescued by the fallback")]
        pool = loopback_pool(server.url)
        summary = run(flow_from(FLOW, pool), {"q": "x"}, pool, home, retry=FAST)
        b = summary.steps["b"]
        assert [(a.alias, a.status, a.cause) for a in b.attempts] == [("coder", "fault", cause)] * 2 + [("cheap", "ok", "")]
        assert b.model == "cheap" and summary.output == "rescued by the fallback"
        assert f"`coder`: {cause}" in b.reason
        events = [json.loads(x) for x in (home / "runs" / summary.run_id / "events.jsonl").read_text().splitlines()]
        assert [e["cause"] for e in events if e["event"] == "attempt" and e["step"] == "b"] == [cause, cause, ""]


@pytest.mark.parametrize("name", ["500", "malformed_json", "read_timeout", "reset"])
def test_fault_without_fallback_fails_the_run_cleanly_and_keeps_finished_steps(name: str, home: Path) -> None:
    fault, cause = FAULTS[name]
    with ChatServer() as server:
        server.script["coder"] = [fault]
        pool = loopback_pool(server.url)
        with pytest.raises(ProviderError) as info:
            run(flow_from(FLOW_NO_FALLBACK, pool), {"q": "x"}, pool, home, retry=FAST)
        summary = info.value.summary
        assert summary.status == "failed" and summary.error_step == "b" and cause in summary.error
        assert summary.steps["a"].status == "ok" and summary.steps["a"].output
        saved = read_step_journal(home / "runs" / summary.run_id)["a"]
        assert saved.output == summary.steps["a"].output
        assert server.count("coder") == 2


def test_client_errors_are_not_retried(home: Path) -> None:
    with ChatServer() as server:
        server.script["coder"] = [Reply(status=401, text="bad key")]
        pool = loopback_pool(server.url)
        with pytest.raises(ProviderError, match="client_error"):
            run(flow_from(FLOW_NO_FALLBACK, pool), {"q": "x"}, pool, home, retry=FAST)
        assert server.count("coder") == 1


def test_the_provider_timeout_is_a_ceiling_over_the_step_timeout(home: Path) -> None:
    """A step without `timeout:` (120 s by default) still gives up at its provider's `timeout`."""
    with ChatServer() as server:
        server.script["fast"] = [Reply(text="late", delay=2.0)]
        pool = loopback_pool(server.url, timeout=0.3)
        with pytest.raises(ProviderError) as info:
            run(flow_from('input q\nstep a { model: fast  task: "{q}" }', pool), {"q": "x"}, pool, home, retry=FAST)
    attempts = info.value.summary.steps["a"].attempts
    assert attempts and all(a.cause == "timeout" and a.latency_ms < 1500 for a in attempts)


def test_connection_refused_is_a_connect_fault(home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    pool = Pool(providers={"dead": ProviderSpec(kind="openai", base_url=f"http://127.0.0.1:{dead_port}/v1")},
                models={"fast": ModelSpec(provider="dead", id="fast")})
    flow = flow_from('input q\nstep a { model: fast  task: "{q}"  retries: 1 }', pool)
    with pytest.raises(ProviderError) as info:
        run(flow, {"q": "x"}, pool, home, retry=FAST)
    attempts = info.value.summary.steps["a"].attempts
    assert [a.cause for a in attempts] == ["connect", "connect"]
    assert attempts[0].reason == f"dead: connection to 127.0.0.1:{dead_port} failed: connection refused"  # the OS's words, not aiohttp's


def test_lenient_about_content_type_when_the_body_is_valid(home: Path) -> None:
    with ChatServer() as server:
        server.responder = lambda body: Reply(text="fine", content_type="text/plain")
        pool = loopback_pool(server.url)
        summary = run(flow_from(FLOW_NO_FALLBACK, pool), {"q": "x"}, pool, home)
        assert summary.output == "fine"


def test_https_proxy_from_the_environment_carries_the_calls(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a corporate proxy, `HTTP(S)_PROXY` is honoured; `NO_PROXY` and loopback hosts bypass it."""
    from engine.providers.openai_compat import environment_proxy

    with ChatServer() as proxy:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url.rsplit("/v1", 1)[0])
        pool = Pool(providers={"far": ProviderSpec(kind="openai", base_url="http://models.example.invalid/v1")},
                    models={"fast": ModelSpec(provider="far", id="fast")})
        summary = run(flow_from('input q\nstep a { model: fast  task: "{q}" }', pool), {"q": "via proxy"}, pool, home, cache=False)
        assert summary.status == "ok"
        assert proxy.count() == 1  # the request went to the proxy, addressed to the far host
        monkeypatch.setenv("NO_PROXY", "models.example.invalid")
        assert environment_proxy(httpx.URL("http://models.example.invalid/v1")) is None
        monkeypatch.delenv("NO_PROXY")
        assert environment_proxy(httpx.URL("http://127.0.0.1:8000/v1")) is None
        assert environment_proxy(httpx.URL("http://models.example.invalid/v1")) is not None
        monkeypatch.setenv("HTTP_PROXY", "socks5://user:secret@proxy.example.invalid:1080")
        with pytest.raises(ValueError, match="only http") as info:
            environment_proxy(httpx.URL("http://models.example.invalid/v1"))
        assert "secret" not in str(info.value)


def test_the_api_key_is_read_when_each_call_is_made(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key rotated in the environment is used from the next call on, by the same provider."""
    import asyncio

    from engine.providers.openai_compat import OpenAICompatProvider
    from engine.session import run_flow

    with ChatServer() as server:
        spec = ProviderSpec(kind="openai", base_url=server.url, api_key_env="BATON_TEST_ROTATING_KEY")
        pool = Pool(providers={"loop": spec}, models={"fast": ModelSpec(provider="loop", id="fast")})
        flow = flow_from('input q\nstep a { model: fast  task: "{q}" }', pool)
        provider = OpenAICompatProvider("loop", spec)

        async def two_runs() -> None:
            for key in ("first-key", "second-key"):
                monkeypatch.setenv("BATON_TEST_ROTATING_KEY", key)
                await run_flow(flow, {"q": key}, pool=pool, home=home, cache=False, providers={"loop": provider})
            await provider.aclose()

        asyncio.run(two_runs())
        assert [h.get("Authorization") for h in server.request_headers] == ["Bearer first-key", "Bearer second-key"]
        assert all(h.get("User-Agent", "").startswith("baton/") for h in server.request_headers)
