"""Constrained-decoding grammars generated from `grammar/flow.lark`, never written by hand.

`to_gbnf` walks the BNF that Lark compiles from the grammar (every rule already expanded
into plain alternatives) and the grammar's terminal patterns, and prints llama.cpp's
GBNF: rules become alternatives with optional whitespace between symbols (the grammar
ignores whitespace), string terminals become literals, regex terminals are translated.

A planner request may specialise the result (`overrides`): replace a rule or terminal by
a narrower one, e.g. the property keys a plan may use, the pool's aliases as literals, a
bounded number of steps. Everything not overridden comes from the Lark grammar.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from lark import Lark
from lark.grammar import NonTerminal, Terminal

from engine.run.choices import gbnf_literal
from engine.syntax.parser import lark_parser
from engine.syntax.terminals import grammar_text

WS_RULE = 'ws ::= [ \\t\\n]*'


def _gname(name: str) -> str:
    """GBNF rule names: lowercase letters, digits and dashes."""
    out = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return out or "x"


def _sym(name: str, terminal: bool) -> str:
    """Terminals get a `t-` prefix: GBNF names are case-blind, and `LOOP` must not collide with `loop`."""
    return ("t-" if terminal else "") + _gname(name)


def _without_left_recursion(name: str, alts: list[str]) -> str:
    """`x ::= a | x ws b` (how Lark expands `a*`) becomes `x ::= a (ws b)*`: llama.cpp rejects left recursion."""
    prefix = name + " ws "
    base = [a for a in alts if not a.startswith(prefix)]
    tails = [a[len(prefix):] for a in alts if a.startswith(prefix)]
    head = " | ".join(f"({a})" if " " in a else a for a in base)
    if not tails:
        return head
    tail = " | ".join(tails)
    return f"({head}) (ws ({tail}))*"


def _class_body(body: str) -> str:
    """A regex character-class body in GBNF syntax (the escapes GBNF shares with regex pass through)."""
    body = body.replace("\\s", " \\t\\n\\r\\f").replace("\\S", "^ \\t\\n\\r\\f").replace("\\/", "/")
    return body.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace("\f", "\\f")


def regex_to_gbnf(pattern: str) -> str:
    """Translate the regex subset the grammar uses: classes, groups, alternation, quantifiers, escapes.

    Lookaheads are dropped (GBNF has none; the parser re-checks every token), and lazy
    quantifiers become greedy (a GBNF sampler may stop at any point the rest can match).
    """
    pattern = re.sub(r"\(\?![^)]*\)", "", pattern)
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            while pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            body = pattern[i + 1 : j]
            if body == "\\s\\S":
                out.append("[^\\x00]")
            else:
                out.append("[" + _class_body(body) + "]")
            i = j + 1
        elif c == "(":
            i += 3 if pattern.startswith("(?:", i) else 1
            out.append("(")
        elif c in ")|":
            out.append(f" {c} " if c == "|" else ")")
            i += 1
        elif c in "*+?":
            out.append(c)
            i += 1
            if i < len(pattern) and pattern[i] == "?":
                i += 1
        elif c == "\\":
            nxt = pattern[i + 1]
            out.append({"n": '"\\n"', "t": '"\\t"', "s": "[ \\t\\n]", "d": "[0-9]"}.get(nxt, gbnf_literal(nxt)))
            i += 2
        elif c == ".":
            out.append("[^\\n]")
            i += 1
        else:
            out.append(gbnf_literal(c))
            i += 1
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def to_gbnf(overrides: dict[str, str] | None = None, drop: Iterable[str] = (), lark: Lark | None = None) -> str:
    """The flow grammar in GBNF. `overrides` maps a Lark rule or terminal name to a GBNF right-hand side;
    `drop` removes alternatives that mention the named rules (constructs a planner may not use)."""
    lark = lark or lark_parser()
    overrides = dict(overrides or {})
    dropped = set(drop)
    terminals = {t.name: t for t in lark.terminals}
    ws = overrides.pop("ws", None)
    lines = [f"root ::= {_gname('start')}" if ws else f"root ::= ws {_gname('start')} ws", f"ws ::= {ws}" if ws else WS_RULE]
    used_terminals: set[str] = set()
    alternatives: dict[str, list[str]] = {}
    for rule in lark.rules:
        origin = str(rule.origin.name)
        if origin in overrides:
            continue
        names = [str(s.name) for s in rule.expansion]
        if any(n in dropped for n in names):
            continue
        parts = []
        for sym in rule.expansion:
            if isinstance(sym, Terminal):
                used_terminals.add(str(sym.name))
            assert isinstance(sym, (Terminal, NonTerminal))
            parts.append(_sym(str(sym.name), isinstance(sym, Terminal)))
        alternatives.setdefault(origin, []).append(" ws ".join(parts) if parts else '""')
    for origin, alts in alternatives.items():
        lines.append(f"{_gname(origin)} ::= " + _without_left_recursion(_gname(origin), alts))
    for name, rhs in overrides.items():
        lines.append(f"{_sym(name, name in terminals)} ::= {rhs}")
    for name in sorted(used_terminals - set(overrides)):
        pattern = terminals[name].pattern
        rhs = gbnf_literal(pattern.value) if pattern.type == "str" else regex_to_gbnf(pattern.value)
        lines.append(f"{_sym(name, True)} ::= {rhs}")
    return "\n".join(lines) + "\n"


def to_lark(drop: Iterable[str] = ()) -> str:
    """The grammar as Lark text for endpoints that take Lark grammars (vLLM, OpenAI custom tools)."""
    text = grammar_text()
    for name in drop:
        text = re.sub(rf"^\s*\|\s*{re.escape(name)}\s*$", "", text, flags=re.M)
    return text
