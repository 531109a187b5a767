"""Helpers every subcommand shares: pool selection, error printing, colour."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from engine.cli.exits import EXIT_USAGE
from engine.errors import InputError, PoolError
from engine.pool import Pool, discover_pool
from engine.terminal import for_terminal


def add_pool_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", metavar="FILE", help="model pool TOML (default: $BATON_POOL, models.toml beside the flow or here, built-in)")


def pool_for(args: argparse.Namespace, flow_path: str | Path | None) -> Pool:
    """The pool by the documented discovery order; `PoolError` propagates for the caller to print."""
    return discover_pool(flow_path, getattr(args, "pool", None))


def for_stream(text: str, stream: TextIO | None = None) -> str:
    """Model or provider text for `stream` (stdout by default): made safe when it is a terminal, exact into a pipe or a file."""
    stream = stream or sys.stdout
    return for_terminal(text) if getattr(stream, "isatty", lambda: False)() else text


def fail(message: str, code: int) -> int:
    """Print an error (made safe for a terminal: it may quote a provider) and return the exit code."""
    print(f"baton: error: {for_terminal(message)}", file=sys.stderr)
    return code


def pool_error(err: PoolError) -> int:
    return fail(str(err), EXIT_USAGE)


def parse_budget(text: str | None, option: str = "--budget") -> float | None:
    """A dollar amount from the command line (`$0.50`, `0.5`), or None when not given.

    The one parser for every command's budget: `nan`, `inf`, negative amounts and words
    are an `InputError` (`float()` took `nan`, which disables every comparison with it).
    """
    if text is None:
        return None
    m = re.fullmatch(r"\$?([0-9]+(?:\.[0-9]+)?)", text.strip())
    if not m:
        raise InputError(f"{option} {text!r}: expected an amount like $0.50")
    return float(m.group(1))


def plural(n: int, noun: str) -> str:
    """`1 call`, `2 calls`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `low` (`--concurrency 0` waited forever)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse
