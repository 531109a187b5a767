"""`baton import conductor FILE --map 0=alias,...`: a Conductor completion as a .flow file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import fail
from engine.cli.exits import EXIT_FAILED, EXIT_USAGE
from engine.diagnostics import render_all
from engine.planner.conductor import parse_completion, parse_map, to_flow


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=["conductor"])
    p.add_argument("file", metavar="FILE", help="the completion text ('-' for stdin)")
    p.add_argument("--map", required=True, metavar="0=ALIAS,1=ALIAS", help="Conductor's worker ids to pool aliases")
    p.add_argument("-o", "--output", metavar="FILE")
    p.add_argument("--name", default="conductor")


def run(args: argparse.Namespace) -> int:
    try:
        mapping = parse_map(args.map)
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except ValueError as err:
        return fail(str(err), EXIT_USAGE)
    except OSError as err:
        return fail(f"{args.file}: {err.strerror}", EXIT_USAGE)
    plan, diags = parse_completion(text, args.file)
    if plan is not None and plan.empty:
        print("the completion is an empty plan: Conductor's 'keep the previous answer'; no flow written", file=sys.stderr)
        return 0
    flow_text = None
    if plan is not None:
        flow_text, diags = to_flow(plan, mapping, args.name, args.file)
    if flow_text is None:
        print(render_all(diags, text), file=sys.stderr)
        return EXIT_FAILED
    if args.output:
        Path(args.output).write_text(flow_text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(flow_text)
    return 0
