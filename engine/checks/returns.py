"""`returns:` — what a step's reply must be: an object with named, typed fields, written in the flow or in a JSON Schema file.

    returns: priority one of "high" "medium" "low", topic text, confidence number, tags list of text
    returns: "triage.schema.json"

Each comma-separated part is a field and its type: `text`, `number`, `integer`, `boolean`,
`one of "a" "b" ...` (an enumeration of strings) or `list of TYPE` (of any of the first four).
Every field is required and no other is allowed. A quoted path names a JSON Schema file in the
flow's folder (read as untrusted data: a regular file, bounded, every field checked), for nested
objects and whatever else the short form cannot say; its top-level `properties` are the fields
templates may name.

The declaration becomes the step's `response_format` (a JSON Schema): the provider enforces it
where it can, the embedded models sample only what a grammar derived from it allows, and every
reply is checked against it before it can be an answer (`engine.run.structured`). Templates
then read fields (`{triage.topic}`), checked against the declaration (E318).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.checks.learned import learned_path
from engine.checks.values import Reader
from engine.diagnostics import did_you_mean
from engine.router.files import read_bounded
from engine.router.model import RouterError
from engine.syntax import ast

SCALARS = {"text": {"type": "string"}, "number": {"type": "number"}, "integer": {"type": "integer"}, "boolean": {"type": "boolean"}}
MAX_SCHEMA_BYTES = 1024 * 1024
MAX_FIELDS = 64


@dataclass(frozen=True)
class Returns:
    """A checked declaration: the JSON Schema of the reply, and each top-level field's type in words."""

    schema: dict[str, Any]
    fields: dict[str, str]

    def response_format(self, name: str) -> dict[str, Any]:
        return response_format(name, self.schema)


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A declaration as the structured-output request every provider is sent (chat completions' form)."""
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def read_returns(r: Reader, prop: ast.Prop) -> Returns | None:
    """The declaration in a `returns:` property, or None after an E317 at what is wrong."""
    phrases = prop.value.phrases
    if len(phrases) == 1 and len(phrases[0].atoms) == 1 and phrases[0].atoms[0].kind in ("STRING", "LONG_STRING"):
        return _from_file(r, phrases[0].atoms[0])
    properties: dict[str, Any] = {}
    fields: dict[str, str] = {}
    for phrase in phrases:
        atoms = phrase.atoms
        if not atoms or atoms[0].kind != "NAME":
            r.error("E317", "a field of `returns` is a name and a type", phrase.span,
                    'for example `returns: topic text, priority one of "high" "low"`')
            return None
        name = atoms[0].value
        if name in properties:
            r.error("E317", f"field `{name}` is declared twice", atoms[0].span)
            return None
        schema = _type(r, atoms[1:], phrase)
        if schema is None:
            return None
        properties[name] = schema
        fields[name] = " ".join(a.text for a in atoms[1:])
    if len(properties) > MAX_FIELDS:
        r.error("E317", f"`returns` declares {len(properties)} fields; at most {MAX_FIELDS}", prop.value.span)
        return None
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return Returns(schema, fields)


def _type(r: Reader, atoms: Sequence[ast.Atom], phrase: ast.Phrase) -> dict[str, Any] | None:
    words = [a.value if a.kind == "NAME" else None for a in atoms]
    if len(atoms) == 1 and words[0] in SCALARS:
        return dict(SCALARS[words[0]])
    if len(atoms) >= 3 and words[:2] == ["one", "of"] and all(a.kind == "STRING" for a in atoms[2:]):
        options = [a.value for a in atoms[2:]]
        if len(set(options)) != len(options):
            r.error("E317", "an enumeration names a value twice", phrase.span)
            return None
        return {"type": "string", "enum": options}
    if len(atoms) == 3 and words[:2] == ["list", "of"] and words[2] in SCALARS:
        return {"type": "array", "items": dict(SCALARS[str(words[2])])}
    found = " ".join(a.text for a in atoms) or "nothing"
    hint = did_you_mean(found, [*SCALARS, "one of", "list of"]) if len(atoms) == 1 else None
    r.error("E317", f"`{found}` is not a type: use text, number, integer, boolean, `one of \"a\" \"b\"` or `list of TYPE`",
            atoms[0].span if atoms else phrase.span, hint)
    return None


def _from_file(r: Reader, atom: ast.Atom) -> Returns | None:
    path = learned_path(r, atom, "E317", "schema file")
    if path is None:
        return None
    try:
        schema = json.loads(read_bounded(Path(path), MAX_SCHEMA_BYTES, what="schema file"), parse_constant=_no_constant)
    except RouterError as err:
        r.error("E317", str(err).replace(str(path), atom.value), atom.span)
        return None
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        r.error("E317", f"schema file {atom.value} is not JSON: {str(err)[:200]}", atom.span)
        return None
    problem = schema_error(schema) if isinstance(schema, dict) else "the schema is not a JSON object"
    if problem is None and (schema.get("type") != "object" or not isinstance(schema.get("properties"), dict)):
        problem = "the schema must describe an object with `properties` (the fields templates may name)"
    if problem is not None:
        r.error("E317", f"schema file {atom.value}: {problem}", atom.span)
        return None
    fields = {name: _words(sub) for name, sub in schema["properties"].items()}
    return Returns(schema, fields)


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why a schema is not a usable JSON Schema, or None (for a request to be refused before any call)."""
    from jsonschema import SchemaError, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as err:
        return f"the schema is not valid JSON Schema: {err.message}"
    return None


def _words(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if "enum" in schema:
        return "one of " + " ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    return {"string": "text", "array": "list", "object": "object"}.get(kind, kind) if isinstance(kind, str) else "any"


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not a number a schema may hold")
