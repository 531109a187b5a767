"""`baton cache info|clear`: the response cache."""

from __future__ import annotations

import argparse

from engine.run.cache import ResponseCache
from engine.run.home import RunHome


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["info", "clear"])
    p.add_argument("--home", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    cache = ResponseCache(RunHome(args.home).cache)
    if args.action == "clear":
        print(f"removed {cache.clear()} cached responses from {cache.root}")
    else:
        entries, size = cache.stats()
        print(f"{cache.root}: {entries} cached responses, {size} bytes")
    return 0
