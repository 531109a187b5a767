"""A run's answer as server-sent events, in any of the wire formats (`engine.serve.wire.Encoder`).

The answer's text is sent as the format's text events as the output step's model produces
it (`Session.run(on_text=...)`); while earlier steps run, each step that finishes is sent as
data a client can read (`step_progress`, in each format's own event shape), and `:
keep-alive` comments every 15 s keep the connection open. The format's closing events
carry the run's summed usage with its cost and the `baton` object.

Nothing is sent until there is something to send: a request that fails before its first
event gets an ordinary JSON error response (and its status: 402, 502, ...); after that, the
format's error event. A client that goes away cancels its run (recorded as interrupted, its
finished steps kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from engine.run.trace import RunSummary
from engine.serve import mapping
from engine.serve.wire import Encoder

KEEP_ALIVE_S = 15.0


def step_progress(fields: dict[str, Any]) -> dict[str, Any]:
    """What a client may show while a flow runs ("answer by smol: ok, 412 ms"): one step that finished or was skipped."""
    return {"type": "step", **{k: fields.get(k) for k in ("step", "kind", "status", "model", "cost", "latency_ms")}}


class SSEAnswer:
    def __init__(self, request: web.Request, headers: dict[str, str], encoder: Encoder) -> None:
        """`headers` go on the stream's response (the run id, a warning); they may be added to until it starts."""
        self.request = request
        self.headers = headers
        self.encoder = encoder
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.response: web.StreamResponse | None = None

    # -- what the run hands on ------------------------------------------------------------------

    def text(self, piece: str) -> None:
        self.queue.put_nowait(("text", piece))

    def progress(self, event: str, fields: dict[str, Any]) -> None:
        # a failed step gets no comment: the error that follows says it, and a run that fails before
        # anything was sent should answer with an ordinary JSON error (its status), not an open stream
        if event == "step_finished" and fields.get("status") in ("ok", "skipped"):
            self.queue.put_nowait(("step", json.dumps(step_progress(fields))))

    # -- the response ----------------------------------------------------------------------------

    async def _start(self) -> web.StreamResponse:
        if self.response is None:
            self.response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                                        **self.headers})
            await self.response.prepare(self.request)
            await self._write(self.encoder.opening())
        return self.response

    async def _write(self, events: list[bytes]) -> None:
        assert self.response is not None
        await self.response.write(b"".join(events))

    async def _send(self, kind: str, value: str) -> None:
        response = await self._start()
        if kind == "text":
            await self._write(self.encoder.text(value))
        elif kind == "step":
            await self._write(self.encoder.step(json.loads(value)))
        else:
            await response.write(f": {value}\n\n".encode())

    async def serve(self, work: Coroutine[Any, Any, RunSummary], failure: Callable[[Exception], mapping.RequestError]) -> web.StreamResponse:
        task = asyncio.ensure_future(work)
        try:
            while not task.done() or not self.queue.empty():
                if self.queue.empty():
                    getter = asyncio.ensure_future(self.queue.get())
                    done, _ = await asyncio.wait({task, getter}, timeout=KEEP_ALIVE_S, return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        if not done:
                            await self._send("comment", "keep-alive")
                        continue
                    kind, value = getter.result()
                else:
                    kind, value = self.queue.get_nowait()
                await self._send(kind, value)
        except (ConnectionResetError, asyncio.CancelledError) as gone:  # the client went away: so does its run
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if isinstance(gone, asyncio.CancelledError) or self.response is None:
                raise
            return self.response  # a write found it gone: nobody to answer, and not a fault of the server's to log
        error = task.exception()
        if error is not None:
            if not isinstance(error, Exception):
                raise error
            problem = failure(error)
            if self.response is None:  # nothing sent yet: an ordinary error response, with its status
                raise problem
            await self._write(self.encoder.failure(problem))
            await self.response.write_eof()
            return self.response
        summary = task.result()
        response = await self._start()
        await self._write(self.encoder.finish(summary))
        await response.write_eof()
        return response
