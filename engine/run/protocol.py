"""What the executor needs from a model provider, and nothing more.

The runtime depends on this protocol, never on a concrete provider: providers (HTTP,
local, scripted, replay) implement it in `engine.providers`, and the API layer wires
them to pool aliases. That keeps the dry run and the scheduler free of network code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FaultKind = Literal[
    "timeout", "connect", "rate_limited", "server_error", "client_error", "bad_response", "empty_reply", "cancelled",
]

RETRYABLE: frozenset[str] = frozenset({"timeout", "connect", "rate_limited", "server_error", "bad_response", "empty_reply"})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat-completions call. `step` and `alias` are for providers that script by step; never sent."""

    model_id: str
    messages: tuple[dict[str, str], ...]
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


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A model's reply and what it cost, as the provider reported it."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    reported_cost: float | None = None
    response_model: str = ""
    finish_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderFault(Exception):
    """A failed call, classified so the retry policy can decide what to do."""

    def __init__(self, kind: FaultKind, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


class Provider(Protocol):
    """A model endpoint. Implementations must be safe to call concurrently."""

    name: str

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...
