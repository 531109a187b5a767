"""Start `baton serve`: check the flows, open the ledger, listen; refuse what would be unsafe.

Without a keys file the server binds only to loopback: anyone who can reach it spends the
pool's provider keys. `serve` runs until SIGINT or SIGTERM, then closes every connection.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from engine.errors import BatonError
from engine.pool import Pool
from engine.run.home import RunHome
from engine.run.observer import RunObserver
from engine.serve.app import build_app, open_state
from engine.serve.catalog import Catalog
from engine.serve.guard import BrowserPolicy
from engine.serve.keys import load_keys, stored_keys
from engine.serve.ledger import LedgerError
from engine.serve.ledgers import open_ledger
from engine.serve.workers import reserve_port, supervise, worker_socket
from engine.session import Session


class ServeError(BatonError):
    """The server cannot start as asked (an unsafe bind, a port in use)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(pool: Pool, flows: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 8080, keys_file: str | Path | None = None,
          home: str | Path | None = None, reload: bool = False, ledger: str | Path | None = None, cache: bool = False,
          fsync: bool = False, announce: Callable[[str], None] = print, observers: Sequence[RunObserver] = (),
          allow_origins: Sequence[str] = (), allow_hosts: Sequence[str] = (), workers: int = 1) -> None:
    """Serve flows and aliases until interrupted; `CatalogError`, `KeysError` or `ServeError` if it cannot start.

    The response cache is off unless `cache`: clients of an endpoint expect each request to be a call.
    Run records and the ledger survive a killed server either way; with `fsync` they also survive a
    power cut or a kernel crash, for about 2 ms more per request (docs/serve.md). `observers` are told of
    every run (an `OtelObserver` exports its spans). `allow_origins` are the web origins whose pages may call the
    server (with CORS), `allow_hosts` the host names it answers to beside its address (docs/security.md).
    `workers` > 1 forks that many processes answering on one port (`engine.serve.workers`); `ledger` may then be a
    `postgresql://` URL, shared by replicas on other machines too.
    """
    if workers < 1:
        raise ServeError(f"--workers must be 1 or more, not {workers}")
    if workers > 1 and observers:
        raise ServeError("--workers with tracing is not supported yet: each worker would need its own exporter; "
                         "run one process per port, or trace without --workers")
    try:
        policy = BrowserPolicy.build(host, allow_hosts, allow_origins)
    except ValueError as err:
        raise ServeError(f"--allow-origin: {err}") from None
    keys = load_keys(keys_file) if keys_file is not None else None
    catalog = Catalog.load(flows, pool)
    ledger = ledger or RunHome(home).root / "serve-ledger.sqlite"
    try:  # opened and migrated once, before any worker: an unreachable database is said here, not in N tracebacks
        opened = open_ledger(ledger, fsync=fsync)
        stored = stored_keys(opened)  # keys kept in the shared ledger (`--db URL --new-key NAME`) count as the file's do
        opened.close()
    except (LedgerError, sqlite3.Error, OSError) as err:
        raise ServeError(f"the ledger cannot be opened: {err}") from None
    if stored:
        keys = {**(keys or {}), **stored}
    if keys is None and not is_loopback(host):
        raise ServeError(f"refusing to listen on {host} without keys: anyone who can reach it would spend the pool's provider "
                         "keys; pass --keys FILE (create one with --new-key NAME), store keys in the ledger (--db URL --new-key "
                         "NAME), or listen on 127.0.0.1")
    logging.basicConfig(level=logging.INFO, format="baton serve: %(message)s")
    try:
        sock = socket.create_server((host, port), reuse_port=False, backlog=2048) if workers == 1 else reserve_port(host, port)
    except OSError as err:
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None

    async def make_app() -> web.Application:
        session = Session(pool, home=home, cache=cache, durable=fsync, observers=observers)  # inside the server's loop: the limits' semaphores belong to it
        return build_app(open_state(session, catalog, keys, ledger), reload_every=1.0 if reload else None, policy=policy)

    bound = sock.getsockname()[1]
    line = (f"baton serve: http://{host}:{bound}/v1  ({len(catalog.flows)} flows, {len(pool.models)} aliases"
            f"{', keys required' if keys is not None else ', loopback only, no keys'}{', reloading' if reload else ''}"
            f"{f', {workers} workers' if workers > 1 else ''})")
    if workers == 1:
        announce(line)
        web.run_app(make_app(), sock=sock, print=None, access_log=None, handle_signals=True, shutdown_timeout=5.0)
        return

    def run_worker(_number: int, ready: Callable[[], None]) -> None:
        sock.close()  # the supervisor's placeholder; each worker listens on a socket of its own
        listening = worker_socket(host, bound)  # connections queue in its backlog from now on, before the loop runs
        ready()
        web.run_app(make_app(), sock=listening, print=None, access_log=None, handle_signals=True, shutdown_timeout=5.0)

    try:
        supervise(workers, run_worker, on_ready=lambda: announce(line))
    except (TimeoutError, RuntimeError) as err:
        raise ServeError(f"the workers did not start: {err}") from None
    finally:
        sock.close()
