"""Layer 1: the grammar, lexer and syntax tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import FlowError
from engine.syntax import ast, descent
from engine.syntax.literals import decode_long_string
from engine.syntax.parser import parse
from engine.syntax.table import lark_parser, parse_with_lark, parse_with_table
from engine.syntax.terminals import read_terminals, terminals
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
def test_table_driver_builds_the_same_tree_as_larks_own_parser(text: str) -> None:
    """The lean table driver is an optimisation of Lark's loop: same table, same tree, same errors."""
    try:
        ours: object = meaning(parse_with_table(text))
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


def _fast_read(text: str) -> ast.Document | None:
    comments: list[ast.Comment] = []
    try:
        return ast.Document(descent.read(terminals(), text, comments), tuple(comments), text)
    except descent.Rejected:
        return None


def _assert_fast_reader_agrees(text: str) -> None:
    fast = _fast_read(text)
    try:
        table = parse_with_table(text)
    except FlowError:
        assert fast is None, "the fast reader accepted a text the grammar rejects"
        return
    assert fast is not None, "the fast reader rejected a text the grammar accepts"
    assert meaning(fast) == meaning(table)  # node types and values
    assert fast.items == table.items  # and every span and source spelling
    assert fast.comments == table.comments


@settings(max_examples=300, deadline=None)
@given(st.one_of(flow_text(), mutated_flow(), st.text(alphabet='step{}:"/\\#,->$.019 \n\r\t\fabxé', max_size=120)))
def test_fast_reader_accepts_exactly_what_the_grammar_accepts(text: str) -> None:
    """`parse` reads well-formed text by recursive descent and leaves every error to the LALR table."""
    _assert_fast_reader_agrees(text)


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
def test_fast_reader_agrees_on_edge_cases(text: str) -> None:
    _assert_fast_reader_agrees(text)


def test_reference_flows_take_the_fast_path() -> None:
    for text in REFERENCE_TEXTS:
        assert _fast_read(text) is not None


def test_terminals_read_without_lark_are_larks_own() -> None:
    from lark.load_grammar import eval_escaping

    from engine.syntax.table import front
    from engine.syntax.terminals import grammar_text

    ours = read_terminals(grammar_text())
    lexer = front()[0]
    assert ours.keywords == lexer.keywords
    assert set(ours.patterns) == set(lexer.patterns)
    for name, pattern in ours.patterns.items():
        assert pattern == lexer.patterns[name] or eval_escaping(pattern) == lexer.patterns[name], name


def test_terminal_forms_the_reader_does_not_know_are_refused() -> None:
    with pytest.raises(ValueError, match="terminal DIGITS"):
        read_terminals("start: DIGITS\nDIGITS: DIGIT+\n")


def test_fast_reader_agrees_on_every_prefix_of_the_reference_flows() -> None:
    """Truncated text is where a reader runs off the end; each cut must agree with the table (and not crash)."""
    for text in REFERENCE_TEXTS:
        for cut in range(0, len(text), 5):
            _assert_fast_reader_agrees(text[:cut])
