"""Parse flow text into a `Document` syntax tree, or a `FlowError` with a positioned diagnostic.

Well-formed text is read by `engine.syntax.descent`, which needs only the grammar's
terminals. Text it rejects goes to `engine.syntax.table`, which drives the LALR(1) table
Lark builds from `grammar/flow.lark` and reports the error exactly as the grammar
defines it; Lark is imported only then.
"""

from __future__ import annotations

from engine.syntax import ast, descent
from engine.syntax.terminals import terminals


def parse(text: str, filename: str = "<flow>") -> ast.Document:
    """Parse flow text. Raises `FlowError` (one syntax diagnostic) when it does not parse."""
    comments: list[ast.Comment] = []
    try:
        return ast.Document(descent.read(terminals(), text, comments), tuple(comments), text, filename)
    except descent.Rejected:
        from engine.syntax.table import parse_with_table  # Lark: only for text with a syntax error

        return parse_with_table(text, filename)
