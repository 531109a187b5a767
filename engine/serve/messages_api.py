"""Anthropic's Messages API (`POST /v1/messages`): the request, the `message` object, the stream's event sequence.

`system` (text, or text blocks) is the system text; `messages` alternate `user` and
`assistant`, with text content or text blocks; `max_tokens` is required, as Anthropic
requires it. The key may come as `x-api-key` (Claude Code, the Anthropic SDKs) or as a bearer
token. Errors, the middleware's included, are in Anthropic's shape (`{"type": "error",
"error": {"type": ..., "message": ...}}`), so the SDK raises its usual exceptions.

The stream is Anthropic's sequence: `message_start`, `content_block_start`,
`content_block_delta` (`text_delta`) ..., `content_block_stop`, `message_delta` (the stop
reason and the run's usage, cumulative as Anthropic sends it), `message_stop`; a failure after
the stream began is an `error` event, which the SDK raises.
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.run.trace import RunSummary
from engine.serve import mapping, tools
from engine.serve.mapping import RequestError
from engine.serve.wire import Ask, anthropic_error, event

#: Fields that would change the answer and that Baton does not honour yet: a 400 names them (on flows and aliases).
REFUSED = ("stop_sequences", "thinking")


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where} must be text or a list of text blocks", param=where)
    texts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise RequestError(f"{where}: blocks of type `{kind}` are not supported (only text)", param=where)
    return "".join(texts)


def conversation(body: dict[str, Any]) -> tuple[list[tuple[str, str]], list[dict[str, Any]], bool]:
    """The conversation as (role, text) turns for a flow, in chat completions' form for an alias (an assistant's
    `tool_use` blocks as its `tool_calls`, a user's `tool_result` blocks as `tool` messages), and whether tools are in it."""
    turns: list[tuple[str, str]] = []
    chat: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text(system, "system")
        turns.append(("system", text))
        chat.append({"role": "system", "content": text})
    given = body.get("messages")
    if not isinstance(given, list) or not given:
        raise RequestError("`messages` must be a non-empty list", param="messages")
    with_tools = False
    for i, message in enumerate(given):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise RequestError(f"messages.{i}.role must be `user` or `assistant`", param=f"messages.{i}.role")
        role, content, where = message["role"], message.get("content"), f"messages.{i}.content"
        blocks = content if isinstance(content, list) else []
        tool_blocks = [b for b in blocks if isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result")]
        if not tool_blocks:
            text = _text(content, where)
            turns.append((role, text))
            chat.append({"role": role, "content": text})
            continue
        with_tools = True
        text = _text([b for b in blocks if b not in tool_blocks], where)
        if role == "assistant":
            chat.append({"role": "assistant", "content": text or None, "tool_calls": [_tool_use(b, where) for b in tool_blocks]})
        else:
            chat += [_tool_result(b, where) for b in tool_blocks]
            if text:
                chat.append({"role": "user", "content": text})
    return turns, chat, with_tools


def _tool_use(block: dict[str, Any], where: str) -> dict[str, Any]:
    if block.get("type") != "tool_use" or not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise RequestError(f"{where}: a tool_use block (in an assistant message) needs an `id` and a `name`", param=where)
    arguments = json.dumps(block.get("input") or {}, ensure_ascii=False, separators=(",", ":"))
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    if block.get("type") != "tool_result" or not isinstance(block.get("tool_use_id"), str):
        raise RequestError(f"{where}: a tool_result block (in a user message) needs its `tool_use_id`", param=where)
    text = _text(block.get("content") or "", where)
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": ("error: " + text) if block.get("is_error") else text}


def output_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """Anthropic's structured output (`output_config.format`, or the beta `output_format`: `{"type": "json_schema",
    "schema"}`) in chat completions' form."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else body.get("output_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise RequestError("output_config.format: must be {\"type\": \"json_schema\", \"schema\": {...}}", param="output_config.format")
    return mapping.structured_output({"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.get("schema")}},
                                     "output_config.format")


class MessagesWire:
    def parse(self, body: dict[str, Any], headers: Any) -> Ask:
        if body.get("max_tokens") is None:
            raise RequestError("max_tokens: Field required", param="max_tokens")
        temperature = body.get("temperature")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                        or not 0 <= temperature <= 1):
            raise RequestError("temperature: must be a number from 0 to 1", param="temperature")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise RequestError("stream: must be true or false", param="stream")
        refused = [f for f in REFUSED if body.get(f)]
        turns, chat, _with_tools = conversation(body)
        return Ask(model=mapping.requested_model(body), messages=turns, chat=chat, tools=tools.messages_tools(body),
                   response_format=output_format(body),
                   params=mapping.request_params(body), options=mapping.baton_options(body), stream=bool(stream), include_usage=True,
                   refused_on_flows=refused, refused_on_aliases=refused)

    def answer(self, summary: RunSummary, run_id: str, ask: Ask) -> dict[str, Any]:
        calls = tools.calls_of(summary)
        content = [{"type": "text", "text": summary.output or ""}] if summary.output or not calls else []
        content += [tool_use_block(c) for c in calls]
        return {"id": f"msg_{run_id}", "type": "message", "role": "assistant", "model": ask.model, "content": content,
                "stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None,
                "usage": usage(summary), "baton": mapping.baton_object(summary, mapping.answer_model(summary))}

    def encoder(self, run_id: str, ask: Ask) -> MessageEvents:
        return MessageEvents(run_id, ask.model)


def tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": tools.anthropic_input(call["function"]["arguments"])}


def usage(summary: RunSummary) -> dict[str, Any]:
    """Anthropic's usage (Baton's calls do not use Anthropic's prompt cache: its counts are 0), with Baton's cost."""
    return {"input_tokens": summary.input_tokens, "output_tokens": summary.output_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "cost": round(summary.cost, 10)}


class MessageEvents:
    """The events of one streamed message."""

    def __init__(self, run_id: str, model: str) -> None:
        self.run_id = run_id
        self.model = model
        self.created = int(time.time())
        #: Whether the text block was opened: at the first text, or at the end for a text answer, so that an answer
        #: of tool calls alone is only `tool_use` blocks, as the unstreamed message is.
        self.text_open = False

    def _open_text(self) -> list[bytes]:
        if self.text_open:
            return []
        self.text_open = True
        return [event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start")]

    def opening(self) -> list[bytes]:
        message: dict[str, Any] = {"id": f"msg_{self.run_id}", "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [event({"type": "message_start", "message": message}, "message_start")]

    def step(self, progress: dict[str, Any]) -> list[bytes]:
        """A `ping` (which the SDKs skip) carrying the step in `baton`, for a client that reads the events itself."""
        return [event({"type": "ping", "baton": progress}, "ping")]

    def text(self, piece: str) -> list[bytes]:
        return [*self._open_text(),
                event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")]

    def finish(self, summary: RunSummary) -> list[bytes]:
        calls = tools.calls_of(summary)
        out: list[bytes] = []
        if summary.output or not calls:
            out += [*self._open_text(), event({"type": "content_block_stop", "index": 0}, "content_block_stop")]
        for index, call in enumerate(calls, start=int(self.text_open)):
            block = {**tool_use_block(call), "input": {}}
            arguments = json.dumps(tools.anthropic_input(call["function"]["arguments"]), ensure_ascii=False)
            out += [event({"type": "content_block_start", "index": index, "content_block": block}, "content_block_start"),
                    event({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}},
                          "content_block_delta"),
                    event({"type": "content_block_stop", "index": index}, "content_block_stop")]
        delta = {"type": "message_delta", "delta": {"stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None},
                 "usage": usage(summary), "baton": mapping.baton_object(summary, mapping.answer_model(summary))}
        return [*out, event(delta, "message_delta"), event({"type": "message_stop"}, "message_stop")]

    def failure(self, problem: RequestError) -> list[bytes]:
        return [event(anthropic_error(problem), "error")]
