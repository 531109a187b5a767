"""The fast path of `parse`: a recursive-descent reader that accepts well-formed flows.

The language is defined by `grammar/flow.lark`, and the LALR(1) table Lark builds from it
decides, for every text, where a syntax error is and what was expected there. Driving
that table costs about two reductions per token (an atom becomes `_atom`, then a
repetition, then a `phrase`, a `value`, a `prop`...), which is most of the time of a
machine-written flow of thousands of steps. The grammar is LL(1) in practice (every
construct starts with its own keyword and every repetition ends at a token that cannot
continue it), so this module reads the same tokens straight into the same syntax tree,
one step per token.

It only ever *accepts*: at the first token it does not expect it gives up, and `parse`
runs the table driver, which reports the error exactly as the grammar defines it. Both
readers use regexes of the grammar's own terminals.
`tests/test_syntax.py` checks on generated and mutated flows that this reader accepts a
text exactly when the table does, and builds the same tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal, cast

from engine.syntax import ast
from engine.syntax.ast import Atom, Span
from engine.syntax.literals import decode_long_string, decode_string
from engine.syntax.terminals import Terminals

Token = tuple[str, str, str, Span]  # kind, source text, value, span: an `Atom` for value tokens

_new = tuple.__new__  # a named tuple's own __new__ is a Python function; the C constructor makes the same object
_NO_SPAN = Span(0, 0, 0, 0)
_ATOMS = frozenset({"NAME", "STRING", "LONG_STRING", "NUMBER", "MONEY", "DURATION", "REGEX"})


class Rejected(Exception):
    """The text is not a well-formed flow (or uses something this reader leaves to the table)."""


def _cover(a: Span, b: Span) -> Span:
    """`a.cover(b)`, without the method call."""
    return _new(Span, (a[0], a[1], b[2], b[3], a[4], b[5]))


#: The terminal a token is, by its first character; digits and quotes are refined below.
_FIRST = {c: "NAME" for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"}
_FIRST.update({c: "NUMBER" for c in "0123456789"})
_FIRST.update({"{": "LBRACE", "}": "RBRACE", ",": "COMMA", "$": "MONEY", "/": "REGEX", "-": "ARROW", "#": "COMMENT", '"': "STRING"})


@lru_cache(maxsize=4)
def _scanner(grammar: Terminals) -> re.Pattern[str]:
    """One regex over the grammar's terminals: `(whitespace)(token | bad character | end)` per match.

    `re.findall` with three plain groups hands back strings without a match object per
    token, which is most of the cost of lexing. The terminals keep the grammar lexer's
    order where they overlap (a long string before a string, a duration before a number);
    a key is a name plus its colon (`KEY` is `NAME` then `[ \t]*:` in the grammar), so a
    name is scanned once. Each terminal starts with its own character class, which is how
    `tokens` tells them apart again.
    """
    p = grammar.patterns
    key_suffix = p["KEY"].removeprefix(p["NAME"])
    if key_suffix == p["KEY"]:
        raise ValueError("the grammar's KEY no longer starts with NAME; update engine.syntax.descent")
    terminals = [f"{p['NAME']}(?:{key_suffix})?"] + [p[n] for n in (
        "LONG_STRING", "STRING", "LBRACE", "RBRACE", "COMMA", "COMMENT", "MONEY", "DURATION", "NUMBER", "REGEX", "ARROW")]
    plain = [re.sub(r"\(\?P<\w+>", "(?:", t) for t in terminals]
    return re.compile(f"({p['WS']})?(?:(" + "|".join(f"(?:{t})" for t in plain) + r")|([\s\S])|\Z)")


def tokens(grammar: Terminals, text: str, comments: list[ast.Comment]) -> list[Token]:
    """The text as `(kind, text, value, span)` tokens ending with `$END` (three of them, so the reader can
    look ahead without bounds checks); comments go to `comments`.

    A token that can be a property value is built as the syntax tree's `Atom` itself
    (same four fields), so the reader puts it in the tree as it is.
    """
    keywords = grammar.keywords
    first = _FIRST
    out: list[Token] = []
    push = out.append
    line = 1
    line_start = 0
    pos = 0
    for ws, tok, bad in _scanner(grammar).findall(text):
        if bad:
            raise Rejected
        if ws:
            if "\n" in ws:
                line += ws.count("\n")
                line_start = pos + ws.rfind("\n") + 1
            pos += len(ws)
        if not tok:
            continue  # trailing whitespace, or the empty match at the very end
        end = pos + len(tok)
        kind = first[tok[0]]
        value = tok
        if kind == "NAME":
            if tok[-1] == ":":
                kind = "KEY"
            else:
                kind = keywords.get(tok, "NAME")
        elif kind == "NUMBER":
            if tok[-1] == "s" or tok[-1] == "m":
                kind = "DURATION"
        elif kind == "STRING":
            if tok.startswith('"""') and len(tok) >= 6:
                kind = "LONG_STRING"
                value = decode_long_string(tok)
                if "\n" in tok:
                    last_nl = tok.rfind("\n")
                    end_line = line + tok.count("\n")
                    push(_new(Atom, (kind, tok, value, _new(Span, (line, pos - line_start + 1, end_line, end - (pos + last_nl), pos, end)))))
                    line = end_line
                    line_start = pos + last_nl + 1
                    pos = end
                    continue
            else:
                value = decode_string(tok) if "\\" in tok else tok[1:-1]
        elif kind == "MONEY":
            value = tok[1:]
        elif kind == "LBRACE" or kind == "COMMA":  # no node keeps their span
            push((kind, tok, tok, _NO_SPAN))
            pos = end
            continue
        elif kind == "COMMENT":
            col = pos - line_start + 1
            comments.append(ast.Comment(tok, _new(Span, (line, col, line, col + len(tok), pos, end))))
            pos = end
            continue
        span = _new(Span, (line, pos - line_start + 1, line, end - line_start + 1, pos, end))
        push(_new(Atom, (kind, tok, value, span)) if kind in _ATOMS else (kind, tok, tok, span))
        pos = end
    col = pos - line_start + 1
    end_token = ("$END", "", "", _new(Span, (line, col, line, col, pos, pos)))
    out += (end_token, end_token, end_token)  # the reader looks up to two tokens ahead
    return out


class _Reader:
    """Reads items from a token list; `i` is the index of the next token.

    Nodes are built with `tuple.__new__` (they are named tuples): the same objects their
    constructors make, without a Python-level `__new__` call each.
    """

    __slots__ = ("toks", "i")

    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.i = 0

    def expect(self, kind: str) -> Token:
        tok = self.toks[self.i]
        if tok[0] != kind:
            raise Rejected
        self.i += 1
        return tok

    def expect_atom(self, kind: str) -> Atom:
        """A value token: `tokens` built it as an `Atom`."""
        return cast(Atom, self.expect(kind))

    def document(self) -> tuple[ast.Item, ...]:
        items: list[ast.Item] = []
        toks = self.toks
        while True:
            kind = toks[self.i][0]
            if kind == "$END":
                return tuple(items)
            read = _ITEMS.get(kind)
            if read is None:
                raise Rejected
            items.append(read(self))

    # -- one-line declarations ------------------------------------------------------------

    def version(self) -> ast.Decl:
        kw = self.expect("VERSION")
        number = self.expect_atom("NUMBER")
        return ast.Decl("version", None, None, number, None, _cover(kw[3], number[3]))

    def flow_decl(self) -> ast.Decl:
        return self._named_decl("flow", self.expect("FLOW"))

    def input_decl(self) -> ast.Decl:
        return self._named_decl("input", self.expect("INPUT"))

    def _named_decl(self, kind: Any, kw: Token) -> ast.Decl:
        name = self.expect("NAME")
        text = self.expect_atom("STRING") if self.toks[self.i][0] == "STRING" else None
        end = text if text is not None else name
        return ast.Decl(kind, name[1], name[3], text, None, _cover(kw[3], end[3]))

    def budget_decl(self) -> ast.Decl:
        kw = self.expect("BUDGET")
        value = self.value()
        return ast.Decl("budget", None, None, None, value, _cover(kw[3], value.span))

    def output_decl(self) -> ast.Decl:
        kw = self.expect("OUTPUT")
        name = self.expect("NAME")
        return ast.Decl("output", name[1], name[3], None, None, _cover(kw[3], name[3]))

    # -- blocks ---------------------------------------------------------------------------

    def models_block(self) -> ast.ModelsBlock:
        kw = self.expect("MODELS")
        self.expect("LBRACE")
        defs = []
        while self.toks[self.i][0] == "NAME":
            name = self.expect("NAME")
            self.expect("LBRACE")
            props = self.props()
            rb = self.expect("RBRACE")
            defs.append(ast.ModelDef(name[1], name[3], props, _cover(name[3], rb[3])))
        rb = self.expect("RBRACE")
        return ast.ModelsBlock(tuple(defs), _cover(kw[3], rb[3]))

    def block(self) -> ast.Block:
        toks = self.toks
        i = self.i
        kw, name, lb = toks[i], toks[i + 1], toks[i + 2]
        if name[0] != "NAME" or lb[0] != "LBRACE":
            raise Rejected
        self.i = i + 3
        props = self.props()
        rb = self.expect("RBRACE")
        a, b = kw[3], rb[3]
        return _new(ast.Block, (kw[1], name[1], name[3], props, _new(Span, (a[0], a[1], b[2], b[3], a[4], b[5]))))

    def _header(self, keyword: str, option: str, option_kind: str) -> tuple[Token, Token, Token | None]:
        """`KEYWORD name [OPTION value] {`, the head of a route (`by`) and of a loop (`max`)."""
        kw = self.expect(keyword)
        name = self.expect("NAME")
        value = None
        if self.toks[self.i][0] == option:
            self.i += 1
            value = self.expect(option_kind)
        self.expect("LBRACE")
        return kw, name, value

    def _arm(self, kind: Literal["label", "rule", "else"], labels: tuple[Atom, ...], condition: ast.Phrase | None, start: Span) -> ast.Arm:
        """The rest of a route arm: `-> target`."""
        self.expect("ARROW")
        target = self.expect("NAME")
        return ast.Arm(kind, labels, condition, target[1], target[3], _cover(start, target[3]))

    def route(self) -> ast.RouteNode:
        kw, name, by = self._header("ROUTE", "BY", "NAME")
        arms = []
        while True:
            kind = self.toks[self.i][0]
            if kind == "STRING":
                labels = [self.expect_atom("STRING")]
                while self.toks[self.i][0] == "COMMA":
                    self.i += 1
                    labels.append(self.expect_atom("STRING"))
                arms.append(self._arm("label", tuple(labels), None, labels[0].span))
            elif kind == "WHEN":
                when = self.expect("WHEN")
                arms.append(self._arm("rule", (), self.phrase(), when[3]))
            elif kind == "ELSE":
                arms.append(self._arm("else", (), None, self.expect("ELSE")[3]))
            else:
                break
        rb = self.expect("RBRACE")
        return ast.RouteNode(name[1], name[3], by[1] if by else None, by[3] if by else None, tuple(arms), _cover(kw[3], rb[3]))

    def loop(self) -> ast.LoopNode:
        kw, name, max_token = self._header("LOOP", "MAX", "NUMBER")
        bound = cast(Atom | None, max_token)  # a NUMBER token is built as an `Atom` (see `tokens`)
        members: list[ast.Block] = []
        props: list[ast.Prop] = []
        while True:
            kind = self.toks[self.i][0]
            if kind == "STEP" or kind == "VERIFY":
                members.append(self.block())
            elif kind == "KEY":
                props.append(self.prop())
            else:
                break
        rb = self.expect("RBRACE")
        return ast.LoopNode(name[1], name[3], bound, tuple(members), tuple(props), _cover(kw[3], rb[3]))

    # -- properties: the hot path of a large flow -------------------------------------------

    def props(self) -> tuple[ast.Prop, ...]:
        out = []
        toks = self.toks
        prop = self.prop
        while toks[self.i][0] == "KEY":
            out.append(prop())
        return tuple(out)

    def prop(self) -> ast.Prop:
        key = self.toks[self.i]
        self.i += 1
        value = self.value()
        a, b = key[3], value[1]
        return _new(ast.Prop, (key[1][:-1].rstrip(), a, value, _new(Span, (a[0], a[1], b[2], b[3], a[4], b[5]))))

    def value(self) -> ast.Value:
        phrase = self.phrase()
        toks = self.toks
        if toks[self.i][0] != "COMMA":
            return _new(ast.Value, ((phrase,), phrase[1]))
        phrases = [phrase]
        while toks[self.i][0] == "COMMA":
            self.i += 1
            phrases.append(self.phrase())
        a, b = phrases[0][1], phrases[-1][1]
        return _new(ast.Value, (tuple(phrases), _new(Span, (a[0], a[1], b[2], b[3], a[4], b[5]))))

    def phrase(self) -> ast.Phrase:
        toks = self.toks
        i = self.i
        if toks[i][0] not in _ATOMS:
            raise Rejected
        if toks[i + 1][0] not in _ATOMS:  # one atom: most phrases
            self.i = i + 1
            atom = toks[i]  # an Atom (see `tokens`)
            return _new(ast.Phrase, ((atom,), atom[3]))
        start = i
        while toks[i][0] in _ATOMS:
            i += 1
        self.i = i
        atoms = cast(tuple[Atom, ...], tuple(toks[start:i]))
        a, b = atoms[0][3], atoms[-1][3]
        return _new(ast.Phrase, (atoms, _new(Span, (a[0], a[1], b[2], b[3], a[4], b[5]))))


_ITEMS: dict[str, Callable[[_Reader], Any]] = {
    "VERSION": _Reader.version, "FLOW": _Reader.flow_decl, "INPUT": _Reader.input_decl,
    "BUDGET": _Reader.budget_decl, "OUTPUT": _Reader.output_decl, "MODELS": _Reader.models_block,
    "STEP": _Reader.block, "FUSE": _Reader.block, "ROUTE": _Reader.route, "LOOP": _Reader.loop,
}


def read(grammar: Terminals, text: str, comments: list[ast.Comment]) -> tuple[ast.Item, ...]:
    """The items of a well-formed flow; raises `Rejected` at the first thing it does not expect."""
    return _Reader(tokens(grammar, text, comments)).document()
