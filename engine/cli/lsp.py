"""`baton lsp`: the language server, over stdio (editors start it; docs/editors.md)."""

from __future__ import annotations

import argparse

from engine.cli.common import fail
from engine.cli.exits import EXIT_USAGE
from engine.lsp import lsp_missing


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stdio", action="store_true", help="talk over standard input and output (the default, and the only way)")


def run(args: argparse.Namespace) -> int:
    missing = lsp_missing()
    if missing is not None:
        return fail(missing, EXIT_USAGE)
    from engine.lsp.server import lsp_main

    lsp_main()
    return 0
