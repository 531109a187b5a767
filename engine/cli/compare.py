"""`baton compare FLOW FLOW... --dataset FILE`: `baton eval` on the same items, with paired tests and the oracle."""

from __future__ import annotations

import argparse

from engine.cli import evaluate
from engine.cli.common import fail
from engine.cli.exits import EXIT_USAGE


def add_arguments(p: argparse.ArgumentParser) -> None:
    evaluate.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    if len(args.flows) < 2:
        return fail("compare needs at least two flows", EXIT_USAGE)
    return evaluate.run(args)
