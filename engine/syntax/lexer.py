"""A fast lexer for the flow language, built from the terminals of `grammar/flow.lark`.

Lark's own lexers spend most of a large parse creating and positioning tokens; this one
compiles every terminal of the grammar into one master regex with named groups and walks
it with `re.Match` objects, counting lines only where a token holds a newline. The
patterns are read from the grammar, so the `.lark` file stays the single source.
Comments are not given to the parser; they go to a sink so `baton fmt` can keep them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from lark import Token
from lark.lexer import Lexer

from engine.syntax.ast import Comment, Span

#: Order of alternatives in the master regex (earlier wins at the same position).
_ORDER = (
    "COMMENT", "LONG_STRING", "STRING", "KEY", "FIELD", "NAME", "MONEY", "DURATION",
    "NUMBER", "REGEX", "ARROW", "LBRACE", "RBRACE", "COMMA",
)
#: Catch-alls that turn a bad character into a precise error instead of a skip.
_ERRORS = (
    ("BAD_LONG_STRING", r'"""'),
    ("BAD_STRING", r'"[^\n]*'),
    ("BAD_REGEX", r"/[^\n]*"),
    ("BAD_CHAR", r"[\s\S]"),
)

_new_str = str.__new__


def _token(kind: str, value: str, start: int, line: int, col: int, end_line: int, end_col: int, end: int) -> Token:
    """A Lark `Token` without `Token.__new__`'s argument juggling (a third of lexing time)."""
    tok: Token = _new_str(Token, value)
    tok.type = kind
    tok.value = value
    tok.start_pos = start
    tok.line = line
    tok.column = col
    tok.end_line = end_line
    tok.end_column = end_col
    tok.end_pos = end
    return tok


comment_sink: ContextVar[list[Comment] | None] = ContextVar("comment_sink", default=None)


class LexError(Exception):
    """A character sequence that no terminal matches."""

    def __init__(self, kind: str, text: str, span: Span) -> None:
        self.kind = kind
        self.text = text
        self.span = span
        super().__init__(f"{kind} at {span.line}:{span.column}")


class FlowLexer(Lexer):
    """Lark custom lexer: one compiled regex, keywords looked up in a dict."""

    def __init__(self, lexer_conf: Any) -> None:
        patterns: dict[str, str] = {}
        self.keywords: dict[str, str] = {}
        for term in lexer_conf.terminals:
            regexp = term.pattern.to_regexp()
            if term.pattern.type == "str" and term.pattern.value.isalpha():
                self.keywords[term.pattern.value] = term.name
            else:
                patterns[term.name] = regexp
        missing = set(patterns) - set(_ORDER) - {"WS"}
        if missing:
            raise ValueError(f"lexer does not know how to order terminals {sorted(missing)}")
        self.patterns = dict(patterns)  # the grammar's terminals as regexes
        ws = patterns.pop("WS")
        groups = [f"(?P<{name}>{patterns[name]})" for name in _ORDER if name in patterns]
        groups += [f"(?P<{name}>{rx})" for name, rx in _ERRORS] + [r"(?P<END>\Z)"]
        # Whitespace is folded into the front of the next match: half as many regex matches to walk.
        self.master = re.compile(f"(?:{ws})?(?:" + "|".join(groups) + ")")

    def lex(self, data: str) -> Iterator[Token]:  # type: ignore[override]
        """Lark calls a custom lexer with the whole text."""
        return self.tokenize(data)

    def tokenize(self, text: str) -> Iterator[Token]:
        keywords = self.keywords
        sink = comment_sink.get()
        line = 1
        line_start = 0
        for m in self.master.finditer(text):
            kind = m.lastgroup
            assert kind is not None
            start, end = m.span(kind)
            if start != m.start():  # whitespace before the token
                skipped = m.start()
                nl = text.count("\n", skipped, start)
                if nl:
                    line += nl
                    line_start = text.rfind("\n", skipped, start) + 1
            if kind == "END":
                return
            value = m.group(kind)
            col = start - line_start + 1
            if kind == "COMMENT":
                if sink is not None:
                    sink.append(Comment(value, Span(line, col, line, col + len(value), start, end)))
                continue
            if kind.startswith("BAD_"):
                raise LexError(kind, value, Span(line, col, line, col + max(1, len(value)), start, end))
            if kind == "NAME":
                kind = keywords.get(value, "NAME")
            nl = value.count("\n") if kind == "LONG_STRING" else 0
            if nl:
                end_line = line + nl
                end_col = end - (start + value.rfind("\n"))
                yield _token(kind, value, start, line, col, end_line, end_col, end)
                line = end_line
                line_start = start + value.rfind("\n") + 1
            else:
                yield _token(kind, value, start, line, col, line, col + len(value), end)
