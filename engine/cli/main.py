"""The `baton` command: argument parsing and dispatch, nothing else.

Each subcommand lives in its own module and is imported only when used, so `baton
validate` never loads the runtime, providers or HTTP client (start-up stays short).
Exit codes: 0 ok, 1 invalid flow or failed run, 2 usage error, 3 budget exhausted,
130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence

from engine.cli.exits import EXIT_BUDGET, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, for_error, for_flow_error
from engine.errors import BatonError, FlowError

__all__ = ["EXIT_BUDGET", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main"]

#: subcommand -> module under engine.cli that defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("validate", "check flows without calling any model (dry run)"),
    "fmt": ("fmt", "rewrite flows in the canonical layout"),
    "graph": ("graph", "print a flow's DAG as Mermaid, Graphviz dot or JSON"),
    "run": ("run", "run a flow"),
    "runs": ("runs", "list recent runs"),
    "show": ("show", "show what a run did, step by step"),
    "view": ("view", "write a run (or the run list) as an HTML page"),
    "trace": ("trace", "export a recorded run as OpenTelemetry spans"),
    "lsp": ("lsp", "the language server for editors (over stdio)"),
    "router": ("router", "learn a router from recorded outcomes; calibrate it; compare it honestly"),
    "diff": ("diff", "what a change to a flow means: nodes, visibility, models, tasks, edges, worst case"),
    "models": ("models", "list the model pool (and check endpoints)"),
    "cache": ("cache", "manage the response cache"),
    "plan": ("plan", "have a planner model write a flow for a task"),
    "ask": ("ask", "plan, run and answer a task, with every decision recorded"),
    "import": ("importer", "convert a Conductor completion into a flow"),
    "eval": ("evaluate", "run flows over a dataset: accuracy, cost and latency"),
    "compare": ("compare", "evaluate flows on the same items, with paired tests"),
    "serve": ("serve", "serve flows and aliases behind an OpenAI-compatible endpoint"),
    "db": ("db", "the ledger serve's processes and replicas share: migrate it, see its state"),
}


def build_parser() -> argparse.ArgumentParser:
    return _parsers(list(COMMANDS))[0]


def _parsers(names: Sequence[str]) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `baton` parser with the subcommands `names`, and each subcommand's own parser (for its usage errors)."""
    parser = argparse.ArgumentParser(prog="baton", description="Orchestrate teams of language models with plans written as text.")
    parser.add_argument("--version", action="store_true", help="print Baton's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    for name in names:
        module, help_text = COMMANDS[name]
        subparsers[name] = sub.add_parser(name, help=help_text, description=help_text)
        _module(module).add_arguments(subparsers[name])
    return parser, subparsers


def _module(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"engine.cli.{name}")


def _quick_start() -> None:
    """Start-up settings for the command-line process (not for library use: the API never calls this).

    The cyclic GC is paused while modules are imported, then the imported objects are
    frozen out of its reach; and pydantic's plugin discovery, which reads the metadata of
    every installed distribution (~50 ms here), is off unless the user set
    `PYDANTIC_DISABLE_PLUGINS` themselves (an empty value turns plugins back on).
    """
    global _gc_paused_for_imports
    _gc_paused_for_imports = gc.isenabled()
    gc.disable()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


_gc_paused_for_imports = False


def _imports_done() -> None:
    global _gc_paused_for_imports
    if _gc_paused_for_imports:
        _gc_paused_for_imports = False
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    # Build only the parser that is needed: importing every command module costs start-up time.
    parser, subparsers = _parsers([command] if command in COMMANDS else list(COMMANDS))
    _imports_done()
    args, extras = parser.parse_known_args(args_list)
    if extras:  # said by the subcommand's parser: its usage line, not `baton [-h] {run}`
        subparsers.get(getattr(args, "command", None) or "", parser).error(f"unrecognized arguments: {' '.join(extras)}")
    if getattr(args, "version", False):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"baton {version('baton')}")
        except PackageNotFoundError:
            print("baton (not installed)")
        return EXIT_OK
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(_module(COMMANDS[args.command][0]).run(args))
    except FlowError as err:  # every problem, each with its line and a caret
        from engine.diagnostics import render_all

        print(render_all(err.diagnostics, err.source), file=sys.stderr)
        return for_flow_error(args.command)
    except BatonError as err:  # the one place an error becomes an exit code, for every command that lets it through
        from engine.cli.common import fail

        return fail(str(err), for_error(err))
    except KeyboardInterrupt:
        print("baton: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def entry() -> None:
    _quick_start()
    sys.exit(main())


if __name__ == "__main__":
    entry()
