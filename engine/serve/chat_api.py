"""OpenAI's chat completions (`POST /v1/chat/completions`): the request, the answer, the streamed chunks.

The stream sends the answer's text as `chat.completion.chunk` events as the output step's
model produces it; with `stream_options.include_usage`, the last chunk has empty `choices`,
the run's summed usage with its cost and the `baton` object; then `data: [DONE]`. A failure
after the first event is an `error` event, which the OpenAI SDK raises as an `APIError`.
"""

from __future__ import annotations

import time
from typing import Any

from engine.run.trace import RunSummary
from engine.serve import mapping, tools
from engine.serve.mapping import RequestError
from engine.serve.wire import Ask, event


class ChatWire:
    def parse(self, body: dict[str, Any], headers: Any) -> Ask:
        stream, include_usage = mapping.stream_flags(body)
        chat = mapping.chat_conversation(body)
        return Ask(model=mapping.requested_model(body), messages=[(m["role"], m["content"] or "") for m in chat], chat=chat,
                   tools=tools.chat_tools(body), response_format=mapping.structured_output(body.get("response_format"), "response_format"),
                   params=mapping.request_params(body), options=mapping.baton_options(body),
                   stream=stream, include_usage=include_usage,
                   refused_on_flows=[f for f in mapping.UNSUPPORTED_ON_FLOWS if body.get(f)],
                   refused_on_aliases=[f for f in mapping.UNSUPPORTED_ON_ALIASES if body.get(f)])

    def answer(self, summary: RunSummary, run_id: str, ask: Ask) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": summary.output or ""}
        calls = tools.calls_of(summary)
        if calls:
            message["tool_calls"] = calls
            message["content"] = summary.output or None
        return {
            "id": f"chatcmpl-{run_id}", "object": "chat.completion", "created": int(time.time()), "model": ask.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop", "logprobs": None}],
            "usage": mapping.usage_of(summary), "baton": mapping.baton_object(summary, mapping.answer_model(summary)),
        }

    def encoder(self, run_id: str, ask: Ask) -> ChatChunks:
        return ChatChunks(f"chatcmpl-{run_id}", ask.model, ask.include_usage)


class ChatChunks:
    """The chunks of one streamed chat completion; `model` is the one asked for in every chunk."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self.completion_id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return event({"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]})

    def opening(self) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def text(self, piece: str) -> list[bytes]:
        return [self._chunk({"content": piece})]

    def step(self, progress: dict[str, Any]) -> list[bytes]:
        """A chunk with an empty delta (which clients skip) and the step in `baton`, for a client that shows progress."""
        return [event({"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": None, "logprobs": None}], "baton": progress})]

    def finish(self, summary: RunSummary) -> list[bytes]:
        calls = tools.calls_of(summary)
        out = [self._chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})] if calls else []
        out.append(self._chunk({}, "tool_calls" if calls else "stop"))
        if self.include_usage:
            out.append(event({"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                              "choices": [], "usage": mapping.usage_of(summary),
                              "baton": mapping.baton_object(summary, mapping.answer_model(summary))}))
        return [*out, b"data: [DONE]\n\n"]

    def failure(self, problem: RequestError) -> list[bytes]:
        body = problem.body()
        body["error"]["status"] = problem.status
        return [event(body)]
