"""`baton runs`: recent runs, newest first."""

from __future__ import annotations

import argparse

from engine.cli.common import at_least
from engine.cli.ledger_runs import add_db_argument, recent
from engine.records.render import runs_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=at_least(1), default=20)
    p.add_argument("--home", metavar="DIR")
    add_db_argument(p)


def run(args: argparse.Namespace) -> int:
    runs = recent(args.home, args.db, args.limit)  # a home that cannot be used: cli.main says so
    print(runs_table(runs) if runs else "no runs yet")
    return 0
