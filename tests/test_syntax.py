"""Layer 1: the grammar, lexer and syntax tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from engine.errors import FlowError
from engine.syntax import ast
from engine.syntax.parser import _parser, decode_long_string, parse, parse_with_lark
from tests.flowgen import flow_text
from tests.test_fmt import meaning


def test_grammar_is_lalr_and_strict() -> None:
    parser = _parser()
    assert parser.options.parser == "lalr"
    assert parser.options.strict is True


def test_whole_flow_on_one_line_parses() -> None:
    doc = parse('input q step a { model: m task: "x {q}" retries: 1 } output a')
    kinds = [type(i).__name__ for i in doc.items]
    assert kinds == ["Decl", "Block", "Decl"]
    step = doc.items[1]
    assert isinstance(step, ast.Block)
    assert [p.key for p in step.props] == ["model", "task", "retries"]


def test_positions_point_at_source() -> None:
    src = "# c\nstep alpha {\n  model: m\n  task: \"x\"\n}\n"
    doc = parse(src)
    step = doc.items[0]
    assert isinstance(step, ast.Block)
    assert (step.name_span.line, step.name_span.column) == (2, 6)
    task = step.props[1]
    assert (task.key_span.line, task.key_span.column) == (4, 3)
    assert doc.comments[0].text == "# c"


def test_values_decode() -> None:
    doc = parse('step a { model: x then y task: "a\\"b\\n" timeout: 1.5s expect: not matches /A\\/B/i budget_x: $0.5 }')
    step = doc.items[0]
    assert isinstance(step, ast.Block)
    props = {p.key: p for p in step.props}
    assert [a.value for a in props["model"].value.phrases[0].atoms] == ["x", "then", "y"]
    assert props["task"].value.phrases[0].atoms[0].value == 'a"b\n'
    assert props["timeout"].value.phrases[0].atoms[0].kind == "DURATION"
    assert props["budget_x"].value.phrases[0].atoms[0].value == "0.5"


def test_long_string_is_dedented() -> None:
    assert decode_long_string('"""\n    line one\n      indented\n  """') == "line one\n  indented"
    assert decode_long_string('"""inline"""') == "inline"


@pytest.mark.parametrize("text, code", [
    ("step a {", "E101"),
    ("step a { model: x } }", "E100"),
    ("step a { task: \"x }", "E103"),
    ("step a { task: ` }", "E102"),
    ("step input { }", "E100"),
])
def test_syntax_errors_are_diagnostics(text: str, code: str) -> None:
    with pytest.raises(FlowError) as info:
        parse(text, "f.flow")
    diag = info.value.diagnostics[0]
    assert diag.code == code
    assert diag.file == "f.flow"
    assert diag.span.line == 1


@settings(max_examples=150, deadline=None)
@given(flow_text())
def test_fast_driver_builds_the_same_tree_as_larks_own_parser(text: str) -> None:
    """The lean table driver is an optimisation, never a second parser: same table, same tree, same errors."""
    try:
        ours: object = meaning(parse(text))
    except FlowError as err:
        ours = ("error", err.diagnostics[0].span.line, err.diagnostics[0].span.column)
    try:
        theirs: object = meaning(ast.Document(parse_with_lark(text)))
    except Exception as err:  # noqa: BLE001 - Lark's own exceptions, compared by position
        line = getattr(err, "line", None) or getattr(getattr(err, "token", None), "line", None)
        ours_pos = ours[1] if isinstance(ours, tuple) and ours and ours[0] == "error" else None
        assert ours_pos is not None, f"Lark rejected what the driver accepted: {err}"
        assert line is None or line == ours_pos or getattr(err, "orig_exc", None) is not None
        return
    assert ours == theirs
