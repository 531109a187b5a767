"""`baton diff OLD.flow NEW.flow`: what a change means (docs/editors.md); `--textconv FILE` for `git diff`."""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import fail
from engine.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine.diagnostics import render_all
from engine.errors import FlowError
from engine.loading import check_file, read_flow_text
from engine.pool import discover_pool
from engine.semdiff import diff_flows, flow_diff_json, render_flow_diff
from engine.syntax.fmt import format_source


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="OLD.flow NEW.flow")
    p.add_argument("--json", action="store_true")
    p.add_argument("--pool", metavar="FILE", help="check both against this pool (default: the one the NEW file finds, as validate "
                                                   "finds it: an old copy from `git show` has no pool beside it)")
    p.add_argument("--textconv", metavar="FILE", help="print FILE in canonical form, for a `git diff` textconv driver")


def run(args: argparse.Namespace) -> int:
    if args.textconv:
        return _textconv(args.textconv)
    if len(args.files) != 2:
        return fail("give two flow files: baton diff OLD.flow NEW.flow", EXIT_USAGE)
    checked = []
    pool = discover_pool(args.files[1], args.pool)  # one pool for both: a change of flow, not of pool, is what is compared
    print(f"baton diff: both checked against the pool {pool.source}", file=sys.stderr)
    for path in args.files:
        result, text = check_file(path, pool)
        if result.flow is None:
            print(render_all(result.errors or result.diagnostics, text), file=sys.stderr)
            return fail(f"{path} does not check; a diff compares checked flows", EXIT_USAGE)
        checked.append(result)
    (old, new), (old_path, new_path) = checked, args.files
    assert old.flow is not None and new.flow is not None
    d = diff_flows(old.flow, new.flow, old.worst, new.worst)
    print(json.dumps(flow_diff_json(d), indent=2) if args.json else render_flow_diff(d, old_path, new_path))
    return EXIT_OK if d.equal else EXIT_FAILED


def _textconv(path: str) -> int:
    """The canonical layout (comments kept), so `git diff` shows no formatting-only changes; the text as it is if it does not parse."""
    try:
        text = read_flow_text(path)
    except FlowError as err:
        return fail(err.diagnostics[0].message if err.diagnostics else str(err), EXIT_USAGE)
    try:
        sys.stdout.write(format_source(text, path))
    except FlowError:
        sys.stdout.write(text)
    return EXIT_OK
