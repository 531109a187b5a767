"""Where each name of a flow is defined and used, read off the syntax tree: what navigation and rename need.

Names are the flow's inputs and nodes (steps, verifies, fuses, routes, loops, and a loop's
members). They are used in `sees:`, in `{name}` templates (task, system, judge_task), as a
route's `by` and arm targets, in `output`, and in a loop's `output:`. Model aliases are
collected too (after `model:`, `fallback:`, `panel:`, `judge:`, `escalate:`), for hover.
Only the tree is read: the checker's verdicts come from `engine.checks`, once, unchanged.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from engine.checks import templates
from engine.syntax import ast
from engine.syntax.ast import Span

ALIAS_KEYS = ("model", "fallback", "panel", "judge", "escalate")
TEMPLATE_KEYS = ("task", "system", "judge_task")
NOT_NAMES = {"all", "none", "feedback", "then", "x"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    kind: str  # input, step, verify, fuse, route, loop, use
    span: Span  # the name
    whole: Span  # the whole declaration or block
    loop: str | None = None


@dataclass(frozen=True, slots=True)
class Use:
    name: str
    span: Span
    how: str  # sees, template, by, target, output, alias, given


@dataclass
class FlowIndex:
    definitions: dict[str, Definition] = field(default_factory=dict)
    uses: list[Use] = field(default_factory=list)
    aliases: list[Use] = field(default_factory=list)
    #: Every block, route and loop (for the outline and folding), in file order.
    blocks: list[Definition] = field(default_factory=list)
    flow_line: int | None = None

    def at(self, line: int, column: int) -> Definition | Use | None:
        """The definition or use whose span holds the (1-based) position."""
        for d in self.definitions.values():
            if _inside(d.span, line, column):
                return d
        for u in (*self.uses, *self.aliases):
            if _inside(u.span, line, column):
                return u
        return None

    def uses_of(self, name: str) -> list[Use]:
        return [u for u in self.uses if u.name == name]


def _inside(span: Span, line: int, column: int) -> bool:
    return (span.line, span.column) <= (line, column) <= (span.end_line, span.end_column)


class _Positions:
    """Offsets in the source to 1-based (line, column)."""

    def __init__(self, source: str) -> None:
        self.starts = [0] + [i + 1 for i, c in enumerate(source) if c == "\n"]

    def span(self, start: int, end: int) -> Span:
        line = bisect.bisect_right(self.starts, start)
        end_line = bisect.bisect_right(self.starts, end)
        return Span(line, start - self.starts[line - 1] + 1, end_line, end - self.starts[end_line - 1] + 1, start, end)


def build_index(doc: ast.Document) -> FlowIndex:
    index = FlowIndex()
    positions = _Positions(doc.source)
    for item in doc.items:
        if isinstance(item, ast.Decl):
            _declaration(index, item)
        elif isinstance(item, ast.Block):
            _block(index, item, positions, None)
        elif isinstance(item, ast.RouteNode):
            _define(index, Definition(item.name, "route", item.name_span, item.span))
            if item.by and item.by_span and item.router is None:  # `by router "FILE"` names no step
                step = item.by.split(".", 1)[0]  # `by triage.priority` uses the step `triage`
                index.uses.append(Use(step, Span(item.by_span.line, item.by_span.column, item.by_span.line,
                                                 item.by_span.column + len(step), item.by_span.start, item.by_span.start + len(step)), "by"))
            for arm in item.arms:
                index.uses.append(Use(arm.target, arm.target_span, "target"))
                if arm.condition is not None:
                    index.uses.extend(Use(a.value, a.span, "rule") for a in arm.condition.atoms[:1] if a.kind == "NAME")
        elif isinstance(item, ast.UseNode):  # what it is given: the caller's names (or models, which name no node)
            _define(index, Definition(item.name, "use", item.name_span, item.span))
            for prop in item.props:
                index.uses.extend(Use(a.value, a.span, "given") for a in _atoms(prop) if a.kind == "NAME")
        elif isinstance(item, ast.LoopNode):
            _define(index, Definition(item.name, "loop", item.name_span, item.span))
            for member in item.members:
                _block(index, member, positions, item.name)
            for prop in item.props:
                if prop.key == "output":
                    index.uses.extend(Use(a.value, a.span, "output") for a in _atoms(prop) if a.kind == "NAME")
    return index


def _define(index: FlowIndex, d: Definition) -> None:
    index.definitions.setdefault(d.name, d)  # a duplicate is the checker's E200; navigation goes to the first
    if d.kind != "input":
        index.blocks.append(d)


def _declaration(index: FlowIndex, decl: ast.Decl) -> None:
    if decl.kind == "flow":
        index.flow_line = decl.span.line
    if decl.kind == "input" and decl.name and decl.name_span:
        _define(index, Definition(decl.name, "input", decl.name_span, decl.span))
    if decl.kind == "output" and decl.name and decl.name_span:
        index.uses.append(Use(decl.name, decl.name_span, "output"))


def _atoms(prop: ast.Prop) -> list[ast.Atom]:
    return [a for phrase in prop.value.phrases for a in phrase.atoms]


def _block(index: FlowIndex, block: ast.Block, positions: _Positions, loop: str | None) -> None:
    _define(index, Definition(block.name, block.kind, block.name_span, block.span, loop))
    for prop in block.props:
        if prop.key == "sees":
            index.uses.extend(Use(a.value, a.span, "sees") for a in _atoms(prop) if a.kind == "NAME" and a.value not in NOT_NAMES)
        elif prop.key in ALIAS_KEYS:
            index.aliases.extend(Use(a.value, a.span, "alias") for a in _atoms(prop) if a.kind == "NAME" and a.value not in NOT_NAMES)
        elif prop.key in TEMPLATE_KEYS:
            for atom in _atoms(prop):
                if atom.kind in ("STRING", "LONG_STRING"):
                    index.uses.extend(_placeholders(atom, positions))


def _placeholders(atom: ast.Atom, positions: _Positions) -> list[Use]:
    """Every `{name}` in a string literal, at its place in the source (`{{` is a literal brace)."""
    out = []
    for part in templates.scan(atom.text):
        if isinstance(part, templates.Placeholder):
            start = atom.span.start + part.offset + 1  # the name, inside the braces
            out.append(Use(part.name, positions.span(start, start + len(part.name)), "template"))
    return out
