"""`baton graph`: print a checked flow's DAG as Mermaid, Graphviz dot or JSON."""

from __future__ import annotations

import argparse
import sys

from engine.cli.common import add_pool_argument, pool_for
from engine.graph import to_dot, to_json, to_mermaid
from engine.loading import load_flow

RENDERERS = {"mermaid": to_mermaid, "dot": to_dot, "json": to_json}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=sorted(RENDERERS), default="mermaid")
    add_pool_argument(p)


def run(args: argparse.Namespace) -> int:
    flow, _pool = load_flow(args.file, pool_for(args, args.file))
    sys.stdout.write(RENDERERS[args.format](flow))
    return 0
