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

import time
from typing import Any

from engine.run.trace import RunSummary
from engine.serve import mapping
from engine.serve.mapping import RequestError
from engine.serve.wire import Ask, anthropic_error, event

#: Fields that would change the answer and that Baton does not honour yet: a 400 names them (on flows and aliases).
REFUSED = ("tools", "tool_choice", "stop_sequences", "thinking")


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


def conversation(body: dict[str, Any]) -> list[tuple[str, str]]:
    messages: list[tuple[str, str]] = []
    system = body.get("system")
    if system is not None:
        messages.append(("system", _text(system, "system")))
    given = body.get("messages")
    if not isinstance(given, list) or not given:
        raise RequestError("`messages` must be a non-empty list", param="messages")
    for i, message in enumerate(given):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise RequestError(f"messages.{i}.role must be `user` or `assistant`", param=f"messages.{i}.role")
        messages.append((message["role"], _text(message.get("content"), f"messages.{i}.content")))
    return messages


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
        return Ask(model=mapping.requested_model(body), messages=conversation(body), params=mapping.request_params(body),
                   options=mapping.baton_options(body), stream=bool(stream), include_usage=True,
                   refused_on_flows=refused, refused_on_aliases=refused)

    def answer(self, summary: RunSummary, run_id: str, ask: Ask) -> dict[str, Any]:
        return {"id": f"msg_{run_id}", "type": "message", "role": "assistant", "model": ask.model,
                "content": [{"type": "text", "text": summary.output or ""}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": usage(summary), "baton": mapping.baton_object(summary, mapping.answer_model(summary))}

    def encoder(self, run_id: str, ask: Ask) -> MessageEvents:
        return MessageEvents(run_id, ask.model)


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

    def opening(self) -> list[bytes]:
        message: dict[str, Any] = {"id": f"msg_{self.run_id}", "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [event({"type": "message_start", "message": message}, "message_start"),
                event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start")]

    def step(self, progress: dict[str, Any]) -> list[bytes]:
        """A `ping` (which the SDKs skip) carrying the step in `baton`, for a client that reads the events itself."""
        return [event({"type": "ping", "baton": progress}, "ping")]

    def text(self, piece: str) -> list[bytes]:
        return [event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")]

    def finish(self, summary: RunSummary) -> list[bytes]:
        delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage(summary),
                 "baton": mapping.baton_object(summary, mapping.answer_model(summary))}
        return [event({"type": "content_block_stop", "index": 0}, "content_block_stop"), event(delta, "message_delta"),
                event({"type": "message_stop"}, "message_stop")]

    def failure(self, problem: RequestError) -> list[bytes]:
        return [event(anthropic_error(problem), "error")]
