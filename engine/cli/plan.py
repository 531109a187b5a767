"""`baton plan "TASK"`: a planner model writes a flow; Baton checks it, repairs it, prints it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from engine.cli.common import add_pool_argument, at_least, fail, for_stream, parse_budget, pool_for
from engine.cli.exits import EXIT_FAILED, EXIT_USAGE
from engine.planner.limits import ALL_CONSTRUCTS, PlanLimits
from engine.planner.plan import PlanResult, Style, default_style, plan
from engine.pool import Pool
from engine.session import Session
from engine.terminal import for_terminal


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", metavar="TASK")
    add_plan_arguments(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the accepted flow here")
    p.add_argument("--json", action="store_true", help="print the planning record as JSON")


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--planner", metavar="ALIAS", help="the pool alias that plans (default: the first alias of the pool)")
    add_pool_argument(p)
    p.add_argument("--max-steps", type=int, default=5)
    p.add_argument("--budget", metavar="$X", help="plans may not declare a larger budget")
    p.add_argument("--style", choices=["auto", "select", "write"], default="auto",
                   help="select: the planner picks a pattern of the library, its models and its input; write: it writes the "
                        "flow (default auto: select for the embedded models, write for others)")
    p.add_argument("--allow", default=None, help=f"constructs a plan may use, from {','.join(ALL_CONSTRUCTS)} "
                                                 "(default: step,fuse when it writes; all of them when it selects)")
    p.add_argument("--constrain", choices=["auto", "off", "gbnf", "lark"], default="auto")
    p.add_argument("--repairs", type=at_least(0), default=3, help="how many times to send diagnostics back (default 3)")
    p.add_argument("--strict", action="store_true", help="send warnings back too (a step nobody sees, an unused input, a worst case over budget)")
    p.add_argument("--prompt", metavar="FILE", help="a prompt template replacing the built-in one")
    p.add_argument("--hide-names", action="store_true", help="show the planner models as m0, m1 ... (as Conductor does)")


def limits_from(args: argparse.Namespace, pool: Pool, style: Style = "write") -> PlanLimits:
    given = args.allow if args.allow is not None else ("step,fuse" if style == "write" else ",".join(ALL_CONSTRUCTS))
    allow = tuple(a.strip() for a in given.split(",") if a.strip())
    bad = [a for a in allow if a not in ALL_CONSTRUCTS]
    if bad:
        raise ValueError(f"--allow: unknown construct {', '.join(bad)} (choose from {', '.join(ALL_CONSTRUCTS)})")
    budget = parse_budget(args.budget)
    if not 1 <= args.max_steps <= 50:
        raise ValueError("--max-steps must be 1..50")
    return PlanLimits(max_steps=args.max_steps, budget_usd=budget, allow=allow)


async def make_plan(args: argparse.Namespace, pool: Pool, task: str, allow_keep: bool = False,
                    session: Session | None = None, given: str | None = None) -> PlanResult:
    """Plan through `session` (baton ask's, shared with its runs), or a session of its own."""
    planner = args.planner or next(iter(pool.models))
    if planner not in pool.models:
        raise ValueError(f"--planner {planner!r} is not in the pool ({', '.join(pool.models)})")
    style: Style = default_style(pool, planner) if args.style == "auto" else args.style
    if args.prompt and style == "select":
        raise ValueError("--prompt replaces the prompt of a written plan: add --style write")
    template = Path(args.prompt).read_text(encoding="utf-8") if args.prompt else None
    if session is None:
        async with Session(pool, cache=False) as own:
            return await make_plan(args, pool, task, allow_keep, own, given)
    return await plan(task, pool, planner, session, limits=limits_from(args, pool, style), constrain=args.constrain,
                      repairs=args.repairs, template=template, allow_keep=allow_keep, hide_names=args.hide_names,
                      strict=args.strict, style=style, given=given)


def report(result: PlanResult) -> None:
    """Each attempt's verdict and its first problems: errors when it was refused, warnings when it was taken
    (a step whose output nobody sees still costs its calls)."""
    for i, a in enumerate(result.attempts, 1):
        errors = [d for d in a.diagnostics if d.get("severity", "error") == "error"]
        warnings = [d for d in a.diagnostics if d.get("severity") == "warning"]
        counts = ", ".join(f"{len(ds)} {word}(s)" for ds, word in ((errors, "error"), (warnings, "warning")) if ds)
        state = ("valid" if a.valid else "refused") + (f", {counts}" if counts else "")
        print(f"plan attempt {i}: {state} ({a.latency_s:.1f}s, {a.output_tokens} tokens, constraint: {a.constrained or 'none'})",
              file=sys.stderr)
        for d in (errors + warnings)[:5]:
            where = f"{d['range']['start']['line']}:{d['range']['start']['column']}: " if "range" in d else ""
            print(for_terminal(f"  {where}{d.get('code', '')} {d['message']}"), file=sys.stderr)  # it may quote the planner


def run(args: argparse.Namespace) -> int:
    pool = pool_for(args, None)
    try:
        result = asyncio.run(make_plan(args, pool, args.task))
    except (ValueError, OSError) as err:  # a bad --allow, --max-steps or --planner; a --prompt file that cannot be read
        return fail(str(err), EXIT_USAGE)
    report(result)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    if not result.ok:
        return fail(f"no valid plan after {len(result.attempts)} attempts", EXIT_FAILED)
    if not args.json:
        sys.stdout.write(for_stream(result.text))
        worst = result.worst
        if worst is not None:
            print(f"worst case: {worst.calls} calls, ~{worst.tokens} tokens, ${worst.usd:.4f}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(result.text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
