"""`baton ask "TASK"`: plan, show the plan, run it, show the answer; `--rounds N` lets the planner revise."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from engine.cli.common import fail, pool_error, pool_for
from engine.cli.plan import add_plan_arguments, make_plan, report
from engine.cli.progress import ProgressPrinter
from engine.cli.run import print_summary
from engine.errors import PoolError, RunError
from engine.planner.plan import PlanResult
from engine.planner.rounds import ask_rounds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK")
    add_plan_arguments(p)
    p.add_argument("--rounds", type=int, default=1, help="planner rounds: after a run the planner may keep the answer or re-plan")
    p.add_argument("--json", action="store_true")
    p.add_argument("--home", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    try:
        pool = pool_for(args, None)
    except PoolError as err:
        return pool_error(err)
    if not 1 <= args.rounds <= 5:
        return fail("--rounds must be 1..5", 2)

    async def planner(task: str, allow_keep: bool) -> PlanResult:
        result = await make_plan(args, pool, task, allow_keep)
        report(result)
        if result.ok:
            print(f"--- plan ---\n{result.text}---", file=sys.stderr)
        return result

    try:
        outcome = asyncio.run(ask_rounds(args.task, pool, planner, rounds=args.rounds, home=args.home, progress=ProgressPrinter()))
    except (ValueError, OSError) as err:
        return fail(str(err), 2)
    except RunError as err:
        print(f"baton: run failed: {err}", file=sys.stderr)
        return 3 if type(err).__name__ == "BudgetExceeded" else 1
    if outcome.summary is None:
        return fail("the planner produced no valid plan", 1)
    if args.json:
        print(json.dumps(outcome.to_json(), indent=2))
    else:
        print(outcome.summary.output)
        print_summary(outcome.summary)
    return 0
