"""What the three wire formats of `baton serve` share: a request as Baton serves it, and how each says it back.

Chat completions (`/v1/chat/completions`), OpenAI's Responses API (`/v1/responses`) and
Anthropic's Messages API (`/v1/messages`) are parsed into one `Ask`; the app runs it the
same way whatever the format (the same flows and aliases, keys, caps, records); a `Wire`
says the answer, a stream's events and an error in its own format. One rule holds for all
three: `model` in an answer is the model the client asked for (`flow/NAME` or an alias), in
every event of a stream; which alias wrote the answer is `baton.model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from engine.run.protocol import ToolOffer
from engine.run.trace import RunSummary
from engine.serve.mapping import RequestError

#: The Messages API's path: its errors, the middleware's included, are in Anthropic's shape.
MESSAGES_PATH = "/v1/messages"


@dataclass
class Ask:
    """A request in any wire format, as Baton serves it: the conversation as (role, text), the sampling parameters
    (`Params` fields), Baton's own options (`inputs`, `max_cost_usd`) and how to answer."""

    model: str
    messages: list[tuple[str, str]]
    #: The conversation as a pass-through call to an alias sends it (chat completions' form: tool calls and results
    #: kept); a flow reads `messages`.
    chat: list[dict[str, Any]] = field(default_factory=list)
    #: The tools a client offers (on an alias they pass through; a flow refuses them).
    tools: ToolOffer | None = None
    #: Structured output asked for, in chat completions' form; a flow holds its output step to it.
    response_format: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    #: Send the run's usage at the end of a stream (the Responses and Messages APIs always do).
    include_usage: bool = True
    #: Request fields given that no flow honours yet, and those no alias passes through yet: a 400 that names them.
    refused_on_flows: list[str] = field(default_factory=list)
    refused_on_aliases: list[str] = field(default_factory=list)


class Encoder(Protocol):
    """A stream's events in one wire format, as bytes ready to write; one encoder per response."""

    def opening(self) -> list[bytes]: ...

    def text(self, piece: str) -> list[bytes]: ...

    def step(self, progress: dict[str, Any]) -> list[bytes]: ...

    def finish(self, summary: RunSummary) -> list[bytes]: ...

    def failure(self, problem: RequestError) -> list[bytes]: ...


class Wire(Protocol):
    """One wire format: its request parsed into an `Ask`, its answer, its stream and its errors."""

    def parse(self, body: dict[str, Any], headers: Any) -> Ask: ...

    def answer(self, summary: RunSummary, run_id: str, ask: Ask) -> dict[str, Any]: ...

    def encoder(self, run_id: str, ask: Ask) -> Encoder: ...


def event(data: dict[str, Any], name: str | None = None) -> bytes:
    """One server-sent event: `event: NAME` when the format names its events, then the JSON on one `data:` line."""
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


#: Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    529: "overloaded_error"}


def anthropic_error(err: RequestError) -> dict[str, Any]:
    """An error in the Messages API's shape; Baton's own code stays readable beside Anthropic's type."""
    kind = ANTHROPIC_ERRORS.get(err.status) or ("api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": str(err), "baton_code": err.code}}


def error_response(err: RequestError, path: str) -> web.Response:
    """An error as the API behind `path` shapes it: Anthropic's for the Messages API, OpenAI's for the rest."""
    body = anthropic_error(err) if path == MESSAGES_PATH else err.body()
    return web.json_response(body, status=err.status, headers=err.headers)
