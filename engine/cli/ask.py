"""`baton ask "TASK"`: plan, show the plan, run it, show the answer; `--rounds N` lets the planner revise."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from engine.cli.common import fail, for_stream, pool_for
from engine.cli.exits import EXIT_FAILED, EXIT_USAGE, for_run_error
from engine.cli.plan import add_plan_arguments, make_plan, report
from engine.cli.progress import ProgressPrinter
from engine.cli.run import print_summary
from engine.errors import RunError
from engine.planner.plan import PlanResult
from engine.planner.rounds import AskOutcome, ask_rounds
from engine.session import Session
from engine.terminal import for_terminal


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK")
    add_plan_arguments(p)
    p.add_argument("--rounds", type=int, default=1, help="planner rounds: after a run the planner may keep the answer or re-plan")
    p.add_argument("--json", action="store_true")
    p.add_argument("--home", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    pool = pool_for(args, None)
    if not 1 <= args.rounds <= 5:
        return fail("--rounds must be 1..5", EXIT_USAGE)

    async def go() -> AskOutcome:
        async with Session(pool, home=args.home) as session:  # one for the planner's calls and every round's run

            async def planner(task: str, allow_keep: bool) -> PlanResult:
                result = await make_plan(args, pool, task, allow_keep, session, given=args.task)
                report(result)
                if result.ok:
                    print(for_terminal(f"--- plan ---\n{result.text}---"), file=sys.stderr)
                return result

            return await ask_rounds(args.task, pool, planner, rounds=args.rounds, home=args.home, progress=ProgressPrinter(),
                                    session=session)

    try:
        outcome = asyncio.run(go())
    except RunError as err:
        print(f"baton: run failed: {for_terminal(str(err))}", file=sys.stderr)
        return for_run_error(err)
    except (ValueError, OSError) as err:  # a bad --allow, --max-steps or --planner; a --prompt file that cannot be read
        return fail(str(err), EXIT_USAGE)
    if outcome.summary is None:
        return fail("the planner produced no valid plan", EXIT_FAILED)
    if args.json:
        print(json.dumps(outcome.to_json(), indent=2))
    else:
        print(for_stream(outcome.summary.output or ""))
        print_summary(outcome.summary)
    return 0
