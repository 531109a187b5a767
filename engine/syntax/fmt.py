"""`baton fmt`: one canonical layout for a flow, comments kept, meaning untouched.

Works on the syntax tree, not on text, so the result is the same however the input was
laid out; items, properties and arms keep their source order (order has meaning: `sees:
all`, the default output). Comments are attached to the element they describe: a
comment on its own line to the next element (or the closing brace of its block), a
comment after code to the last element that starts before it on that line.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from engine.syntax import ast
from engine.syntax.parser import parse

INDENT = "  "
_GROUPS = {"version": "header", "flow": "header", "input": "signature", "budget": "signature", "output": "output"}


def format_source(text: str, filename: str = "<flow>") -> str:
    """Parse and re-print; raises `FlowError` when the text does not parse."""
    return format_document(parse(text, filename))


def format_document(doc: ast.Document) -> str:
    return _Printer(doc).run()


def _start(node: Any) -> int:
    return int(node.span.start)


def _closer(node: Any) -> int:
    return int(node.span.end) - 1


class _Printer:
    def __init__(self, doc: ast.Document) -> None:
        self.doc = doc
        self.lines: list[str] = []
        self.leading: dict[int, list[str]] = {}
        self.trailing: dict[int, list[str]] = {}
        self.eof: list[str] = []
        self._attach(doc)

    # -- comments -------------------------------------------------------------------------

    def _anchors(self) -> list[tuple[int, int]]:
        """(source offset, key) for every element and every closing brace, in source order."""
        out: list[tuple[int, int]] = []

        def block(node: Any, children: Iterable[Any]) -> None:
            out.append((node.span.start, id(node)))
            for child in children:
                walk(child)
            out.append((_closer(node), -id(node)))

        def walk(node: Any) -> None:
            if isinstance(node, (ast.Block, ast.ModelDef, ast.UseNode)):
                block(node, node.props)
            elif isinstance(node, ast.ModelsBlock):
                block(node, node.models)
            elif isinstance(node, ast.RouteNode):
                block(node, node.arms)
            elif isinstance(node, ast.LoopNode):
                block(node, sorted([*node.members, *node.props], key=_start))
            else:
                out.append((node.span.start, id(node)))

        for item in self.doc.items:
            walk(item)
        out.sort()
        return out

    def _attach(self, doc: ast.Document) -> None:
        anchors = self._anchors()
        starts = [a for a, _ in anchors]
        src = doc.source

        for comment in doc.comments:
            pos = comment.span.start
            line_start = src.rfind("\n", 0, pos) + 1
            text = comment.text.rstrip()
            if src[line_start:pos].strip():
                i = bisect.bisect_left(starts, pos) - 1
                if i >= 0:
                    self.trailing.setdefault(anchors[i][1], []).append(text)
                    continue
            i = bisect.bisect_right(starts, pos)
            if i < len(anchors):
                self.leading.setdefault(anchors[i][1], []).append(text)
            else:
                self.eof.append(text)

    def _emit(self, key: int, depth: int, text: str) -> None:
        pad = INDENT * depth
        for c in self.leading.get(key, ()):
            self.lines.append(pad + c)
        first, *rest = text.split("\n")
        lines = [pad + first, *rest]
        trail = self.trailing.get(key)
        if trail:
            lines[-1] += "  " + " ".join(trail)
        self.lines.extend(lines)

    # -- items ----------------------------------------------------------------------------

    def run(self) -> str:
        prev: Any = None
        for item in self.doc.items:
            if prev is not None and not self._same_group(prev, item):
                self.lines.append("")
            self._item(item)
            prev = item
        if self.eof:
            if self.lines:
                self.lines.append("")
            self.lines.extend(self.eof)
        return "\n".join(self.lines) + "\n" if self.lines else ""

    @staticmethod
    def _same_group(a: Any, b: Any) -> bool:
        if not (isinstance(a, ast.Decl) and isinstance(b, ast.Decl)):
            return False
        return _GROUPS[a.kind] == _GROUPS[b.kind]

    def _item(self, item: Any, depth: int = 0) -> None:
        if isinstance(item, ast.Decl):
            self._emit(id(item), depth, self._decl(item))
        elif isinstance(item, ast.Block):
            self._open(item, depth, f"{item.kind} {item.name}", item.props, self._prop)
        elif isinstance(item, ast.ModelsBlock):
            self._open(item, depth, "models", item.models, self._model_def)
        elif isinstance(item, ast.RouteNode):
            head = f"route {item.name}" + (f" by {item.by}" if item.by else "") + (f" {item.router.text}" if item.router else "")
            head += f" {item.rule[0].text} {item.rule[1].text}" if item.rule else ""
            self._open(item, depth, head, item.arms, self._arm)
        elif isinstance(item, ast.UseNode):
            self._open(item, depth, f"use {item.path.text} as {item.name}", item.props, self._prop)
        elif isinstance(item, ast.LoopNode):
            head = f"loop {item.name}" + (f" max {item.max_rounds.text}" if item.max_rounds else "")
            body = sorted([*item.members, *item.props], key=_start)
            self._open(item, depth, head, body, self._loop_part)

    def _open(self, node: Any, depth: int, head: str, children: Iterable[Any], emit_child: Any) -> None:
        kids = list(children)
        closer = -id(node)
        if not kids and not self.leading.get(closer):
            self._emit(id(node), depth, head + " {}")
            if self.trailing.get(closer):
                self.lines[-1] += "  " + " ".join(self.trailing[closer])
            return
        self._emit(id(node), depth, head + " {")
        for child in kids:
            emit_child(child, depth + 1)
        self._emit(closer, depth, "}")

    def _loop_part(self, node: Any, depth: int) -> None:
        if isinstance(node, ast.Block):
            self._item(node, depth)
        else:
            self._prop(node, depth)

    def _model_def(self, mdef: ast.ModelDef, depth: int) -> None:
        self._open(mdef, depth, mdef.name, mdef.props, self._prop)

    def _decl(self, d: ast.Decl) -> str:
        if d.kind == "version":
            assert d.text is not None
            return f"version {d.text.text}"
        if d.kind in ("flow", "input"):
            return f"{d.kind} {d.name}" + (f" {d.text.text}" if d.text else "")
        if d.kind == "budget":
            assert d.value is not None
            return f"budget {self._value(d.value, 0)}"
        return f"output {d.name}"

    def _prop(self, prop: ast.Prop, depth: int) -> None:
        self._emit(id(prop), depth, f"{prop.key}: {self._value(prop.value, depth)}")

    def _arm(self, arm: ast.Arm, depth: int) -> None:
        if arm.kind == "label":
            head = ", ".join(a.text for a in arm.labels)
        elif arm.kind == "rule":
            assert arm.condition is not None
            head = "when " + self._phrase(arm.condition, depth)
        else:
            head = "else"
        self._emit(id(arm), depth, f"{head} -> {arm.target}")

    def _value(self, value: ast.Value, depth: int) -> str:
        return ", ".join(self._phrase(p, depth) for p in value.phrases)

    def _phrase(self, phrase: ast.Phrase, depth: int) -> str:
        return " ".join(self._atom(a, depth) for a in phrase.atoms)

    @staticmethod
    def _atom(atom: ast.Atom, depth: int) -> str:
        if atom.kind != "LONG_STRING":
            return atom.text
        pad = INDENT * (depth + 1)
        body = "\n".join(pad + line if line else "" for line in atom.value.split("\n"))
        return f'"""\n{body}\n{INDENT * depth}"""'
