"""`baton show RUN_ID`: what a run did, step by step, and why."""

from __future__ import annotations

import argparse

from engine.cli.common import fail, for_stream
from engine.cli.exits import EXIT_FAILED, EXIT_USAGE
from engine.cli.ledger_runs import add_db_argument, find_summary
from engine.records.render import render_run, run_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="a run id (a unique prefix is enough)")
    p.add_argument("--output", metavar="STEP", help="print only STEP's output, in full")
    p.add_argument("--json", action="store_true")
    p.add_argument("--home", metavar="DIR")
    add_db_argument(p)


def run(args: argparse.Namespace) -> int:
    summary = find_summary(args.run_id, args.home, args.db)  # an unknown run or home: cli.main says so
    if args.output:
        step = summary.steps.get(args.output)
        if step is None:
            return fail(f"run {summary.run_id} has no step {args.output!r}; it has: {', '.join(summary.steps)}", EXIT_USAGE)
        if step.status != "ok":
            return fail(f"step {args.output!r} of run {summary.run_id} has no output: it is {step.status}"
                        + (f" ({step.error})" if step.error else ""), EXIT_FAILED)
        if args.json:
            print(step.model_dump_json(indent=2))
        else:  # exactly the output into a pipe or a file; made safe only for a terminal
            print(for_stream(step.output))
        return 0
    print(run_json(summary) if args.json else render_run(summary))
    if not args.json and summary.status in ("interrupted", "failed", "budget_exhausted") and not summary.flow.startswith("alias:"):
        print(f"resume with: baton run --resume {summary.run_id}")  # a served alias call has nothing to resume
    return 0
