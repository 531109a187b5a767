"""Reading flow files from disk and running the dry run over them: the front door of the API.

Turns every way a file can be bad (missing, binary, not UTF-8, too large, does not
parse, does not check) into a `CheckResult` with diagnostics, never an exception the
user sees as a traceback.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.checks import CheckResult, check_document
from engine.diagnostics import Diagnostic
from engine.errors import FlowError
from engine.model import Flow
from engine.pool import Pool, discover_pool
from engine.syntax.ast import Span
from engine.syntax.parser import parse
from engine.syntax.source import decode_flow

#: Flows larger than this are refused before parsing (a generated 10,000-step flow is ~1.2 MB).
MAX_FLOW_BYTES = 16 * 1024 * 1024


def read_flow_text(path: str | Path) -> str:
    """The text of a flow file; raises `FlowError` (E106) when it cannot be read as UTF-8 text."""
    p = Path(path)
    where = Span(1, 1, 1, 2)
    try:
        size = p.stat().st_size
        if size > MAX_FLOW_BYTES:
            raise FlowError([Diagnostic("E106", f"file is {size} bytes; flows are limited to {MAX_FLOW_BYTES}", where, None, str(p))])
        data = p.read_bytes()
    except FileNotFoundError:
        raise FlowError([Diagnostic("E106", "no such file", where, None, str(p))]) from None
    except IsADirectoryError:
        raise FlowError([Diagnostic("E106", "is a folder, not a flow file", where, None, str(p))]) from None
    except OSError as err:
        raise FlowError([Diagnostic("E106", f"cannot read file: {err.strerror}", where, None, str(p))]) from None
    return decode_flow(data, str(p))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building a large tree: it would rescan every new node (halves a 10,000-step parse)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def check_source(text: str, pool: Pool, filename: str = "<flow>") -> CheckResult:
    """Parse and check flow text; syntax errors come back as diagnostics."""
    with _gc_paused():
        try:
            doc = parse(text, filename)
        except FlowError as err:
            return CheckResult(None, err.diagnostics)
        return check_document(doc, pool)


def check_file(path: str | Path, pool: Pool | None = None) -> tuple[CheckResult, str]:
    """Check a flow file against `pool` (discovered beside the file when not given)."""
    try:
        text = read_flow_text(path)
    except FlowError as err:
        return CheckResult(None, err.diagnostics), ""
    return check_source(text, pool if pool is not None else discover_pool(path), str(path)), text


def load_flow(path: str | Path, pool: Pool | None = None) -> tuple[Flow, Pool]:
    """A validated `(Flow, Pool)` from a file, or `FlowError` with every diagnostic."""
    pool = pool if pool is not None else discover_pool(path)
    result, text = check_file(path, pool)
    if result.flow is None:
        raise FlowError(result.errors or result.diagnostics, text)
    return result.flow, pool.with_models(result.flow.models)
