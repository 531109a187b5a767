"""The shared ledger, one suite for both backends: SQLite (a file) and PostgreSQL (a real server from Debian's packages).

A key's caps must hold across processes: many processes reserving on one key at once never book past its cap; a
process killed holding reservations stops holding them once its heartbeat is stale; migrations bring an empty
database and a ledger from before versioning to the current schema without losing a row."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import BudgetExceeded
from engine.model import Budget
from engine.run.budget import BudgetGuard, Reservation
from engine.serve.keys import KeyAllowance, KeySpec, utc_day
from engine.serve.ledger import SCHEMA_VERSION, Ledger, Refusal, SqliteLedger
from engine.serve.ledgers import open_ledger
from tests.conftest import ROOT

DAY = "2026-12-03"


@pytest.fixture
def location(new_ledger: Callable[[], str]) -> str:
    """Where a fresh ledger lives: a SQLite file, or a new database on the session's PostgreSQL server."""
    return new_ledger()


def test_a_reservation_counts_until_it_is_settled_and_a_cap_refuses_what_would_pass_it(location: str) -> None:
    ledger = open_ledger(location)
    try:
        first = ledger.reserve("k", DAY, 0.6, 1.0, None)
        assert isinstance(first, str) and ledger.held("k") == pytest.approx(0.6)
        refused = ledger.reserve("k", DAY, 0.5, 1.0, None)
        assert refused == Refusal("daily", 1.0, 0.0, pytest.approx(0.6))  # 0.6 held + 0.5 > 1.0
        ledger.settle(first, "k", DAY, 0.2)  # it cost less than its worst case: the rest is free again
        assert ledger.spent("k", DAY) == (pytest.approx(0.2), pytest.approx(0.2)) and ledger.held("k") == 0
        assert isinstance(ledger.reserve("k", DAY, 0.5, 1.0, None), str)
        never_sent = ledger.reserve("k", "2026-12-04", 0.1, None, 0.9)  # the total cap spans the days
        assert isinstance(never_sent, str)
        assert ledger.reserve("k", "2026-12-04", 0.2, None, 0.9) == Refusal("total", 0.9, pytest.approx(0.2), pytest.approx(0.6))
        ledger.settle(never_sent, "k", "2026-12-04", None)
        assert ledger.spent("k", "2026-12-04") == (0.0, pytest.approx(0.2))
        ledger.own("run-1", "k", "m")
        assert ledger.owner("run-1") == "k" and ledger.owned("k") == {"run-1"} and ledger.owner("other") is None
    finally:
        ledger.close()


def test_a_run_under_a_key_reserves_through_the_ledger_without_holding_the_event_loop(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call's reservation chain (a run's own budget under a key's allowance): on PostgreSQL the ledger's statements
    are awaited on its asynchronous pool while the loop goes on; on SQLite (a local file) they run inline. Either way
    the caps hold under concurrent calls, and a call cancelled while its reservation is being made does not leave it
    held."""
    monkeypatch.setenv("BATON_LEDGER_AWAIT", "1")  # awaited even on this loopback server, as across a network
    ledger = open_ledger(location)
    allowance = KeyAllowance(KeySpec(name="k", sha256="-", daily_usd=1.0), ledger)
    run_guard = BudgetGuard(Budget(usd=0.65), parent=allowance)
    assert run_guard.waits is ledger.remote is (ledger.backend == "postgresql")

    async def one() -> Reservation | None:
        try:
            return await run_guard.reserve_async("s", 0.1, 10)
        except BudgetExceeded:
            return None

    async def main() -> None:
        got = await asyncio.gather(*(one() for _ in range(10)))
        held = [r for r in got if r is not None]
        assert len(held) == 6 and ledger.held("k") == pytest.approx(0.6)  # the run's own cap, $0.65, took six
        for r in held[:3]:
            await run_guard.settle_async(r, 0.05, 5)
        for r in held[3:]:
            await run_guard.settle_async(r, 0.0, 0, called=False)
        assert ledger.held("k") == 0 and ledger.spent("k", utc_day()) == (pytest.approx(0.15), pytest.approx(0.15))
        assert (run_guard.spent_usd, run_guard.reserved_usd, allowance.reserved_calls) == (pytest.approx(0.15), pytest.approx(0), 0)
        if ledger.remote:  # cancelled while its statement runs: released once the statement returns
            released: list[str | None] = []
            settle = ledger.settle_async

            async def watched(rid: str | None, key: str, day: str, usd: float | None) -> None:
                released.append(rid)
                await settle(rid, key, day, usd)

            ledger.settle_async = watched  # type: ignore[method-assign]
            pending = asyncio.create_task(run_guard.reserve_async("s", 0.1, 10))
            await asyncio.sleep(0)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            assert run_guard.reserved_usd == pytest.approx(0, abs=1e-12) and run_guard.reserved_calls == 0
            deadline = time.time() + 10
            while not (released and ledger.held("k") == 0) and time.time() < deadline:
                await asyncio.sleep(0.01)
            assert len(released) == 1 and released[0] is not None and ledger.held("k") == 0

    async def run_and_close() -> None:
        try:
            await main()
        finally:
            await ledger.aclose()

    try:
        asyncio.run(run_and_close())
    finally:
        ledger.close()


def _spend(location: str, calls: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    ledger = open_ledger(location)
    granted = 0
    for _ in range(calls):
        got = ledger.reserve("k", DAY, 0.03, 1.0, None)
        if isinstance(got, str):
            granted += 1
            ledger.settle(got, "k", DAY, 0.03)
    ledger.close()
    results.put(granted)


def test_processes_reserving_at_once_never_book_past_the_cap(location: str) -> None:
    """Four processes, 40 calls of $0.03 each against a $1 cap: exactly 33 are granted, whatever the interleaving."""
    open_ledger(location).close()  # migrated once, before the race
    results: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()  # type: ignore[type-arg]
    workers = [multiprocessing.get_context("spawn").Process(target=_spend, args=(location, 40, results)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    granted = sum(results.get(timeout=10) for _ in workers)
    ledger = open_ledger(location)
    booked = ledger.spent("k", DAY)[0]
    ledger.close()
    assert granted == 33 and booked == pytest.approx(0.99) and booked <= 1.0


HOLD = """
import sys, time
from engine.serve.ledgers import open_ledger
ledger = open_ledger(sys.argv[1])
print(ledger.reserve("k", "2026-12-03", 0.9, 1.0, None), flush=True)
time.sleep(600)
"""


def test_a_killed_process_stops_holding_its_reservations_once_its_heartbeat_is_stale(location: str) -> None:
    ledger = open_ledger(location)  # opened (and migrated) before the holder reserves: the checks below follow its kill at once
    ledger.stale_s = 2.0  # the default (30 s) made quick for the test
    holder = subprocess.Popen([sys.executable, "-c", HOLD, location], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and len(holder.stdout.readline().strip()) == 32
        holder.send_signal(signal.SIGKILL)  # no chance to settle or release anything
        holder.wait(30)
        assert isinstance(ledger.reserve("k", DAY, 0.5, 1.0, None), Refusal)  # its heartbeat is fresh: it still holds
        time.sleep(ledger.stale_s + 0.5)
        assert isinstance(ledger.reserve("k", DAY, 0.5, 1.0, None), str)  # reclaimed by the next transaction on the key
        assert ledger.held("k") == pytest.approx(0.5)
    finally:
        holder.kill()
        ledger.close()


def _old_ledger(location: str) -> None:
    """A ledger as Baton wrote it before the schema had versions: spend and runs only."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("CREATE TABLE spend (key TEXT, day TEXT, usd DOUBLE PRECISION NOT NULL DEFAULT 0, calls INTEGER NOT NULL "
                         "DEFAULT 0, PRIMARY KEY (key, day))")
            conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, key TEXT, model TEXT, created DOUBLE PRECISION)")
            conn.execute("INSERT INTO spend VALUES ('k', '2026-12-03', 0.25, 3)")
            conn.execute("INSERT INTO runs VALUES ('run-0', 'k', 'm', 0)")
        return
    db = sqlite3.connect(location)
    db.execute("CREATE TABLE spend (key TEXT, day TEXT, usd REAL NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0, "
               "PRIMARY KEY (key, day))")
    db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, key TEXT, model TEXT, created REAL)")
    db.execute("INSERT INTO spend VALUES ('k', '2026-12-03', 0.25, 3)")
    db.execute("INSERT INTO runs VALUES ('run-0', 'k', 'm', 0)")
    db.commit()
    db.close()


def test_migrations_from_an_empty_database_and_from_the_ledger_before_versions(location: str, tmp_path: Path) -> None:
    _old_ledger(location)
    ledger: Ledger = open_ledger(location)
    try:
        assert ledger.version() == SCHEMA_VERSION
        assert ledger.spent("k", DAY) == (0.25, 0.25) and ledger.owner("run-0") == "k"  # nothing lost
        assert ledger.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)  # again: nothing to do
        assert isinstance(ledger.reserve("k", DAY, 0.7, 1.0, None), str) and isinstance(ledger.reserve("k", DAY, 0.1, 1.0, None), Refusal)
    finally:
        ledger.close()
    empty = SqliteLedger(tmp_path / "empty.sqlite", migrate=False)
    assert empty.version() == 0 and empty.migrate() == (0, SCHEMA_VERSION) and empty.version() == SCHEMA_VERSION
    empty.close()


def test_a_process_in_one_long_call_keeps_its_reservation(location: str) -> None:
    """Its heartbeat goes on while the call runs (a stream of minutes), so no one reclaims a call still being billed."""
    streaming, other = open_ledger(location), open_ledger(location)
    streaming.heartbeat_s, other.stale_s = 0.2, 1.0
    try:
        assert isinstance(streaming.reserve("k", DAY, 0.9, 1.0, None), str)
        time.sleep(2.0)  # twice the staleness, with no reservation of its own since
        assert isinstance(other.reserve("k", DAY, 0.5, 1.0, None), Refusal)
        streaming.stop_heartbeat()  # as if it died now
        time.sleep(1.5)
        assert isinstance(other.reserve("k", DAY, 0.5, 1.0, None), str)
    finally:
        streaming.close()
        other.close()


def test_a_ledger_at_the_previous_schema_version_migrates(location: str) -> None:
    from engine.serve.ledger import MIGRATIONS

    previous = open_ledger(location)  # build the previous version's schema by its own statements, then mark it so
    try:
        for statement in ("DROP TABLE records", "DROP TABLE schema_version"):
            previous.execute(statement)
        previous.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        previous.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION - 1,))
        assert previous.version() == SCHEMA_VERSION - 1 and len(MIGRATIONS[SCHEMA_VERSION]) >= 1
        previous.book("k", DAY, 0.5)
        assert previous.migrate() == (SCHEMA_VERSION - 1, SCHEMA_VERSION)
        previous.keep_record("r1", "f", "ok", 0.1, 5, 1.0, 2.0, "{}", "{}")  # the new version's table is there
        assert previous.record("r1") == ("{}", "{}") and previous.spent("k", DAY)[0] == 0.5
    finally:
        previous.close()


def test_kept_records_are_listed_newest_first_and_filtered(location: str) -> None:
    ledger = open_ledger(location)
    try:
        for i, (flow, status) in enumerate([("a", "ok"), ("b", "failed"), ("a", "failed"), ("a", "ok")]):
            ledger.keep_record(f"r{i}", flow, status, 0.0, 0, float(i), float(i) + 1, f'{{"i": {i}}}', "{}")
        assert ledger.recent_records(10) == ['{"i": 3}', '{"i": 2}', '{"i": 1}', '{"i": 0}']
        assert ledger.recent_records(10, flow="a", status="ok") == ['{"i": 3}', '{"i": 0}']
        assert ledger.recent_records(1, status="failed") == ['{"i": 2}']
    finally:
        ledger.close()


def test_baton_db_migrate_says_from_which_version_and_keeps_a_password_out_of_sight(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    _old_ledger(str(old))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    migrate = [sys.executable, "-m", "engine.cli.main", "db", "migrate", "--db", str(old)]
    first = subprocess.run(migrate, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0 and f"schema version 1 -> {SCHEMA_VERSION}" in first.stdout, first.stderr
    again = subprocess.run(migrate, capture_output=True, text=True, env=env, timeout=60)
    assert f"already at version {SCHEMA_VERSION}" in again.stdout
    status = subprocess.run([sys.executable, "-m", "engine.cli.main", "db", "status", "--db", str(old)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert "sqlite, schema version" in status.stdout and "1 runs owned by keys" in status.stdout
    unreachable = subprocess.run([sys.executable, "-m", "engine.cli.main", "db", "status", "--db",
                                  "postgresql://baton:hunter2secret@127.0.0.1:1/baton"], capture_output=True, text=True, env=env, timeout=60)
    assert unreachable.returncode != 0 and "Traceback" not in unreachable.stderr and "cannot connect" in unreachable.stderr
    assert "hunter2secret" not in unreachable.stderr + unreachable.stdout and "baton:***@" in unreachable.stderr
