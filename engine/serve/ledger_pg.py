"""The shared ledger on PostgreSQL, for `baton serve` replicas on several machines (`pip install 'baton[postgres]'`).

The statements are `engine.serve.ledger`'s; this backend runs them through psycopg 3 and its
connection pool. A key's transactions take a transaction-scoped advisory lock on the key
(`pg_advisory_xact_lock`), so two replicas reserving on one key run one after the other and
never both see the same room under a cap; different keys never wait for each other. Money
is `DOUBLE PRECISION` (PostgreSQL's `REAL` is single precision: 7 digits).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from engine.serve.ledger import Cursor, Ledger, LedgerError


def redact(url: str) -> str:
    """The URL without its password: what may appear in a message or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(err: BaseException, url: str) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def _pg(sql: str) -> str:
    return sql.replace("?", "%s").replace(" REAL", " DOUBLE PRECISION")


class PostgresLedger(Ledger):
    backend = "postgresql"
    shares_records = True  # replicas on other machines do not share a run home

    def __init__(self, url: str, migrate: bool = True, max_connections: int = 8) -> None:
        super().__init__()
        self.url = url
        try:  # once directly, so a database that is down is one clear error, not a pool retrying in the background
            psycopg.connect(url, connect_timeout=10).close()
        except (psycopg.Error, OSError) as err:
            raise LedgerError(f"cannot connect to the PostgreSQL ledger {redact(url)}: {_first_line(err, url)}") from None
        self.pool = ConnectionPool(url, min_size=1, max_size=max_connections, kwargs={"autocommit": True}, open=False)
        try:
            self.pool.open(wait=True, timeout=10.0)
        except (psycopg.Error, OSError) as err:
            raise LedgerError(f"cannot connect to the PostgreSQL ledger {redact(url)}: {_first_line(err, url)}") from None
        self._local = threading.local()
        if migrate:
            self.migrate()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn.execute(_pg(sql), tuple(params))  # type: ignore[no-any-return]
        with self.pool.connection() as conn:
            cursor = conn.execute(_pg(sql), tuple(params))
            rows = cursor.fetchall() if cursor.description is not None else []
            return _Fetched(rows)

    @contextmanager
    def transaction(self, key: str | None = None) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:  # nested: part of the transaction already open
            yield
            return
        with self.pool.connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                if key is not None:
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
                yield
            finally:
                self._local.conn = None

    def version(self) -> int:
        tables = {row[0] for row in self.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
                  .fetchall()}
        if "schema_version" in tables:
            return int(self.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
        return 1 if "spend" in tables else 0

    def close(self) -> None:
        self.stop_heartbeat()
        self.pool.close()


class _Fetched:
    """Rows already read from a connection that went back to the pool."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows
