"""Anthropic's Messages API as a provider kind (`kind = "anthropic"`): `{base_url}/messages`, natively.

The request is the chat request in Anthropic's shape: system messages joined into `system`,
turns alternating `user` and `assistant` (consecutive turns of one role merged), an
assistant's tool calls as `tool_use` blocks and tool results as `tool_result` blocks, tools
with their `input_schema`, a JSON Schema asked for as `output_config.format`; `temperature`
capped at 1 (Anthropic's range); `seed` and grammars are not sent (the API has neither). The key goes in `x-api-key` with `anthropic-version`.

The reply is put in chat completions' form and judged by `engine.providers.reply` like
every other: the text of `text` blocks is the answer, `tool_use` blocks are tool calls,
`stop_reason` becomes a finish reason (`max_tokens` is `length`; `refusal` a fault a retry
would repeat), and usage counts every prompt token: Anthropic's `input_tokens` excludes the
prompt cache's reads and writes, which are added and kept apart (`cached_tokens`,
`cache_write_tokens`), so their own prices apply (`cached_input_price`, `cache_write_price`).
HTTP 529 (overloaded) is a server error, retried.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from engine.providers.openai_compat import OpenAICompatProvider
from engine.providers.reply import quote
from engine.providers.sse import ChunkAssembler, json_object
from engine.run.protocol import ChatRequest, ChatResponse
from engine.run.structured import schema_of

VERSION = "2023-06-01"
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "refusal": "content_filter"}


class AnthropicProvider(OpenAICompatProvider):
    """Messages at `{base_url}/messages`."""

    PATH = "messages"
    STREAM_OPTIONS = False  # the stream carries its usage in message_start and message_delta

    def auth(self, key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": VERSION}

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        system = "\n\n".join(str(m.get("content") or "") for m in request.messages if m["role"] in ("system", "developer"))
        messages: list[dict[str, Any]] = []
        for m in request.messages:
            if m["role"] in ("system", "developer"):
                continue
            role, blocks = _blocks(m)
            if messages and messages[-1]["role"] == role:  # Anthropic's turns alternate: merge a role's consecutive turns
                messages[-1]["content"] += blocks
            else:
                messages.append({"role": role, "content": blocks})
        body: dict[str, Any] = {"model": request.model_id, "max_tokens": request.max_tokens, "messages": messages,
                                "temperature": min(request.temperature, 1.0)}
        if system:
            body["system"] = system
        if request.top_p is not None:
            body["top_p"] = request.top_p
        schema = schema_of(request.response_format) if request.response_format is not None else None
        if schema is not None:  # Anthropic's structured output; a `json_object` request has no equivalent: the reply is checked
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        if request.tools is not None:
            body["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                              "input_schema": t["function"].get("parameters") or {"type": "object"}} for t in request.tools.tools]
            choice = _tool_choice(request.tools.choice)
            if choice is not None:
                body["tool_choice"] = choice
        return body

    def read(self, body: bytes, max_tokens: int) -> ChatResponse:
        data = json_object(body)
        translated = json.dumps(chat_completion_of(data)).encode() if data is not None else body  # not JSON: said as such
        return super().read(translated, max_tokens)

    def assembler(self, on_text: Callable[[str], None]) -> MessageEvents:
        return MessageEvents(on_text, self._scrub)


def _blocks(message: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content = message.get("content")
    if message["role"] == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""), "content": str(content or "")}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if isinstance(content, str) and content else []
    for call in message.get("tool_calls") or []:
        try:
            arguments = json.loads(call["function"].get("arguments") or "{}")
        except ValueError:
            arguments = {"arguments": call["function"].get("arguments")}
        blocks.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                       "input": arguments if isinstance(arguments, dict) else {"arguments": arguments}})
    return ("assistant" if message["role"] == "assistant" else "user"), blocks or [{"type": "text", "text": ""}]


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, str):
        return {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}.get(choice)
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        return {"type": "tool", "name": choice["function"].get("name")}
    return None


def _usage(raw: Any) -> Any:
    """Anthropic's usage in chat completions' form: every prompt token counted (cache reads and writes included, and
    kept apart). Counts that are not numbers are passed on as they are, for the reply reader to find unreadable."""
    if not isinstance(raw, dict):
        return raw
    parts = [raw.get(k, 0) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")]
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        return {"prompt_tokens": raw.get("input_tokens"), "completion_tokens": raw.get("output_tokens")}
    return {"prompt_tokens": sum(parts), "completion_tokens": raw.get("output_tokens"),
            "prompt_tokens_details": {"cached_tokens": parts[1], "cache_write_tokens": parts[2]}}


def chat_completion_of(data: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic `message` (or `error`) as the chat completion it stands for."""
    if data.get("type") == "error" or "error" in data:
        return {"error": data.get("error")}
    content = data.get("content")
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    message: dict[str, Any] = {"role": "assistant",
                               "content": [{"type": "text", "text": b.get("text")} for b in blocks if b.get("type") == "text"]}
    calls = [{"id": b.get("id"), "type": "function",
              "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {}, ensure_ascii=False)}}
             for b in blocks if b.get("type") == "tool_use"]
    if calls:
        message["tool_calls"] = calls
    stop = data.get("stop_reason")
    reply: dict[str, Any] = {"model": data.get("model"), "choices": [
        {"index": 0, "message": message, "finish_reason": FINISH.get(stop, stop) if isinstance(stop, str) else None}]}
    if "usage" in data:
        reply["usage"] = _usage(data["usage"])
    return reply


class MessageEvents(ChunkAssembler):
    """A streamed message read event by event, put back together as the `message` it stands for.

    The chat stream's reader with another `_line` and `completion`: the same linear line splitting, and the same
    answers to what the stream reader asks (`done`, `finish_reason`, `error`, `unreadable`, `usage`, `events`); the
    text goes to `on_text` as it arrives.
    """

    def __init__(self, on_text: Callable[[str], None], scrub: Callable[[str], str]) -> None:
        super().__init__(on_text, scrub)
        self.message: dict[str, Any] = {"type": "message", "content": []}
        self._json: dict[int, list[str]] = {}

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return  # `event:` lines name what the data says again in its `type`
        payload = line[5:].strip()
        self.events += 1
        event = json_object(payload)
        if event is None:
            self.unreadable.append(quote(payload.decode("utf-8", "replace"), self._scrub, 120))
            return
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            self.message = {**event["message"], "content": []}
            self.model = str(self.message.get("model") or "")
            self.usage = self.message.get("usage")
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self.message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            self._delta(event.get("index"), event["delta"])
        elif kind == "message_delta":
            delta = event.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(stop, str):
                self.message["stop_reason"] = stop
                self.finish_reason = FINISH.get(stop, stop)
            if isinstance(event.get("usage"), dict):  # cumulative: it overwrites, keeping what it leaves out
                self.usage = {**(self.usage if isinstance(self.usage, dict) else {}), **event["usage"]}
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = event.get("error") or event

    def _delta(self, index: Any, delta: dict[str, Any]) -> None:
        blocks = self.message["content"]
        if not isinstance(index, int) or not 0 <= index < len(blocks):
            return
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            blocks[index]["text"] = str(blocks[index].get("text") or "") + delta["text"]
            if delta["text"]:
                self._on_text(delta["text"])
        elif delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            self._json.setdefault(index, []).append(delta["partial_json"])

    def completion(self) -> bytes:
        """The stream as the `message` (or `error`) body it stands for."""
        if self.error is not None:
            return json.dumps({"type": "error", "error": self.error}).encode()
        for index, pieces in self._json.items():
            try:
                self.message["content"][index]["input"] = json.loads("".join(pieces) or "{}")
            except ValueError:
                self.message["content"][index]["input"] = {"arguments": "".join(pieces)}
        message = {**self.message}
        if self.usage is not None:
            message["usage"] = self.usage
        return json.dumps(message).encode()
