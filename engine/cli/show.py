"""`baton show RUN_ID`: what a run did, step by step, and why."""

from __future__ import annotations

import argparse

from engine.cli.common import fail
from engine.records.render import load_run, render_run, run_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="a run id (a unique prefix is enough)")
    p.add_argument("--output", metavar="STEP", help="print STEP's output in full")
    p.add_argument("--json", action="store_true")
    p.add_argument("--home", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    try:
        summary = load_run(args.run_id, args.home)
    except FileNotFoundError:
        return fail(f"no run {args.run_id!r} (see `baton runs`)", 2)
    if args.output and args.output not in summary.steps:
        return fail(f"run {summary.run_id} has no step {args.output!r}; it has: {', '.join(summary.steps)}", 2)
    print(run_json(summary) if args.json else render_run(summary, args.output))
    return 0
