"""The shared ledger's cost per served call: reserve a call's worst case, then settle it (run by hand).

    python bench/ledger_bench.py [--calls 2000]

Against the old per-process guard, whose only database work was booking the settled cost (`book`),
on SQLite (a file, WAL) and on PostgreSQL (Debian's, on loopback, started for the run when
installed). CPU is this process's; wall includes the database's own work and the round trips.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.serve.ledger import Ledger  # noqa: E402
from engine.serve.ledgers import open_ledger  # noqa: E402
from engine.testing.postgres import PostgresServer, postgres_bin  # noqa: E402

DAY = "2026-12-03"


def per_call(ledger: Ledger, calls: int, reserve: bool) -> tuple[float, float]:
    """(CPU ms, wall ms) per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        if reserve:
            rid = ledger.reserve("k", DAY, 0.001, 1e9, None)
            assert isinstance(rid, str)
            ledger.settle(rid, "k", DAY, 0.0005)
        else:
            ledger.book("k", DAY, 0.0005)
    return (time.process_time() - cpu) / calls * 1000, (time.perf_counter() - wall) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    locations = [("SQLite", str(Path(tempfile.mkdtemp()) / "ledger.sqlite"))]
    server = PostgresServer().start() if postgres_bin() is not None else None
    if server is not None:
        locations.append(("PostgreSQL", server.url))
    try:
        print(f"{'':<12} {'book only':>22} {'reserve + settle':>22}")
        print(f"{'':<12} {'CPU ms':>10} {'wall ms':>11} {'CPU ms':>10} {'wall ms':>11}")
        for name, where in locations:
            ledger = open_ledger(where)
            per_call(ledger, 100, True)  # warm up
            book = per_call(ledger, args.calls, False)
            full = per_call(ledger, args.calls, True)
            ledger.close()
            print(f"{name:<12} {book[0]:>10.3f} {book[1]:>11.3f} {full[0]:>10.3f} {full[1]:>11.3f}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
