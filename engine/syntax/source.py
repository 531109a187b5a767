"""A flow's bytes as text: UTF-8, no NUL bytes, a leading byte-order mark dropped; anything else is E106 with a position."""

from __future__ import annotations

from engine.diagnostics import Diagnostic
from engine.errors import FlowError
from engine.syntax.ast import Span


def decode_flow(data: bytes, filename: str) -> str:
    """The text of a flow file's bytes, or `FlowError` (E106) saying where it stops being text."""
    if b"\x00" in data:
        raise FlowError([Diagnostic("E106", "file is binary (it contains NUL bytes), not a flow", Span(1, 1, 1, 2), None, filename)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise FlowError([Diagnostic("E106", f"file is not UTF-8 text (byte 0x{data[err.start]:02x})", Span(line, col, line, col + 1),
                                    None, filename)]) from None
    return text.removeprefix("\ufeff")
