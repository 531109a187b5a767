"""`choices:`: a reply that must be one of a few texts (a label, a verdict), for any model.

Every provider's reply is checked: a reply that is not one of the choices fails the check
as an `expect:` failure does (retried on the next escalation level, recorded as
`rejected`). The local model is also constrained: a GBNF grammar over the choices makes
it produce exactly one of them, the way the planner's grammar makes it write a valid flow.
HTTP providers get no grammar (OpenAI rejects unknown request fields); for them it is a check.

A reply matches when it equals a choice up to case, surrounding whitespace, quotes and a
final full stop (`"Code."` is `code`); the step's output is then the choice as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_EDGES = re.compile(r"^[\s\"'`*]+|[\s\"'`*.!]+$")


def _normal(text: str) -> str:
    return _EDGES.sub("", text).casefold()


def choice_of(reply: str, choices: Sequence[str]) -> str | None:
    """The choice a reply is, as written in the flow; None when it is none of them."""
    said = _normal(reply)
    return next((c for c in choices if _normal(c) == said), None)


def choices_check(choices: Sequence[str]) -> Callable[[str], str | None]:
    """A reply validator: None when the reply is one of the choices, else why not."""
    listed = ", ".join(f'"{c}"' for c in choices)

    def validate(text: str) -> str | None:
        return None if choice_of(text, choices) is not None else f"the reply is not one of the choices ({listed})"

    return validate


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching exactly `text` (the planner's grammars use it too)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def choices_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are the choices."""
    return "root ::= " + " | ".join(gbnf_literal(c) for c in choices) + "\n"
