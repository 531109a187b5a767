"""Syntax tree of a flow file: what was written, where, before any meaning is given.

Nodes are named tuples: immutable, and built by the C tuple constructor, which makes
them several times cheaper to create than dataclasses (a generated 10,000-step flow has
about 200,000 of them). Every node carries the `Span` of the source it came from so
later passes can point at it.
Property values stay generic (phrases of atoms) here; `engine.checks` interprets them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

AtomKind = Literal["NAME", "STRING", "LONG_STRING", "NUMBER", "MONEY", "DURATION", "REGEX"]


class Span(NamedTuple):
    """A region of source text: 1-based line and column, end exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    def cover(self, other: Span) -> Span:
        """The smallest span that contains both."""
        return Span(self.line, self.column, other.end_line, other.end_column, self.start, other.end)


class Atom(NamedTuple):
    """One token of a property value: its kind, source text and decoded value."""

    kind: AtomKind
    text: str
    value: str
    span: Span


class Phrase(NamedTuple):
    """Atoms written side by side: `cheap then strong`, `gpt x 4`, `matches /re/`."""

    atoms: tuple[Atom, ...]
    span: Span


class Value(NamedTuple):
    """A property's value: one or more phrases separated by commas."""

    phrases: tuple[Phrase, ...]
    span: Span


class Prop(NamedTuple):
    """`key: value` inside a block."""

    key: str
    key_span: Span
    value: Value
    span: Span


class Block(NamedTuple):
    """`step`, `fuse` or `verify`: a named block of properties."""

    kind: Literal["step", "fuse", "verify"]
    name: str
    name_span: Span
    props: tuple[Prop, ...]
    span: Span


class Arm(NamedTuple):
    """One line of a route: labels, a rule (`when ...`) or `else`, and its target."""

    kind: Literal["label", "rule", "else"]
    labels: tuple[Atom, ...]
    condition: Phrase | None
    target: str
    target_span: Span
    span: Span


class RouteNode(NamedTuple):
    """`route NAME [by STEP | by router "FILE" [threshold N | tradeoff N]] { arms }`."""

    name: str
    name_span: Span
    by: str | None
    by_span: Span | None
    arms: tuple[Arm, ...]
    span: Span
    router: Atom | None = None
    #: A learned route's rule and its number: (`threshold` or `tradeoff`, the number).
    rule: tuple[Atom, Atom] | None = None


class LoopNode(NamedTuple):
    name: str
    name_span: Span
    max_rounds: Atom | None
    members: tuple[Block, ...]
    props: tuple[Prop, ...]
    span: Span


class UseNode(NamedTuple):
    """`use "FILE" as NAME { bindings }`: another flow run as one node."""

    path: Atom
    name: str
    name_span: Span
    props: tuple[Prop, ...]
    span: Span


class ModelDef(NamedTuple):
    name: str
    name_span: Span
    props: tuple[Prop, ...]
    span: Span


class ModelsBlock(NamedTuple):
    models: tuple[ModelDef, ...]
    span: Span


class Decl(NamedTuple):
    """A one-line declaration: `version`, `flow`, `input`, `budget` or `output`."""

    kind: Literal["version", "flow", "input", "budget", "output"]
    name: str | None
    name_span: Span | None
    text: Atom | None
    value: Value | None
    span: Span


Item = Decl | ModelsBlock | Block | RouteNode | LoopNode | UseNode


class Comment(NamedTuple):
    text: str
    span: Span


@dataclass(slots=True)
class Document:
    """A parsed flow file: its items in source order, plus comments (kept for `fmt`)."""

    items: tuple[Item, ...]
    comments: tuple[Comment, ...] = field(default=())
    source: str = ""
    filename: str = "<flow>"
