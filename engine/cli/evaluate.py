"""`baton eval FLOW... --dataset FILE`: run flows over a dataset and put quality, money and time side by side."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from engine.cli.common import add_pool_argument, at_least, fail, parse_budget, pool_for
from engine.cli.exits import EXIT_INTERRUPTED, EXIT_USAGE
from engine.eval.runner import EvalReport


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("flows", nargs="+", metavar="FLOW")
    p.add_argument("--dataset", required=True, metavar="FILE", help="JSONL or CSV: the flows' inputs and a reference answer")
    p.add_argument("--scorer", default="exact", help="exact | number | contains | regex:PATTERN | judge:ALIAS")
    p.add_argument("--limit", type=at_least(1), help="only the first N items")
    p.add_argument("--budget", metavar="$X", help="stop starting items once this much is spent")
    p.add_argument("--concurrency", type=at_least(1), default=32, help="items in flight (default 32)")
    add_pool_argument(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report with a cost-vs-accuracy chart")
    p.add_argument("--resume", metavar="EVAL_ID", help="continue an evaluation; finished items are not run again")
    p.add_argument("--home", metavar="DIR")


def table(report: EvalReport) -> str:
    head = ("flow", "items", "accuracy", "95% CI", "total $", "mean $", "$ / correct", "p50 ms", "p95 ms", "calls", "fail")
    rows = [head]
    for f in report.flows:
        rows.append((f.flow + (" *" if f.pareto else ""), str(f.n), f"{f.accuracy * 100:.1f}%", f"{f.ci_low * 100:.1f}-{f.ci_high * 100:.1f}",
                     f"{f.total_cost:.4f}", f"{f.mean_cost:.6f}", f"{f.cost_per_correct:.6f}" if f.cost_per_correct else "-",
                     f"{f.latency_p50_ms:.1f}", f"{f.latency_p95_ms:.1f}", f"{f.calls_per_item:.2f}", str(f.failures)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.append("* on the cost/accuracy Pareto frontier")
    if report.oracle is not None:
        lines.append(f"oracle (any flow right): {report.oracle * 100:.1f}%")
    for ref in report.references:
        vs = f"  (the flow: {ref['flow_accuracy'] * 100:.1f}%)" if "flow_accuracy" in ref else ""
        lines.append(f"reference: {ref['row']}: {ref['accuracy'] * 100:.1f}%, ${ref['mean_cost']:.6f}/item{vs}")
    for p in report.pairs:
        lines.append(f"{p['a']} vs {p['b']}: only {p['a']} right on {p['a_only']}, only {p['b']} right on {p['b_only']} "
                     f"of {p['items']}; McNemar p = {p['mcnemar_p']:.3g}")
    if report.stopped:
        lines.append(f"stopped early: {report.stopped}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engine.eval.dataset import load_dataset
    from engine.eval.html import render_html
    from engine.eval.runner import evaluate, evaluation_account
    from engine.eval.scorers import judge_through, make_scorer
    from engine.loading import load_flow
    from engine.run.home import new_run_id
    from engine.session import Session

    try:
        pool = pool_for(args, args.flows[0])
        flows = []
        for path in args.flows:
            flow, pool = load_flow(path, pool)
            flows.append((Path(path).stem, flow))
        items = load_dataset(args.dataset, args.limit)
        budget = parse_budget(args.budget)
    except ValueError as err:
        return fail(str(err), EXIT_USAGE)
    names = [label for label, _ in flows]
    if len(set(names)) != len(names):
        return fail("two flows have the same file name; rename one so the report can tell them apart", EXIT_USAGE)
    judge_alias = args.scorer.split(":", 1)[1] if args.scorer.startswith("judge:") else None
    if judge_alias is not None and judge_alias not in pool.models:
        return fail(f"--scorer judge:{judge_alias}: no such alias in the pool", EXIT_USAGE)

    tty = sys.stderr.isatty()

    def progress(done: int, total: int, right: int, spent: float) -> None:
        if tty or done == total or done % max(1, total // 10) == 0:
            end = "\r" if tty and done < total else "\n"
            print(f"  {done}/{total} items, {right / done * 100:.1f}% right so far, ${spent:.4f} spent", end=end, file=sys.stderr)

    eval_id = args.resume or new_run_id()

    async def go() -> EvalReport:
        # one session for every item and the judge: the pool's concurrency limits hold across all of them
        async with Session(pool, home=args.home, cache=False) as session:
            account = evaluation_account(budget) if budget is not None else None  # the items' calls and the judge's alike
            scorer = make_scorer(args.scorer, judge_through(session, judge_alias, account=account) if judge_alias else None)
            return await evaluate(flows, items, pool, scorer, scorer_name=args.scorer, dataset_name=args.dataset,
                                  concurrency=args.concurrency, budget_usd=budget, home=args.home, resume=args.resume, progress=progress,
                                  eval_id=eval_id, session=session, account=account)

    try:
        report = asyncio.run(go())
    except KeyboardInterrupt:
        print(f"\nbaton: eval {eval_id} interrupted; finished items are kept: add --resume {eval_id} to the same command to finish it",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(table(report))
        print(f"eval {report.eval_id}: {report.duration_s:.1f}s", file=sys.stderr)
    if args.report:
        Path(args.report).write_text(render_html(report), encoding="utf-8")
        print(f"wrote {args.report}", file=sys.stderr)
    return 0
