"""`baton fmt`: canonical, idempotent, meaning-preserving, comments kept (property-based)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from engine.syntax import ast
from engine.syntax.fmt import format_source
from engine.syntax.parser import parse
from tests.flowgen import flow_text

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.flow"))


def meaning(node: Any) -> Any:
    """A syntax tree without positions or source spelling: what the flow says."""
    if isinstance(node, ast.Atom):
        return (node.kind if node.kind != "LONG_STRING" else "STRING", node.value)
    if isinstance(node, ast.Document):
        return tuple(meaning(i) for i in node.items)
    if isinstance(node, tuple) and hasattr(node, "_fields"):  # a syntax node (a named tuple)
        return (type(node).__name__,) + tuple(
            meaning(getattr(node, f)) for f in node._fields if not f.endswith("span") and f != "text"
        )
    if isinstance(node, tuple):
        return tuple(meaning(x) for x in node)
    return node


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow_text())
def test_fmt_round_trip_and_idempotence(text: str) -> None:
    doc = parse(text)
    once = format_source(text)
    again = format_source(once)
    assert again == once, "fmt is not idempotent"
    assert meaning(parse(once)) == meaning(doc), "fmt changed the meaning"
    assert [c.text.rstrip() for c in parse(once).comments] == [c.text.rstrip() for c in doc.comments], "fmt lost or reordered comments"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_reference_flows_are_canonical(path: Path) -> None:
    text = path.read_text()
    assert format_source(text) == text


def test_fmt_layout(snapshot) -> None:  # type: ignore[no-untyped-def]
    messy = ('# top\nversion 1 flow f "d"  input q\n  budget $0.5,calls 3 step a{model:m  task:"""\n  hi {q}\n    there"""'
             '  # trailing\n expect: matches /x/i} route r by a { "x","y"->a else->a } loop l max 2 { step w {model: m task: "t"}'
             ' verify v { model: m sees: w task: "ok?" }  exhausted: last }\n# end\n')
    assert format_source(messy) == snapshot
