"""`baton validate`: the dry run. Reports every problem in every file; calls no model."""

from __future__ import annotations

import argparse
import json
import sys

from engine.checks import CheckResult
from engine.cli.common import add_pool_argument, plural, pool_for
from engine.cli.exits import EXIT_FAILED, EXIT_OK
from engine.diagnostics import Diagnostic, render_all
from engine.loading import check_file, check_source
from engine.router.files import route_calls


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="flow files; - reads one from standard input")
    add_pool_argument(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")


def summary_line(path: str, result: CheckResult) -> str:
    worst = result.worst
    assert worst is not None
    flow = result.flow
    assert flow is not None
    cost = f"${worst.usd:.4f}" if worst.usd else "$0 (no prices)"
    budget = f"; budget ${flow.budget.usd:g}" if flow.budget.usd is not None else ""
    return f"{path}: ok: {plural(len(flow.nodes), 'node')}; worst case {plural(worst.calls, 'call')}, ~{worst.tokens} tokens, {cost}{budget}"


def run(args: argparse.Namespace) -> int:
    reports = []
    failed = False
    all_diags: list[Diagnostic] = []
    for path in args.files:
        pool = pool_for(args, None if path == "-" else path)
        if path == "-":  # a flow piped in, e.g. from a planner: the pool is found from the current folder
            text = sys.stdin.read()
            result = check_source(text, pool, "<stdin>")
            path = "<stdin>"
        else:
            result, text = check_file(path, pool)
        diags = result.diagnostics
        all_diags += diags
        invalid = bool(result.errors) or (args.strict and bool(result.warnings))
        failed = failed or invalid
        if args.json:
            reports.append({
                "file": path, "valid": not invalid, "pool": pool.source,
                "worst_case": result.worst.to_json() if result.worst else None,
            })
            continue
        if diags:
            print(render_all(diags, text), file=sys.stderr)
        if result.flow is not None and not invalid:
            print(summary_line(path, result))
            for line in route_calls(result.flow, pool):  # a router file beside the flow decides this: say it
                print(f"  {line}")
        elif result.flow is not None:
            print(f"{path}: warnings are errors under --strict", file=sys.stderr)
    if args.json:
        report = {
            "valid": not failed,
            "error_count": sum(d.severity == "error" for d in all_diags),
            "warning_count": sum(d.severity == "warning" for d in all_diags),
            "diagnostics": [d.to_json() for d in all_diags],
            "files": reports,
        }
        print(json.dumps(report, indent=2))
    return EXIT_FAILED if failed else EXIT_OK
