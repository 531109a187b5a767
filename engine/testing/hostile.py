"""A hostile client of `baton serve`, for the project's adversarial suite (tests/test_hostile_*.py).

The friendly client is the OpenAI SDK; this one does what an attacker, a broken client or a
web page on another origin does: it drops a stream at any chunk boundary, sends bodies nested
100,000 deep, with NaN and 1e400 for numbers, with the content types a page can send without
a CORS preflight, with a foreign `Origin` or a rebound `Host`, with Basic credentials a browser
cached. Each helper returns what the server answered, so a test asserts on it; the money side is
asserted against the hostile provider's own ledger (`engine.testing.chat_server.ChatServer.bills`).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx


#: Bodies a hostile client sends, each with what it is; the server must answer every one with a 4xx in OpenAI's shape.
def hostile_bodies(model: str) -> Iterator[tuple[str, bytes]]:
    message = [{"role": "user", "content": "hi"}]
    yield "nested 100,000 deep", b'{"model": "' + model.encode() + b'", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    yield "stream_options a string", json.dumps({"model": model, "messages": message, "stream": True, "stream_options": "yes"}).encode()
    yield "stream a string", json.dumps({"model": model, "messages": message, "stream": "yes"}).encode()
    yield "NaN max_cost_usd", b'{"model": "' + model.encode() + b'", "messages": [{"role": "user", "content": "hi"}], "baton": {"max_cost_usd": NaN}}'
    yield "Infinity temperature", b'{"model": "' + model.encode() + b'", "messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}'
    yield "1e400 max_cost_usd", b'{"model": "' + model.encode() + b'", "messages": [{"role": "user", "content": "hi"}], "baton": {"max_cost_usd": 1e400}}'
    yield "max_tokens 1e400 written out", (b'{"model": "' + model.encode() + b'", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1'
                                          + b"0" * 400 + b"}")
    yield "seed past 64 bits", json.dumps({"model": model, "messages": message, "seed": 2**70}).encode()
    yield "messages an object", json.dumps({"model": model, "messages": {"role": "user"}}).encode()
    yield "content a number", json.dumps({"model": model, "messages": [{"role": "user", "content": 5}]}).encode()
    yield "baton a list", json.dumps({"model": model, "messages": message, "baton": [1]}).encode()
    yield "not JSON", b"{\"model\": "
    yield "a JSON list", b"[1, 2]"
    yield "invalid UTF-8", b'{"model": "' + model.encode() + b'", "messages": [{"role": "user", "content": "\xff\xfe"}]}'


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def post(base: str, path: str, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json") -> Answer:
    """One POST as sent, headers included exactly (a `Host` here replaces the real one)."""
    with httpx.Client(timeout=60) as client:
        reply = client.post(base.rstrip("/") + path, content=body, headers={"Content-Type": content_type, **(headers or {})})
        return Answer(reply.status_code, dict(reply.headers), reply.content)


def get(base: str, path: str, headers: dict[str, str] | None = None) -> Answer:
    with httpx.Client(timeout=60) as client:
        reply = client.get(base.rstrip("/") + path, headers=headers or {})
        return Answer(reply.status_code, dict(reply.headers), reply.content)


def stream_and_drop(base: str, body: dict[str, Any], after_events: int, headers: dict[str, str] | None = None,
                    path: str = "/v1/chat/completions") -> int:
    """POST a streamed request (a chat completion, or `path`'s format) and close the connection after `after_events`
    `data:` events (0: once the headers are in); returns the events read. The server sees a client that went away mid-reply."""
    events = 0
    with httpx.Client(timeout=60) as client, client.stream("POST", base.rstrip("/") + path, json={**body, "stream": True},
                                                         headers=headers or {}) as reply:
        if after_events == 0 or reply.status_code != 200:
            return 0
        for line in reply.iter_lines():
            if line.startswith("data:"):
                events += 1
                if events >= after_events:
                    break
    return events


def raw_request(base: str, request: bytes) -> bytes:
    """Bytes on a fresh TCP connection, for what httpx will not send (a missing Host line); the reply's first 64 KB."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30) as conn:
        conn.sendall(request)
        chunks: list[bytes] = []
        while sum(len(c) for c in chunks) < 65536:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)
