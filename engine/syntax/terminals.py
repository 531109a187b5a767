"""The grammar's terminals as regexes, read from `grammar/flow.lark` without Lark.

The fast reader of `engine.syntax.parser` needs only the terminals' patterns and the
keywords, and importing Lark and loading its analysed grammar is about a third of the
start-up of `baton validate`. Terminal definitions in the grammar are one line each,
`NAME: /regex/flags` or `NAME: "literal"`, so they are read here directly; any other
form is refused rather than guessed. `tests/test_syntax.py` checks that the result
matches what Lark derives from the same file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

_TERMINAL_LINE = re.compile(r"([A-Z_][A-Z0-9_]*)\s*:\s*(.*?)\s*(?://.*)?")
_REGEX_LITERAL = re.compile(r"/((?:[^/\\]|\\.)+)/([imslux]*)")
_STRING_LITERAL = re.compile(r'"((?:[^"\\]|\\.)+)"')


def grammar_text() -> str:
    """The grammar source: shipped inside the package, or read from the source tree."""
    try:
        return (resources.files("engine") / "grammar" / "flow.lark").read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return (Path(__file__).resolve().parents[2] / "grammar" / "flow.lark").read_text(encoding="utf-8")


@dataclass(frozen=True, eq=False)  # hashed by identity: one per grammar, a cache key
class Terminals:
    """Each non-keyword terminal's regex, and each keyword's terminal name (`"step"` -> `STEP`)."""

    patterns: dict[str, str]
    keywords: dict[str, str]


def read_terminals(grammar: str) -> Terminals:
    """The terminal definitions of a grammar text. Raises `ValueError` on a form this reader does not know."""
    patterns: dict[str, str] = {}
    keywords: dict[str, str] = {}
    for number, line in enumerate(grammar.splitlines(), 1):
        m = _TERMINAL_LINE.fullmatch(line.strip())
        if m is None:
            continue
        name, literal = m.groups()
        rx = _REGEX_LITERAL.fullmatch(literal)
        st = _STRING_LITERAL.fullmatch(literal)
        if rx is not None:
            body, flags = rx.groups()
            patterns[name] = f"(?{flags}:{body})" if flags else body
        elif st is not None and "\\" not in st.group(1):
            if st.group(1).isalpha():
                keywords[st.group(1)] = name
            else:
                patterns[name] = re.escape(st.group(1))
        else:
            raise ValueError(f"grammar line {number}: terminal {name} is not a plain /regex/ or \"literal\": {literal}")
    return Terminals(patterns, keywords)


@lru_cache(maxsize=1)
def terminals() -> Terminals:
    """The terminals of the shipped grammar (read once per process)."""
    return read_terminals(grammar_text())
