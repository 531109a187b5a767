"""`kind = "anthropic"`: Baton calling a Messages API natively. The upstream is a real Messages endpoint on loopback,
`baton serve`'s own (the one the official Anthropic SDK is tested against), in front of the loopback chat server;
and the translation of Anthropic's replies (prompt-cache usage, stop reasons, errors, broken streams) is checked on
the shapes Anthropic sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ProviderError
from engine.model import Params
from engine.pool import ModelSpec, Pool, ProviderSpec
from engine.providers.anthropic import AnthropicProvider, MessageEvents
from engine.run.protocol import ChatRequest, ProviderFault, ToolOffer
from engine.session import Session
from engine.testing.chat_server import ChatServer, Reply
from tests.serve_harness import BatonServer, write_pool

KEY = "sk-ant-test-0123456789abcdef"
CALL = {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def agent(body: dict[str, Any]) -> Reply:
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Reply(text="It is 18 degrees in Paris.")
    if body.get("tools"):
        return Reply(message={"tool_calls": [CALL]}, finish_reason="tool_calls")
    return Reply(text=f"answer to: {last['content']}", chunk_delay=0.0005)


@pytest.fixture(scope="module")
def messages_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChatServer, BatonServer]]:
    root = tmp_path_factory.mktemp("anthropic")
    with ChatServer(responder=agent) as upstream, \
            BatonServer("--pool", str(write_pool(upstream.url, root / "pool.toml")), home=root / "home") as server:
        yield upstream, server


def claude_pool(url: str, **prices: float) -> Pool:
    spec = ProviderSpec(kind="anthropic", base_url=url, api_key_env="BATON_TEST_ANTHROPIC_KEY")
    return Pool(providers={"claude": spec}, models={"sonnet": ModelSpec(provider="claude", id="fast", **prices)}, source="<claude>")


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_through_a_messages_api_answers_with_its_text_and_usage(messages_endpoint: tuple[ChatServer, BatonServer],
                                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                        stream: bool) -> None:
    upstream, server = messages_endpoint
    monkeypatch.setenv("BATON_TEST_ANTHROPIC_KEY", KEY)
    pieces: list[str] = []

    async def go() -> Any:
        async with Session(claude_pool(server.url, input_price=3.0, output_price=15.0), home=tmp_path, cache=False) as session:
            return await session.call("sonnet", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
                                      params=Params(max_tokens=64, temperature=0.7), on_text=pieces.append if stream else None)

    result = asyncio.run(go())
    assert result.text == "answer to: hello" and (not stream or "".join(pieces) == result.text)
    sent = upstream.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    (attempt,) = result.attempts
    billed = upstream.bills[-1]
    assert (attempt.input_tokens, attempt.output_tokens) == (billed.prompt_tokens, billed.completion_tokens)
    assert attempt.cost == pytest.approx((billed.prompt_tokens * 3.0 + billed.completion_tokens * 15.0) / 1e6)


def test_tools_round_trip_through_a_messages_api(messages_endpoint: tuple[ChatServer, BatonServer], monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    upstream, server = messages_endpoint
    monkeypatch.setenv("BATON_TEST_ANTHROPIC_KEY", KEY)
    question = [{"role": "user", "content": "weather in Paris?"}]

    async def go() -> tuple[Any, Any]:
        async with Session(claude_pool(server.url), home=tmp_path, cache=False) as session:
            first = await session.call("sonnet", question, tools=ToolOffer((TOOL,), "required"))
            second = await session.call("sonnet", [*question, {"role": "assistant", "content": None, "tool_calls": first.tool_calls},
                                                   {"role": "tool", "tool_call_id": "call_w1", "content": '{"celsius": 18}'}],
                                        tools=ToolOffer((TOOL,)))
            return first, second

    first, second = asyncio.run(go())
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in first.tool_calls] == \
        [("call_w1", "get_weather", {"city": "Paris"})]
    assert second.text == "It is 18 degrees in Paris."
    assert upstream.requests[-1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_w1", "content": '{"celsius": 18}'}


def test_an_unknown_model_is_a_client_error_not_retried(messages_endpoint: tuple[ChatServer, BatonServer],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _upstream, server = messages_endpoint
    monkeypatch.setenv("BATON_TEST_ANTHROPIC_KEY", KEY)
    pool = claude_pool(server.url)
    pool = pool.model_copy(update={"models": {"sonnet": pool.models["sonnet"].model_copy(update={"id": "no-such-model"})}})

    async def go() -> None:
        async with Session(pool, home=tmp_path, cache=False) as session:
            await session.call("sonnet", [{"role": "user", "content": "x"}])

    with pytest.raises(ProviderError, match="HTTP 404") as caught:
        asyncio.run(go())
    assert caught.value.call is not None and [a.cause for a in caught.value.call.attempts] == ["client_error"]


def provider() -> AnthropicProvider:
    return AnthropicProvider("claude", ProviderSpec(kind="anthropic", base_url="http://127.0.0.1:9/v1"))


def test_prompt_cache_usage_is_counted_whole_and_kept_apart() -> None:
    body = {"type": "message", "model": "claude-x", "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 800, "cache_creation_input_tokens": 100, "output_tokens": 7}}
    reply = provider().read(json.dumps(body).encode(), 64)
    assert (reply.text, reply.input_tokens, reply.cached_tokens, reply.cache_write_tokens, reply.output_tokens) == ("hi", 920, 800, 100, 7)
    spec = ModelSpec(provider="claude", id="x", input_price=3.0, output_price=15.0, cached_input_price=0.3, cache_write_price=3.75)
    assert spec.cost(reply.input_tokens, reply.output_tokens, reply.cached_tokens, reply.cache_write_tokens) == \
        pytest.approx((20 * 3.0 + 800 * 0.3 + 100 * 3.75 + 7 * 15.0) / 1e6)


@pytest.mark.parametrize("stop, kind", [("max_tokens", "truncated"), ("refusal", "content_filter")])
def test_stop_reasons_become_the_faults_a_retry_would_repeat(stop: str, kind: str) -> None:
    body = {"type": "message", "content": [], "stop_reason": stop, "usage": {"input_tokens": 5, "output_tokens": 64}}
    with pytest.raises(ProviderFault) as caught:
        provider().read(json.dumps(body).encode(), 64)
    assert caught.value.kind == kind and caught.value.billed is not None and caught.value.billed.output_tokens == 64


def test_an_overloaded_error_in_the_stream_is_a_retryable_fault_and_lying_usage_is_unreadable() -> None:
    events = MessageEvents(lambda _text: None, lambda text: text)
    for line in ('data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":5,"output_tokens":0}}}',
                 'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
                 'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"par"}}',
                 'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'):
        events.feed(line.encode() + b"\n\n")
    with pytest.raises(ProviderFault) as caught:
        provider().read(events.completion(), 64)
    assert caught.value.kind == "server_error" and caught.value.retryable and "Overloaded" in str(caught.value)
    lying = {"type": "message", "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
             "usage": {"input_tokens": -3, "output_tokens": 1e400}}
    assert provider().read(json.dumps(lying).encode(), 64).usage_source == "unreadable"  # -3, and Infinity


def test_the_request_is_anthropics_shape() -> None:
    request = ChatRequest(model_id="claude-x", max_tokens=100, temperature=1.5, tools=ToolOffer((TOOL,), {"type": "function", "function": {"name": "get_weather"}}),
                          messages=({"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                    {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                    {"role": "tool", "tool_call_id": "call_w1", "content": "18"}))
    body = provider().payload(request)
    assert body["system"] == "S" and body["temperature"] == 1.0 and body["max_tokens"] == 100
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": "18"}]}]
    assert body["tools"] == [{"name": "get_weather", "description": "", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert provider().auth(KEY) == {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    structured = ChatRequest(model_id="claude-x", messages=({"role": "user", "content": "a"},),
                             response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}})
    assert provider().payload(structured)["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def message_body(text: str, **usage: int) -> bytes:
    return json.dumps({"type": "message", "model": "fast", "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 12, "output_tokens": 3, **usage}}).encode()


def test_the_boundary_holds_for_the_new_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hostile shapes from a Messages API: an error that echoes the key, 529 overloaded, a body cut short after HTTP 200."""
    monkeypatch.setenv("BATON_TEST_ANTHROPIC_KEY", KEY)
    echo = json.dumps({"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key {KEY}"}}).encode()
    overloaded = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    with ChatServer() as upstream:
        pool = claude_pool(upstream.url, input_price=3.0, output_price=15.0)

        async def call() -> Any:
            async with Session(pool, home=tmp_path, cache=False, sleep=lambda _s: asyncio.sleep(0)) as session:
                return await session.call("sonnet", [{"role": "user", "content": "x"}], params=Params(max_tokens=50))

        upstream.script["fast"] = [Reply(status=401, raw=echo)]
        with pytest.raises(ProviderError) as caught:
            asyncio.run(call())
        assert KEY[:8] not in str(caught.value) and "authentication_error" in str(caught.value)
        assert upstream.request_headers[-1]["x-api-key"] == KEY and "authorization" not in {h.lower() for h in upstream.request_headers[-1]}

        upstream.script["fast"] = [Reply(status=529, raw=overloaded), Reply(raw=message_body("fine"), completion_tokens=3)]
        result = asyncio.run(call())
        assert result.text == "fine" and [a.cause for a in result.attempts] == ["server_error", ""]

        upstream.script["fast"] = [Reply(raw=message_body("cut"), truncate=True, completion_tokens=3)] * 3
        with pytest.raises(ProviderError) as cut:
            asyncio.run(call())
        assert cut.value.call is not None and all(a.cost_source == "estimated" and a.cost > 0 for a in cut.value.call.attempts)
