"""Task templates: `{name}` placeholders (`{step.field}` for a field of a step that `returns:` fields), `{{` and `}}` for
literal braces.

Substitution is one pass over the *template* only: text that came from a model or a user
input is inserted verbatim and never scanned again, so a reply containing `{question}`
stays inert. The checker and the runtime share this module so they agree on the syntax.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_PART = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\}|\{[^{}]*\}?|\}")


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    offset: int


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    text: str
    offset: int


def scan(template: str) -> Iterator[Placeholder | TemplateProblem]:
    """Every placeholder and every malformed brace in a template, in order."""
    for m in _PART.finditer(template):
        token = m.group()
        if token in ("{{", "}}"):
            continue
        if m.group(1) is not None:
            yield Placeholder(m.group(1), m.start())
        else:
            yield TemplateProblem(token, m.start())


def names(template: str) -> list[str]:
    return [p.name for p in scan(template) if isinstance(p, Placeholder)]


def render(template: str, lookup: Callable[[str], str]) -> str:
    """Substitute placeholders in one pass; the inserted values are never re-read."""

    def replace(m: re.Match[str]) -> str:
        token = m.group()
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        if m.group(1) is not None:
            return lookup(m.group(1))
        return token

    return _PART.sub(replace, template)
