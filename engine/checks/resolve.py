"""First semantic pass: declarations and properties, read into typed nodes.

Works top-down over the syntax tree: collects the header declarations, the inline model
pool and every node's name (so later references can be checked), then reads each block's
properties against its kind's schema. Unknown keys get "did you mean", misspelt model
aliases too. The graph-level checks (visibility, routes, loops, cycles) come after,
in `engine.checks.structure`, using the `NodeInfo` side table built here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from engine.checks.expect import field_check, is_field_check
from engine.checks.learned import fuse_scorer, learned_path
from engine.checks.properties import MAX_LOOP_ROUNDS, MAX_PANEL, REQUIRED, RESERVED_NAMES, SCHEMAS, SUPPORTED_VERSIONS
from engine.checks.returns import read_returns
from engine.checks.subflows import CheckFlow, UseReader
from engine.checks.values import Reader, rule_op
from engine.diagnostics import did_you_mean
from engine.model import Arm, Budget, Check, Fuse, InputSpec, Loop, Params, Route, Step, Verify
from engine.pool import ModelSpec, Pool
from engine.router.files import cached_router
from engine.router.model import RouterError
from engine.syntax import ast
from engine.syntax.ast import Atom, Span


@dataclass
class NodeInfo:
    """What the structure pass needs to know about a node beyond its typed form."""

    name: str
    kind: str
    span: Span
    name_span: Span
    loop: str | None = None
    sees_atoms: list[Atom] = field(default_factory=list)
    sees_all: bool = False
    task_atom: Atom | None = None
    model_atoms: list[Atom] = field(default_factory=list)
    index: int = 0


@dataclass
class Resolved:
    """Output of the first pass: typed nodes plus the side tables for the next pass."""

    name: str = ""
    description: str = ""
    version: int = 1
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    input_spans: dict[str, Span] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    budget_span: Span | None = None
    models: dict[str, ModelSpec] = field(default_factory=dict)
    nodes: dict[str, Any] = field(default_factory=dict)
    info: dict[str, NodeInfo] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    #: Every node the source declares, those refused (a reserved or duplicate name) included: "no steps" is said only at 0.
    declared: int = 0
    output: str | None = None
    output_span: Span | None = None
    arms_ast: dict[str, ast.RouteNode] = field(default_factory=dict)
    #: Names a node that could not be read names (a `use` whose sub-flow is missing): not reported as never used.
    mentioned: set[str] = field(default_factory=set)
    loops_ast: dict[str, ast.LoopNode] = field(default_factory=dict)


def _span6(span: Span) -> tuple[int, int, int, int, int, int]:
    return (span.line, span.column, span.end_line, span.end_column, span.start, span.end)


def _whole(n: float | None) -> int | None:
    return int(n) if n is not None else None


#: Readers of the model parameters a calling node may set (`Params`), by property key.
_PARAM_READERS: dict[str, Callable[[Reader, ast.Prop], Any]] = {
    "system": lambda r, p: r.text(p),
    "temperature": lambda r, p: r.number(p, 0, 2),
    "top_p": lambda r, p: r.number(p, 0, 1),
    "max_tokens": lambda r, p: _whole(r.number(p, 1, 1_000_000, integer=True)),
    "seed": lambda r, p: _whole(r.number(p, 0, 2**31 - 1, integer=True)),
    "reasoning": lambda r, p: r.choice(p, ("low", "medium", "high")),
}


class Resolver:
    """Reads a `Document` into a `Resolved`, recording diagnostics in its `Reader`."""

    def __init__(self, doc: ast.Document, pool: Pool, reader: Reader, check_sub: CheckFlow) -> None:
        self.doc = doc
        self.check_sub = check_sub  # how a sub-flow a `use` names is checked in its own file
        self.pool = pool
        self.r = reader
        self.out = Resolved(name=_stem(doc.filename))
        self._seen_decls: dict[str, Span] = {}
        self._params: dict[tuple[tuple[str, Any], ...], Params] = {}
        self._known_aliases: set[str] = set()

    # -- entry ----------------------------------------------------------------------------

    def run(self) -> Resolved:
        for item in self.doc.items:
            if isinstance(item, ast.ModelsBlock):
                for mdef in item.models:
                    self._model_def(mdef)
        for item in self.doc.items:
            if isinstance(item, ast.Decl):
                self._decl(item)
            elif isinstance(item, ast.Block):
                self._declare(item.name, item.kind, item.span, item.name_span, None)
            elif isinstance(item, ast.RouteNode):
                self._declare(item.name, "route", item.span, item.name_span, None)
                self.out.arms_ast[item.name] = item
            elif isinstance(item, ast.UseNode):
                self._declare(item.name, "use", item.span, item.name_span, None)
            elif isinstance(item, ast.LoopNode):
                self._declare(item.name, "loop", item.span, item.name_span, None)
                self.out.loops_ast[item.name] = item
                for member in item.members:
                    self._declare(member.name, member.kind, member.span, member.name_span, item.name)
        self._known_aliases = set(self.pool.models) | set(self.out.models)
        uses = UseReader(self.r, self.pool, dict(self.out.models), self.check_sub)
        for item in self.doc.items:
            if isinstance(item, ast.Block):
                self._block(item, None)
            elif isinstance(item, ast.RouteNode):
                self._route(item)
            elif isinstance(item, ast.LoopNode):
                for member in item.members:
                    self._block(member, item.name)
                self._loop(item)
            elif isinstance(item, ast.UseNode):
                self._use(item, uses)
        self.out.models.update(uses.brought)
        return self.out

    # -- declarations ---------------------------------------------------------------------

    def _declare(self, name: str, kind: str, span: Span, name_span: Span, loop: str | None) -> None:
        self.out.declared += 1
        if name in RESERVED_NAMES:
            self.r.error("E207", f"`{name}` is reserved and cannot name a {kind}", name_span)
            return
        if name in self.out.info or name in self.out.inputs:
            first = self.out.info[name].name_span if name in self.out.info else self.out.input_spans[name]
            self.r.error("E200", f"`{name}` is defined twice", name_span, f"first defined at line {first.line}",
                         related=((f"`{name}` is first defined here", first),))
            return
        self.out.info[name] = NodeInfo(name, kind, span, name_span, loop, index=len(self.out.order))
        self.out.order.append(name)

    def _once(self, kind: str, span: Span) -> bool:
        if kind in self._seen_decls:
            self.r.error("E204", f"`{kind}` is declared twice", span, f"first declared at line {self._seen_decls[kind].line}",
                         related=((f"`{kind}` is first declared here", self._seen_decls[kind]),))
            return False
        self._seen_decls[kind] = span
        return True

    def _decl(self, d: ast.Decl) -> None:
        if d.kind == "version":
            assert d.text is not None
            if self._once("version", d.span) and d.text.text not in {str(v) for v in SUPPORTED_VERSIONS}:
                self.r.error("E206", f"language version {d.text.text} is not supported", d.text.span,
                             f"this Baton reads version {', '.join(map(str, SUPPORTED_VERSIONS))}")
        elif d.kind == "flow":
            if self._once("flow", d.span):
                self.out.name = d.name or self.out.name
                self.out.description = d.text.value if d.text else ""
        elif d.kind == "input":
            assert d.name is not None and d.name_span is not None
            if d.name in RESERVED_NAMES:
                self.r.error("E207", f"`{d.name}` is reserved and cannot name an input", d.name_span)
            elif d.name in self.out.inputs or d.name in self.out.info:
                self.r.error("E200", f"`{d.name}` is defined twice", d.name_span)
            else:
                self.out.inputs[d.name] = InputSpec(name=d.name, description=d.text.value if d.text else "")
                self.out.input_spans[d.name] = d.name_span
        elif d.kind == "budget":
            if self._once("budget", d.span):
                assert d.value is not None
                self._budget(d.value)
                self.out.budget_span = d.span
        elif d.kind == "output" and self._once("output", d.span):
            self.out.output = d.name
            self.out.output_span = d.name_span

    def _budget(self, value: ast.Value) -> None:
        usd: float | None = None
        tokens: int | None = None
        calls: int | None = None
        for phrase in value.phrases:
            atoms = phrase.atoms
            if len(atoms) == 1 and atoms[0].kind == "MONEY":
                usd = float(atoms[0].value)
                if not 0 < usd <= 100_000:
                    self.r.error("E209", f"budget {atoms[0].text} is outside $0..$100000", atoms[0].span)
            elif len(atoms) == 2 and atoms[0].kind == "NAME" and atoms[0].value in ("tokens", "calls") and atoms[1].kind == "NUMBER":
                if "." in atoms[1].text or int(atoms[1].text) < 1:
                    self.r.error("E209", f"budget {atoms[0].value} must be a whole number of at least 1", atoms[1].span)
                elif atoms[0].value == "tokens":
                    tokens = int(atoms[1].text)
                else:
                    calls = int(atoms[1].text)
            else:
                self.r.error("E208", "a budget is `$AMOUNT`, `tokens N` or `calls N`, separated by commas", phrase.span,
                             "for example `budget $0.40, calls 20`")
        self.out.budget = Budget(usd=usd, tokens=tokens, calls=calls)

    def _model_def(self, mdef: ast.ModelDef) -> None:
        props = self._props(mdef.props, "model", mdef.name_span, f"model `{mdef.name}`")
        values: dict[str, Any] = {}
        for key, prop in props.items():
            if key in ("provider", "id"):
                atom = self.r.single(prop, "a name or quoted string")
                if atom is not None:
                    values[key] = atom.value
            elif key in ("input_price", "output_price"):
                atom = self.r.single(prop, "a price")
                if atom is not None and atom.kind in ("MONEY", "NUMBER"):
                    values[key] = float(atom.value)
                elif atom is not None:
                    self.r.error("E208", f"`{key}` takes a price per 1M tokens like $0.15", atom.span)
            elif key in ("context", "max_concurrency", "max_output_tokens"):
                n = self.r.number(prop, 1, 10_000_000, integer=True)
                if n is not None:
                    values[key] = int(n)
            elif key == "description":
                t = self.r.text(prop)
                if t is not None:
                    values[key] = t
        if mdef.name in self.out.models:
            self.r.error("E200", f"model `{mdef.name}` is defined twice", mdef.name_span)
            return
        try:
            spec = ModelSpec(**values)
        except (ValidationError, TypeError):
            return
        if not self.pool.provider_known(spec.provider):
            self.r.error("E202", f"model `{mdef.name}` names unknown provider `{spec.provider}`", props["provider"].value.span)
            return
        self.out.models[mdef.name] = spec

    # -- properties -----------------------------------------------------------------------

    def _props(self, props: tuple[ast.Prop, ...], kind: str, where: Span, what: str) -> dict[str, ast.Prop]:
        schema = SCHEMAS[kind]
        out: dict[str, ast.Prop] = {}
        for prop in props:
            if prop.key not in schema:
                hint = did_you_mean(prop.key, schema) or f"a {kind} takes: {', '.join(schema)}"
                self.r.error("E203", f"unknown property `{prop.key}` in {what}", prop.key_span, hint)
            elif prop.key in out:
                self.r.error("E204", f"`{prop.key}` is set twice in {what}", prop.key_span, f"first set at line {out[prop.key].span.line}",
                             related=((f"`{prop.key}` is first set here", out[prop.key].key_span),))
            else:
                out[prop.key] = prop
        for key in REQUIRED.get(kind, ()):
            if key not in out:
                self.r.error("E205", f"{what} has no `{key}`", where, f"add `{key}: ...`")
        return out

    def _model_names(self, atoms: list[Atom]) -> list[str]:
        known = self._known_aliases
        names = []
        for atom in atoms:
            if atom.value not in known:
                hint = did_you_mean(atom.value, known) or f"the pool ({self.pool.source}) has: {', '.join(sorted(known)) or 'no models'}"
                self.r.error("E202", f"unknown model `{atom.value}`", atom.span, hint)
            names.append(atom.value)
        return names

    def _common(self, block: ast.Block, props: dict[str, ast.Prop], info: NodeInfo) -> dict[str, Any]:
        """Properties every calling node shares: visibility, task, parameters, policy."""
        common: dict[str, Any] = {"name": block.name, "loop": info.loop, "span": _span6(block.span)}
        params: dict[str, Any] = {}
        if "sees" in props:
            atoms = self.r.names(props["sees"].value, "sees")
            if atoms is not None:
                if len(atoms) == 1 and atoms[0].value in ("all", "none"):
                    info.sees_all = atoms[0].value == "all"
                else:
                    for atom in atoms:
                        if atom.value in ("all", "none"):
                            self.r.error("E208", f"`{atom.value}` cannot be combined with other names in `sees`", atom.span)
                    info.sees_atoms = [a for a in atoms if a.value not in ("all", "none")]
        if "task" in props:
            task = self.r.text(props["task"])
            if task is not None and not task.strip():  # an empty subtask sends a model nothing to do, and is billed for it
                self.r.error("E209", "`task` is empty", props["task"].value.phrases[0].atoms[0].span,
                             "say what this step should do; `{name}` inserts an input or a step it sees")
                task = None
            if task is not None:
                common["task"] = task
                info.task_atom = props["task"].value.phrases[0].atoms[0]
        for key, prop in props.items():
            read = _PARAM_READERS.get(key)
            if read is not None:
                params[key] = read(self.r, prop)
        if "retries" in props:
            n = self.r.number(props["retries"], 0, 10, integer=True)
            if n is not None:
                common["retries"] = int(n)
        if "timeout" in props:
            t = self.r.duration(props["timeout"], 0.1, 3600)
            if t is not None:
                common["timeout"] = t
        if "fallback" in props:
            chain = self.r.chain(props["fallback"].value, "fallback")
            if chain is not None:
                common["fallbacks"] = tuple(self._model_names(chain))
        set_params = [(k, v) for k, v in params.items() if v is not None]
        if len(set_params) > 1:
            set_params.sort()
        params_key = tuple(set_params)
        shared = self._params.get(params_key)
        if shared is None:
            shared = self._params[params_key] = Params(**dict(params_key))  # frozen, so nodes with equal parameters share one
        if "returns" in props:
            declared = read_returns(self.r, props["returns"])
            if declared is not None:
                common["returns"], common["fields"] = declared.schema, declared.fields
                if block.kind != "fuse":  # a fuse's judge writes its output: only the judge is asked for the fields
                    shared = shared.model_copy(update={"response_format": declared.response_format(block.name)})
                if "choices" in props:
                    self.r.error("E208", "a step takes `choices` (a label) or `returns` (fields), not both", props["returns"].key_span)
        common["params"] = shared
        return common

    def _use(self, node: ast.UseNode, uses: UseReader) -> None:
        info = self.out.info.get(node.name)
        if info is None or info.span != node.span:
            return  # a duplicate, already reported
        read = uses.read(node)
        if read is not None:
            self.out.nodes[node.name], info.sees_atoms = read
        else:  # what it names is used, whatever was wrong with it: no "never used" on top of the error
            self.out.mentioned.update(a.value for p in node.props for ph in p.value.phrases for a in ph.atoms if a.kind == "NAME")

    def _block(self, block: ast.Block, loop: str | None) -> None:
        info = self.out.info.get(block.name)
        if info is None or info.span != block.span:
            return  # a duplicate, already reported
        what = f"{block.kind} `{block.name}`"
        props = self._props(block.props, block.kind, block.name_span, what)
        common = self._common(block, props, info)
        node: Any = None
        if block.kind in ("step", "verify"):
            if "choices" in props:
                choices = self.r.strings(props["choices"].value, "choices")
                if choices is not None:
                    common["choices"] = tuple(choices)
            models: list[str] = []
            if "model" in props:
                chain = self.r.chain(props["model"].value, "model")
                if chain is not None:
                    info.model_atoms = chain
                    models = self._model_names(chain)
            if block.kind == "step":
                expect: list[Check] = []
                if "expect" in props:
                    expect = self._expect(props["expect"], common.get("fields") or {}, block.name)
                if "tools" in props and self.r.choice(props["tools"], ("client",)) is not None:
                    if loop is not None:  # a tool call ends the run, which a round of a loop cannot do and be resumed
                        self.r.error("E314", f"step `{block.name}` is in loop `{loop}`, so it may not call the client's tools: a "
                                     "reply of tool calls ends the run, and a round of a loop cannot", props["tools"].span,
                                     "call the tools from a step before or after the loop")
                    else:
                        common["client_tools"] = True
                node = Step(models=tuple(models), expect=tuple(expect), **common)
            else:
                accept, accept_field = "ACCEPT", None
                if "accept" in props:
                    accept_field = self._accept_field(props["accept"], common.get("fields") or {})
                    if accept_field is None:
                        atom = self.r.single(props["accept"], "a /regex/, or a field and its value")
                        accept = (self.r.regex(atom) if atom is not None else None) or accept
                node = Verify(models=tuple(models), accept=accept, accept_field=accept_field, **common)
        else:
            node = self._fuse(block, props, common, info)
        if node is not None:
            self.out.nodes[block.name] = node

    def _fuse(self, block: ast.Block, props: dict[str, ast.Prop], common: dict[str, Any], info: NodeInfo) -> Fuse | None:
        panel: list[str] = []
        if "panel" in props:
            for phrase in props["panel"].value.phrases:
                atoms = phrase.atoms
                if len(atoms) == 1 and atoms[0].kind == "NAME":
                    panel += self._model_names([atoms[0]])
                    info.model_atoms.append(atoms[0])
                elif len(atoms) == 3 and atoms[0].kind == "NAME" and atoms[1].value == "x" and atoms[2].kind == "NUMBER" and "." not in atoms[2].text:
                    count = int(atoms[2].text)
                    if not 1 <= count <= MAX_PANEL:
                        self.r.error("E209", f"a panel samples a model 1..{MAX_PANEL} times, not {count}", atoms[2].span)
                        count = 1
                    panel += self._model_names([atoms[0]]) * count
                    info.model_atoms.append(atoms[0])
                else:
                    self.r.error("E208", "a panel is aliases separated by commas, each optionally `x N`", phrase.span,
                                 "for example `panel: gpt, claude` or `panel: gpt x 4`")
            if len(panel) > MAX_PANEL:
                self.r.error("E209", f"a panel has at most {MAX_PANEL} members, this one has {len(panel)}", props["panel"].value.span)
        judge = self._alias(props["judge"], info) if "judge" in props else None
        quorum = 1
        if "quorum" in props:
            q = self.r.number(props["quorum"], 1, MAX_PANEL, integer=True)
            if q is not None:
                quorum = int(q)
                if panel and quorum > len(panel):
                    self.r.error("E306", f"quorum {quorum} is larger than the panel of {len(panel)}", props["quorum"].value.span)
        judge_task = ""
        if "judge_task" in props:
            judge_task = self.r.text(props["judge_task"]) or ""
        vote = self.r.choice(props["vote"], ("number", "text")) if "vote" in props else None
        if vote is not None and judge is not None:
            self.r.error("E208", "a fuse takes a `judge` or a `vote`, not both", props["vote"].key_span)
        agree = 1
        if "agree" in props:
            a = self.r.number(props["agree"], 1, MAX_PANEL, integer=True)
            if a is not None:
                agree = int(a)
                if vote is None:
                    self.r.error("E208", "`agree` needs `vote`", props["agree"].key_span)
                elif panel and agree > len(panel):
                    self.r.error("E306", f"agree {agree} is more than the panel of {len(panel)}", props["agree"].value.span)
        tie = self.r.choice(props["tie"], ("first", "escalate")) if "tie" in props else None
        if tie is not None and vote is None:
            self.r.error("E208", "`tie` needs `vote` (it says what a tied vote does)", props["tie"].key_span)
        escalate = None
        if "escalate" in props:
            escalate = self._alias(props["escalate"], info)
            if vote is None:
                self.r.error("E208", "`escalate` needs `vote` (it is called when the panel does not agree)", props["escalate"].key_span)
        scorer, threshold = fuse_scorer(self.r, props, panel, vote, escalate)
        if "returns" in props and judge is None:
            self.r.error("E208", "`returns` on a fuse declares its judge's reply: it needs a `judge` (a vote's output is a member's "
                                 "reply)", props["returns"].key_span)
        return Fuse(panel=tuple(panel), judge=judge, judge_task=judge_task, quorum=quorum, vote=vote, tie=tie or "first",  # type: ignore[arg-type]
                    agree=agree, escalate=escalate, scorer=scorer, threshold=threshold, **common)

    def _expect(self, prop: ast.Prop, fields: dict[str, str], step: str) -> list[Check]:
        """`expect:` checks on the reply as text (`matches /re/`, `json`), or on a field it `returns` (`verdict "accept"`)."""
        checks = [field_check(self.r, phrase, fields, step) if is_field_check(phrase) else self.r.check(phrase, "expect")
                  for phrase in prop.value.phrases]
        return [c for c in checks if c is not None]

    def _accept_field(self, prop: ast.Prop, fields: dict[str, str]) -> tuple[str, str] | None:
        """`accept: verdict "accept"`: a verifier that `returns:` fields accepts when a field has a value; None when the
        value is not of that form (it is then read as a regex)."""
        atoms = prop.value.phrases[0].atoms if len(prop.value.phrases) == 1 else ()
        if len(atoms) != 2 or atoms[0].kind != "NAME" or atoms[1].kind != "STRING":
            return None
        name, value = atoms[0].value, atoms[1].value
        if name not in fields:
            hint = did_you_mean(name, list(fields)) or ("declare the verifier's fields with `returns:`" if not fields else
                                                        f"it returns: {', '.join(fields)}")
            self.r.error("E318", f"the verifier returns no field `{name}`", atoms[0].span, hint)
        elif fields[name].startswith("one of ") and json.dumps(value) not in fields[name].split(" ", 2)[2].split(" "):
            self.r.error("E319", f"`{name}` is never \"{value}\": it is {fields[name]}", atoms[1].span)
        return name, value

    def _alias(self, prop: ast.Prop, info: NodeInfo) -> str | None:
        """A property that names one model alias (`judge:`, `escalate:`)."""
        atom = self.r.single(prop, "a model alias")
        if atom is None:
            return None
        if atom.kind != "NAME":
            self.r.error("E208", f"`{prop.key}` takes a model alias, found `{atom.text}`", atom.span)
            return None
        info.model_atoms.append(atom)
        return self._model_names([atom])[0]

    def _route(self, route: ast.RouteNode) -> None:
        info = self.out.info.get(route.name)
        if info is None or info.span != route.span:
            return
        if route.router is not None:
            self._learned_route(route, route.router)
            return
        arms: list[Arm] = []
        for arm in route.arms:
            if arm.kind == "label":
                if route.by is None:
                    self.r.error("E310", "a label arm needs `route NAME by STEP`", arm.span,
                                 "name the step whose reply is the label, or use `when NAME matches /re/`")
                arms.append(Arm(kind="label", labels=tuple(a.value for a in arm.labels), target=arm.target))
            elif arm.kind == "rule":
                assert arm.condition is not None
                parsed = self._rule(arm.condition)
                if parsed is not None:
                    subject, op, pattern = parsed
                    arms.append(Arm(kind="rule", subject=subject, op=op, pattern=pattern, target=arm.target))  # type: ignore[arg-type]
            else:
                arms.append(Arm(kind="else", target=arm.target))
        by, _dot, field = (route.by or "").partition(".")
        self.out.nodes[route.name] = Route(name=route.name, by=by or None, by_field=field or None, arms=tuple(arms),
                                           span=_span6(route.span))

    def _learned_route(self, route: ast.RouteNode, file_atom: Atom) -> None:
        """`route NAME by router "FILE" [threshold N | tradeoff N] { "alias" -> STEP ... }`: the router must load and know every arm's alias."""
        if route.by != "router":
            self.r.error("E310", f"only `by router \"FILE\"` takes a file; `by {route.by}` names a step", route.by_span or route.span)
            return
        path = learned_path(self.r, file_atom, "E312", "router file")
        if path is None:
            return
        try:
            router = cached_router(str(path))
        except RouterError as err:
            self.r.error("E312", str(err).replace(str(path), file_atom.value), file_atom.span,  # the path as the flow writes it
                         "the file is read beside the flow; train one with `baton router train` (docs/language.md, learned routes)")
            return
        if router.embeddings_alias is not None and router.embeddings_alias not in self._known_aliases:
            self.r.error("E312", f"router {file_atom.value} embeds questions with the pool alias `{router.embeddings_alias}`, "
                                 "which the pool does not have", file_atom.span,
                         "add that alias (a provider that serves /embeddings) to the pool, or retrain the router")
            return
        threshold: float | None = router.calibration.get("threshold")  # `baton router calibrate`'s, unless the flow says
        tradeoff: float | None = None
        if route.rule is not None:
            threshold = None
            word, number = route.rule
            value = float(number.value)
            if word.value == "threshold" and 0 <= value <= 1:
                threshold = value
            elif word.value == "tradeoff" and value >= 0:
                tradeoff = value
            else:
                self.r.error("E310", f"a learned route takes `threshold N` (0 to 1) or `tradeoff N` (0 or more), not `{word.text} {number.text}`",
                             word.span.cover(number.span))
        arms: list[Arm] = []
        for arm in route.arms:
            if arm.kind != "label":
                self.r.error("E310", "a learned route's arms name models: `\"alias\" -> STEP`", arm.span)
                continue
            for label in arm.labels:
                if label.value not in self._known_aliases:
                    self.r.error("E202", f"unknown model `{label.value}`", label.span, did_you_mean(label.value, self._known_aliases))
                elif label.value not in router.models:
                    self.r.error("E313", f"router {file_atom.value} was trained on {', '.join(sorted(router.models))}, not on `{label.value}`",
                                 label.span, "retrain it with this model, or route to one it knows")
            arms.append(Arm(kind="label", labels=tuple(a.value for a in arm.labels), target=arm.target))
        self.out.nodes[route.name] = Route(name=route.name, arms=tuple(arms), router=str(path), threshold=threshold, tradeoff=tradeoff,
                                           span=_span6(route.span))

    def _rule(self, cond: ast.Phrase) -> tuple[str, str, str] | None:
        atoms = cond.atoms
        words = [a.value for a in atoms[1:-1]]
        op = rule_op(words) if all(a.kind == "NAME" for a in atoms[1:-1]) else None
        if len(atoms) < 3 or atoms[0].kind != "NAME" or op is None:
            self.r.error("E310", "a rule is `when NAME matches /re/` or `when NAME contains \"text\"` (optionally with `not`)", cond.span)
            return None
        last = atoms[-1]
        if "matches" in op:
            pattern = self.r.regex(last)
            if pattern is None:
                return None
        elif last.kind in ("STRING", "LONG_STRING"):
            pattern = last.value
        else:
            self.r.error("E208", f"`contains` takes a quoted string, found `{last.text}`", last.span)
            return None
        return atoms[0].value, op, pattern

    def _loop(self, loop: ast.LoopNode) -> None:
        info = self.out.info.get(loop.name)
        if info is None or info.span != loop.span:
            return
        props = self._props(loop.props, "loop", loop.name_span, f"loop `{loop.name}`")
        max_rounds = 0
        if loop.max_rounds is None:
            self.r.error("E305", f"loop `{loop.name}` has no bound", loop.name_span, f"write `loop {loop.name} max N {{` with N from 1 to {MAX_LOOP_ROUNDS}")
        elif loop.max_rounds.kind != "NUMBER" or "." in loop.max_rounds.text or not 1 <= int(loop.max_rounds.text) <= MAX_LOOP_ROUNDS:
            self.r.error("E305", f"a loop runs 1..{MAX_LOOP_ROUNDS} rounds, not {loop.max_rounds.text}", loop.max_rounds.span)
        else:
            max_rounds = int(loop.max_rounds.text)
        verifiers = [m for m in loop.members if m.kind == "verify"]
        workers = [m for m in loop.members if m.kind != "verify"]
        if not verifiers:
            self.r.error("E307", f"loop `{loop.name}` has no `verify` block", loop.name_span, "add `verify NAME { model: ... task: ... accept: /ACCEPT/ }`")
        for extra in verifiers[1:]:
            self.r.error("E307", f"loop `{loop.name}` has more than one verifier", extra.name_span)
        if not workers:
            self.r.error("E205", f"loop `{loop.name}` has no worker step", loop.name_span)
        exhausted = "last"
        if "exhausted" in props:
            exhausted = self.r.choice(props["exhausted"], ("last", "fail", "escalate")) or "last"
        result = workers[-1].name if workers else ""
        if "output" in props:
            atom = self.r.single(props["output"], "a step of the loop")
            if atom is not None:
                if atom.value not in {m.name for m in workers}:
                    self.r.error("E201", f"`{atom.value}` is not a worker step of loop `{loop.name}`", atom.span,
                                 did_you_mean(atom.value, [m.name for m in workers]))
                result = atom.value
        self.out.nodes[loop.name] = Loop(
            name=loop.name, max_rounds=max(max_rounds, 1), members=tuple(m.name for m in loop.members),
            verifier=verifiers[0].name if verifiers else "", result=result, exhausted=exhausted,  # type: ignore[arg-type]
            span=_span6(loop.span),
        )


def _stem(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base[:-5] if base.endswith(".flow") else base
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in stem) or "flow"
