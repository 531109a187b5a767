"""The shared ledger on PostgreSQL, for `baton serve` replicas on several machines (`pip install 'baton[postgres]'`).

The statements are `engine.serve.ledger`'s; this backend runs them through psycopg 3 and its
connection pool. A key's transactions take a transaction-scoped advisory lock on the key
(`pg_advisory_xact_lock`), so two replicas reserving on one key run one after the other and
never both see the same room under a cap; different keys never wait for each other. Money
is `DOUBLE PRECISION` (PostgreSQL's `REAL` is single precision: 7 digits).

What a served call asks (reserve, settle, who owns a run, keep its record) is awaited, on
psycopg's asynchronous pool in the server's event loop, when the database is across a network:
each statement is then a round trip during which the loop serves other requests (2.2 to 2.8
times the requests a second behind 1 ms of delay each way, docs/performance.md). On the same
machine the wait is shorter than what awaiting costs (a third fewer requests a second on
loopback), so there the statements run inline. Which it is, is measured when a server first
asks (`SELECT 1`'s median round trip against `AWAIT_ABOVE_S`); `BATON_LEDGER_AWAIT=1` or `0` decides
instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from engine.serve.ledger import (
    CACHE_SQL,
    CACHED_SQL,
    KEEP_RECORD_SQL,
    MAX_HOLD_S,
    OWN_SQL,
    OWNER_SQL,
    Cursor,
    Ledger,
    LedgerError,
    Refusal,
    redact,
)

#: A reservation and a settlement as one round trip each: a function per operation, so a served call waits for the
#: database twice, not fifteen times (statement by statement, they cost 3 ms of wall time a call on loopback).
FUNCTIONS = (
    """CREATE OR REPLACE FUNCTION baton_reserve(p_id TEXT, p_key TEXT, p_day TEXT, p_usd DOUBLE PRECISION, p_daily DOUBLE PRECISION,
        p_total DOUBLE PRECISION, p_holder TEXT, p_now DOUBLE PRECISION, p_stale DOUBLE PRECISION, p_max_hold DOUBLE PRECISION)
    RETURNS TABLE (cap TEXT, cap_limit DOUBLE PRECISION, booked DOUBLE PRECISION, held DOUBLE PRECISION) AS $$
    DECLARE
        spent_today DOUBLE PRECISION; spent_total DOUBLE PRECISION; held_today DOUBLE PRECISION; held_total DOUBLE PRECISION;
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_key, 0));
        DELETE FROM reservations r WHERE r.key = p_key AND (r.made < p_now - p_max_hold
            OR r.holder NOT IN (SELECT h.holder FROM holders h WHERE h.seen >= p_now - p_stale));
        -- one statement, so one snapshot: a settlement committed between two reads would be missing from both
        -- (its booking not yet seen, its reservation already gone), and the cap would let one more call through
        SELECT (SELECT COALESCE(SUM(CASE WHEN s.day = p_day THEN s.usd END), 0) FROM spend s WHERE s.key = p_key),
               (SELECT COALESCE(SUM(s.usd), 0) FROM spend s WHERE s.key = p_key),
               (SELECT COALESCE(SUM(CASE WHEN r.day = p_day THEN r.usd END), 0) FROM reservations r WHERE r.key = p_key),
               (SELECT COALESCE(SUM(r.usd), 0) FROM reservations r WHERE r.key = p_key)
            INTO spent_today, spent_total, held_today, held_total;
        IF p_daily IS NOT NULL AND spent_today + held_today + p_usd > p_daily + 1e-12 THEN
            RETURN QUERY SELECT 'daily'::TEXT, p_daily, spent_today, held_today;
            RETURN;
        END IF;
        IF p_total IS NOT NULL AND spent_total + held_total + p_usd > p_total + 1e-12 THEN
            RETURN QUERY SELECT 'total'::TEXT, p_total, spent_total, held_total;
            RETURN;
        END IF;
        INSERT INTO reservations (id, key, day, usd, holder, made) VALUES (p_id, p_key, p_day, p_usd, p_holder, p_now);
        INSERT INTO holders (holder, seen) VALUES (p_holder, p_now) ON CONFLICT (holder) DO UPDATE SET seen = EXCLUDED.seen;
    END $$ LANGUAGE plpgsql""",
    # no lock: the deletion and the booking commit together, and a reservation reads both in one snapshot
    """CREATE OR REPLACE FUNCTION baton_settle(p_id TEXT, p_key TEXT, p_day TEXT, p_usd DOUBLE PRECISION) RETURNS VOID AS $$
    BEGIN
        IF p_id IS NOT NULL THEN
            DELETE FROM reservations WHERE id = p_id;
        END IF;
        IF p_usd IS NOT NULL THEN
            INSERT INTO spend (key, day, usd, calls) VALUES (p_key, p_day, p_usd, 1)
                ON CONFLICT (key, day) DO UPDATE SET usd = spend.usd + EXCLUDED.usd, calls = spend.calls + 1;
        END IF;
    END $$ LANGUAGE plpgsql""",
)


def _first_line(err: BaseException, url: str) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


RESERVE_SQL = "SELECT * FROM baton_reserve(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SETTLE_SQL = "SELECT baton_settle(?, ?, ?, ?)"


#: A database whose round trip takes longer than this is awaited (a LAN's is 0.2 to 0.5 ms, loopback's 0.06).
AWAIT_ABOVE_S = 0.0002


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
        self._kept: list[psycopg.Connection[Any]] = []  # the connections threads keep (`_own_connection`)
        self.max_connections = max_connections
        #: The pool the awaited methods use, opened by the first of them in the event loop they run in.
        self._apool: AsyncConnectionPool | None = None
        self._apool_loop: asyncio.AbstractEventLoop | None = None
        self._remote: bool | None = None  # measured when first asked (`remote`)
        if migrate:
            self.migrate()

    @property
    def remote(self) -> bool:
        """Measured when a server first asks (its first call), so that commands which only read (`baton runs --db`) do
        not pay nine round trips to a distant database at start."""
        if self._remote is None:
            awaited = os.environ.get("BATON_LEDGER_AWAIT", "").strip()
            self._remote = awaited == "1" if awaited in ("0", "1") else self._round_trip() > AWAIT_ABOVE_S
        return self._remote

    def _round_trip(self) -> float:
        """The median wall time of `SELECT 1` on a kept connection: how far the database is."""
        times = []
        for _ in range(9):
            began = time.perf_counter()
            self.execute("SELECT 1")
            times.append(time.perf_counter() - began)
        return sorted(times)[len(times) // 2]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn.execute(_pg(sql), tuple(params))  # type: ignore[no-any-return]
        with self._own_connection() as conn:
            cursor = conn.execute(_pg(sql), tuple(params))
            rows = cursor.fetchall() if cursor.description is not None else []
            return _Fetched(rows)

    @contextmanager
    def _own_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """This thread's connection, taken from the pool once and kept (a served call's two statements then cost no
        pool check-out each); a connection that fails is closed and given back, and the next statement takes another."""
        conn = getattr(self._local, "own", None)
        if conn is None or conn.closed:
            conn = self._local.own = self.pool.getconn()
            self._kept.append(conn)
        try:
            yield conn
        except psycopg.OperationalError:
            self._local.own = None
            self._kept.remove(conn)
            self.pool.putconn(conn)
            raise

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

    def migrate(self) -> tuple[int, int]:
        moved = super().migrate()
        with self.transaction(" schema"):  # replicas starting at once: one replaces the functions at a time
            for statement in FUNCTIONS:
                self.execute(statement)
        return moved

    def reserve(self, key: str, day: str, usd: float, daily_cap: float | None, total_cap: float | None) -> str | Refusal:
        rid, now, params = self._reservation(key, day, usd, daily_cap, total_cap)
        return self._reserved(rid, now, self.execute(RESERVE_SQL, params).fetchone())

    def _reservation(self, key: str, day: str, usd: float, daily_cap: float | None,
                     total_cap: float | None) -> tuple[str, float, tuple[Any, ...]]:
        """A new reservation's id, time and `baton_reserve`'s arguments."""
        now = time.time()
        self._keep_beating()
        rid = uuid.uuid4().hex
        return rid, now, (rid, key, day, usd, daily_cap, total_cap, self.holder, now, self.stale_s, MAX_HOLD_S)

    def _reserved(self, rid: str, now: float, refused: Any) -> str | Refusal:
        """`baton_reserve`'s answer: a row is the refusal; none, the reservation was made."""
        if refused is not None:
            return Refusal(str(refused[0]), float(refused[1]), float(refused[2]), float(refused[3]))
        self._last_beat = now  # the function recorded the holder as seen with the reservation
        return rid

    def settle(self, rid: str | None, key: str, day: str, usd: float | None) -> None:
        self.execute(SETTLE_SQL, (rid, key, day, usd))

    # -- awaited ------------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """One statement, autocommitted, on a connection of the event loop's pool; its rows. Inline on a database
        this near (`remote` False)."""
        if not self.remote:
            return list(self.execute(sql, params).fetchall())
        loop = asyncio.get_running_loop()
        if self._apool is None or self._apool_loop is not loop:  # the first, or a new loop (the old pool's is gone)
            self._apool = AsyncConnectionPool(self.url, min_size=1, max_size=self.max_connections, kwargs={"autocommit": True},
                                              open=False)
            self._apool_loop = loop
        if self._apool.closed:
            await self._apool.open(wait=True, timeout=10.0)
        async with self._apool.connection() as conn:
            cursor = await conn.execute(_pg(sql), tuple(params))
            return await cursor.fetchall() if cursor.description is not None else []

    async def reserve_async(self, key: str, day: str, usd: float, daily_cap: float | None, total_cap: float | None) -> str | Refusal:
        rid, now, params = self._reservation(key, day, usd, daily_cap, total_cap)
        rows = await self._fetch(RESERVE_SQL, params)
        return self._reserved(rid, now, rows[0] if rows else None)

    async def settle_async(self, rid: str | None, key: str, day: str, usd: float | None) -> None:
        await self._fetch(SETTLE_SQL, (rid, key, day, usd))

    async def own_async(self, run_id: str, key: str, model: str) -> None:
        await self._fetch(OWN_SQL, (run_id, key, model, time.time()))

    async def owner_async(self, run_id: str) -> str | None:
        rows = await self._fetch(OWNER_SQL, (run_id,))
        return str(rows[0][0]) if rows else None

    async def keep_record_async(self, run_id: str, flow: str, status: str, cost: float, tokens: int, started: float, finished: float,
                                summary_json: str, setup_json: str) -> None:
        await self._fetch(KEEP_RECORD_SQL, (run_id, flow, status, cost, tokens, started, finished, socket.gethostname(), summary_json,
                                            setup_json))

    async def cached_async(self, key: str) -> str | None:
        rows = await self._fetch(CACHED_SQL, (key,))
        return str(rows[0][0]) if rows else None

    async def cache_async(self, key: str, response: str) -> None:
        await self._fetch(CACHE_SQL, (key, response, time.time()))

    async def aclose(self) -> None:
        if self._apool is not None and self._apool_loop is asyncio.get_running_loop():
            await self._apool.close()
        self._apool = None

    def version(self) -> int:
        tables = {row[0] for row in self.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
                  .fetchall()}
        if "schema_version" in tables:
            return int(self.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
        return 1 if "spend" in tables else 0

    def close(self) -> None:
        self.stop_heartbeat()
        for conn in self._kept:
            self.pool.putconn(conn)
        self._kept.clear()
        self.pool.close()


class _Fetched:
    """Rows already read from a connection that went back to the pool."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows
