"""The ledger every process serving one endpoint shares: spend per key and day, calls in flight, and who started which run.

A key's caps must hold across every worker and replica, so a call's worst case is reserved
*in the ledger*, in one transaction that reads the key's booked spend and the reservations
in flight and refuses the call if they would pass a cap; settling deletes the reservation
and books what the call cost in one transaction as well. Two processes can then never both
take the last dollar of a key (each per-process guard alone let N processes overspend N
times: LiteLLM's proxy bug).

Two backends with one set of statements: SQLite (the default: a file in the run home, WAL,
shared by the workers of one machine; `BEGIN IMMEDIATE` serialises writers) and PostgreSQL
(`engine.serve.ledger_pg`, for replicas on several machines; a transaction-scoped advisory
lock per key serialises its reservations).

A process that dies holding reservations must not hold them forever. Every process is a
*holder* with a heartbeat row it refreshes (`HEARTBEAT_S`); a reservation whose holder has not
been seen for `STALE_S` is deleted by the next transaction of any process, so a `kill -9`ed
replica's calls stop counting against the key within about half a minute. A reservation
lives at most `MAX_HOLD_S` in any case (longer than any call's timeout).

Replicas on several machines (PostgreSQL) also keep each finished run's record here
(`records`: the summary, and the flow, inputs and pool it ran), so any replica lists and shows
any run; the run folders stay where the writing process wrote them (`baton show`, `--resume`
and a person reading files work as on one machine). On one machine (SQLite) the workers share
the run home, and the files alone are enough.

The schema is versioned (`schema_version`); `migrate` brings an older ledger up to date, the
ledger files of Baton before versioning (spend and runs only) included.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from engine.errors import BatonError
from engine.numbers import finite

SCHEMA_VERSION = 3
HEARTBEAT_S = 5.0
STALE_S = 30.0
MAX_HOLD_S = 3600.0

#: Each version's statements, applied in order from the ledger's version to SCHEMA_VERSION. Version 1 is the ledger
#: before versioning: `spend` and `runs`.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("CREATE TABLE IF NOT EXISTS spend (key TEXT, day TEXT, usd REAL NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0, "
        "PRIMARY KEY (key, day))",
        "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, key TEXT, model TEXT, created REAL)"),
    2: ("CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, key TEXT NOT NULL, day TEXT NOT NULL, usd REAL NOT NULL, "
        "holder TEXT NOT NULL, made REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS reservations_by_key ON reservations (key)",
        "CREATE TABLE IF NOT EXISTS holders (holder TEXT PRIMARY KEY, seen REAL NOT NULL)"),
    3: ("CREATE TABLE IF NOT EXISTS records (run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, status TEXT NOT NULL, cost REAL NOT NULL, "
        "tokens INTEGER NOT NULL, started REAL NOT NULL, finished REAL NOT NULL, host TEXT NOT NULL, summary TEXT NOT NULL, "
        "setup TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS records_by_finished ON records (finished)",
        "CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, daily_usd REAL, total_usd REAL, "
        "created REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL)"),
}


#: The statements a served call makes besides reserving and settling, shared by the plain and the awaited methods.
OWN_SQL = ("INSERT INTO runs (run_id, key, model, created) VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
           "key = excluded.key, model = excluded.model, created = excluded.created")
OWNER_SQL = "SELECT key FROM runs WHERE run_id = ?"
CACHED_SQL = "SELECT response FROM responses WHERE key = ?"
CACHE_SQL = "INSERT INTO responses (key, response, created) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING"
KEEP_RECORD_SQL = ("INSERT INTO records (run_id, flow, status, cost, tokens, started, finished, host, summary, setup) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, "
                   "cost = excluded.cost, tokens = excluded.tokens, finished = excluded.finished, summary = excluded.summary")


class LedgerError(BatonError):
    """A ledger that cannot be opened or migrated."""


@dataclass(frozen=True)
class Refusal:
    """Why a reservation was refused: which cap, its limit, what is booked and what is held by calls in flight."""

    cap: str  # "daily" or "total"
    limit: float
    booked: float
    held: float


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def redact(url: str) -> str:
    """The URL without its password: what may appear in a message or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _seconds_from_env(name: str, default: float) -> float:
    """A duration an operator may set in the environment (how soon a dead replica's reservations are reclaimed)."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return finite(float(text), name, low=0.5, high=86400.0)
    except ValueError as err:
        raise LedgerError(f"${name}: {err}") from None


def new_holder() -> str:
    """This process's name in the ledger: host, process id and a random part (a reused pid is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Ledger:
    """The statements and the rules; a backend says how to run a statement and a transaction."""

    backend = "abstract"

    @property
    def remote(self) -> bool:
        """Whether its statements wait on a server across a network: then what a served call asks of it is awaited (the
        `..._async` methods), and the event loop serves other requests meanwhile. A local file is asked inline."""
        return False

    def __init__(self) -> None:
        self.holder = new_holder()
        self.stale_s = _seconds_from_env("BATON_LEDGER_STALE_S", STALE_S)
        self.heartbeat_s = HEARTBEAT_S
        self._last_beat = 0.0
        self._beating: threading.Thread | None = None
        self._stopped = threading.Event()

    # -- what a backend provides -----------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        raise NotImplementedError

    @contextmanager
    def transaction(self, key: str | None = None) -> Iterator[None]:
        """One transaction; with `key`, serialised with every other transaction on that key, in any process."""
        raise NotImplementedError
        yield

    def close(self) -> None:
        raise NotImplementedError

    # -- schema ------------------------------------------------------------------------------------

    def version(self) -> int:
        """The schema version the ledger is at: 0 for an empty database, 1 for a ledger from before versioning."""
        raise NotImplementedError

    def migrate(self) -> tuple[int, int]:
        """Bring the schema up to `SCHEMA_VERSION`; (from, to). Idempotent; safe when processes start at once."""
        with self.transaction(" schema"):  # a lock name no key can have (key names are words)
            start = self.version()
            if start > SCHEMA_VERSION:
                raise LedgerError(f"the ledger's schema is version {start}, newer than this Baton's {SCHEMA_VERSION}: upgrade Baton")
            for version in range(max(start, 0) + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    self.execute(statement)
            self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            self.execute("DELETE FROM schema_version")
            self.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        return start, SCHEMA_VERSION

    # -- spend -------------------------------------------------------------------------------------

    def heartbeat(self, now: float | None = None) -> None:
        """Say this process is alive (at most every `HEARTBEAT_S`), so its reservations are not reclaimed."""
        now = time.time() if now is None else now
        if now - self._last_beat < self.heartbeat_s * 0.9:
            return
        self._last_beat = now
        with self.transaction():
            self._upsert_holder(now)

    def _keep_beating(self) -> None:
        """While this process holds reservations it says it is alive, even during one long call (a stream of minutes):
        a heartbeat only at each reservation would let other processes reclaim a call that is still running."""
        if self._beating is None:
            self._beating = threading.Thread(target=self._beat_loop, name="ledger-heartbeat", daemon=True)
            self._beating.start()

    def _beat_loop(self) -> None:
        while not self._stopped.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except Exception:  # a closed or unreachable database: the next reservation says so, this thread must not
                if self._stopped.is_set():
                    return

    def stop_heartbeat(self) -> None:
        self._stopped.set()

    def _upsert_holder(self, now: float) -> None:
        self.execute("INSERT INTO holders (holder, seen) VALUES (?, ?) ON CONFLICT (holder) DO UPDATE SET seen = excluded.seen",
                     (self.holder, now))

    def _reclaim(self, key: str, now: float) -> None:
        """Inside a key's transaction: drop its reservations whose holder is gone (no heartbeat for `STALE_S`) or too old."""
        self.execute("DELETE FROM reservations WHERE key = ? AND (made < ? OR holder NOT IN "
                     "(SELECT holder FROM holders WHERE seen >= ?))", (key, now - MAX_HOLD_S, now - self.stale_s))

    def reserve(self, key: str, day: str, usd: float, daily_cap: float | None, total_cap: float | None) -> str | Refusal:
        """Hold `usd` of a key's allowance for one call: the reservation's id, or the `Refusal` if a cap would be passed."""
        now = time.time()
        self._keep_beating()
        rid = uuid.uuid4().hex
        with self.transaction(key):
            self._reclaim(key, now)
            today, total = self.spent(key, day)
            held_today, held_total = self._sums("reservations", key, day)
            if daily_cap is not None and today + held_today + usd > daily_cap + 1e-12:
                return Refusal("daily", daily_cap, today, held_today)
            if total_cap is not None and total + held_total + usd > total_cap + 1e-12:
                return Refusal("total", total_cap, total, held_total)
            self.execute("INSERT INTO reservations (id, key, day, usd, holder, made) VALUES (?, ?, ?, ?, ?, ?)",
                         (rid, key, day, usd, self.holder, now))
            self._upsert_holder(now)  # a holder with a reservation is one that was just seen: this is its heartbeat
        self._last_beat = now
        return rid

    def settle(self, rid: str | None, key: str, day: str, usd: float | None) -> None:
        """Replace a reservation by what the call cost (`usd`; None: it was never sent, nothing is booked), atomically."""
        with self.transaction(key):
            if rid is not None:
                self.execute("DELETE FROM reservations WHERE id = ?", (rid,))
            if usd is not None:
                self.book(key, day, usd)

    # -- what a served call asks, awaited: inline here; a backend across a network overrides them ---------------

    async def reserve_async(self, key: str, day: str, usd: float, daily_cap: float | None, total_cap: float | None) -> str | Refusal:
        return self.reserve(key, day, usd, daily_cap, total_cap)

    async def settle_async(self, rid: str | None, key: str, day: str, usd: float | None) -> None:
        self.settle(rid, key, day, usd)

    async def own_async(self, run_id: str, key: str, model: str) -> None:
        self.own(run_id, key, model)

    async def owner_async(self, run_id: str) -> str | None:
        return self.owner(run_id)

    async def keep_record_async(self, run_id: str, flow: str, status: str, cost: float, tokens: int, started: float, finished: float,
                                summary_json: str, setup_json: str) -> None:
        self.keep_record(run_id, flow, status, cost, tokens, started, finished, summary_json, setup_json)

    async def cached_async(self, key: str) -> str | None:
        return self.cached(key)

    async def cache_async(self, key: str, response: str) -> None:
        self.cache(key, response)

    async def aclose(self) -> None:
        """Close what the awaited methods opened in the event loop (before `close`)."""

    def book(self, key: str, day: str, usd: float) -> None:
        self.execute("INSERT INTO spend (key, day, usd, calls) VALUES (?, ?, ?, 1) "
                     "ON CONFLICT (key, day) DO UPDATE SET usd = spend.usd + excluded.usd, calls = spend.calls + 1", (key, day, usd))

    def spent(self, key: str, day: str) -> tuple[float, float]:
        """(that day's spend, all-time spend) of a key."""
        return self._sums("spend", key, day)

    def _sums(self, table: str, key: str, day: str) -> tuple[float, float]:
        """(that day's, all days') sum of `usd` of a key in `spend` (booked) or `reservations` (held)."""
        row = self.execute(f"SELECT COALESCE(SUM(CASE WHEN day = ? THEN usd END), 0), COALESCE(SUM(usd), 0) FROM {table} WHERE key = ?",
                           (day, key)).fetchone()
        return float(row[0]), float(row[1])

    def held(self, key: str) -> float:
        """What a key's calls in flight hold now, in every process."""
        return float(self.execute("SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE key = ?", (key,)).fetchone()[0])

    # -- runs --------------------------------------------------------------------------------------

    def own(self, run_id: str, key: str, model: str) -> None:
        self.execute(OWN_SQL, (run_id, key, model, time.time()))

    def owned(self, key: str) -> set[str]:
        """The ids of the runs a key started."""
        return {str(row[0]) for row in self.execute("SELECT run_id FROM runs WHERE key = ?", (key,)).fetchall()}

    def owner(self, run_id: str) -> str | None:
        row = self.execute(OWNER_SQL, (run_id,)).fetchone()
        return str(row[0]) if row else None

    # -- keys ----------------------------------------------------------------------------------------

    def add_key(self, name: str, sha256: str, daily_usd: float | None, total_usd: float | None) -> bool:
        """Store a key's hash and caps for every process that reads this ledger; False if the name is taken."""
        with self.transaction(" keys"):
            if self.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone():
                return False
            self.execute("INSERT INTO keys (name, sha256, daily_usd, total_usd, created) VALUES (?, ?, ?, ?, ?)",
                         (name, sha256, daily_usd, total_usd, time.time()))
        return True

    def stored_keys(self) -> list[tuple[str, str, float | None, float | None]]:
        """Every stored key: (name, SHA-256 hex, daily cap, total cap)."""
        rows = self.execute("SELECT name, sha256, daily_usd, total_usd FROM keys ORDER BY name").fetchall()
        return [(str(r[0]), str(r[1]), None if r[2] is None else float(r[2]), None if r[3] is None else float(r[3])) for r in rows]

    # -- the response cache of replicas ------------------------------------------------------------

    def cached(self, key: str) -> str | None:
        row = self.execute(CACHED_SQL, (key,)).fetchone()
        return str(row[0]) if row else None

    def cache(self, key: str, response: str) -> None:
        self.execute(CACHE_SQL, (key, response, time.time()))

    #: Whether finished runs' records are kept here, for replicas that do not share a run home.
    shares_records = False

    def keep_record(self, run_id: str, flow: str, status: str, cost: float, tokens: int, started: float, finished: float,
                    summary_json: str, setup_json: str) -> None:
        self.execute(KEEP_RECORD_SQL, (run_id, flow, status, cost, tokens, started, finished, socket.gethostname(), summary_json, setup_json))

    def record(self, run_id: str) -> tuple[str, str] | None:
        """A finished run's (summary JSON, setup JSON), from whichever replica ran it."""
        row = self.execute("SELECT summary, setup FROM records WHERE run_id = ?", (run_id,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def recent_records(self, limit: int, flow: str | None = None, status: str | None = None) -> list[str]:
        """The newest finished runs' summaries (JSON), newest first; only of `flow` and with `status` when given."""
        rows = self.execute("SELECT summary FROM records WHERE (CAST(? AS TEXT) IS NULL OR flow = ?) AND (CAST(? AS TEXT) IS NULL OR status = ?) "
                            "ORDER BY started DESC LIMIT ?", (flow, flow, status, status, limit)).fetchall()
        return [str(r[0]) for r in rows]


class SqliteLedger(Ledger):
    """The ledger in one SQLite file (WAL): shared by every process on one machine that opens it."""

    backend = "sqlite"

    def __init__(self, path: str | Path, fsync: bool = False, migrate: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._lock = threading.RLock()  # one connection, used from the event loop and from threads
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL: a killed process loses no committed row; FULL also survives a power cut (an fsync a commit)
        self.db.execute("PRAGMA synchronous=" + ("FULL" if fsync else "NORMAL"))
        self._depth = 0
        if migrate:
            self.migrate()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        with self._lock:
            return self.db.execute(sql, tuple(params))

    @contextmanager
    def transaction(self, key: str | None = None) -> Iterator[None]:
        with self._lock:
            if self._depth:  # nested: part of the transaction already open
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.db.execute("BEGIN IMMEDIATE")  # the write lock now: no other process can read-then-write between
            self._depth = 1
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            else:
                self.db.execute("COMMIT")
            finally:
                self._depth = 0

    def version(self) -> int:
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" in tables:
            row = self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0] or 0)
        return 1 if "spend" in tables else 0

    def close(self) -> None:
        self.stop_heartbeat()
        with self._lock:
            self.db.close()

