"""A TCP proxy on loopback that holds every chunk for a delay in each direction: a server "across a network", on one machine.

Tests and benchmarks put it between `baton serve` and PostgreSQL to see what a distant
database does to a server (`with SlowLink(pg.port, 0.02) as link: ... link.port`). It runs its
own event loop in a thread, so it costs the process under test no turns of its loop; a
benchmark runs it as a process of its own (`python -m engine.testing.slow_link TARGET_PORT
DELAY_S` prints its port), so that it takes no CPU from the client it measures.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType


def _cancel_all() -> None:
    for task in asyncio.all_tasks():
        task.cancel()


class SlowLink:
    def __init__(self, target_port: int, delay_s: float, host: str = "127.0.0.1") -> None:
        self.target_port, self.delay_s, self.host = target_port, delay_s, host
        with socket.socket() as s:
            s.bind((host, 0))
            self.port = int(s.getsockname()[1])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, self.host, self.port)
        self._ready.set()
        async with server:
            await server.serve_forever()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.close()

    def start(self) -> SlowLink:
        self._thread = threading.Thread(target=self._run, name="slow-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the slow link did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_cancel_all)
            self._thread.join(10)

    def __enter__(self) -> SlowLink:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    import sys

    with SlowLink(int(sys.argv[1]), float(sys.argv[2])) as link:
        print(link.port, flush=True)
        sys.stdin.read()  # until the parent closes it
