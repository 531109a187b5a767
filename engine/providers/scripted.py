"""A deterministic in-process provider for tests and demos.

Replies are scripted per step, per alias, or by a function of the request; latency and
failures are simulated. It is a test double: the HTTP provider is tested against real
servers on loopback (tests/) and the embedded model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.run.budget import prompt_token_bound
from engine.run.protocol import ChatRequest, ChatResponse, ProviderFault

Reply = str | ProviderFault | Callable[[ChatRequest], "str | ProviderFault"]


def _default_reply(request: ChatRequest) -> str:
    return f"[{request.alias or request.model_id}] reply to {request.step or 'request'}"


@dataclass
class ScriptedProvider:
    """Replies from `script[step]`, else `script[alias]`, else `default`; a list is consumed one item per call."""

    enforces_grammar = False  # a script answers what it was given; a test checks what the grammar would refuse
    name: str = "scripted"
    script: dict[str, Reply | list[Reply]] = field(default_factory=dict)
    default: Callable[[ChatRequest], str] = _default_reply
    latency: float = 0.0
    requests: list[ChatRequest] = field(default_factory=list)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        entry = self.script.get(request.step, self.script.get(request.alias))
        if isinstance(entry, list):
            reply: Reply = entry.pop(0) if len(entry) > 1 else entry[0]
        elif entry is None:
            reply = self.default
        else:
            reply = entry
        if callable(reply) and not isinstance(reply, ProviderFault):
            reply = reply(request)
        if isinstance(reply, ProviderFault):
            raise reply
        prompt_tokens = max(1, prompt_token_bound(request.messages) // 4)
        text = str(reply)
        return ChatResponse(text=text, input_tokens=prompt_tokens, output_tokens=min(request.max_tokens, max(1, len(text) // 4)),
                            response_model=request.model_id, finish_reason="stop")

    async def aclose(self) -> None:
        return None
