"""`--db` for `baton runs`, `show` and `view`: runs that replicas on other machines finished, read from the shared ledger.

Local run folders come first (they hold everything, in flight too); the ledger adds the finished
runs of other machines (docs/serve.md, "Running several processes and replicas").
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from engine.errors import UnknownRun
from engine.records.explain import RecordedRun, load_recorded_run
from engine.run.reader import list_runs, load_run
from engine.run.trace import RunSummary
from engine.serve.ledger import Ledger
from engine.serve.ledgers import open_ledger
from engine.serve.shared_records import shared_record, shared_summaries, shared_summary

T = TypeVar("T")


def add_db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", default=os.environ.get("BATON_DB_URL") or None,
                   help="also read runs other replicas finished from this shared ledger (default $BATON_DB_URL)")


def find_recorded(run_id: str, home: str | Path | None, db: str | None) -> RecordedRun:
    """A run with its flow and pool (what a page draws): from this machine, else from the shared ledger."""
    try:
        return load_recorded_run(run_id, home)
    except UnknownRun:
        if db is None:
            raise
    return _from_ledger(db, run_id, shared_record)


def find_summary(run_id: str, home: str | Path | None, db: str | None) -> RunSummary:
    """A run's summary (what `baton show` prints): from this machine, else from the shared ledger."""
    try:
        return load_run(run_id, home)
    except UnknownRun:
        if db is None:
            raise
    return _from_ledger(db, run_id, shared_summary)


def _from_ledger(db: str, run_id: str, read: Callable[[Ledger, str], T | None]) -> T:
    ledger = open_ledger(db, migrate=False)
    try:
        found = read(ledger, run_id)
    finally:
        ledger.close()
    if found is None:
        raise UnknownRun(f"no run {run_id!r} here or in the shared ledger")
    return found


def recent(home: str | Path | None, db: str | None, limit: int) -> list[RunSummary]:
    local = list_runs(home, limit)
    if db is None:
        return local
    ledger = open_ledger(db, migrate=False)
    try:
        others = shared_summaries(ledger, limit) if ledger.shares_records else []
    finally:
        ledger.close()
    seen = {s.run_id for s in local}
    return sorted(local + [s for s in others if s.run_id not in seen], key=lambda s: -s.started)[:limit]
