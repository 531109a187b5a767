"""`baton run`: run a flow from the shell; the output on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from engine.cli.common import add_pool_argument, fail, for_stream, parse_budget, plural, pool_for
from engine.cli.exits import EXIT_USAGE, for_run_error
from engine.cli.progress import ProgressPrinter
from engine.cli.tracing import add_otel_arguments, close_observers, observers_for
from engine.diagnostics import render_all
from engine.errors import InputError, RunError, UnknownRun
from engine.model import Flow
from engine.run.trace import RunSummary
from engine.terminal import for_terminal


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", metavar="FILE", help="flow file, or - to read the flow from standard input (omit with --resume)")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=VALUE", help="an input; NAME=@file reads a file")
    p.add_argument("--inputs", metavar="FILE.json", help="inputs as a JSON object")
    add_pool_argument(p)
    p.add_argument("--budget", metavar="$X", help="cap the run's spend (never raises the flow's own budget)")
    p.add_argument("--json", action="store_true", help="print the output and the run summary as JSON")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    p.add_argument("--resume", metavar="RUN_ID", help="re-run only what did not complete in RUN_ID")
    p.add_argument("--home", metavar="DIR", help="where runs and the cache live (default: $BATON_HOME or .baton)")
    add_otel_arguments(p)


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


def print_summary(summary: RunSummary, stream: TextIO | None = None) -> None:
    estimated = f" (${summary.estimated_cost:.6f} of it estimated)" if summary.estimated_cost > 0 else ""
    print(f"run {summary.run_id}: {summary.status}; {plural(summary.calls, 'call')}, {plural(summary.cache_hits, 'cache hit')}, "
          f"{summary.input_tokens}+{summary.output_tokens} tokens, ${summary.cost:.6f}{estimated}, {summary.duration_s:.2f}s",
          file=stream or sys.stderr)


async def _run_stopping_on_sigterm(coro: Coroutine[Any, Any, RunSummary], signals: list[int]) -> RunSummary:
    """Await a run; SIGTERM (a supervisor, `kill`, a container stop) interrupts it the way Ctrl-C does:
    calls in flight are abandoned, finished steps are kept and the record says `interrupted`."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def stop() -> None:
        signals.append(signal.SIGTERM)
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform, or not the main thread
        loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        return await coro
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def run(args: argparse.Namespace) -> int:
    from engine.loading import check_source
    from engine.session import run_flow

    if not args.file and not args.resume:
        return fail("give a flow FILE, or --resume RUN_ID", EXIT_USAGE)
    if args.file and args.resume:  # the file was ignored: a resumed run replays the flow and inputs it recorded
        return fail("give a flow FILE or --resume RUN_ID, not both: a resumed run uses the flow and inputs it recorded", EXIT_USAGE)
    if args.resume and (args.input or args.inputs):
        return fail("--resume uses the inputs the run recorded; drop --input / --inputs", EXIT_USAGE)
    inputs = read_inputs(args)
    budget = parse_budget(args.budget)
    pool = pool_for(args, None if args.file == "-" else args.file) if args.file else (pool_for(args, None) if args.pool else None)
    flow: Flow | str = args.file or ""
    if args.file == "-":  # a flow piped in (from a planner, an editor): checked like a file, named <stdin>
        assert pool is not None
        text = sys.stdin.read()
        checked = check_source(text, pool, "<stdin>")
        if checked.flow is None:
            print(render_all(checked.diagnostics, text), file=sys.stderr)
            return EXIT_USAGE
        flow = checked.flow
    observers = observers_for(args)
    if isinstance(observers, str):
        return fail(observers, EXIT_USAGE)
    progress = ProgressPrinter()
    signals: list[int] = []
    try:
        summary = asyncio.run(_run_stopping_on_sigterm(
            run_flow(flow, inputs, pool=pool, home=args.home, budget_usd=budget, cache=not args.no_cache, resume=args.resume,
                     progress=progress, observers=observers), signals))
    except UnknownRun as err:
        progress.close()
        return fail(f"{err}; nothing to resume", EXIT_USAGE)
    except RunError as err:
        progress.close()  # the summary below goes where the progress line was
        partial: RunSummary | None = err.summary
        if args.json and partial is not None:
            print(json.dumps({"output": None, "summary": partial.model_dump(mode="json")}, indent=2))
        print(f"baton: run failed: {for_terminal(str(err))}", file=sys.stderr)
        if err.where:
            print(f"  at {for_terminal(err.where)} (step `{err.step}`)", file=sys.stderr)
        if partial is not None:
            print_summary(partial)
            finished = sum(1 for r in partial.steps.values() if r.status == "ok")
            kept = f"{plural(finished, 'finished step')} kept" if finished else "no step finished"
            print(f"{kept}; resume with: baton run --resume {partial.run_id}", file=sys.stderr)
        return for_run_error(err, signals[0] if signals else None)
    finally:
        progress.close()  # before anything else is printed (another error, by `baton`)
        close_observers(observers)  # sends the spans still buffered
    if args.json:
        print(json.dumps({"output": summary.output, "summary": summary.model_dump(mode="json")}, indent=2))
    else:  # the answer exactly into a pipe or a file; made safe only for a terminal
        print(for_stream(summary.output or ""))
        print_summary(summary)
    return 0
