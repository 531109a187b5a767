"""Parse flow text into a `Document` syntax tree, or a `FlowError` with a positioned diagnostic.

The grammar is `grammar/flow.lark`, the one definition of the syntax. Lark compiles it
once per process into an LALR(1) parser in strict mode (a conflict is an error at load
time), with the analysed table cached on disk (`cache=True`), and parses with its own
loop; the transformer below runs inline, building `engine.syntax.ast` nodes with spans as
each rule is reduced, so no intermediate Lark tree is made. The lexer is Baton's own Lark
lexer (`engine.syntax.lexer`: comments, and precise errors for unterminated strings).
Syntax errors (`UnexpectedInput`) map to the codes, carets and "expected ..." hints of
`docs/diagnostics.md`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, cast

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from engine.diagnostics import Diagnostic
from engine.errors import FlowError
from engine.syntax import ast
from engine.syntax.ast import Span
from engine.syntax.lexer import FlowLexer, LexError, comment_sink
from engine.syntax.literals import decode_long_string, decode_string
from engine.syntax.terminals import grammar_text

#: Human words for terminals, used in "expected ..." messages.
TERMINAL_WORDS: dict[str, str] = {
    "NAME": "a name", "KEY": "a property such as `model:`", "STRING": "a quoted string",
    "LONG_STRING": 'a """triple-quoted""" string', "NUMBER": "a number", "MONEY": "an amount like $0.40",
    "DURATION": "a duration like 60s", "REGEX": "a /regex/", "LBRACE": "`{`", "RBRACE": "`}`",
    "COMMA": "`,`", "ARROW": "`->`", "$END": "end of file",
}


@lru_cache(maxsize=1)
def lark_parser() -> Lark:
    """The grammar as Lark's LALR(1) parser (strict: conflicts are errors), building the syntax tree as it parses."""
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer=FlowLexer,
        strict=True,
        maybe_placeholders=True,
        transformer=_ToAst(),
        cache=True,  # the analysed table is kept in a temp file keyed by the grammar's hash: off the start-up
    )


def parse(text: str, filename: str = "<flow>") -> ast.Document:
    """Parse flow text. Raises `FlowError` (one syntax diagnostic) when it does not parse."""
    comments: list[ast.Comment] = []
    token = comment_sink.set(comments)
    try:
        items = cast(tuple[ast.Item, ...], lark_parser().parse(text))
    except (LexError, UnexpectedInput) as err:
        raise FlowError([_syntax_diagnostic(err, filename, text)], text) from None
    except VisitError as err:
        inner = err.orig_exc
        if isinstance(inner, (LexError, UnexpectedInput)):
            raise FlowError([_syntax_diagnostic(inner, filename, text)], text) from None
        raise
    finally:
        comment_sink.reset(token)
    return ast.Document(items, tuple(comments), text, filename)


def _span(tok: Token) -> Span:
    return Span(tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1, tok.start_pos or 0, tok.end_pos or 0)


def _atom(tok: Token) -> ast.Atom:
    kind = tok.type
    text = str(tok)
    if kind == "STRING":
        value = decode_string(text)
    elif kind == "LONG_STRING":
        value = decode_long_string(text)
    elif kind == "MONEY":
        value = text[1:]
    else:
        value = text
    return ast.Atom(kind, text, value, _span(tok))  # type: ignore[arg-type]


class _ToAst(Transformer[Token, Any]):
    """Builds `engine.syntax.ast` nodes; runs inline with the LALR parser."""

    def start(self, items: list[Any]) -> tuple[Any, ...]:
        return tuple(items)

    def version(self, c: list[Token]) -> ast.Decl:
        return ast.Decl("version", None, None, _atom(c[1]), None, _span(c[0]).cover(_span(c[1])))

    def flow_decl(self, c: list[Token | None]) -> ast.Decl:
        return self._named_decl("flow", c)

    def input_decl(self, c: list[Token | None]) -> ast.Decl:
        return self._named_decl("input", c)

    def _named_decl(self, kind: Any, c: list[Token | None]) -> ast.Decl:
        kw, name, text = c
        assert kw is not None and name is not None
        end = text if text is not None else name
        return ast.Decl(kind, str(name), _span(name), _atom(text) if text else None, None, _span(kw).cover(_span(end)))

    def budget_decl(self, c: list[Any]) -> ast.Decl:
        kw, value = c
        return ast.Decl("budget", None, None, None, value, _span(kw).cover(value.span))

    def output_decl(self, c: list[Token]) -> ast.Decl:
        return ast.Decl("output", str(c[1]), _span(c[1]), None, None, _span(c[0]).cover(_span(c[1])))

    def models_block(self, c: list[Any]) -> ast.ModelsBlock:
        return ast.ModelsBlock(tuple(c[2:-1]), _span(c[0]).cover(_span(c[-1])))

    def model_def(self, c: list[Any]) -> ast.ModelDef:
        return ast.ModelDef(str(c[0]), _span(c[0]), tuple(c[2:-1]), _span(c[0]).cover(_span(c[-1])))

    def _block(self, kind: Any, c: list[Any]) -> ast.Block:
        return ast.Block(kind, str(c[1]), _span(c[1]), tuple(c[3:-1]), _span(c[0]).cover(_span(c[-1])))

    def step(self, c: list[Any]) -> ast.Block:
        return self._block("step", c)

    def fuse(self, c: list[Any]) -> ast.Block:
        return self._block("fuse", c)

    def verify(self, c: list[Any]) -> ast.Block:
        return self._block("verify", c)

    def route(self, c: list[Any]) -> ast.RouteNode:
        # read by kind, not position: the optional `by` part (a step, a step's field, or a router file and its rule) is
        # given with a different number of placeholders for each of its alternatives
        kw, name, rb = c[0], c[1], c[-1]
        arms = [x for x in c if isinstance(x, ast.Arm)]
        head = [t for t in c[2:-1] if isinstance(t, Token) and t.type not in ("LBRACE", "BY")]
        by = head[0] if head and head[0].type in ("NAME", "FIELD") else None
        router = next((t for t in head if t.type == "STRING"), None)
        rest = head[head.index(router) + 1:] if router is not None else []
        rule, number = (rest[0], rest[1]) if len(rest) == 2 else (None, None)
        return ast.RouteNode(
            str(name), _span(name), str(by) if by is not None else None, _span(by) if by is not None else None,
            tuple(arms), _span(kw).cover(_span(rb)), _atom(router) if router is not None else None,
            (_atom(rule), _atom(number)) if rule is not None and number is not None else None,
        )

    def label_arm(self, c: list[Any]) -> ast.Arm:
        labels, _arrow, target = c
        return ast.Arm("label", labels, None, str(target), _span(target), labels[0].span.cover(_span(target)))

    def label_list(self, c: list[Token]) -> tuple[ast.Atom, ...]:
        return tuple(_atom(t) for t in c if t.type == "STRING")

    def rule_arm(self, c: list[Any]) -> ast.Arm:
        kw, phrase, _arrow, target = c
        return ast.Arm("rule", (), phrase, str(target), _span(target), _span(kw).cover(_span(target)))

    def else_arm(self, c: list[Any]) -> ast.Arm:
        kw, _arrow, target = c
        return ast.Arm("else", (), None, str(target), _span(target), _span(kw).cover(_span(target)))

    def loop(self, c: list[Any]) -> ast.LoopNode:
        kw, name, _max, bound, _lb, *body, rb = c
        members = tuple(b for b in body if isinstance(b, ast.Block))
        props = tuple(b for b in body if isinstance(b, ast.Prop))
        return ast.LoopNode(
            str(name), _span(name), _atom(bound) if bound is not None else None, members, props,
            _span(kw).cover(_span(rb)),
        )

    def use(self, c: list[Any]) -> ast.UseNode:
        kw, path, _as, name, _lb, *props, rb = c
        return ast.UseNode(_atom(path), str(name), _span(name), tuple(props), _span(kw).cover(_span(rb)))

    def prop(self, c: list[Any]) -> ast.Prop:
        key, value = c
        name = str(key)[:-1].rstrip()
        key_span = _span(key)
        return ast.Prop(name, key_span, value, key_span.cover(value.span))

    def value(self, c: list[Any]) -> ast.Value:
        phrases = tuple(p for p in c if isinstance(p, ast.Phrase))
        return ast.Value(phrases, phrases[0].span.cover(phrases[-1].span))

    def phrase(self, c: list[Token]) -> ast.Phrase:
        atoms = tuple(_atom(t) for t in c)
        return ast.Phrase(atoms, atoms[0].span.cover(atoms[-1].span))


def _expected_words(expected: set[str]) -> str:
    words = sorted({TERMINAL_WORDS.get(t, f"`{t.lower()}`") for t in expected})
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words)


def _found(tok: Token) -> str:
    text = str(tok)
    if tok.type in _KEYWORD_TYPES:
        return f"keyword `{text}`"
    return f"`{text if len(text) <= 30 else text[:27] + '...'}`"


def _syntax_diagnostic(err: Exception, filename: str, text: str) -> Diagnostic:
    if isinstance(err, LexError):
        if err.kind == "BAD_CHAR":
            return Diagnostic("E102", f"unexpected character `{err.text!s}`", err.span, "a flow uses names, \"strings\", numbers, $amounts, durations, /regexes/, { } , and ->", filename)
        what = {"BAD_STRING": "string", "BAD_LONG_STRING": "triple-quoted string", "BAD_REGEX": "regex"}[err.kind]
        closer = {"BAD_STRING": '"', "BAD_LONG_STRING": '"""', "BAD_REGEX": "/"}[err.kind]
        span = Span(err.span.line, err.span.column, err.span.line, err.span.column + 1, err.span.start, err.span.start + 1)
        return Diagnostic("E103", f"unterminated {what}", span, f"expected a closing {closer} on the same line" if err.kind != "BAD_LONG_STRING" else 'expected a closing """', filename)
    if isinstance(err, UnexpectedToken):
        tok = err.token
        expected = set(err.accepts or err.expected)
        if tok.type == "$END":
            span = _end_span(text)
            return Diagnostic("E101", "unexpected end of file", span, f"expected {_expected_words(expected)}", filename)
        hint = f"expected {_expected_words(expected)}"
        if tok.type in _KEYWORD_TYPES and "NAME" in expected:
            hint += f"; `{tok}` is a reserved word and cannot be used as a name"
        elif tok.type == "NAME" and "KEY" in expected:
            hint += _property_hint(str(tok), text[tok.end_pos or 0:])
        return Diagnostic("E100", f"unexpected {_found(tok)}", _span(tok), hint, filename)
    if isinstance(err, UnexpectedEOF):
        return Diagnostic("E101", "unexpected end of file", _end_span(text), f"expected {_expected_words(set(err.expected))}", filename)
    if isinstance(err, UnexpectedCharacters):
        return Diagnostic("E102", "unexpected character", Span(err.line, err.column, err.line, err.column + 1), None, filename)
    raise err


def _property_hint(word: str, rest: str) -> str:
    """Where a property was due and a bare word came: a missing colon, or a word before the property."""
    following = re.match(r"[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*:", rest)
    if following:  # `on exhausted: last`
        return f"; drop `{word}`: a property is written `{following.group(1)}: value`"
    return f"; did you mean `{word}:`? a property's name ends with a colon"


_KEYWORD_TYPES = {"VERSION", "FLOW", "INPUT", "BUDGET", "OUTPUT", "MODELS", "STEP", "FUSE", "VERIFY", "ROUTE", "LOOP", "BY", "WHEN", "ELSE", "MAX", "USE", "AS"}


def _end_span(text: str) -> Span:
    """Where the file ends, pointing just after its last visible character."""
    stripped = text.rstrip()
    line = stripped.count("\n") + 1
    col = len(stripped) - (stripped.rfind("\n") + 1) + 1
    return Span(line, col, line, col + 1, len(stripped), len(stripped))


