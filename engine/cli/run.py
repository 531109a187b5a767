"""`baton run`: run a flow from the shell; the output on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import TextIO

from engine.cli.common import add_pool_argument, fail, plural, pool_error, pool_for
from engine.cli.main import EXIT_BUDGET, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from engine.cli.progress import ProgressPrinter
from engine.diagnostics import render_all
from engine.errors import BudgetExceeded, FlowError, InputError, PoolError, RunCancelled, RunError
from engine.run.trace import RunSummary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", metavar="FILE", help="flow file (omit with --resume)")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=VALUE", help="an input; NAME=@file reads a file")
    p.add_argument("--inputs", metavar="FILE.json", help="inputs as a JSON object")
    add_pool_argument(p)
    p.add_argument("--budget", metavar="$X", help="cap the run's spend (never raises the flow's own budget)")
    p.add_argument("--json", action="store_true", help="print the output and the run summary as JSON")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    p.add_argument("--resume", metavar="RUN_ID", help="re-run only what did not complete in RUN_ID")
    p.add_argument("--home", metavar="DIR", help="where runs and the cache live (default: $BATON_HOME or .baton)")


def read_inputs(args: argparse.Namespace) -> dict[str, str]:
    """Inputs from --inputs and --input; every problem is an `InputError` with the offending item."""
    inputs: dict[str, str] = {}
    if args.inputs:
        try:
            raw = Path(args.inputs).read_bytes()
            data = json.loads(raw.decode("utf-8"))
        except OSError as err:
            raise InputError(f"--inputs {args.inputs}: cannot read: {err.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"--inputs {args.inputs}: not UTF-8 text") from None
        except ValueError as err:
            raise InputError(f"--inputs {args.inputs}: not valid JSON: {err}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise InputError(f"--inputs {args.inputs}: must be a JSON object of strings, like {{\"question\": \"...\"}}")
        inputs.update(data)
    given: set[str] = set()  # an --input overrides --inputs, but the same name twice on the command line is a mistake
    for item in args.input:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"--input {item!r}: expected NAME=VALUE or NAME=@FILE")
        if name in given:
            raise InputError(f"--input {name} is given twice; give each input once")
        given.add(name)
        if value.startswith("@"):
            try:
                value = Path(value[1:]).read_bytes().decode("utf-8")
            except OSError as err:
                raise InputError(f"--input {name}: cannot read {value[1:]}: {err.strerror}") from None
            except UnicodeDecodeError:
                raise InputError(f"--input {name}: {value[1:]} is not UTF-8 text") from None
        inputs[name] = value
    return inputs


def parse_money(text: str) -> float:
    m = re.fullmatch(r"\$?([0-9]+(?:\.[0-9]+)?)", text.strip())
    if not m:
        raise InputError(f"--budget {text!r}: expected an amount like $0.50")
    return float(m.group(1))


def print_summary(summary: RunSummary, stream: TextIO | None = None) -> None:
    print(f"run {summary.run_id}: {summary.status}; {plural(summary.calls, 'call')}, {plural(summary.cache_hits, 'cache hit')}, "
          f"{summary.input_tokens}+{summary.output_tokens} tokens, ${summary.cost:.6f}, {summary.duration_s:.2f}s", file=stream or sys.stderr)


def run(args: argparse.Namespace) -> int:
    from engine.api import run_flow

    if not args.file and not args.resume:
        return fail("give a flow FILE, or --resume RUN_ID", EXIT_USAGE)
    if args.file and args.resume:  # the file was ignored: a resumed run replays the flow and inputs it recorded
        return fail("give a flow FILE or --resume RUN_ID, not both: a resumed run uses the flow and inputs it recorded", EXIT_USAGE)
    if args.resume and (args.input or args.inputs):
        return fail("--resume uses the inputs the run recorded; drop --input / --inputs", EXIT_USAGE)
    try:
        inputs = read_inputs(args)
        budget = parse_money(args.budget) if args.budget else None
        pool = pool_for(args, args.file) if args.file else (pool_for(args, None) if args.pool else None)
    except InputError as err:
        return fail(str(err), EXIT_USAGE)
    except PoolError as err:
        return pool_error(err)
    progress = ProgressPrinter()
    try:
        summary = asyncio.run(run_flow(args.file, inputs, pool=pool, home=args.home, budget_usd=budget, cache=not args.no_cache,
                                       resume=args.resume, progress=progress))
    except FlowError as err:
        progress.close()
        print(render_all(err.diagnostics, err.source), file=sys.stderr)
        return EXIT_USAGE
    except (InputError, PoolError) as err:
        progress.close()
        return fail(str(err), EXIT_USAGE)
    except FileNotFoundError as err:
        progress.close()
        return fail(f"no run {err.args[0]!r} to resume (see `baton runs`)", EXIT_USAGE)
    except RunError as err:
        progress.close()
        partial: RunSummary | None = err.summary
        if args.json and partial is not None:
            print(json.dumps({"output": None, "summary": partial.model_dump(mode="json")}, indent=2))
        print(f"baton: run failed: {err}", file=sys.stderr)
        if partial is not None:
            print_summary(partial)
            print(f"finished steps are kept; resume with: baton run --resume {partial.run_id}", file=sys.stderr)
        if isinstance(err, BudgetExceeded):
            return EXIT_BUDGET
        if isinstance(err, RunCancelled):
            return EXIT_INTERRUPTED
        return EXIT_FAILED
    progress.close()
    if args.json:
        print(json.dumps({"output": summary.output, "summary": summary.model_dump(mode="json")}, indent=2))
    else:
        print(summary.output)
        print_summary(summary)
    return 0
