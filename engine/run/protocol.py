"""What the executor needs from a model provider, and nothing more.

The runtime depends on this protocol, never on a concrete provider: providers (HTTP,
local, scripted, replay) implement it in `engine.providers`, and the API layer wires
them to pool aliases. That keeps the dry run and the scheduler free of network code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

FaultKind = Literal[
    "timeout", "connect", "rate_limited", "server_error", "client_error", "bad_response", "empty_reply", "cancelled",
    "truncated", "content_filter", "refusal", "redirect",
]

#: Faults worth the same request again. `truncated` (the whole `max_tokens` went on reasoning), `content_filter`,
#: `refusal` and `redirect` would fail the same way again: they move on to a fallback instead.
RETRYABLE: frozenset[str] = frozenset({"timeout", "connect", "rate_limited", "server_error", "bad_response", "empty_reply"})

#: Where a reply's token counts came from: the provider's `usage`, or nothing readable (the call is then
#: booked at its reservation, its worst case; see `engine.run.calls`).
UsageSource = Literal["reported", "missing", "unreadable"]


@dataclass(frozen=True, slots=True)
class ToolOffer:
    """Tools a client offers a model, in chat completions' form (`tools`, `tool_choice`), passed on as sent."""

    tools: tuple[Mapping[str, Any], ...]
    choice: Any = None


def normal_tool_calls(raw: Any) -> tuple[dict[str, Any], ...]:
    """Tool calls as chat completions spells them (`id`, `type`, `function.name`, `function.arguments` as text), each
    checked, whoever sent them (a provider's reply, a client's earlier turn); `ValueError` says which one is not."""
    if not isinstance(raw, list):
        raise ValueError(f"tool_calls is a {type(raw).__name__}, not a list")
    calls = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(function, dict) and isinstance(call.get("id"), str) and isinstance(function.get("name"), str)
                and isinstance(function.get("arguments", ""), str)):
            raise ValueError(f"tool call {i} lacks an id, a function name or text arguments")
        calls.append({"id": call["id"], "type": "function", "function": {"name": function["name"], "arguments": function.get("arguments", "")}})
    return tuple(calls)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat-completions call. `step` and `alias` are for providers that script by step; never sent.

    A message is `{"role", "content"}` with text content; a pass-through call may also carry an assistant's
    `tool_calls` and `tool` messages with their `tool_call_id`, as chat completions spell them."""

    model_id: str
    messages: tuple[Mapping[str, Any], ...]
    temperature: float = 0.0
    max_tokens: int = 1024
    top_p: float | None = None
    seed: int | None = None
    reasoning: str | None = None
    timeout: float = 120.0
    step: str = ""
    alias: str = ""
    grammar: str | None = None
    grammar_format: str | None = None  # "gbnf" (llama.cpp) or "lark" (vLLM, OpenAI custom tools)
    tools: ToolOffer | None = None
    #: Structured output (chat completions' `response_format`), passed on as asked; the caller checks the reply.
    response_format: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A model's reply and what it cost, as the provider reported it."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    #: Of `input_tokens`: read from the provider's prompt cache, and written to it (each may be billed differently).
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    reported_cost: float | None = None
    response_model: str = ""
    finish_reason: str = ""
    usage_source: UsageSource = "reported"
    #: Why a figure was not taken as reported (usage unreadable, a reported cost that is negative or NaN).
    usage_note: str = ""
    #: The tool calls the reply made, as chat completions spells them (`id`, `type`, `function.name`, `function.arguments`).
    tool_calls: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        """The reply stopped at `max_tokens` (kept as the answer, flagged in the record)."""
        return self.finish_reason == "length"


class ProviderFault(Exception):
    """A failed call, classified so the retry policy can decide what to do.

    `billed` is set when the provider answered (HTTP 2xx) and so may have charged for the
    call: the reply's usage as far as it could be read. A rejected reply is still booked
    against the budget from it; a fault without it (HTTP errors, refused connections) was
    not billed. `finish_reason` is the choice's, when there was one.
    """

    def __init__(self, kind: FaultKind, message: str, status: int | None = None, retry_after: float | None = None,
                 billed: ChatResponse | None = None, finish_reason: str = "") -> None:
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.billed = billed
        self.finish_reason = finish_reason or (billed.finish_reason if billed is not None else "")
        #: An HTTP 400/422 that names `stream_options`: a server that cannot take it (the call is sent again without).
        self.refused_stream_options = False
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


class Provider(Protocol):
    """A model endpoint. Implementations must be safe to call concurrently."""

    name: str

    @property
    def enforces_grammar(self) -> bool:
        """Whether a grammar in a request always constrains the reply (the embedded model does; an HTTP server may
        ignore or refuse one). A `choices:` grammar is sent only where it holds; elsewhere the reply is only checked."""
        ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...


#: The id of the dataset item a run is answering, set by `baton eval` around each item's run (the run's tasks inherit
#: it): a replay provider answers with that item's record, so two items that ask the same question each get their own.
DATASET_ITEM: ContextVar[str | None] = ContextVar("baton_dataset_item", default=None)


@runtime_checkable
class StreamingProvider(Protocol):
    """A provider that can hand on a reply's text as it is produced (`baton serve` with `stream: true`).

    `stream` returns the same `ChatResponse` as `complete` would, under the same rules (a
    failed reply raises a `ProviderFault`); `on_text` gets the answer's text piece by piece
    meanwhile, pieces that add up to the returned text (before the caller scrubs secrets from
    both). A provider without it is called with `complete` and its answer sent whole.
    """

    async def stream(self, request: ChatRequest, on_text: Callable[[str], None]) -> ChatResponse: ...
