"""Sub-flows: `use "critique" as review { task: question  writer: fast }`.

A `use` names another flow: a pattern of the library by name (`workflows/patterns/NAME.flow`, shipped with the
package), or a file in the folder tree of the flow that names it (`"review.flow"`), read as untrusted data (a
regular file of bounded size, never a FIFO). The sub-flow is checked in its own file, so its own mistakes are
reported as its own (E322, quoting its first error), and a `use` only binds:

- each of the sub-flow's inputs to one of the caller's inputs or nodes (the sub-flow sees that output's text and
  nothing else of the caller: visibility holds across the boundary) or to a literal text;
- any of the model aliases it calls to one of the caller's aliases. The sub-flow is checked with those aliases
  standing for the caller's models, then its nodes are renamed to call the caller's aliases, so the run's record,
  limits and prices are the caller's own.

Files that use each other in a cycle are an error (E321), found by keeping the chain of files being checked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from engine.checks.learned import flow_folder
from engine.checks.values import Reader
from engine.diagnostics import Diagnostic, did_you_mean
from engine.errors import FlowError
from engine.model import HISTORY, Flow, Fuse, Route, Step, Use, Verify
from engine.pool import ModelSpec, Pool
from engine.router.files import inside, read_bounded
from engine.router.model import RouterError
from engine.syntax import ast
from engine.syntax.ast import Atom
from engine.syntax.parser import parse
from engine.syntax.source import decode_flow

#: The largest sub-flow file read (a flow itself may be 16 MB; a pattern is a page).
MAX_SUBFLOW_BYTES = 4 * 1024 * 1024
#: How deep sub-flows may nest: deeper is almost surely a mistake, and every level is checked again per caller.
MAX_DEPTH = 8

#: The files being checked, outermost first: a `use` of one of them is a cycle.
_checking: ContextVar[tuple[str, ...]] = ContextVar("baton_subflows_checking", default=())


def library_folder() -> Path:
    """The pattern library: shipped inside the package (`engine/workflows/patterns`), or read from the source tree."""
    shipped = Path(str(resources.files("engine"))) / "workflows" / "patterns"
    return shipped if shipped.is_dir() else Path(__file__).resolve().parents[2] / "workflows" / "patterns"


def library_names() -> list[str]:
    """The names of the library's patterns, sorted."""
    folder = library_folder()
    return sorted(p.stem for p in folder.glob("*.flow")) if folder.is_dir() else []


def is_library_name(text: str) -> bool:
    """`"critique"` names a pattern of the library; `"critique.flow"` or `"lib/critique"` (a dot or a slash) a file."""
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", text) is not None


@contextmanager
def checking(path: str) -> Iterator[tuple[str, ...]]:
    """Mark `path` as being checked (for cycles) while the block runs; yields the chain before it."""
    chain = _checking.get()
    token = _checking.set((*chain, path))
    try:
        yield chain
    finally:
        _checking.reset(token)


def resolved_name(filename: str) -> str:
    """A flow's file as the cycle check knows it (symbolic links resolved); a flow with no file by its name."""
    return str(Path(filename).resolve()) if not filename.startswith("<") else filename


class Checked(Protocol):
    """What checking a flow gives (`engine.checks.CheckResult`)."""

    @property
    def flow(self) -> Flow | None: ...

    @property
    def errors(self) -> Sequence[Diagnostic]: ...

    @property
    def diagnostics(self) -> Sequence[Diagnostic]: ...


#: How a sub-flow is checked: the checks package's own entry point, handed down (this module is one of its passes).
CheckFlow = Callable[[ast.Document, Pool], Checked]


@dataclass
class Binding:
    """What a `use` gives its sub-flow, read from its properties."""

    inputs: dict[str, str] = field(default_factory=dict)
    input_atoms: list[Atom] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)


class UseReader:
    """Reads one `use` node into a `Use` (visibility of what it is given is checked later, with the caller's graph)."""

    def __init__(self, r: Reader, pool: Pool, caller_models: dict[str, ModelSpec], check: CheckFlow) -> None:
        self.r = r
        self.check = check
        self.pool = pool
        self.caller_models = caller_models  # the caller's own `models {}` definitions
        #: Model definitions the sub-flows bring (their own `models {}` blocks): merged into the caller's.
        self.brought: dict[str, ModelSpec] = {}

    def read(self, node: ast.UseNode) -> tuple[Use, list[Atom]] | None:
        """The `Use` (its `sees` still empty) and the atoms of the caller's names it is given; None after an error."""
        path = self._find(node.path)
        if path is None:
            return None
        doc = self._parse(node.path, path)
        if doc is None:
            return None
        sub_inputs = [item.name for item in doc.items if isinstance(item, ast.Decl) and item.kind == "input" and item.name]
        binding = self._bind(node, sub_inputs)
        if binding is None:
            return None
        flow = self._check(node, path, doc, binding)
        if flow is None:
            return None
        if not self._complete(node, flow, binding, sub_inputs):
            return None
        flow = rename_aliases(flow, binding.models)
        if not self._bring_models(node, flow):
            return None
        out = flow.nodes[flow.output]
        use = Use(name=node.name, source=node.path.value, path=str(path), flow=flow, inputs=binding.inputs, texts=binding.texts,
                  returns=getattr(out, "returns", None), fields=dict(getattr(out, "fields", {}) or {}),
                  span=(node.span.line, node.span.column, node.span.end_line, node.span.end_column, node.span.start, node.span.end))
        return use, binding.input_atoms

    # -- finding and reading the file ---------------------------------------------------------

    def _find(self, atom: Atom) -> Path | None:
        return locate(self.r, atom)

    def _parse(self, atom: Atom, path: Path) -> ast.Document | None:
        chain = _checking.get()
        here = (*chain, resolved_name(self.r.filename))
        if str(path) in here:
            cycle = [Path(p).name for p in (*here[here.index(str(path)):], str(path))]
            self.r.error("E321", f"sub-flows use each other in a cycle: {' -> '.join(cycle)}", atom.span,
                         "a flow cannot use itself, directly or through another flow")
            return None
        if len(chain) >= MAX_DEPTH:
            self.r.error("E321", f"sub-flows nest more than {MAX_DEPTH} deep", atom.span, "flatten some of them")
            return None
        try:
            text = decode_flow(read_bounded(path, MAX_SUBFLOW_BYTES, "sub-flow"), str(path))
            return parse(text, str(path))
        except RouterError as err:
            self.r.error("E320", str(err).replace(str(path), atom.value), atom.span)
        except FlowError as err:
            self.r.error("E322", f"sub-flow {atom.value} does not parse: {_short(err.diagnostics[0], atom.value)}", atom.span)
        return None

    # -- binding ------------------------------------------------------------------------------

    def _bind(self, node: ast.UseNode, sub_inputs: list[str]) -> Binding | None:
        binding = Binding()
        known = set(self.pool.models) | set(self.caller_models)
        ok = True
        seen: set[str] = set()
        for prop in node.props:
            if prop.key in seen:
                self.r.error("E204", f"`{prop.key}` is bound twice in `use {node.name}`", prop.key_span)
                ok = False
                continue
            seen.add(prop.key)
            atom = self.r.single(prop, "a name (an input, a step, or a model alias) or a quoted text")
            if atom is None:
                ok = False
            elif prop.key in sub_inputs:
                if atom.kind == "NAME":
                    binding.inputs[prop.key] = atom.value
                    binding.input_atoms.append(atom)
                elif atom.kind in ("STRING", "LONG_STRING"):
                    binding.texts[prop.key] = atom.value
                else:
                    self.r.error("E208", f"input `{prop.key}` is given a name (an input or a step) or a quoted text, "
                                         f"found `{atom.text}`", atom.span)
                    ok = False
            elif atom.kind != "NAME":  # not an input: a model alias of the sub-flow, given one of ours
                self.r.error("E323", f"the sub-flow has no input `{prop.key}`", prop.key_span,
                             did_you_mean(prop.key, sub_inputs) or f"its inputs: {', '.join(sub_inputs) or 'none'}")
                ok = False
            elif atom.value not in known:
                self.r.error("E202", f"unknown model `{atom.value}`", atom.span,
                             did_you_mean(atom.value, known) or f"the pool ({self.pool.source}) has: {', '.join(sorted(known))}")
                ok = False
            else:
                binding.models[prop.key] = atom.value
        return binding if ok else None

    def _check(self, node: ast.UseNode, path: Path, doc: ast.Document, binding: Binding) -> Flow | None:
        specs = {**self.pool.models, **self.caller_models}
        pool = self.pool.with_models({role: specs[alias] for role, alias in binding.models.items()})
        with checking(resolved_name(self.r.filename)):
            result = self.check(doc, pool)
        if result.flow is None:
            errors = result.errors or result.diagnostics
            first = errors[0]
            hint = None
            if first.code == "E202":
                alias = first.message.split("`")[1] if "`" in first.message else "ALIAS"
                hint = f"bind it to one of this flow's models: `{alias}: MODEL` in `use {node.name}`"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            self.r.error("E322", f"sub-flow {node.path.value} does not check: {_short(first, node.path.value)}{more}",
                         node.path.span, hint)
            return None
        return result.flow

    def _complete(self, node: ast.UseNode, flow: Flow, binding: Binding, sub_inputs: list[str]) -> bool:
        ok = True
        calls = set(flow.aliases())
        for prop in node.props:
            if prop.key in binding.models and prop.key not in calls:
                self.r.error("E323", f"sub-flow {node.path.value} has no input or model `{prop.key}`", prop.key_span,
                             did_you_mean(prop.key, [*sub_inputs, *calls])
                             or f"its inputs: {', '.join(sub_inputs) or 'none'}; its models: {', '.join(sorted(calls)) or 'none'}")
                ok = False
        for name in sub_inputs:
            if name not in binding.inputs and name not in binding.texts and name != HISTORY:
                self.r.error("E323", f"`use {node.name}` does not give the sub-flow its input `{name}`", node.name_span,
                             f'add `{name}: NAME` (an input or a step of this flow) or `{name}: "text"`')
                ok = False
        return ok

    def _bring_models(self, node: ast.UseNode, flow: Flow) -> bool:
        """The sub-flow's own `models {}` definitions join the caller's: never changing what an alias means there."""
        ok = True
        for alias, spec in flow.models.items():
            mine = self.caller_models.get(alias) or self.brought.get(alias) or self.pool.models.get(alias)
            if mine is not None and mine != spec:
                self.r.error("E200", f"sub-flow {node.path.value} defines model `{alias}` differently from this flow's", node.path.span,
                             "rename it in the sub-flow, or bind it to one of this flow's models")
                ok = False
            else:
                self.brought[alias] = spec
        return ok


def locate(r: Reader, atom: Atom) -> Path | None:
    """The file a `use` names (a pattern of the library, or a file in the caller's folder tree); None after an error."""
    if atom.kind != "STRING" or not atom.value.strip():
        r.error("E320", "`use` takes a pattern's name or a flow file's path, in quotes", atom.span,
                f'for example `use "critique" as review {{ ... }}`; the library has: {", ".join(library_names())}')
        return None
    if is_library_name(atom.value):
        names = library_names()
        if atom.value not in names:
            r.error("E320", f"the pattern library has no `{atom.value}`", atom.span,
                    did_you_mean(atom.value, names) or f"it has: {', '.join(names)}; a file is named with its .flow")
            return None
        return library_folder() / f"{atom.value}.flow"
    base = flow_folder(r.filename)
    path = (base / atom.value).resolve()
    if not inside(path, base):  # like a router file: a flow reads files from its own folder tree only
        r.error("E320", f"sub-flow {atom.value} is outside the flow's folder", atom.span,
                "a sub-flow is read only from the folder tree of the flow that uses it (or by name from the library)")
        return None
    return path


def what_it_takes(source: str, filename: str) -> tuple[dict[str, str], list[str]] | None:
    """What a `use` of `source` from `filename` may bind, for an editor: the sub-flow's inputs (with what each is) and
    the model aliases it calls. Read without checking it (a sub-flow being written is still offered); None when it
    cannot be found, read or parsed."""
    path = locate(Reader(filename), Atom("STRING", f'"{source}"', source, ast.Span(1, 1, 1, 1)))
    if path is None:
        return None
    try:
        doc = parse(decode_flow(read_bounded(path, MAX_SUBFLOW_BYTES, "sub-flow"), str(path)), str(path))
    except (RouterError, FlowError):
        return None
    inputs = {item.name: item.text.value if item.text is not None else "" for item in doc.items
              if isinstance(item, ast.Decl) and item.kind == "input" and item.name}
    roles = [m.name for item in doc.items if isinstance(item, ast.ModelsBlock) for m in item.models]
    blocks = [b for item in doc.items for b in (item.members if isinstance(item, ast.LoopNode) else (item,))
              if isinstance(b, ast.Block)]
    for block in blocks:
        for prop in block.props:
            if prop.key in ("model", "fallback", "panel", "judge", "escalate"):
                roles += [a.value for ph in prop.value.phrases for a in ph.atoms
                          if a.kind == "NAME" and a.value not in ("then", "x") and a.value not in roles]
    return inputs, roles


def rename_aliases(flow: Flow, mapping: dict[str, str]) -> Flow:
    """`flow` calling `mapping[alias]` wherever it called a mapped alias (sub-flows it uses included)."""
    if not mapping:
        return flow

    def one(alias: str | None) -> str | None:
        return mapping.get(alias, alias) if alias is not None else None

    def many(aliases: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(mapping.get(a, a) for a in aliases)

    nodes: dict[str, Any] = {}
    for name, node in flow.nodes.items():
        if isinstance(node, (Step, Verify)):
            node = node.model_copy(update={"models": many(node.models), "fallbacks": many(node.fallbacks)})
        elif isinstance(node, Fuse):
            trained = node.scorer_panel or node.panel if node.scorer is not None else None  # what its scorer knows them as
            node = node.model_copy(update={"panel": many(node.panel), "fallbacks": many(node.fallbacks),
                                           "judge": one(node.judge), "escalate": one(node.escalate), "scorer_panel": trained})
        elif isinstance(node, Route) and node.router is not None:  # its labels stay the router's names; its prices follow the binding
            calls = {label: node.arm_models.get(label, label) for arm in node.arms for label in arm.labels}
            node = node.model_copy(update={"arm_models": {label: mapping.get(alias, alias) for label, alias in calls.items()}})
        elif isinstance(node, Use):
            node = node.model_copy(update={"flow": rename_aliases(node.flow, mapping)})
        nodes[name] = node
    return flow.model_copy(update={"nodes": nodes, "models": {a: s for a, s in flow.models.items() if a not in mapping}})


def _short(d: Diagnostic, shown_as: str) -> str:
    """A sub-flow's diagnostic on one line, at its line and column in the sub-flow."""
    return f"{os.path.basename(shown_as)}:{d.span.line}:{d.span.column}: {d.code} {d.message}"
