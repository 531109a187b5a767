"""Structured outputs through `baton serve`: `response_format` (chat completions) and `text.format` (Responses) on an
alias and on a flow's output step. The provider is asked for it, every reply is checked against the schema, and a
reply that does not match is a failed attempt (retried, recorded with the reason), never an answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from engine.run.reader import load_run
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import WORKFLOWS
from tests.serve_harness import BatonServer, write_pool

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
          "required": ["city", "celsius"], "additionalProperties": False}
FORMAT = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
EXTRACT = 'input text\nstep extract {\n  model: fast\n  task: "Extract the city and temperature: {text}"\n  retries: 2\n}\n'


@pytest.fixture(scope="module")
def upstream() -> Iterator[ChatServer]:
    with ChatServer(responder=lambda body: Reply(text=json.dumps({"city": "Paris", "celsius": 18}))) as server:
        yield server


@pytest.fixture(scope="module")
def served(upstream: ChatServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatonServer]:
    root = tmp_path_factory.mktemp("structured")
    pool = write_pool(upstream.url, root / "pool.toml")
    flows = root / "flows"
    flows.mkdir()
    (flows / "extract.flow").write_text(EXTRACT)
    (flows / "typed.flow").write_text(EXTRACT.replace("  retries: 2", "  returns: city text, celsius number\n  retries: 2"))
    (flows / "fuse_panel.flow").write_text((WORKFLOWS / "fuse_panel.flow").read_text())
    with BatonServer("--flows", str(flows), "--pool", str(pool), home=root / "home") as server:
        yield server


def oa(server: BatonServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("model", ["fast", "flow/extract"])
def test_a_schema_is_asked_of_the_provider_and_a_reply_that_does_not_match_is_retried_not_answered(
        served: BatonServer, upstream: ChatServer, model: str) -> None:
    upstream.script["fast"] = [Reply(text="Paris, 18 degrees"), Reply(text='{"city": "Paris"}'),
                               Reply(text=json.dumps({"city": "Paris", "celsius": 18}))]
    before = len(upstream.requests)
    try:
        raw = oa(served).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "It is 18 degrees in Paris."}], response_format=FORMAT)  # type: ignore[arg-type]
    finally:
        upstream.script.pop("fast", None)
    reply = raw.parse()
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Paris", "celsius": 18}
    assert all(r["response_format"] == FORMAT for r in upstream.requests[before:])
    record = load_run(raw.headers["x-baton-run-id"], served.home)
    attempts = record.steps[record.output_step].attempts
    assert [(a.status, a.cause) for a in attempts] == [("fault", "bad_response"), ("fault", "bad_response"), ("ok", "")]
    assert "not JSON" in attempts[0].reason and "does not match the schema" in attempts[1].reason and "celsius" in attempts[1].reason


def test_the_responses_api_text_format_holds_a_flows_output_to_the_schema(served: BatonServer, upstream: ChatServer) -> None:
    before = len(upstream.requests)
    reply = oa(served).responses.create(model="flow/extract", input="It is 18 degrees in Paris.",
                                        text={"format": {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}})
    assert json.loads(reply.output_text) == {"city": "Paris", "celsius": 18}
    assert upstream.requests[before]["response_format"] == FORMAT


def test_a_reply_that_never_matches_fails_the_request_and_says_why(served: BatonServer, upstream: ChatServer) -> None:
    upstream.script["fast"] = [Reply(text="no JSON here")]
    try:
        with pytest.raises(openai.InternalServerError, match="not JSON"):
            oa(served).chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}], response_format=FORMAT)  # type: ignore[arg-type]
    finally:
        upstream.script.pop("fast", None)


def test_what_cannot_be_honoured_is_refused_before_any_call(served: BatonServer, upstream: ChatServer) -> None:
    before = len(upstream.requests)
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no such type"}}}
    with pytest.raises(openai.BadRequestError, match="not valid JSON Schema"):
        oa(served).chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}], response_format=bad_schema)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="its output `.*` is a fuse"):
        oa(served).chat.completions.create(model="flow/fuse_panel", messages=[{"role": "user", "content": "x"}], response_format=FORMAT)  # type: ignore[arg-type]
    assert len(upstream.requests) == before


def test_a_flow_that_returns_fields_keeps_its_schema_and_refuses_another(served: BatonServer, upstream: ChatServer) -> None:
    listed = {m.id: m.model_dump() for m in oa(served).models.list()}
    declared = listed["flow/typed"]["baton"]["output_schema"]
    same = {"type": "json_schema", "json_schema": {"name": "mine", "schema": declared}}
    for asked in (None, {"type": "json_object"}, same):
        before = len(upstream.requests)
        extra: dict[str, Any] = {} if asked is None else {"response_format": asked}
        reply = oa(served).chat.completions.create(model="flow/typed", messages=[{"role": "user", "content": "18 in Paris"}], **extra)
        assert json.loads(reply.choices[0].message.content or "") == {"city": "Paris", "celsius": 18}
        sent = upstream.requests[before]["response_format"]  # the declaration, by the step's name, whatever was asked
        assert sent["json_schema"]["name"] == "extract" and sent["json_schema"]["schema"] == declared
    before = len(upstream.requests)
    other = {"type": "json_schema", "json_schema": {"name": "other", "schema": {**declared, "required": ["city"]}}}
    with pytest.raises(openai.BadRequestError, match="declares .*returns.*not another"):
        oa(served).chat.completions.create(model="flow/typed", messages=[{"role": "user", "content": "x"}], response_format=other)  # type: ignore[arg-type]
    assert len(upstream.requests) == before


@pytest.mark.model
def test_the_embedded_model_is_held_to_the_schema_by_a_grammar(tmp_path: Path) -> None:
    """llama.cpp's JSON-schema-to-GBNF converter: SmolLM2 can only sample JSON of the schema."""
    schema: dict[str, Any] = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    with BatonServer("--flows", str(WORKFLOWS), home=tmp_path / "home") as server:
        reply = oa(server).chat.completions.create(
            model="smol", max_tokens=40, messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})  # type: ignore[arg-type]
    value = json.loads(reply.choices[0].message.content or "")
    assert isinstance(value, dict) and isinstance(value["capital"], str)


def test_langchains_with_structured_output_works_by_every_method_on_an_alias_and_on_a_flow(tmp_path: Path) -> None:
    """LangChain's `ChatOpenAI.with_structured_output` by every method, on an alias and on a flow: `json_schema` and
    `json_mode` (response_format), and `function_calling` (a forced tool call, which a flow's output step is offered)."""
    langchain_openai = pytest.importorskip("langchain_openai")
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        celsius: float

    def responder(body: dict[str, Any]) -> Reply:
        if body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps({"city": "Paris", "celsius": 18})}}
            return Reply(message={"tool_calls": [call]}, finish_reason="tool_calls")
        return Reply(text=json.dumps({"city": "Paris", "celsius": 18}))

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "extract.flow").write_text(EXTRACT)
    with ChatServer(responder=responder) as upstream:
        pool = write_pool(upstream.url, tmp_path / "pool.toml")
        with BatonServer("--flows", str(flows), "--pool", str(pool), home=tmp_path / "home") as server:
            def structured(model: str, method: str) -> Any:
                llm = langchain_openai.ChatOpenAI(model=model, base_url=server.url, api_key="unused", max_retries=0, timeout=120)
                return llm.with_structured_output(Weather, method=method).invoke("It is 18 degrees in Paris; answer in JSON.")

            for method in ("json_schema", "function_calling", "json_mode"):
                assert structured("fast", method) == Weather(city="Paris", celsius=18), method
            for method in ("json_schema", "function_calling", "json_mode"):
                assert structured("flow/extract", method) == Weather(city="Paris", celsius=18), method


@pytest.mark.parametrize("model", ["fast", "flow/extract"])
def test_the_messages_api_output_config_format_is_structured_output_too(served: BatonServer, upstream: ChatServer, model: str) -> None:
    import anthropic

    before = len(upstream.requests)
    client = anthropic.Anthropic(base_url=served.url.removesuffix("/v1"), api_key="unused", max_retries=0, timeout=120)
    reply = client.messages.create(model=model, max_tokens=200, messages=[{"role": "user", "content": "It is 18 degrees in Paris."}],
                                   output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    assert json.loads(reply.content[0].text) == {"city": "Paris", "celsius": 18}  # type: ignore[union-attr]
    assert upstream.requests[before]["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}
