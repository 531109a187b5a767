"""Layer 1: the grammar, lexer and syntax tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import FlowError
from engine.syntax import ast
from engine.syntax.literals import decode_long_string
from engine.syntax.parser import lark_parser, parse
from tests.flowgen import REFERENCE_TEXTS, flow_text, mutated_flow
from tests.test_fmt import meaning


def test_grammar_is_lalr_and_strict() -> None:
    parser = lark_parser()
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


@pytest.mark.parametrize("text", REFERENCE_TEXTS[:4] + ['step a {\n  model: m\n  task: """\n    multi\n    line\n  """\n}\n'])
def test_windows_line_endings_mean_the_same_flow(text: str) -> None:
    """A flow saved with CRLF line endings says what the LF file says (a triple-quoted task kept every \\r)."""
    assert meaning(parse(text.replace("\n", "\r\n"))) == meaning(parse(text))


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
def test_generated_flows_parse_with_every_span_inside_the_text(text: str) -> None:
    """Lark's own LALR loop with the inline transformer: the tree's spans point into the source, in order."""
    doc = parse(text)
    for item in doc.items:
        span = item.span
        assert 0 <= span.start <= span.end <= len(text)
        assert text[span.start:span.end].strip()


def _assert_parses_or_is_positioned(text: str) -> None:
    """A flow, or one syntax diagnostic inside the text: never another exception."""
    try:
        doc = parse(text)
    except FlowError as err:
        (diag,) = err.diagnostics
        assert diag.code in ("E100", "E101", "E102", "E103") and 1 <= diag.span.line <= text.count("\n") + 2
        return
    assert doc.source == text


@settings(max_examples=300, deadline=None)
@given(st.one_of(flow_text(), mutated_flow(), st.text(alphabet='step{}:"/\\#,->$.019 \n\r\t\fabxé', max_size=120)))
def test_any_text_parses_or_gets_one_positioned_syntax_error(text: str) -> None:
    _assert_parses_or_is_positioned(text)


@pytest.mark.parametrize("text", [
    "", "\n\n", "# only a comment", "step a { }  # trailing comment without newline",
    'step a {\r\n  model : m\r\n  task:"esc \\" \\\\ \\n {q}"\r\n}\r\n',
    'step a { step: x max: 1 by: y }', 'step a { t: """\n  one\n   two\n  """ x: """inline""" }',
    'step a { m: 1.5s 500ms 2m 7 3.25 $0.5 /a\\/b/i }', "route r by a { \"x\", \"y\" -> b when q matches /z/ -> c else -> d }",
    "loop l max 3 { step a { } verify v { accept: /OK/ } on_exhausted: last }", "models { m { provider: p id: \"x\" } }",
    "version 1 flow f \"d\" input q \"the q\" budget $1, calls 5 output a",
    "step a { model: m }}", "step a { model: }", 'step a { task: """abc', "step a { x: 1s2 }", "step a { x: 12abc }",
    "\fstep\ta\t{\f}", "step a { x: /unterminated }", "step a { x: $ }", "step a { x: - }", "step é { }",
    "step", "step a", "step a {", "fuse", "route r", "route r by", "loop l max", "models {", "models { m", "version", "flow",
    "input q", "budget", "budget $1,", "output", "step a { k:", "step a { k: x,", "route r { \"a\" ->", "route r { when",
])
def test_edge_cases_parse_or_get_one_positioned_syntax_error(text: str) -> None:
    _assert_parses_or_is_positioned(text)


def test_every_prefix_of_the_reference_flows_parses_or_is_positioned() -> None:
    """Truncated text is where a parser runs off the end; each cut must parse or be an E10x, never crash."""
    for text in REFERENCE_TEXTS:
        for cut in range(0, len(text), 5):
            _assert_parses_or_is_positioned(text[:cut])


def test_the_parser_is_larks_own_with_the_grammar_file_as_the_one_definition() -> None:
    """No second reader: the syntax package parses only through Lark's LALR parser over grammar/flow.lark."""
    from pathlib import Path

    syntax = Path(__file__).resolve().parents[1] / "engine" / "syntax"
    assert not (syntax / "descent.py").exists() and not (syntax / "lalr.py").exists() and not (syntax / "table.py").exists()
    assert "_parse_table" not in "".join(p.read_text() for p in syntax.glob("*.py"))
