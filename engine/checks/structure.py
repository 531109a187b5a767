"""Second semantic pass: visibility, templates, routes, loops, cycles and dead ends.

Visibility is the security boundary of a flow, so it is decided here, once: each node's
`sees` is resolved to the exact set of inputs and nodes it may receive (`all` expanded),
templates are checked against that set, and route branches are marked with a `Guard` so
they run only when chosen. The dependency map built here (what each node waits for, and
what each route takes its output from) becomes the flow's execution plan (`plan()`): the
executor, the cost model and `engine.graph` read that plan instead of working it out again.
"""

from __future__ import annotations

from typing import Any

from engine.checks import templates
from engine.checks.plan import topological
from engine.checks.resolve import NodeInfo, Resolved
from engine.checks.values import Reader
from engine.diagnostics import did_you_mean
from engine.model import ExecutionPlan, Fuse, Guard, Loop, Route, Step, Use, Verify
from engine.syntax.ast import Atom, Span

CALLING = (Step, Verify, Fuse)


class Structure:
    """Checks a `Resolved` flow as a whole and finishes its nodes (sees, guards)."""

    def __init__(self, res: Resolved, reader: Reader) -> None:
        self.res = res
        self.r = reader
        self.info = res.info
        self.nodes: dict[str, Any] = dict(res.nodes)
        self.route_of: dict[str, str] = {}
        # per node, what it waits for, in the order it names them (a dict as an ordered set: the
        # order reaches rendered graphs); a route's branch targets are kept apart, in `takes`
        self.deps: dict[str, dict[str, None]] = {}
        self.takes: dict[str, dict[str, None]] = {}
        self.guards: dict[str, Guard] = {}
        self.used_inputs: set[str] = set()

    def run(self) -> tuple[dict[str, Any], str | None]:
        self._routes()
        for name, node in list(self.nodes.items()):
            if isinstance(node, CALLING):
                self._visibility(name, node)
            elif isinstance(node, Use):
                self._given(name, node)
        self._loops()
        guards = self._guards()
        for name, (route, arm) in guards.items():
            node = self.nodes[name]
            self.nodes[name] = node.model_copy(update={"guard": Guard(route=route, arm=arm)})
            self.guards[name] = Guard(route=route, arm=arm)
            self.deps.setdefault(name, {}).update(dict.fromkeys(self._decision_deps(self.nodes[route])))
        self._direct_branch_use(guards)
        self._cycles()
        output = self._output(guards)
        self._dead_ends(output)
        self._unused_inputs()
        return self.nodes, output

    def plan(self) -> ExecutionPlan:
        """The execution plan of a flow that checked without errors (so it is acyclic)."""
        top = [n for n in self.res.order if self.info[n].loop is None]
        deps = {n: tuple(self.deps.get(n, {})) for n in top}
        return ExecutionPlan(deps=deps, order=topological(top, deps), guards={n: g for n, g in self.guards.items() if n in deps})

    # -- routes ---------------------------------------------------------------------------

    def _routes(self) -> None:
        for name, node in self.nodes.items():
            if not isinstance(node, Route):
                continue
            ast_route = self.res.arms_ast[name]
            deps: dict[str, None] = {}
            takes: dict[str, None] = {}
            closed = False  # a route by an enumerated field: every value has an arm (or E319 said which has not)
            if node.by is not None:
                by_span = ast_route.by_span or ast_route.name_span
                if self._known_top_level(node.by, by_span, f"route `{name}` by"):
                    deps[node.by] = None
                    if node.by_field is not None:
                        closed = self._route_by_field(node, by_span)
            arm_asts = [a for a in ast_route.arms]
            has_else = False
            seen_labels: set[str] = set()
            for arm, arm_ast in zip(node.arms, arm_asts, strict=False):
                if arm.kind == "rule" and arm.subject is not None:
                    subject_span = arm_ast.condition.atoms[0].span if arm_ast.condition else arm_ast.span
                    if arm.subject in self.res.inputs:
                        self.used_inputs.add(arm.subject)
                    elif self._known_top_level(arm.subject, subject_span, f"rule of route `{name}`"):
                        deps[arm.subject] = None
                target_ok = self._route_target(name, arm.target, arm_ast.target_span)
                if has_else:
                    self.r.error("W402", f"`{arm.target}` can never be chosen: it comes after `else`", arm_ast.span)
                elif arm.kind == "label" and all(lab.lower() in seen_labels for lab in arm.labels):
                    self.r.error("W402", f"`{arm.target}` can never be chosen: its labels are matched by an earlier arm", arm_ast.span)
                if target_ok:
                    takes[arm.target] = None
                seen_labels.update(lab.lower() for lab in arm.labels)
                has_else = has_else or arm.kind == "else"
            if node.router is not None:  # a learned route reads the flow's inputs and always picks one of its arms
                self.used_inputs.update(self.res.inputs)
            elif not has_else and not closed:
                self.r.error("W400", f"route `{name}` has no `else`: a reply that matches no arm fails the run", ast_route.name_span,
                             "add `else -> STEP`")
            self.deps[name] = deps
            self.takes[name] = takes

    def _known_top_level(self, name: str, span: Span, what: str) -> bool:
        info = self.info.get(name)
        if info is None:
            hint = did_you_mean(name, list(self.info) + list(self.res.inputs))
            self.r.error("E201", f"{what}: `{name}` is not defined", span, hint)
            return False
        if info.loop is not None:
            self.r.error("E308", f"`{name}` is inside loop `{info.loop}`; outside it, only the loop can be named", span,
                         f"name `{info.loop}` instead")
            return False
        return True

    def _route_target(self, route: str, target: str, span: Span) -> bool:
        if target in self.res.inputs:
            self.r.error("E303", f"route target `{target}` is an input, not a step", span)
            return False
        if target == route:
            self.r.error("E303", f"route `{route}` cannot target itself", span)
            return False
        if not self._known_top_level(target, span, "route target"):
            return False
        owner = self.route_of.get(target)
        if owner is not None and owner != route:
            self.r.error("E304", f"`{target}` is already a branch of route `{owner}`", span, "a step can be the branch of one route only")
            return False
        self.route_of[target] = route
        return True

    def _decision_deps(self, route: Route) -> list[str]:
        """What a route needs before it can choose: its `by` step and rule subjects that are nodes."""
        out = [route.by] if route.by and route.by in self.info else []
        out += [a.subject for a in route.arms if a.subject and a.subject in self.info]
        return list(dict.fromkeys(out))

    def _guards(self) -> dict[str, tuple[str, int]]:
        """Branches that run only when chosen: route targets not needed to make the choice."""
        guards: dict[str, tuple[str, int]] = {}
        for name, node in self.nodes.items():
            if not isinstance(node, Route):
                continue
            needed: set[str] = set()
            for d in self._decision_deps(node):
                needed |= self._ancestors(d) | {d}
            for i, arm in enumerate(node.arms):
                if arm.target in self.info and arm.target not in needed and arm.target not in guards and self.route_of.get(arm.target) == name:
                    guards[arm.target] = (name, i)
        return guards

    def _edges_in(self, name: str) -> list[str]:
        """Every node `name` needs, its route's branches included (what cycles and dead ends are about)."""
        return [*self.deps.get(name, ()), *self.takes.get(name, ())]

    def _ancestors(self, name: str) -> set[str]:
        out: set[str] = set()
        stack = self._edges_in(name)
        while stack:
            n = stack.pop()
            if n not in out:
                out.add(n)
                stack.extend(self._edges_in(n))
        return out

    def _direct_branch_use(self, guards: dict[str, tuple[str, int]]) -> None:
        for name, deps in self.deps.items():
            node = self.nodes.get(name)
            if isinstance(node, Route):
                continue
            for d in sorted(deps):
                if d in guards and guards[d][0] != name and self.info[name].loop is None:
                    route = guards[d][0]
                    where = next((a.span for a in self.info[name].sees_atoms if a.value == d), self.info[name].name_span)
                    guard = self.nodes[name].guard
                    if guard is not None and guard.route == route:
                        self.r.error("E304", f"`{name}` sees `{d}`, but both are branches of route `{route}`: only one of them runs",
                                     where, f"a branch can see what the route saw; to use both, make `{d}` an ordinary step")
                    else:
                        self.r.error("E304", f"`{name}` sees `{d}`, which runs only when route `{route}` picks it", where,
                                     f"see `{route}` instead: it holds the output of whichever branch ran")

    # -- visibility and templates ---------------------------------------------------------

    def _visibility(self, name: str, node: Any) -> None:
        info = self.info[name]
        visible: list[str] = []
        if info.sees_all:
            visible = self._all_before(info)
        for atom in info.sees_atoms:
            if self._may_see(info, atom) and atom.value not in visible:
                visible.append(atom.value)
        for v in visible:
            if v in self.res.inputs:
                self.used_inputs.add(v)
        self._check_templates(info, node, set(visible))
        self.nodes[name] = node.model_copy(update={"sees": tuple(visible)})
        self.deps[name] = {v: None for v in visible if v in self.info}

    def _given(self, name: str, node: Use) -> None:
        """A sub-flow is given caller's names as its inputs: each must be one this node could see, as `sees` would."""
        info = self.info[name]
        given = [a.value for a in info.sees_atoms if self._may_see(info, a)]
        self.used_inputs.update(g for g in given if g in self.res.inputs)
        self.nodes[name] = node.model_copy(update={"sees": tuple(dict.fromkeys(given))})
        self.deps[name] = {g: None for g in given if g in self.info}

    def _all_before(self, info: NodeInfo) -> list[str]:
        out = list(self.res.inputs)
        for other in self.res.order[: info.index]:
            o = self.info[other]
            if o.loop is None and other not in self.route_of and other != info.loop or info.loop is not None and o.loop == info.loop:
                out.append(other)
        if info.loop is not None:
            out.append("feedback")
        return out

    def _may_see(self, info: NodeInfo, atom: Atom) -> bool:
        name = atom.value
        if name in self.res.inputs:
            return True
        if name == "feedback":
            if info.loop is None:
                self.r.error("E201", "`feedback` exists only inside a loop", atom.span)
                return False
            return True
        if name == info.name:
            self.r.error("E301", f"`{name}` cannot see itself", atom.span)
            return False
        other = self.info.get(name)
        if other is None:
            hint = did_you_mean(name, list(self.info) + list(self.res.inputs))
            self.r.error("E201", f"`{name}` is not an input or a step", atom.span, hint)
            return False
        if other.loop is not None and other.loop != info.loop:
            self.r.error("E308", f"`{name}` is inside loop `{other.loop}`; outside it, only the loop can be seen", atom.span,
                         f"see `{other.loop}` instead")
            return False
        if name == info.loop:
            self.r.error("E301", f"`{name}` is the loop this step belongs to", atom.span, "use `feedback` for the previous round")
            return False
        if info.loop is not None and other.loop == info.loop and other.index > info.index:
            self.r.error("E301", f"`{name}` comes later in loop `{info.loop}`", atom.span, "a loop member sees only earlier members (and `feedback`)")
            return False
        return True

    def _check_templates(self, info: NodeInfo, node: Any, visible: set[str]) -> None:
        task_atom = info.task_atom
        # `system` and `judge_task` are templates too, rendered with the same visibility as the task (engine.run.prompt)
        fields = [(node.task, task_atom)]
        if isinstance(node, Fuse) and node.judge_task:
            fields.append((node.judge_task, None))
        if node.params.system:
            fields.append((node.params.system, None))
        inputs = self.res.inputs
        for text, atom in fields:
            for part in templates.scan(text):
                span = _template_span(atom, part) if atom else info.name_span
                if isinstance(part, templates.Placeholder) and "." in part.name:
                    base = self._field_reference(part, span, inputs, visible)
                    if base is None:
                        continue
                    part = base
                if isinstance(part, templates.Placeholder):
                    if part.name in inputs:
                        self.used_inputs.add(part.name)
                        continue
                    if part.name in visible:
                        continue
                if isinstance(part, templates.TemplateProblem):
                    self.r.error("E105", f"`{part.text}` is not a placeholder", span, "write {name} for a value, {{ and }} for literal braces")
                elif part.name in self.info or part.name == "feedback":
                    self.r.error("E302", f"`{info.name}` cannot see `{part.name}`", span,
                                 f"add `{part.name}` to its `sees:`" if part.name != "feedback" or info.loop else "`feedback` exists only inside a loop")
                else:
                    hint = did_you_mean(part.name, list(self.info) + list(inputs))
                    self.r.error("E201", f"`{{{part.name}}}` names nothing: no input or step is called `{part.name}`", span, hint)

    def _route_by_field(self, route: Route, span: Span) -> bool:
        """`route NAME by STEP.FIELD`: the step returns the field; over an enumeration or a boolean, every arm's label is
        a value the field can take, and without `else` every value has an arm (E319). True when the field's values are a
        closed set (no reply can miss every arm, so no W400)."""
        assert route.by is not None and route.by_field is not None
        node = self.nodes.get(route.by)
        fields = getattr(node, "fields", None) or {}
        if route.by_field not in fields:
            hint = did_you_mean(route.by_field, list(fields)) or (f"`{route.by}` returns: {', '.join(fields)}" if fields else
                                                                   f"declare what `{route.by}` returns (`returns: {route.by_field} text`)")
            self.r.error("E318", f"step `{route.by}` returns no field `{route.by_field}`", span, hint)
            return True
        schema = (getattr(node, "returns", None) or {}).get("properties", {}).get(route.by_field, {})
        values = [str(v) for v in schema["enum"]] if "enum" in schema else ["true", "false"] if schema.get("type") == "boolean" else None
        if values is None:
            return False  # free text: an `else` is advised (W400), as for any label route
        labels = [label for arm in route.arms if arm.kind == "label" for label in arm.labels]
        for arm_ast in self.res.arms_ast[route.name].arms:
            for atom in arm_ast.labels:
                if atom.value not in values:
                    self.r.error("E319", f"`{route.by}.{route.by_field}` is never \"{atom.value}\": it is one of "
                                         + ", ".join(f'"{v}"' for v in values), atom.span, did_you_mean(atom.value, values))
        if not any(arm.kind == "else" for arm in route.arms):
            missing = [v for v in values if v not in labels]
            if missing:
                self.r.error("E319", f"route `{route.name}` has no arm for " + ", ".join(f'"{v}"' for v in missing)
                             + f" of `{route.by}.{route.by_field}`, and no `else`", span, "add an arm for each value, or `else -> STEP`")
        return True

    def _field_reference(self, part: templates.Placeholder, span: Span, inputs: Any,
                         visible: set[str]) -> templates.Placeholder | None:
        """`{step.field}`: the step must be visible (checked as `{step}` is, by returning it) and declare the field."""
        base, field = part.name.split(".", 1)
        if base in inputs:
            self.r.error("E318", f"input `{base}` is text: it has no field `{field}`", span, f"write {{{base}}}")
            return None
        if base not in visible:
            return templates.Placeholder(base, part.offset)  # not visible, or nothing: said as for `{base}`
        fields = getattr(self.nodes.get(base), "fields", None) or {}
        if not fields:
            self.r.error("E318", f"step `{base}` returns text, not fields: `{{{part.name}}}` names nothing", span,
                         f"declare what it returns (`returns: {field} text`), or write {{{base}}}")
        elif field not in fields:
            hint = did_you_mean(field, list(fields)) or f"`{base}` returns: {', '.join(fields)}"
            self.r.error("E318", f"step `{base}` returns no field `{field}`", span, hint)
        return None

    # -- loops ----------------------------------------------------------------------------

    def _loops(self) -> None:
        for name, node in list(self.nodes.items()):
            if not isinstance(node, Loop):
                continue
            external: set[str] = set()
            visible: set[str] = set()
            for member in node.members:
                m = self.nodes.get(member)
                if m is None:
                    continue
                for s in m.sees:
                    if s != "feedback" and self.info.get(s, None) is not None and self.info[s].loop != name:
                        external.add(s)
                    if s in self.res.inputs or (s in self.info and self.info[s].loop != name):
                        visible.add(s)
            self.deps[name] = dict.fromkeys(sorted(external))
            self.nodes[name] = node.model_copy(update={"sees": tuple(sorted(visible))})

    # -- whole-graph checks ---------------------------------------------------------------

    def _cycles(self) -> None:
        """Report each cycle once, as a path, using an iterative depth-first search (no graph library: start-up time).

        When every node sees only nodes written before it, source order is a topological
        order and there is nothing to search: the common case, checked in one pass.
        """
        info = self.info
        into = {name: self._edges_in(name) for name in self.deps if info[name].loop is None}
        if all(info[d].index < info[name].index for name, deps in into.items() for d in deps):
            return
        edges: dict[str, list[str]] = {n: [] for n, i in info.items() if i.loop is None}
        for name, deps in into.items():
            for d in sorted(deps, key=lambda n: info[n].index):
                edges.setdefault(d, []).append(name)
        state: dict[str, int] = {}  # 1 on the stack, 2 finished
        reported: set[frozenset[str]] = set()
        for root in sorted(edges, key=lambda n: info[n].index):
            if root in state:
                continue
            stack: list[tuple[str, int]] = [(root, 0)]
            path: list[str] = [root]
            state[root] = 1
            while stack:
                node, i = stack[-1]
                succ = edges.get(node, [])
                if i < len(succ):
                    stack[-1] = (node, i + 1)
                    nxt = succ[i]
                    if state.get(nxt) == 1:
                        self._report_cycle(path[path.index(nxt):], reported)
                    elif nxt not in state:
                        state[nxt] = 1
                        stack.append((nxt, 0))
                        path.append(nxt)
                else:
                    state[node] = 2
                    stack.pop()
                    path.pop()

    def _report_cycle(self, cycle: list[str], reported: set[frozenset[str]]) -> None:
        key = frozenset(cycle)
        if key in reported:
            return
        reported.add(key)
        start = min(cycle, key=lambda n: self.info[n].index)
        i = cycle.index(start)
        ordered = cycle[i:] + cycle[:i] + [start]
        self.r.error("E300", f"cycle: {' -> '.join(ordered)}", self.info[start].name_span,
                     "each arrow means 'is seen by'; a flow must be acyclic (use a loop for repetition)",
                     related=tuple((f"`{n}`, on the cycle", self.info[n].name_span) for n in ordered[1:-1]))

    def _output(self, guards: dict[str, tuple[str, int]]) -> str | None:
        top = [n for n in self.res.order if self.info[n].loop is None]
        if not top and self.res.declared:  # a step refused for its name was reported as that, not as "no steps"
            return None
        if not top:
            self.r.error("E309", "the flow has no steps", Span(1, 1, 1, 2), "add `step NAME { model: ... task: \"...\" }`")
            return None
        if self.res.output is None:
            unrouted = [n for n in top if n not in self.route_of]
            return (unrouted or top)[-1]
        span = self.res.output_span or Span(1, 1, 1, 2)
        if self.res.output in self.res.inputs:
            self.r.error("E201", f"output `{self.res.output}` is an input, not a step", span)
            return None
        if not self._known_top_level(self.res.output, span, "output"):
            return None
        if self.res.output in guards:
            route = guards[self.res.output][0]
            self.r.error("E304", f"output `{self.res.output}` is a branch of route `{route}`: the run fails whenever the route picks another branch",
                         span, f"write `output {route}`: it holds the output of whichever branch ran")
            return None
        return self.res.output

    def _dead_ends(self, output: str | None) -> None:
        consumed: set[str] = set()
        for name in self.deps:
            consumed.update(self._edges_in(name))
        for name in self.res.order:
            info = self.info[name]
            if info.loop is not None or name == output or name in consumed:
                continue
            self.r.error("W401", f"the output of `{name}` is never used: no step sees it and it is not the flow's output", info.name_span,
                         "let a later step see it, make it the `output`, or remove it")

    def _unused_inputs(self) -> None:
        for name, span in self.res.input_spans.items():
            if name not in self.used_inputs and name not in self.res.mentioned:
                self.r.error("W404", f"input `{name}` is never used", span, f"name it in a task as {{{name}}} or in a `sees:`")


def _template_span(atom: Atom, part: templates.Placeholder | templates.TemplateProblem) -> Span:
    """Point at the placeholder inside the string literal when it can be found verbatim."""
    needle = "{" + part.name + "}" if isinstance(part, templates.Placeholder) else part.text
    idx = atom.text.find(needle)
    if idx < 0:
        return atom.span
    before = atom.text[:idx]
    line = atom.span.line + before.count("\n")
    col = (idx - before.rfind("\n")) if "\n" in before else atom.span.column + idx
    return Span(line, col, line, col + len(needle), atom.span.start + idx, atom.span.start + idx + len(needle))
