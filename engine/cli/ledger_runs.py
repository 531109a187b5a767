"""`--db` for `baton runs`, `show` and `view`: runs that replicas on other machines finished, read from the shared ledger.

Local run folders come first (they hold everything, in flight too); the ledger adds the finished
runs of other machines (docs/serve.md, "Running several processes and replicas").
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.errors import UnknownRun
from engine.records.explain import RecordedRun, load_recorded_run
from engine.run.reader import list_runs, load_run
from engine.run.trace import RunSummary
from engine.serve.ledgers import open_ledger
from engine.serve.shared_records import shared_record, shared_summaries


def add_db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", default=os.environ.get("BATON_DB_URL") or None,
                   help="also read runs other replicas finished from this shared ledger (default $BATON_DB_URL)")


def find_recorded(run_id: str, home: str | Path | None, db: str | None) -> RecordedRun:
    try:
        return load_recorded_run(run_id, home)
    except UnknownRun:
        if db is None:
            raise
    ledger = open_ledger(db, migrate=False)
    try:
        found = shared_record(ledger, run_id)
    finally:
        ledger.close()
    if found is None:
        raise UnknownRun(f"no run {run_id!r} here or in the shared ledger")
    return found


def find_summary(run_id: str, home: str | Path | None, db: str | None) -> RunSummary:
    if db is None:
        return load_run(run_id, home)
    return find_recorded(run_id, home, db).summary


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
