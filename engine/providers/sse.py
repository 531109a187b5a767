"""A streamed chat completion (`stream: true`, server-sent events) read back into one reply.

Providers stream `chat.completion.chunk` objects, one per `data:` line, then `data: [DONE]`.
`ChunkAssembler` takes the body's bytes as they arrive, hands each piece of answer text on
at once, and at the end rebuilds the body a non-streamed call would have returned, so the
same rules (`engine.providers.reply.read_chat_completion`) judge it: an `error` chunk, a
`finish_reason` of `error`, `length` or `content_filter`, refusals, and usage that is
missing or unreadable (a stream without `stream_options.include_usage` support has none:
the call is then booked at its worst case). Reasoning deltas are never answer text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from engine.providers.reply import quote


def json_object(payload: bytes) -> dict[str, Any] | None:
    """A `data:` line's JSON object; None for anything else (not JSON, or not an object)."""
    try:
        chunk = json.loads(payload)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


class ChunkAssembler:
    """Feed it the body (`feed`), then `completion()` is the body as one chat.completion."""

    def __init__(self, on_text: Callable[[str], None], scrub: Callable[[str], str] = lambda text: text) -> None:
        self._on_text = on_text
        self._scrub = scrub
        self._buffer = bytearray()
        self._scanned = 0  # how much of the buffer is known to hold no newline: each byte is searched once
        self.texts: list[str] = []
        self.refusals: list[str] = []
        #: Tool calls as they arrive in pieces, by their `index`: the id and name once, the arguments in pieces.
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.model = ""
        self.error: Any = None
        self.choice_error: Any = None
        self.done = False
        self.events = 0
        self.unreadable: list[str] = []

    def feed(self, data: bytes) -> None:
        """Take the next piece of the body. Linear in the body's size however it is cut: a 32 MB line sent in
        small pieces is searched once, not once per piece."""
        buffer = self._buffer
        buffer += data
        pos = 0
        while True:
            cut = buffer.find(b"\n", max(pos, self._scanned))
            if cut < 0:
                break
            self._line(bytes(buffer[pos:cut]).rstrip(b"\r"))
            pos = cut + 1
        if pos:
            del buffer[:pos]
        self._scanned = len(buffer)

    def close(self) -> None:
        """The body ended: a last line without its newline still counts."""
        if self._buffer.strip():
            self._line(bytes(self._buffer).rstrip(b"\r"))
        self._buffer.clear()
        self._scanned = 0

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return  # comments (": keep-alive"), `event:` and `id:` lines, the blank line between events
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        self.events += 1
        chunk = json_object(payload)
        if chunk is None:
            # scrubbed whole, then cut: a key that straddles the cut would survive in part
            self.unreadable.append(quote(payload.decode("utf-8", "replace"), self._scrub, 120))
            return
        if chunk.get("error") is not None:
            self.error = chunk["error"]
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("error") is not None:
                self.choice_error = choice["error"]
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            text = delta.get("content")
            if isinstance(text, str) and text:
                self.texts.append(text)
                self._on_text(text)
            refusal = delta.get("refusal")
            if isinstance(refusal, str):
                self.refusals.append(refusal)
            if isinstance(delta.get("tool_calls"), list):
                self._tool_call_pieces(delta["tool_calls"])

    def _tool_call_pieces(self, pieces: list[Any]) -> None:
        for piece in pieces:
            if not isinstance(piece, dict) or not isinstance(piece.get("index", 0), int):
                continue
            call = self.calls.setdefault(piece.get("index", 0), {"id": None, "type": "function", "function": {"name": None, "arguments": ""}})
            if isinstance(piece.get("id"), str):
                call["id"] = piece["id"]
            function = piece.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    call["function"]["name"] = function["name"]
                if isinstance(function.get("arguments"), str):
                    call["function"]["arguments"] += function["arguments"]

    def completion(self) -> bytes:
        """The stream as the chat.completion body it stands for."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.texts)}
        if self.refusals:
            message["refusal"] = "".join(self.refusals)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        if self.choice_error is not None:
            choice["error"] = self.choice_error
        body: dict[str, Any] = {"object": "chat.completion", "model": self.model, "choices": [choice]}
        if self.usage is not None:
            body["usage"] = self.usage
        if self.error is not None:
            body["error"] = self.error
        return json.dumps(body).encode()
