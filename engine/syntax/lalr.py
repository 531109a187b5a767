"""A lean driver for the LALR(1) table that Lark builds from `grammar/flow.lark`.

Lark analyses the grammar (strict mode: any conflict is an error at load time) and owns
the parse table; this module only runs it. Lark's own loop wraps every reduction in
child-filtering callbacks that cost more than the parse itself on machine-written flows
of thousands of steps; here the reduction plan of each rule (which children come from
inlined `_rules`, where `[optional]` placeholders go) is computed once, so a reduction is
a slice, a splice and one call. `tests/test_syntax.py` checks that both drivers build
the same tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from lark import Lark, Token
from lark.parsers.lalr_analysis import Shift


class ParseError(Exception):
    """No action for `token` in the current state; `expected` lists the terminals that would fit."""

    def __init__(self, token: Token, expected: set[str]) -> None:
        self.token = token
        self.expected = expected
        super().__init__(f"unexpected {token.type}")


class _Inline(list[Any]):
    """Children of an inlined rule (`_item`, `__x_star_0`), spliced into the parent."""


class TableDriver:
    """Runs Lark's LALR table with the callbacks of a transformer object."""

    def __init__(self, lark: Lark, transformer: Any) -> None:
        table = lark.parser.parser._parse_table  # the analysed table; Lark's public API has no accessor
        self.states: dict[Any, dict[str, tuple[Any, Any]]] = table.states
        self.start_state = table.start_states["start"]
        self.end_state = table.end_states["start"]
        self.plans: dict[Any, tuple[int, str, Callable[[list[Any]], Any] | None, tuple[bool, ...]]] = {}
        for rule in lark.rules:
            name = rule.origin.name
            name = name.value if isinstance(name, Token) else str(name)
            inline = name.startswith("_")
            fn = None if inline else getattr(transformer, str(rule.alias or name))
            self.plans[rule] = (len(rule.expansion), name, fn, tuple(rule.options.empty_indices or ()))
        # The same table with each reduce action carrying its plan, and gotos apart: no Rule hashing per reduction.
        self.actions: dict[Any, dict[str, tuple[bool, Any]]] = {}
        self.gotos: dict[Any, dict[str, Any]] = {}
        for state, row in self.states.items():
            self.actions[state] = {t: (action is Shift, arg if action is Shift else self.plans[arg])
                                   for t, (action, arg) in row.items() if t.isupper() or t == "$END"}
            self.gotos[state] = {t: arg for t, (action, arg) in row.items() if not (t.isupper() or t == "$END")}

    def _accepts(self, state_stack: list[Any]) -> set[str]:
        """The terminals that could really come next (a state's row also lists default reductions)."""
        row = self.states[state_stack[-1]]
        return {t for t in row if (t.isupper() or t == "$END") and _simulate(self.states, self.plans, state_stack, t)}

    def parse(self, tokens: Iterable[Token]) -> Any:
        actions = self.actions
        gotos = self.gotos
        end_state = self.end_state
        state_stack = [self.start_state]
        value_stack: list[Any] = []
        push_state = state_stack.append
        push_value = value_stack.append
        last: Token | None = None
        for tok in tokens:
            row = actions[state_stack[-1]]
            typ = tok.type
            while True:
                entry = row.get(typ)
                if entry is None:
                    raise ParseError(tok, self._accepts(state_stack))
                if entry[0]:
                    push_state(entry[1])
                    push_value(tok)
                    break
                self._reduce(entry[1], state_stack, value_stack, gotos)
                row = actions[state_stack[-1]]
            last = tok
        end = Token("$END", "", 0, 1, 1, 1, 1, 0) if last is None else Token(
            "$END", "", last.end_pos, last.end_line, last.end_column, last.end_line, last.end_column, last.end_pos)
        while True:
            entry = actions[state_stack[-1]].get("$END")
            if entry is None:
                raise ParseError(end, self._accepts(state_stack))
            if entry[0]:
                raise ParseError(end, set())
            self._reduce(entry[1], state_stack, value_stack, gotos)
            if state_stack[-1] == end_state:
                return value_stack[-1]

    @staticmethod
    def _reduce(plan: tuple[int, str, Any, tuple[bool, ...]], state_stack: list[Any], value_stack: list[Any],
                gotos: dict[Any, dict[str, Any]]) -> None:
        size, origin, fn, empty = plan
        if size:
            children = value_stack[-size:]
            del value_stack[-size:]
            del state_stack[-size:]
        else:
            children = []
        if empty:
            filled: list[Any] = []
            it = iter(children)
            for is_none in empty:
                filled.append(None if is_none else next(it))
            children = filled
        if fn is None and size == 1 and not empty:
            value = children[0]  # an inlined rule with one child: the child itself splices the same way
            if type(value) is not _Inline and origin.startswith("__"):
                value = _Inline(children)  # a repetition list must stay a list, to be extended in place
        else:
            if fn is None and children and type(children[0]) is _Inline:
                # Left recursion (`__items: __items item`): grow the list in place, not a copy per item,
                # which would make a flow of n items cost O(n^2).
                kids: list[Any] = children[0]
                children = children[1:]
            else:
                kids = []
            for child in children:
                if type(child) is _Inline:
                    kids.extend(child)
                else:
                    kids.append(child)
            value = (kids if type(kids) is _Inline else _Inline(kids)) if fn is None else fn(kids)
        state_stack.append(gotos[state_stack[-1]][origin])
        value_stack.append(value)


def _simulate(states: dict[Any, dict[str, tuple[Any, Any]]], plans: dict[Any, Any], stack: list[Any], terminal: str) -> bool:
    """Would `terminal` be shifted from this stack (after the reductions it triggers)?"""
    stack = list(stack)
    while True:
        entry = states[stack[-1]].get(terminal)
        if entry is None:
            return False
        action, arg = entry
        if action is Shift:
            return True
        size, origin = plans[arg][0], plans[arg][1]
        if size:
            del stack[-size:]
        stack.append(states[stack[-1]][origin][1])

