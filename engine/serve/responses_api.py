"""OpenAI's Responses API (`POST /v1/responses`): the request, the `response` object, the typed stream events.

`input` is a string (one user message) or a list of items: messages with a role and text
content (`input_text`, or `output_text` for the assistant's earlier turns); `instructions`
is the system text. Baton keeps no conversation on the server, so `previous_response_id`
and `conversation` are refused with a 400 that says to send the turns in `input`, which is
what a stateless client does anyway. Tools and `text.format` other than text are refused
for now, each with a 400 naming it.

The stream follows OpenAI's event sequence (`response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`
..., then the `.done` events and `response.completed` with the usage), each with its
`sequence_number`; a failure after the stream began is `response.failed`, its `error` the
same code and message a non-streamed request would get.
"""

from __future__ import annotations

import time
from typing import Any

from engine.run.trace import RunSummary
from engine.serve import mapping, tools
from engine.serve.mapping import RequestError
from engine.serve.wire import Ask, event

#: Fields that would change the answer and that Baton does not honour yet: a 400 names them (on flows and aliases).
REFUSED = ("background", "prompt")


def conversation(body: dict[str, Any]) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """The conversation of a Responses request, `instructions` as the system text and then `input`: as (role, text)
    turns for a flow, and in chat completions' form for an alias (function calls and their outputs kept)."""
    turns: list[tuple[str, str]] = []
    chat: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise RequestError("`instructions` must be text", param="instructions")
        turns.append(("system", instructions))
        chat.append({"role": "system", "content": instructions})
    given = body.get("input")
    if isinstance(given, str):
        return [*turns, ("user", given)], [*chat, {"role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        raise RequestError("`input` must be text or a non-empty list of messages", param="input")
    for i, item in enumerate(given):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "function_call":
            call = _function_call(item, i)
            last = chat[-1] if chat else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)  # parallel calls of one turn: one assistant message
            else:
                chat.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("output"), str):
                raise RequestError(f"input[{i}]: a function_call_output needs a `call_id` and a text `output`", param=f"input[{i}]")
            chat.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        else:
            role, text = _item(item, i)
            turns.append((role, text))
            chat.append({"role": role, "content": text})
    return turns, chat


def _function_call(item: dict[str, Any], index: int) -> dict[str, Any]:
    if not (isinstance(item.get("call_id"), str) and isinstance(item.get("name"), str) and isinstance(item.get("arguments"), str)):
        raise RequestError(f"input[{index}]: a function_call needs a `call_id`, a `name` and text `arguments`", param=f"input[{index}]")
    return {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}


def _item(item: Any, index: int) -> tuple[str, str]:
    where = f"input[{index}]"
    if not isinstance(item, dict):
        raise RequestError(f"{where} must be a message object", param=where)
    kind = item.get("type", "message")
    if kind != "message":
        raise RequestError(f"{where}: items of type `{kind}` are not supported (messages, function_call and "
                           "function_call_output are)", param=where)
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise RequestError(f"{where}.role must be user, assistant, system or developer", param=f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return role, content
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be text or a list of text parts", param=f"{where}.content")
    texts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise RequestError(f"{where}: only text content parts are supported", param=f"{where}.content")
    return role, "".join(texts)


def _refusals(body: dict[str, Any]) -> list[str]:
    return [f for f in REFUSED if body.get(f)]


def text_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """`text.format` (`{"type": "json_schema", "name", "schema", "strict"}`) in chat completions' form."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        fmt = {"type": "json_schema", "json_schema": {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    return mapping.structured_output(fmt, "text.format")


class ResponsesWire:
    def parse(self, body: dict[str, Any], headers: Any) -> Ask:
        for stateful in ("previous_response_id", "conversation"):
            if body.get(stateful):
                raise RequestError(f"`{stateful}` is not supported: baton serve keeps no conversation on the server; send the "
                                   "earlier turns in `input` (a list of messages)", param=stateful)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise RequestError("`stream` must be true or false", param="stream")
        refused = _refusals(body)
        turns, chat = conversation(body)
        return Ask(model=mapping.requested_model(body), messages=turns, chat=chat, tools=tools.responses_tools(body),
                   response_format=text_format(body),
                   params=mapping.request_params(body, "max_output_tokens"), options=mapping.baton_options(body),
                   stream=bool(stream), include_usage=True, refused_on_flows=refused, refused_on_aliases=refused)

    def answer(self, summary: RunSummary, run_id: str, ask: Ask) -> dict[str, Any]:
        return response_object(summary, run_id, ask.model, int(time.time()))

    def encoder(self, run_id: str, ask: Ask) -> ResponseEvents:
        return ResponseEvents(run_id, ask.model)


def usage(summary: RunSummary | None) -> dict[str, Any]:
    """The Responses API's usage, with Baton's cost beside it."""
    if summary is None:
        return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0}}
    return {"input_tokens": summary.input_tokens, "output_tokens": summary.output_tokens,
            "total_tokens": summary.input_tokens + summary.output_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}, "cost": round(summary.cost, 10)}


def _message(run_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": f"msg_{run_id}", "status": status, "role": "assistant", "content": content}


def function_call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    """A tool call as the Responses API's `function_call` output item."""
    return {"type": "function_call", "id": f"fc_{call['id']}", "call_id": call["id"], "name": call["function"]["name"],
            "arguments": call["function"]["arguments"] if status == "completed" else "", "status": status}


def response_object(summary: RunSummary | None, run_id: str, model: str, created: int, status: str = "completed",
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `response` object: a message item for a text answer, a `function_call` item for each tool call."""
    output: list[dict[str, Any]] = []
    if summary is not None and status == "completed":
        calls = tools.calls_of(summary)
        if summary.output or not calls:
            output.append(_message(run_id, summary.output or "", "completed"))
        output += [function_call_item(c) for c in calls]
    body: dict[str, Any] = {
        "id": f"resp_{run_id}", "object": "response", "created_at": created, "status": status, "model": model,
        "output": output, "error": error, "incomplete_details": None, "instructions": None, "metadata": {},
        "parallel_tool_calls": False, "temperature": None, "top_p": None, "tool_choice": "none", "tools": [],
        "text": {"format": {"type": "text"}}, "usage": usage(summary) if status == "completed" else None,
    }
    if summary is not None:
        body["baton"] = mapping.baton_object(summary, mapping.answer_model(summary))
    return body


class ResponseEvents:
    """The typed events of one streamed response, numbered in order."""

    def __init__(self, run_id: str, model: str) -> None:
        self.run_id = run_id
        self.model = model
        self.created = int(time.time())
        self.sequence = 0
        self.sent = ""
        #: Whether the message item was opened: at the first text, or at the end for a text answer, so that an
        #: answer of tool calls alone is only `function_call` items, as the response object says.
        self.message_open = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event(data, kind)

    def _where(self) -> dict[str, Any]:
        return {"item_id": f"msg_{self.run_id}", "output_index": 0, "content_index": 0}

    def opening(self) -> list[bytes]:
        pending = response_object(None, self.run_id, self.model, self.created, status="in_progress")
        return [self._event("response.created", response=pending), self._event("response.in_progress", response=pending)]

    def _open_message(self) -> list[bytes]:
        if self.message_open:
            return []
        self.message_open = True
        return [self._event("response.output_item.added", output_index=0, item=_message(self.run_id, None, "in_progress")),
                self._event("response.content_part.added", **self._where(),
                            part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})]

    def step(self, progress: dict[str, Any]) -> list[bytes]:
        """A `response.in_progress` event (a type every client knows) whose response carries the step in `baton`."""
        pending = response_object(None, self.run_id, self.model, self.created, status="in_progress")
        return [self._event("response.in_progress", response={**pending, "baton": progress})]

    def text(self, piece: str) -> list[bytes]:
        self.sent += piece
        return [*self._open_message(), self._event("response.output_text.delta", **self._where(), delta=piece, logprobs=[])]

    def finish(self, summary: RunSummary) -> list[bytes]:
        text = summary.output or ""
        calls = tools.calls_of(summary)
        out: list[bytes] = []
        if text or not calls:
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out += [*self._open_message(), self._event("response.output_text.done", **self._where(), text=text, logprobs=[]),
                    self._event("response.content_part.done", **self._where(), part=part),
                    self._event("response.output_item.done", output_index=0, item=_message(self.run_id, text, "completed"))]
        for index, call in enumerate(calls, start=int(self.message_open)):
            item_id = f"fc_{call['id']}"
            arguments = call["function"]["arguments"]
            out += [self._event("response.output_item.added", output_index=index, item=function_call_item(call, "in_progress")),
                    self._event("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=arguments),
                    self._event("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments,
                                name=call["function"]["name"]),
                    self._event("response.output_item.done", output_index=index, item=function_call_item(call))]
        completed = response_object(summary, self.run_id, self.model, self.created)
        return [*out, self._event("response.completed", response=completed)]

    def failure(self, problem: RequestError) -> list[bytes]:
        error = {"code": problem.code, "message": str(problem)}
        return [self._event("response.failed",
                            response=response_object(None, self.run_id, self.model, self.created, status="failed", error=error))]
