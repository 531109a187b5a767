"""Values of the flow language's literals: quoted strings, triple-quoted text.

Shared by both readers of `engine.syntax.parser` so they decode a literal the same way.
"""

from __future__ import annotations

import re
import textwrap

_ESCAPES = re.compile(r"\\(.)")


def decode_string(raw: str) -> str:
    """The value of a `"..."` literal: backslash escapes as in JSON (\\n, \\t, \\", \\\\)."""
    body = raw[1:-1]
    if "\\" not in body:
        return body
    return _ESCAPES.sub(_unescape, body)


def _unescape(m: re.Match[str]) -> str:
    return {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1))


def decode_long_string(raw: str) -> str:
    """The value of a `\"\"\"...\"\"\"` literal: raw text, first newline and closing indent dropped, dedented.

    Line endings are read as `\n` whatever the file uses, so a flow saved with Windows
    line endings means the same task (it kept every `\r` and was not dedented).
    """
    body = raw[3:-3].replace("\r\n", "\n")
    if body.startswith("\n"):
        body = body[1:]
    last_nl = body.rfind("\n")
    if last_nl >= 0 and not body[last_nl + 1 :].strip():
        body = body[:last_nl]
    return textwrap.dedent(body)


def encode_string(text: str) -> str:
    """`text` as a `"..."` literal that `decode_string` reads back exactly (one line, whatever it holds)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f'"{escaped}"'
