"""`expect:` checks on the fields of a typed reply: `verdict "accept"`, `confidence at least 0.7`.

A step that `returns:` fields may hold its reply to a field's value, as a verifier's `accept:`
does: a reply whose field fails the check is `rejected` and escalates, like any `expect`. The
checker holds each check to the declaration: the field must be declared (E318), a value must
be one the field can take (E319 for an enumeration) and of its type (E324).
"""

from __future__ import annotations

import json

from engine.checks.values import Reader
from engine.diagnostics import did_you_mean
from engine.model import Check
from engine.syntax.ast import Atom, Phrase

_TEXT_OPS = ("matches", "contains")


def is_field_check(phrase: Phrase) -> bool:
    """A phrase that starts with a field's name (after an optional `not`), not with `matches`, `contains` or `json`."""
    atoms = list(phrase.atoms)
    if atoms and atoms[0].kind == "NAME" and atoms[0].value == "not":
        atoms = atoms[1:]
    return len(atoms) >= 2 and atoms[0].kind == "NAME" and atoms[0].value not in (*_TEXT_OPS, "json")


def field_check(r: Reader, phrase: Phrase, fields: dict[str, str], step: str) -> Check | None:
    """The `Check` a phrase such as `not priority "low"` says, or None after reporting why it cannot be one."""
    atoms = list(phrase.atoms)
    negate = atoms[0].value == "not"
    if negate:
        atoms = atoms[1:]
    name, rest = atoms[0], atoms[1:]
    kind = fields.get(name.value)
    if kind is None:
        hint = (did_you_mean(name.value, list(fields)) or f"it returns: {', '.join(fields)}") if fields else \
            'declare the step\'s fields with `returns:` (for example `returns: verdict one of "accept" "revise"`)'
        r.error("E318", f"step `{step}` returns no field `{name.value}`", name.span, hint)
        return None
    if len(rest) == 1 and rest[0].kind in ("STRING", "NUMBER") or (len(rest) == 1 and rest[0].value in ("true", "false")):
        return _equals(r, name, kind, rest[0], negate)
    if len(rest) == 3 and rest[0].value == "at" and rest[1].value in ("least", "most") and rest[2].kind == "NUMBER":
        if negate:
            r.error("E208", f"write `{name.value} at {'most' if rest[1].value == 'least' else 'least'} ...` rather than `not`",
                    phrase.span)
            return None
        if not _numeric(kind):
            r.error("E324", f"`{name.value}` is {kind}, so it cannot be at {rest[1].value} a number", rest[2].span)
            return None
        return Check(kind=f"at_{rest[1].value}", pattern=rest[2].text, field=name.value)  # type: ignore[arg-type]
    if len(rest) == 2 and rest[0].value in _TEXT_OPS and rest[1].kind in ("REGEX", "STRING", "LONG_STRING"):
        if not (kind in ("text", "any") or kind.startswith("one of ")):
            r.error("E324", f"`{name.value}` is {kind}, not text: `{rest[0].value}` tests text", rest[0].span)
            return None
        if rest[0].value == "matches":
            pattern = r.regex(rest[1])
            if pattern is None:
                return None
        elif rest[1].kind == "REGEX":
            r.error("E208", f"`contains` takes a \"string\", found `{rest[1].text}`", rest[1].span)
            return None
        else:
            pattern = rest[1].value
        return Check(kind=("not_" if negate else "") + rest[0].value, pattern=pattern, field=name.value)  # type: ignore[arg-type]
    r.error("E208", f"a check on field `{name.value}` is `{name.value} VALUE`, `{name.value} at least N`, `{name.value} at most N`, "
                    f"`{name.value} matches /re/` or `{name.value} contains \"text\"` (each may follow `not`, but `at`)",
            phrase.span)
    return None


def _compare_hint(name: str, kind: str) -> str:
    if _numeric(kind):
        return f"compare it with a number: `{name} 3`, `{name} at least 0.5`"
    if kind == "boolean":
        return f"compare it with `true` or `false`: `{name} true`"
    if kind == "text":
        return f'compare it with a "string", or test it: `{name} contains "word"`'
    return f"a {kind} field can only be tested by a `returns:` schema"


def _numeric(kind: str) -> bool:
    return kind in ("number", "integer", "any")


def _equals(r: Reader, name: Atom, kind: str, value: Atom, negate: bool) -> Check | None:
    if value.kind == "STRING":
        literal: object = value.value
        fits = kind in ("text", "any") or kind.startswith("one of ")
    elif value.kind == "NUMBER":
        literal = int(value.text) if "." not in value.text else float(value.text)
        fits = _numeric(kind) and not (kind == "integer" and isinstance(literal, float)) or kind.startswith("one of ")
    else:
        literal = value.value == "true"
        fits = kind in ("boolean", "any")
    encoded = json.dumps(literal, ensure_ascii=False)
    if kind.startswith("one of "):
        options = kind.split(" ", 2)[2].split(" ")
        if encoded not in options:
            r.error("E319", f"`{name.value}` is never {encoded}: it is {kind}", value.span)
            return None
    elif not fits:
        r.error("E324", f"`{name.value}` is {kind}, so it is never {encoded}", value.span, _compare_hint(name.value, kind))
        return None
    return Check(kind="not_equals" if negate else "equals", pattern=encoded, field=name.value)
