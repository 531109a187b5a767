"""Text from providers and models made safe to print on a terminal.

A reply or an error body can carry escape sequences (`ESC]0;...BEL` retitles the window,
`ESC[2K\\r` wipes the line and lets fake text stand in for Baton's own progress line), NUL
and other control characters, and bidirectional overrides (U+202E shows text reversed,
so what a person reads is not what the model wrote). Before such text reaches a terminal
every one of them is shown as a visible escape (`\\x1b`, `\\u202e`); newlines and tabs stay.
Machine outputs (`--json`, files, a piped stdout) keep the text exactly.
"""

from __future__ import annotations

import re

#: C0 controls but tab and newline, DEL, C1 controls, and the Unicode format characters that reorder
#: or hide text: bidi embeddings, overrides and isolates, marks, line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """`text` with every control and reordering character shown as an escape, newlines and tabs kept."""
    return _UNSAFE.sub(_escape, text)


def one_line(text: str) -> str:
    """`for_terminal`, with newlines shown as `\\n` too: for a progress line or a one-line message."""
    return for_terminal(text).replace("\n", "\\n")
