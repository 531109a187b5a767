"""`baton db migrate | status`: the shared ledger of `baton serve` (docs/serve.md, "Running several processes and replicas")."""

from __future__ import annotations

import argparse
import os

from engine.cli.exits import EXIT_OK
from engine.run.home import RunHome
from engine.serve.ledger import SCHEMA_VERSION, redact
from engine.serve.ledgers import POSTGRES_SCHEMES, open_ledger


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("migrate", "bring the ledger's schema up to date (serve does it at start too)"),
                       ("status", "the ledger's schema version, keys and runs")):
        action = sub.add_parser(name, help=text, description=text)
        action.add_argument("--db", default=os.environ.get("BATON_DB_URL") or None, metavar="FILE|URL",
                            help="a postgresql:// URL or a SQLite file (default $BATON_DB_URL, else HOME/serve-ledger.sqlite)")
        action.add_argument("--home", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    where = args.db or str(RunHome(args.home).root / "serve-ledger.sqlite")
    shown = redact(where) if where.startswith(POSTGRES_SCHEMES) else where
    if args.action == "migrate":
        ledger = open_ledger(where, migrate=False)
        start = ledger.version()
        ledger.migrate()
        ledger.close()
        print(f"{shown}: schema version {start} -> {SCHEMA_VERSION}" if start != SCHEMA_VERSION else f"{shown}: already at version {start}")
        return EXIT_OK
    ledger = open_ledger(where)
    try:
        keys = ledger.stored_keys()
        runs = ledger.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        records = ledger.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        print(f"{shown}: {ledger.backend}, schema version {ledger.version()}; {len(keys)} stored keys"
              f"{' (' + ', '.join(k[0] for k in keys) + ')' if keys else ''}; {runs} runs owned by keys; {records} run records kept")
    finally:
        ledger.close()
    return EXIT_OK
