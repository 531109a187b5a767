"""`baton serve --workers N`: N processes answering on one port, so one machine's cores all serve.

One Python process saturates one core (about 4-5 ms of CPU per request, docs/performance.md).
Each worker is a forked copy of the checked server (pool, flows and keys are read once, before
the fork) that opens its own listening socket on the same port with `SO_REUSEPORT`: the
kernel spreads new connections over the workers' queues, with no proxy in between. Each
worker has its own `Session`; they share the run home (run ids are unique across processes)
and the ledger, where a key's reservations are made in one transaction across processes
(`engine.serve.ledger`), so the caps hold however requests are spread.

The supervising process binds the port without listening (so a port of 0 is chosen once, for
all of them, and is not taken meanwhile), starts the workers, restarts one that dies (after a
pause, so a worker that cannot start does not spin), and on SIGINT or SIGTERM stops them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

RESTART_PAUSE_S = 1.0
STOP_GRACE_S = 10.0

log = logging.getLogger("baton.serve")


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and not listening: it holds the port and names it when 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    return holder


def worker_socket(host: str, port: int) -> socket.socket:
    return socket.create_server((host, port), reuse_port=True, backlog=2048)


def supervise(count: int, run_worker: Callable[[int, Callable[[], None]], None], on_ready: Callable[[], None] = lambda: None,
              ready_timeout: float = 60.0) -> None:
    """Run `run_worker(i, ready)` in `count` forked processes until SIGINT or SIGTERM; restart any that exits meanwhile.

    A worker calls `ready()` once it listens; `on_ready` runs when all of them have (a connection made before a worker
    listens on a SO_REUSEPORT port is refused, so the address is announced only then)."""
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False
    read_end, write_end = os.pipe()

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: serve, then leave without running the supervisor's cleanup
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.close(read_end)

                def ready() -> None:
                    os.write(write_end, b"r")

                run_worker(number, ready)
            except BaseException:  # noqa: BLE001 - a worker that fails says so and exits non-zero; the supervisor restarts it
                log.exception("worker %d failed", number)
                code = 1
            finally:
                os._exit(code)
        children[pid] = number

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum != signal.SIGINT else signal.SIGINT)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for number in range(count):
            start(number)
        try:
            _await_ready(read_end, count, ready_timeout, children)
        except BaseException:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise
        on_ready()
        deadline: float | None = None
        while children:
            if stopping and deadline is None:
                deadline = time.monotonic() + STOP_GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                for pid in list(children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            number = children.pop(pid, -1)
            if number < 0 or stopping:
                continue
            log.warning("worker %d (pid %d) exited (%s); restarting it", number, pid, _how(status))
            time.sleep(RESTART_PAUSE_S)
            if not stopping:
                start(number)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(read_end)
        os.close(write_end)


def _await_ready(read_end: int, count: int, timeout: float, children: dict[int, int]) -> None:
    """Wait for `count` workers to say they listen; a worker that exits first, or a timeout, is an error."""
    deadline = time.monotonic() + timeout
    ready = 0
    while ready < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{count - ready} of {count} workers did not start listening within {timeout:g} s")
        readable, _, _ = select.select([read_end], [], [], min(left, 0.2))
        if readable:
            ready += len(os.read(read_end, count - ready))
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.pop(pid, None)
            raise RuntimeError(f"a worker exited before it listened ({_how(status)}); see the log above")


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
