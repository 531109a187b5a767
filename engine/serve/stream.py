"""A run's answer as server-sent events, in the shape of OpenAI's streamed chat completions.

The answer's text is sent as `chat.completion.chunk` events as the output step's model
produces it (`Session.run(on_text=...)`); while earlier steps run, SSE comment lines
(`: step grade ok`, and `: keep-alive` every 15 s) keep the connection open. With
`stream_options.include_usage`, the last chunk has empty `choices`, the run's summed
usage with its cost, and the `baton` object; then `data: [DONE]`.

Nothing is sent until there is something to send: a request that fails before its first
event gets an ordinary JSON error response (and its status: 402, 502, ...); after that, an
`error` event the OpenAI SDK raises as an `APIError`. A client that goes away cancels its run
(recorded as interrupted, its finished steps kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from engine.run.trace import RunSummary
from engine.serve import mapping

KEEP_ALIVE_S = 15.0


class SSEAnswer:
    def __init__(self, request: web.Request, run_id: str, include_usage: bool, model: str) -> None:
        self.request = request
        self.run_id = run_id
        self.include_usage = include_usage
        self.completion_id = f"chatcmpl-{run_id}"
        self.created = int(time.time())
        self.model = model  # as asked for, until the answer's alias is known (the last chunks name it)
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.response: web.StreamResponse | None = None

    # -- what the run hands on ------------------------------------------------------------------

    def text(self, piece: str) -> None:
        self.queue.put_nowait(("text", piece))

    def progress(self, event: str, fields: dict[str, Any]) -> None:
        # a failed step gets no comment: the error that follows says it, and a run that fails before
        # anything was sent should answer with an ordinary JSON error (its status), not an open stream
        if event == "step_finished" and fields.get("status") in ("ok", "skipped"):
            self.queue.put_nowait(("comment", f"step {fields.get('step')} {fields.get('status')}"))

    # -- the response ----------------------------------------------------------------------------

    async def _start(self) -> web.StreamResponse:
        if self.response is None:
            self.response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                                        mapping.RUN_HEADER: self.run_id})
            await self.response.prepare(self.request)
            await self._event(mapping.chunk(self.completion_id, self.created, self.model, {"role": "assistant", "content": ""}))
        return self.response

    async def _event(self, data: dict[str, Any]) -> None:
        assert self.response is not None
        await self.response.write(b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")

    async def _send(self, kind: str, value: str) -> None:
        response = await self._start()
        if kind == "text":
            await self._event(mapping.chunk(self.completion_id, self.created, self.model, {"content": value}))
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
        except (ConnectionResetError, asyncio.CancelledError):  # the client went away: so does its run
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        error = task.exception()
        if error is not None:
            if not isinstance(error, Exception):
                raise error
            problem = failure(error)
            if self.response is None:  # nothing sent yet: an ordinary error response, with its status
                raise problem
            body = problem.body()
            body["error"]["status"] = problem.status
            await self._event(body)
            await self.response.write_eof()
            return self.response
        summary = task.result()
        await self._start()
        model = mapping.answer_model(summary)
        await self._event(mapping.chunk(self.completion_id, self.created, model, {}, "stop"))
        if self.include_usage:
            await self._event({"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                               "choices": [], "usage": mapping.usage_of(summary), "baton": mapping.baton_object(summary, model)})
        assert self.response is not None
        await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()
        return self.response
