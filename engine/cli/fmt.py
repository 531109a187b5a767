"""`baton fmt`: rewrite flows in the canonical layout (`--check` only reports)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.diagnostics import render_all
from engine.errors import FlowError
from engine.loading import read_flow_text
from engine.syntax.fmt import format_source


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="flow files ('-' reads stdin and writes stdout)")
    p.add_argument("--check", action="store_true", help="exit 1 if a file is not in canonical form; change nothing")


def run(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            text = sys.stdin.read() if path == "-" else read_flow_text(path)
            formatted = format_source(text, "<stdin>" if path == "-" else path)
        except FlowError as err:
            print(render_all(err.diagnostics, err.source or ""), file=sys.stderr)
            status = 1
            continue
        if path == "-":
            sys.stdout.write(formatted)
        elif formatted != text:
            if args.check:
                print(f"{path}: not in canonical form (run `baton fmt {path}`)", file=sys.stderr)
                status = 1
            else:
                Path(path).write_text(formatted, encoding="utf-8")
                print(f"{path}: formatted")
    return status
