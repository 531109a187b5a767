"""`baton view [RUN]`: a run, or the run list, as one self-contained HTML page."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path

from engine.cli.common import at_least, fail
from engine.cli.exits import EXIT_FAILED
from engine.cli.ledger_runs import add_db_argument, find_recorded, recent
from engine.records.run_page import render_run_page
from engine.records.runs_page import filter_runs, render_runs_page


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", nargs="?", metavar="RUN", help="a run id (a unique prefix is enough); without one, the run list")
    p.add_argument("-o", "--output", metavar="FILE.html", help="where to write the page (default: RUN.html, or runs.html, here)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser once written")
    p.add_argument("--flow", metavar="NAME", help="the run list: only runs of this flow")
    p.add_argument("--status", metavar="STATUS", choices=("running", "ok", "failed", "budget_exhausted", "interrupted"),
                   help="the run list: only runs that ended so")
    p.add_argument("--limit", type=at_least(1), default=200, help="the run list: at most this many runs (default 200)")
    p.add_argument("--home", metavar="DIR")
    add_db_argument(p)


def run(args: argparse.Namespace) -> int:
    if args.run_id:
        recorded = find_recorded(args.run_id, args.home, args.db)
        page = render_run_page(recorded)
        target = Path(args.output or f"{recorded.summary.run_id}.html")
    else:
        runs = filter_runs(recent(args.home, args.db, args.limit), args.flow, args.status)
        # the list links to each run's page, written beside it (as `baton view RUN` would write it)
        page = render_runs_page(runs, lambda run_id: f"{run_id}.html", flow=args.flow, status=args.status)
        target = Path(args.output or "runs.html")
    try:
        target.write_text(page, encoding="utf-8")
        if not args.run_id:
            for listed in runs:
                (target.parent / f"{listed.run_id}.html").write_text(
                    render_run_page(find_recorded(listed.run_id, args.home, args.db)), encoding="utf-8")
    except OSError as err:
        return fail(f"cannot write {target}: {err.strerror or err}", EXIT_FAILED)
    print(target if args.run_id else f"{target} (and the page of each of its {len(runs)} runs beside it)")
    if args.open:
        webbrowser.open(target.resolve().as_uri())
    return 0
