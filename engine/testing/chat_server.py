"""A real OpenAI-compatible chat-completions server on loopback, for tests and benchmarks.

It speaks HTTP on 127.0.0.1 (aiohttp, in a background thread), logs every request body
it receives (the ground truth for visibility and resume tests), adds `usage` to every
reply, and can be scripted per model id to misbehave: HTTP errors with or without
Retry-After, resets, slow or trickling replies, malformed or truncated bodies, wrong
content types, and the shapes real providers send inside a 200: an error in the choice
(OpenRouter), `finish_reason` `length` / `content_filter` / `error`, reasoning fields and
reasoning-only replies, content parts, refusals, and usage that is missing, malformed,
inflated (more completion tokens than `max_tokens`) or with a false `cost`.

`bills` is the server's own ledger: for every request it answered with HTTP 2xx, the
tokens it really processed and the cost it reported, whatever it told the client. Money
tests compare what Baton booked with this, never with Baton's own books alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.testing.loopback import LoopbackServer


@dataclass
class Reply:
    """What the server does for one request. Defaults: HTTP 200 with `text`."""

    text: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    content_type: str = "application/json"
    reset: bool = False
    truncate: bool = False
    cost: Any = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"
    #: Replaces the reply's `usage` as it is (a string, an object with odd counts); `OMIT` leaves it out.
    usage: Any = None
    #: Replaces the message's `content` (content parts, None); `message` adds fields (reasoning, refusal).
    content: Any = None
    message: dict[str, Any] = field(default_factory=dict)
    #: An `error` object inside the choice (OpenRouter's mid-generation failure).
    choice_error: dict[str, Any] | None = None
    #: Send the body in 10 pieces, this many seconds apart.
    trickle: float = 0.0
    #: The completion tokens the server really generated (billed), when that differs from what it reports.
    true_completion_tokens: int | None = None
    #: For `stream: true` requests: seconds between chunks; after this many content chunks, drop the
    #: connection (`stream_break_after`) or send an error event (`stream_error_after`).
    chunk_delay: float = 0.0
    stream_break_after: int | None = None
    stream_error_after: int | None = None
    #: Answer `stream: true` with one JSON body, as a server without streaming does.
    ignore_stream: bool = False
    #: For `stream: true`: send this line as a `data:` event after the first content chunk (a malformed chunk, which
    #: may echo a key), then go on as usual.
    stream_bad_line: str | None = None
    #: For `stream: true`: one content delta of this many characters (a reply far past any sane size).
    stream_huge_delta: int = 0
    #: Answer HTTP 400 naming `stream_options` to a request that has it (older Azure, vLLM); without it, stream as usual.
    refuse_stream_options: bool = False


#: `Reply(usage=OMIT)`: a reply with no `usage` at all.
OMIT = object()


@dataclass(frozen=True)
class Bill:
    """What the server really did for one 2xx reply: tokens processed and the cost it reported (if any)."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    reported_cost: Any = None

    def usd(self, input_price: float, output_price: float) -> float:
        """At the given prices (USD per million tokens), or as reported when the server reported a sane cost."""
        cost = self.reported_cost
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0:
            return float(self.reported_cost)
        return (self.prompt_tokens * input_price + self.completion_tokens * output_price) / 1_000_000


Responder = Callable[[dict[str, Any]], "Reply | str"]


def _prompt_tokens(body: dict[str, Any]) -> int:
    """The server's token count for a prompt: about four characters a token."""
    return sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1


def _bag_of_words(text: str, dims: int = 64) -> list[float]:
    vector = [0.0] * dims
    for word in text.lower().split():
        vector[int.from_bytes(hashlib.blake2b(word.strip(".,?!").encode(), digest_size=2).digest(), "big") % dims] += 1.0
    return vector


def _default_responder(body: dict[str, Any]) -> Reply:
    last = body["messages"][-1]["content"] if body.get("messages") else ""
    return Reply(text=f"[{body.get('model')}] answered: {last[-80:]}")


class ChatServer(LoopbackServer):
    """Start with `start()` (or as a context manager); `url` is the base URL to put in a pool."""

    thread_name = "chat-server"
    backlog = 2048

    def __init__(self, latency: float = 0.0, responder: Responder | None = None, seed: int = 0,
                 latency_jitter: float = 0.0, keep_requests: bool = True) -> None:
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.responder: Responder = responder or _default_responder
        self.script: dict[str, list[Reply | str]] = {}
        self.keep_requests = keep_requests  # the benchmark's server serves millions of requests: it keeps none
        self.served = 0
        self.embedded = 0  # texts embedded by /v1/embeddings
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.bills: list[Bill] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_model: dict[str, int] = {}
        self.max_in_flight_by_model: dict[str, int] = {}
        #: every client connection that sent a request (address and port): a pooled client reuses a few
        self.connections: set[tuple[str, int]] = set()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def count(self, model: str | None = None) -> int:
        """Requests served (for one model id: needs `keep_requests`)."""
        with self._lock:
            if model is None:
                return self.served
            return sum(1 for r in self.requests if r.get("model") == model)

    def bodies(self) -> list[str]:
        """Every request body as text, for searching (e.g. for a marker that must not leak)."""
        with self._lock:
            return [json.dumps(r, ensure_ascii=False) for r in self.requests]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response({"error": {"message": "bad JSON"}}, status=400)
        with self._lock:
            self.served += 1
            if self.keep_requests:
                self.requests.append(body)
                self.request_headers.append(dict(request.headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            model = str(body.get("model", ""))
            self.in_flight_by_model[model] = self.in_flight_by_model.get(model, 0) + 1
            self.max_in_flight_by_model[model] = max(self.max_in_flight_by_model.get(model, 0), self.in_flight_by_model[model])
            peer = request.transport.get_extra_info("peername") if request.transport is not None else None
            if peer:
                self.connections.add((str(peer[0]), int(peer[1])))
            queue = self.script.get(body.get("model", ""))
            scripted = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else None
        try:
            reply = scripted if scripted is not None else self.responder(body)
            if isinstance(reply, str):
                reply = Reply(text=reply)
            delay = reply.delay or self.latency
            if self.latency_jitter:
                delay += self._rng.uniform(0, self.latency_jitter)
            if delay:
                await asyncio.sleep(delay)
            return await self._respond(request, body, reply)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.in_flight_by_model[model] -= 1

    async def _respond(self, request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
        if reply.reset:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if reply.raw is not None:
            payload = reply.raw
            if 200 <= reply.status < 300:
                self._bill(body, reply, reply.completion_tokens or 0)
        elif reply.status >= 400:
            payload = json.dumps({"error": {"message": reply.text or f"error {reply.status}", "code": reply.status}}).encode()
        elif reply.status >= 300:
            payload = (reply.text or "").encode()
        elif body.get("stream") and reply.refuse_stream_options and "stream_options" in body:
            payload = json.dumps({"error": {"message": "Unrecognized request argument supplied: stream_options", "code": 400}}).encode()
            return web.Response(body=payload, status=400, content_type="application/json")
        elif body.get("stream") and not reply.ignore_stream:
            return await self._stream(request, body, reply)
        else:
            payload = self._completion(body, reply)
        headers = {"Content-Type": reply.content_type, **reply.headers}
        if reply.truncate or reply.trickle:
            resp = web.StreamResponse(status=reply.status, headers=headers)
            resp.content_length = len(payload)
            await resp.prepare(request)
            if reply.truncate:
                await resp.write(payload[: len(payload) // 2])
                if request.transport is not None:
                    request.transport.abort()
                return resp
            step = max(1, len(payload) // 10)
            for i in range(0, len(payload), step):
                await resp.write(payload[i:i + step])
                await asyncio.sleep(reply.trickle)
            await resp.write_eof()
            return resp
        return web.Response(body=payload, status=reply.status, headers=headers)

    def _completion(self, body: dict[str, Any], reply: Reply) -> bytes:
        text = reply.text or ""
        prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else _prompt_tokens(body)
        completion_tokens = (reply.completion_tokens if reply.completion_tokens is not None
                             else min(len(text) // 4 + 1, int(body.get("max_tokens") or 10**9)))
        usage: Any = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        if reply.cost is not None:
            usage["cost"] = reply.cost
        if reply.usage is not None:
            usage = reply.usage
        message: dict[str, Any] = {"role": "assistant", "content": text if reply.content is None else reply.content, **reply.message}
        choice: dict[str, Any] = {"index": 0, "finish_reason": reply.finish_reason, "message": message}
        if reply.choice_error is not None:
            choice["error"] = reply.choice_error
        data: dict[str, Any] = {"id": f"chatcmpl-{self.served}", "object": "chat.completion", "created": int(time.time()),
                                "model": body.get("model"), "choices": [choice]}
        if usage is not OMIT:
            data["usage"] = usage
        self._bill(body, reply, completion_tokens if reply.true_completion_tokens is None else reply.true_completion_tokens,
                   prompt_tokens)
        return json.dumps(data).encode()

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
        """The reply as `chat.completion.chunk` events, a few characters each, as a streaming provider sends it."""
        whole = json.loads(self._completion(body, reply))
        choice = whole["choices"][0]
        text = choice["message"].get("content") or ""
        text = text if isinstance(text, str) else ""
        resp = web.StreamResponse(status=reply.status, headers={"Content-Type": "text/event-stream", **reply.headers})
        await resp.prepare(request)
        base = {"id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"], "model": whole["model"]}

        async def event(data: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(data).encode() + b"\n\n")

        await event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
        if reply.stream_huge_delta:
            await event({**base, "choices": [{"index": 0, "delta": {"content": "x" * reply.stream_huge_delta}, "finish_reason": None}]})
        for n, piece in enumerate(pieces):
            if n == 1 and reply.stream_bad_line is not None:
                await resp.write(b"data: " + reply.stream_bad_line.encode() + b"\n\n")
            if reply.stream_break_after is not None and n >= reply.stream_break_after:
                if request.transport is not None:
                    request.transport.abort()
                return resp
            if reply.stream_error_after is not None and n >= reply.stream_error_after:
                await event({"error": {"message": "upstream failed mid-stream", "code": 502}})
                await resp.write_eof()
                return resp
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            await event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        for index, call in enumerate(choice["message"].get("tool_calls") or []):  # as OpenAI streams them: head, then arguments
            head: dict[str, Any] = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
            await event({**base, "choices": [{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}]})
            arguments = call["function"]["arguments"]
            for i in range(0, len(arguments), 7):
                part: dict[str, Any] = {"index": index, "function": {"arguments": arguments[i:i + 7]}}
                await event({**base, "choices": [{"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}]})
        last: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}
        if "error" in choice:
            last["error"] = choice["error"]
        await event({**base, "choices": [last]})
        if (body.get("stream_options") or {}).get("include_usage") and "usage" in whole:
            await event({**base, "choices": [], "usage": whole["usage"]})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _embeddings(self, request: web.Request) -> web.Response:
        """OpenAI's embeddings shape: a deterministic 64-dimensional bag of hashed words per input."""
        body = await request.json()
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts
        with self._lock:
            self.embedded += len(texts)
        data = [{"object": "embedding", "index": i, "embedding": _bag_of_words(str(t))} for i, t in enumerate(texts)]
        tokens = sum(len(str(t).split()) for t in texts)
        return web.json_response({"object": "list", "data": data, "model": body.get("model", ""),
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _bill(self, body: dict[str, Any], reply: Reply, completion_tokens: int, prompt_tokens: int | None = None) -> None:
        bill = Bill(str(body.get("model")), prompt_tokens if prompt_tokens is not None else _prompt_tokens(body), completion_tokens,
                    reply.cost)
        with self._lock:
            self.bills.append(bill)

    # -- lifecycle ------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/messages", self._handle)  # for a Messages API's shapes, scripted as `raw` bodies
        app.router.add_post("/v1/embeddings", self._embeddings)


def main() -> None:
    """`python -m engine.testing.chat_server [LATENCY_SECONDS]`: serve on a free port until interrupted."""
    import sys

    server = ChatServer(latency=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0, keep_requests=False)
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
