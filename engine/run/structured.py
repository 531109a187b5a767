"""Structured output: a reply checked against what was asked for (JSON, of a JSON Schema when one is given).

A provider that supports `response_format` enforces it, and the embedded model samples only
what a grammar derived from the schema allows; either way every reply is checked here before
it can be an answer. A reply that is not the asked-for JSON is a failed attempt (a
`bad_response`, retried per policy and recorded with the reason), never an answer, and never
cached. The schema is checked by `jsonschema`, imported only when a schema is used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def schema_of(response_format: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema of a `response_format`, if it has one."""
    if response_format.get("type") != "json_schema":
        return None
    block = response_format.get("json_schema")
    schema = block.get("schema") if isinstance(block, Mapping) else None
    return schema if isinstance(schema, dict) else None


def reply_problem(text: str, response_format: Mapping[str, Any]) -> str | None:
    """Why `text` is not the structured output asked for, or None when it is."""
    if response_format.get("type") not in ("json_object", "json_schema"):
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        return f"the reply is not JSON ({err.args[0] if err.args else err})"
    schema = schema_of(response_format)
    if schema is None:
        return None if isinstance(value, dict) else "the reply is JSON but not an object"
    from jsonschema import validators

    error = next(iter(sorted(validators.validator_for(schema)(schema).iter_errors(value), key=lambda e: list(e.path))), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.path) or "the top level"
    return f"the reply does not match the schema at {where}: {error.message[:200]}"
