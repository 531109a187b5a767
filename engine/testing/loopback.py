"""An aiohttp app served on a free loopback port from a thread of its own: the real servers tests talk to."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

from aiohttp import web


class LoopbackApp:
    """`start()` serves `app` on 127.0.0.1 (a free port, in `port`) until `stop()`; its own event loop, in a daemon thread."""

    def __init__(self, app: web.Application, name: str, backlog: int = 128) -> None:
        self.app = app
        self.name = name
        self.backlog = backlog
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(self.app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=self.backlog)
            loop.run_until_complete(site.start())
            server: Any = site._server
            self.port = int(server.sockets[0].getsockname()[1])
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(timeout)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


class LoopbackServer:
    """The lifecycle every loopback test server shares: `start()` (or `with`) serves the routes a subclass adds in
    `routes`, on a free port (`port`), until `stop()`."""

    thread_name = "loopback-server"
    backlog = 128
    port = 0
    _server: LoopbackApp | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.routes(app)
        self._server = LoopbackApp(app, self.thread_name, backlog=self.backlog)
        self._server.start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
