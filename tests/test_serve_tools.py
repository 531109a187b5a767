"""Tools through a pool alias of `baton serve`, in all three wire formats, through the official SDKs: the loopback
upstream is scripted to call a tool when offered one and to answer from the tool's result; each SDK gets the call
in its own types, sends the result back, and gets the answer. The record says which tools were offered and which
calls were made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from engine.errors import RunError
from engine.loading import load_flow
from engine.pool import load_pool
from engine.records.render import render_run
from engine.run.protocol import ToolOffer
from engine.run.reader import load_run
from engine.serve import mapping
from engine.session import SyncSession
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import WORKFLOWS
from tests.serve_harness import BatonServer, write_pool

CALL = {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": SCHEMA}}
QUESTION = "What is the weather in Paris?"


def chat_turns(result: str) -> list[dict[str, Any]]:
    """The question, the assistant's `get_weather` call and its result, as chat completions sends them back."""
    return [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_w1", "content": result}]


def messages_turns(result: str) -> list[dict[str, Any]]:
    """The same conversation as the Messages API sends it back: a `tool_use` block, then a `tool_result` block."""
    return [{"role": "user", "content": QUESTION},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": result}]}]


def agent(body: dict[str, Any]) -> Reply:
    """Calls `get_weather` when offered tools and asked; answers from a tool's result when given one (as a `tool`
    message, or, for a flow's step, in its prompt)."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Reply(text=f"It is {json.loads(last['content'])['celsius']} degrees in Paris.")
    if "It is 18 degrees in Paris." in str(last["content"]):  # a step shown the one that read the tool's result
        return Reply(text="Take a light jacket: it is 18 degrees.")
    if "get_weather returned: " in str(last["content"]):
        celsius = json.loads(str(last["content"]).rsplit("get_weather returned: ", 1)[1].splitlines()[0])["celsius"]
        return Reply(text=f"It is {celsius} degrees in Paris.\nANSWER: {celsius}")
    if body.get("tools"):
        return Reply(message={"tool_calls": [CALL]}, finish_reason="tool_calls")
    return Reply(text="No tools, no weather.")


@pytest.fixture(scope="module")
def upstream() -> Iterator[ChatServer]:
    with ChatServer(responder=agent) as server:
        yield server


@pytest.fixture(scope="module")
def served(upstream: ChatServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatonServer]:
    root = tmp_path_factory.mktemp("tools")
    pool = write_pool(upstream.url, root / "pool.toml")
    with pool.open("a") as fh:  # and an alias of the embedded model, which calls no tools
        fh.write('\n[providers.embedded]\nkind = "local"\n\n[models.tiny]\nprovider = "embedded"\nid = "smollm2-135m-instruct-q4_1"\n')
    flows = root / "flows"
    flows.mkdir()
    for name in ("solo", "fuse_panel"):
        (flows / f"{name}.flow").write_text((WORKFLOWS / f"{name}.flow").read_text())
    (flows / "embedded.flow").write_text('input q\nstep answer { model: tiny  task: "{q}" }\n')
    (flows / "advisor.flow").write_text(ADVISOR)
    with BatonServer("--flows", str(flows), "--pool", str(pool), home=root / "home") as server:
        yield server


#: A flow whose first step may call the client's tools, and whose output step advises from what it found.
ADVISOR = """input question
input history
step research {
  model: fast
  tools: client
  sees: question
  task: "Find out: {question}"
}
step advise {
  model: fast
  sees: research
  task: "Advise from this: {research}"
}
"""


def oa(server: BatonServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def an(server: BatonServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url.removesuffix("/v1"), api_key="unused", max_retries=0, timeout=120)


def test_chat_completions_tool_call_round_trip_and_its_record(served: BatonServer, upstream: ChatServer) -> None:
    question = [{"role": "user", "content": QUESTION}]
    before = len(upstream.requests)
    raw = oa(served).chat.completions.with_raw_response.create(model="fast", messages=question, tools=[CHAT_TOOL],  # type: ignore[arg-type]
                                                               tool_choice="auto")
    first = raw.parse()
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("call_w1", "get_weather", {"city": "Paris"})  # type: ignore[union-attr]
    sent = upstream.requests[before]
    assert sent["tools"] == [CHAT_TOOL] and sent["tool_choice"] == "auto"
    record = load_run(raw.headers["x-baton-run-id"], served.home)
    assert record.steps["call"].tools == ["get_weather"] and record.steps["call"].attempts[-1].tool_calls == [CALL]
    shown = render_run(record)  # what `baton show` prints
    assert "tools offered: get_weather" in shown and 'tool call: get_weather({"city": "Paris"})' in shown
    from engine.records.explain import load_recorded_run
    from engine.records.run_page import render_run_page

    page = render_run_page(load_recorded_run(raw.headers["x-baton-run-id"], served.home))  # the run page's calls table says it too
    assert "tool calls:</span> <code>get_weather({&quot;city&quot;: &quot;Paris&quot;})</code>" in page
    turns = chat_turns('{"celsius": 18}')
    second = oa(served).chat.completions.create(model="fast", messages=turns, tools=[CHAT_TOOL])  # type: ignore[arg-type]
    assert second.choices[0].message.content == "It is 18 degrees in Paris." and second.choices[0].finish_reason == "stop"
    assert upstream.requests[-1]["messages"][-2:] == turns[-2:]  # the call and its result went upstream as sent


def test_a_streamed_chat_tool_call_arrives_as_the_sdk_expects(served: BatonServer) -> None:
    chunks = list(oa(served).chat.completions.create(model="fast", messages=[{"role": "user", "content": QUESTION}],  # type: ignore[arg-type]
                                                     tools=[CHAT_TOOL], stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].id == "call_w1" and deltas[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


@pytest.mark.parametrize("stream", [False, True])
def test_responses_function_call_round_trip(served: BatonServer, stream: bool) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "Weather now", "parameters": SCHEMA}
    if stream:
        with oa(served).responses.stream(model="fast", input=QUESTION, tools=[tool]) as events:  # type: ignore[list-item]
            first = events.get_final_response()
    else:
        first = oa(served).responses.create(model="fast", input=QUESTION, tools=[tool])  # type: ignore[list-item]
    assert [item.type for item in first.output] == ["function_call"]  # streamed too: no empty message item before it
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [("call_w1", "get_weather", {"city": "Paris"})]  # type: ignore[union-attr]
    second = oa(served).responses.create(model="fast", tools=[tool], input=[  # type: ignore[list-item]
        {"role": "user", "content": QUESTION},
        {"type": "function_call", "call_id": "call_w1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_w1", "output": '{"celsius": 18}'}])
    assert second.output_text == "It is 18 degrees in Paris."


@pytest.mark.parametrize("stream", [False, True])
def test_messages_tool_use_round_trip(served: BatonServer, upstream: ChatServer, stream: bool) -> None:
    tool = {"name": "get_weather", "description": "Weather now", "input_schema": SCHEMA}
    question = [{"role": "user", "content": QUESTION}]
    before = len(upstream.requests)
    if stream:
        with an(served).messages.stream(model="fast", max_tokens=200, messages=question, tools=[tool]) as events:  # type: ignore[arg-type, list-item]
            first = events.get_final_message()
    else:
        first = an(served).messages.create(model="fast", max_tokens=200, messages=question, tools=[tool],  # type: ignore[arg-type, list-item]
                                           tool_choice={"type": "tool", "name": "get_weather"})
    assert first.stop_reason == "tool_use" and [b.type for b in first.content] == ["tool_use"]  # streamed too: no empty text block
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [("call_w1", "get_weather", {"city": "Paris"})]  # type: ignore[union-attr]
    assert upstream.requests[before]["tools"] == [CHAT_TOOL]
    if not stream:
        assert upstream.requests[before]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    second = an(served).messages.create(model="fast", max_tokens=200, tools=[tool], messages=messages_turns('{"celsius": 18}'))  # type: ignore[arg-type, list-item]
    assert second.content[0].text == "It is 18 degrees in Paris." and second.stop_reason == "end_turn"  # type: ignore[union-attr]
    tool_message = upstream.requests[-1]["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": "call_w1", "content": '{"celsius": 18}'}


@pytest.mark.parametrize("wire", ["chat", "responses", "messages"])
def test_a_flows_output_step_is_offered_the_tools_and_sees_their_results_on_the_next_turn(served: BatonServer, upstream: ChatServer,
                                                                                          wire: str) -> None:
    """The call is the flow's answer; the client's next request carries the call and its result, and the output step
    reads them after the question: `assistant called get_weather(...)`, `get_weather returned: ...`."""
    result = '{"celsius": 18}'
    if wire == "chat":
        first = oa(served).chat.completions.with_raw_response.create(model="flow/solo", messages=[{"role": "user", "content": QUESTION}],  # type: ignore[arg-type]
                                                                     tools=[CHAT_TOOL])  # type: ignore[list-item]
        assert first.parse().choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
        run_id = first.headers["x-baton-run-id"]
        answer = oa(served).chat.completions.create(model="flow/solo", tools=[CHAT_TOOL], messages=chat_turns(result)).choices[0].message.content  # type: ignore[arg-type, list-item]
    elif wire == "responses":
        tool = {"type": "function", "name": "get_weather", "parameters": SCHEMA}
        first_r = oa(served).responses.with_raw_response.create(model="flow/solo", input=QUESTION, tools=[tool])  # type: ignore[list-item]
        assert [i.type for i in first_r.parse().output] == ["function_call"]
        run_id = first_r.headers["x-baton-run-id"]
        answer = oa(served).responses.create(model="flow/solo", tools=[tool], input=[  # type: ignore[list-item]
            {"role": "user", "content": QUESTION},
            {"type": "function_call", "call_id": "call_w1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_w1", "output": result}]).output_text
    else:
        tool = {"name": "get_weather", "input_schema": SCHEMA}
        first_m = an(served).messages.with_raw_response.create(model="flow/solo", max_tokens=200, tools=[tool],  # type: ignore[list-item]
                                                               messages=[{"role": "user", "content": QUESTION}])
        assert first_m.parse().stop_reason == "tool_use"
        run_id = first_m.headers["x-baton-run-id"]
        reply = an(served).messages.create(model="flow/solo", max_tokens=200, tools=[tool], messages=messages_turns(result))  # type: ignore[arg-type, list-item]
        answer = reply.content[0].text  # type: ignore[union-attr]
    assert answer == "It is 18 degrees in Paris.\nANSWER: 18"
    prompt = upstream.requests[-1]["messages"][-1]["content"]
    assert 'assistant called get_weather({"city": "Paris"})' in prompt or 'assistant called get_weather({"city":"Paris"})' in prompt
    assert f"get_weather returned: {result}" in prompt
    step = load_run(run_id, served.home).steps["answer"]
    assert step.tools == ["get_weather"] and step.attempts[-1].tool_calls == [CALL]


def test_tools_are_refused_where_they_cannot_be_honoured(served: BatonServer) -> None:
    with pytest.raises(openai.BadRequestError, match="cannot take tools: its output `answer` is a fuse"):
        oa(served).chat.completions.create(model="flow/fuse_panel", messages=[{"role": "user", "content": "x"}], tools=[CHAT_TOOL])  # type: ignore[arg-type, list-item]
    with pytest.raises(openai.BadRequestError, match="cannot take tools: its output step `answer` may call `tiny`"):
        oa(served).chat.completions.create(model="flow/embedded", messages=[{"role": "user", "content": "x"}], tools=[CHAT_TOOL])  # type: ignore[arg-type, list-item]
    with pytest.raises(openai.BadRequestError, match="does not call tools"):
        oa(served).responses.create(model="tiny", input="x", tools=[{"type": "function", "name": "f", "parameters": SCHEMA}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError, match="only `function`"):
        oa(served).responses.create(model="fast", input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]


@pytest.mark.parametrize("wire", ["chat", "messages"])
def test_a_step_marked_tools_client_ends_the_run_with_its_calls_and_the_next_turn_goes_on(
        served: BatonServer, upstream: ChatServer, wire: str) -> None:
    """`tools: client` on a step before the output: its tool calls are the flow's answer (the output step does not
    run, and is not offered the tools), and on the next turn it reads the result and the flow finishes."""
    result = '{"celsius": 18}'
    before = len(upstream.requests)
    if wire == "chat":
        raw = oa(served).chat.completions.with_raw_response.create(model="flow/advisor", messages=[{"role": "user", "content": QUESTION}],  # type: ignore[arg-type]
                                                                   tools=[CHAT_TOOL])  # type: ignore[list-item]
        first = raw.parse().choices[0]
        assert first.finish_reason == "tool_calls" and first.message.tool_calls[0].function.name == "get_weather"  # type: ignore[index, union-attr]
        run_id = raw.headers["x-baton-run-id"]
        answer = oa(served).chat.completions.create(model="flow/advisor", tools=[CHAT_TOOL], messages=chat_turns(result)).choices[0].message.content  # type: ignore[arg-type, list-item]
    else:
        tool = {"name": "get_weather", "input_schema": SCHEMA}
        with an(served).messages.stream(model="flow/advisor", max_tokens=200, tools=[tool],  # type: ignore[list-item]
                                        messages=[{"role": "user", "content": QUESTION}]) as events:
            message = events.get_final_message()  # one streamed run, read to its end: its id and its answer
            run_id = events.response.headers["x-baton-run-id"]
        assert message.stop_reason == "tool_use" and [b.type for b in message.content] == ["tool_use"]
        reply = an(served).messages.create(model="flow/advisor", max_tokens=200, tools=[tool], messages=messages_turns(result))  # type: ignore[arg-type, list-item]
        answer = reply.content[0].text  # type: ignore[union-attr]
    assert answer == "Take a light jacket: it is 18 degrees."
    assert "tools" in upstream.requests[before] and "tools" not in upstream.requests[-1]  # research is offered them, advise is not
    record = load_run(run_id, served.home)
    assert record.status == "ok" and record.tool_calls_by == "research"
    assert record.steps["research"].tools == ["get_weather"] and record.steps["research"].tool_calls == [CALL]
    assert record.steps["advise"].status == "not_run" and "answered with tool calls" in record.steps["advise"].reason
    assert "answer: the tool calls of step `research` (get_weather)" in render_run(record)


def test_a_resumed_run_ends_where_its_tool_calls_did(tmp_path: Path) -> None:
    """A run whose `tools: client` step answered with tool calls while another step failed: resumed, it ends where
    those calls ended it, with them as its answer and no call sent (the step after them does not run on an empty
    output, and the failed one is not tried again: the client's next turn runs the flow anew)."""
    failed_once: list[str] = []

    def responder(body: dict[str, Any]) -> Reply:
        content = str(body["messages"][-1]["content"])
        if "Other view" in content and not failed_once:
            failed_once.append(content)
            return Reply(status=400, text='{"error": {"message": "bad request"}}')
        return agent(body)

    (tmp_path / "flows").mkdir()
    flow_file = tmp_path / "flows" / "two.flow"
    flow_file.write_text('input question\nstep research { model: fast  tools: client  sees: question  task: "Find out: {question}" }\n'
                         'step other { model: fast  sees: question  task: "Other view: {question}" }\n'
                         'step advise { model: fast  sees: research, other  task: "Advise from this: {research} {other}" }\n')
    with ChatServer(responder=responder) as server:
        pool = load_pool(write_pool(server.url, tmp_path / "pool.toml"))
        flow, _pool = load_flow(flow_file, pool)
        with SyncSession(pool, home=tmp_path / "home", cache=False) as session:
            with pytest.raises(RunError) as failure:
                session.run(mapping.with_tools(flow, ToolOffer((CHAT_TOOL,))), {"question": QUESTION})
            first = failure.value.summary
            assert first is not None and first.steps["research"].tool_calls == [CALL] and first.steps["other"].status == "failed"
            sent = len(server.requests)
            summary = session.resume(first.run_id)
        assert len(server.requests) == sent
    assert summary.status == "ok" and summary.tool_calls_by == "research" and summary.steps["research"].resumed
    assert summary.steps["other"].status == summary.steps["advise"].status == "not_run"
