"""The validated flow: typed, immutable, with every name resolved.

`engine.checks` builds a `Flow` from a syntax tree once every check has passed, so code
above this layer (graph, runtime, planner) never re-checks what a flow means. Each node
keeps its source `Span` for run-time messages that point back at the flow.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.pool import ModelSpec

SpanTuple = tuple[int, int, int, int, int, int]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


ConditionKind = Literal["matches", "not_matches", "contains", "not_contains", "json", "equals", "not_equals", "at_least",
                        "at_most"]


class Condition(Frozen):
    """A test on a text, the one meaning of `matches` / `contains` / `not ...` / `json`.

    An `expect:` criterion on a step's reply is a condition (a failure escalates to the next
    model), and so is a route rule's test on its subject (`when x matches /re/`).

    With `field`, the test is on one field of a reply that `returns:` fields (`expect: verdict
    "accept"`, `confidence at least 0.7`, `topic contains "refund"`): `equals` compares with
    the JSON value in `pattern`, `at_least`/`at_most` with the number in it, and the text
    tests read the field as a template would show it. A reply without the field fails.
    """

    kind: ConditionKind
    pattern: str = ""
    field: str | None = None

    def holds(self, text: str) -> bool:
        if self.field is not None:
            return self._field_holds(text, self.field)
        if self.kind == "json":
            try:
                json.loads(text)
            except ValueError:
                return False
            return True
        found = re.search(self.pattern, text) is not None if "matches" in self.kind else self.pattern in text
        return not found if self.kind.startswith("not_") else found

    def _field_holds(self, text: str, field: str) -> bool:
        try:
            data = json.loads(text)
        except ValueError:
            return False
        if not isinstance(data, dict) or field not in data:
            return False
        value = data[field]
        if self.kind in ("equals", "not_equals"):
            same = _same_json(value, json.loads(self.pattern))
            return same if self.kind == "equals" else not same
        if self.kind in ("at_least", "at_most"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            bound = float(self.pattern)
            return value >= bound if self.kind == "at_least" else value <= bound
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return Condition(kind=self.kind, pattern=self.pattern).holds(shown)

    def describe(self) -> str:
        if self.kind == "json":
            return "json"
        if self.kind in ("equals", "not_equals"):
            return f"{'not ' if self.kind == 'not_equals' else ''}{self.field} {self.pattern}"
        if self.kind in ("at_least", "at_most"):
            return f"{self.field} {self.kind.replace('_', ' ')} {self.pattern}"
        shown = f"/{self.pattern}/" if "matches" in self.kind else f'"{self.pattern}"'
        words = self.kind.replace('_', ' ')
        if self.field is not None:
            negate, _, op = words.rpartition(" ")
            return f"{negate + ' ' if negate else ''}{self.field} {op} {shown}"
        return f"{words} {shown}"


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality that keeps `true` apart from `1` (Python's `True == 1` does not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


#: An `expect:` criterion: a `Condition` on the reply.
Check = Condition


class Params(Frozen):
    """Model request parameters a step may set."""

    temperature: float = 0.0
    max_tokens: int = 1024
    top_p: float | None = None
    reasoning: Literal["low", "medium", "high"] | None = None
    system: str | None = None
    seed: int | None = None
    #: The reply must be JSON, of this schema when one is given (chat completions' `response_format`: `{"type":
    #: "json_schema", "json_schema": {"name", "schema"}}` or `{"type": "json_object"}`). Set by `baton serve` for a
    #: request that asks for structured output; enforced by the provider where it can, and checked on every reply.
    response_format: dict[str, Any] | None = None
    #: A client's tools, in chat completions' form, and its `tool_choice`: offered to the step as sent (`baton serve`
    #: offers them to a flow's output step). A reply of tool calls is then the step's answer.
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: Any = None


class Guard(Frozen):
    """A node that runs only when a route picks it."""

    route: str
    arm: int


class CallSpec(Frozen):
    """What every model-calling node shares: visibility, task, models, policy."""

    name: str
    sees: tuple[str, ...] = ()
    task: str = ""
    params: Params = Params()
    retries: int = 2
    timeout: float = 120.0
    loop: str | None = None
    guard: Guard | None = None
    span: SpanTuple = (0, 0, 0, 0, 0, 0)
    #: `returns:` — the JSON Schema the reply must match (also the node's `params.response_format`), and each top-level
    #: field's type in words: what `{step.field}` in a template may name.
    returns: dict[str, Any] | None = None
    fields: dict[str, str] = Field(default_factory=dict)


class Step(CallSpec):
    """One model call (with retries, fallbacks and escalation).

    `choices`: the reply must be one of these texts (a label, a verdict). Any model's reply is
    checked (a miss is a failed check, as `expect` is), and the local model is also constrained
    to them by a grammar; the step's output is the choice as written.
    """

    kind: Literal["step"] = "step"
    models: tuple[str, ...]
    fallbacks: tuple[str, ...] = ()
    expect: tuple[Check, ...] = ()
    choices: tuple[str, ...] = ()
    #: `tools: client`: when `baton serve` is given a client's tools, this step is offered them too (the output step
    #: always is). A reply of tool calls then ends the run: no new step starts, and those calls are its answer.
    client_tools: bool = False


class Verify(CallSpec):
    """The verifier of a loop: its reply is accepted when it matches `accept`."""

    kind: Literal["verify"] = "verify"
    models: tuple[str, ...]
    fallbacks: tuple[str, ...] = ()
    accept: str = "ACCEPT"
    #: `accept: verdict "accept"` on a verifier that `returns:` fields: accepted when that field has that value.
    accept_field: tuple[str, str] | None = None
    choices: tuple[str, ...] = ()


class Fuse(CallSpec):
    """A panel answering in parallel, then a judge (or a vote) over the answers."""

    kind: Literal["fuse"] = "fuse"
    panel: tuple[str, ...]
    judge: str | None = None
    judge_task: str = ""
    quorum: int = 1
    fallbacks: tuple[str, ...] = ()
    vote: Literal["number", "text"] | None = None
    agree: int = 1
    #: When two or more answers tie for the most votes: `first` takes the answer of the first-listed panel member among
    #: them (so the panel's order decides, and the flow says so); `escalate` counts a tie as no agreement.
    tie: Literal["first", "escalate"] = "first"
    escalate: str | None = None
    #: A learned answer scorer's file (resolved): the vote takes the answer it rates most likely right, and with
    #: `escalate`, below `threshold` (else the file's calibrated one) the escalate model answers instead.
    scorer: str | None = None
    threshold: float | None = None
    #: In a sub-flow whose models were bound to its caller's: the panel under the names the scorer was trained on.
    scorer_panel: tuple[str, ...] | None = None


class Arm(Frozen):
    """One way out of a route: labels, a rule over a name, or `else`."""

    kind: Literal["label", "rule", "else"]
    labels: tuple[str, ...] = ()
    subject: str | None = None
    op: Literal["matches", "contains", "not_matches", "not_contains"] | None = None
    pattern: str = ""
    target: str

    @property
    def condition(self) -> Condition:
        """A rule arm's test on its subject."""
        return Condition(kind=self.op or "contains", pattern=self.pattern)

    def describe(self) -> str:
        if self.kind == "label":
            return " | ".join(f'"{lab}"' for lab in self.labels)
        if self.kind == "rule":
            return f"when {self.subject} {self.condition.describe()}"
        return "else"


class Route(Frozen):
    """Runs exactly one of its targets, chosen by a step's label or by rules over names."""

    kind: Literal["route"] = "route"
    name: str
    by: str | None = None
    #: `by triage.priority`: the field of `by`'s reply (it `returns:` fields) whose value picks the arm, exactly.
    by_field: str | None = None
    arms: tuple[Arm, ...]
    #: A learned route: the router file (resolved path) that picks among the arms' models, and its rule.
    router: str | None = None
    threshold: float | None = None
    tradeoff: float | None = None
    #: In a sub-flow whose models were bound to its caller's: each arm's label (the name the router was trained on)
    #: and the alias that arm now calls, whose prices weigh it.
    arm_models: dict[str, str] = Field(default_factory=dict)
    loop: str | None = None
    guard: Guard | None = None
    span: SpanTuple = (0, 0, 0, 0, 0, 0)


class Loop(Frozen):
    """Worker steps and a verifier, repeated until the verifier accepts or `max` rounds."""

    kind: Literal["loop"] = "loop"
    name: str
    max_rounds: int
    members: tuple[str, ...]
    verifier: str
    result: str
    exhausted: Literal["last", "fail", "escalate"] = "last"
    sees: tuple[str, ...] = ()
    guard: Guard | None = None
    loop: str | None = None
    span: SpanTuple = (0, 0, 0, 0, 0, 0)


class Use(Frozen):
    """Another flow run as one node (`use "FILE" as NAME { ... }`), with what it is given and nothing else.

    `flow` is the sub-flow as checked in its own file, its model aliases renamed to the ones the caller bound them to.
    Each of its inputs is given either a caller's input or node (`inputs`: its output text, never its prompt) or a
    literal text (`texts`). Its result is its own output node's; its steps are recorded as `NAME/STEP`.
    """

    kind: Literal["use"] = "use"
    name: str
    #: The sub-flow as written (`"critique"`, `"review.flow"`) and the file it was read from.
    source: str
    path: str
    flow: Flow
    inputs: dict[str, str] = Field(default_factory=dict)
    texts: dict[str, str] = Field(default_factory=dict)
    #: The caller's names it is given (its dependencies), in binding order.
    sees: tuple[str, ...] = ()
    #: What its output returns: the sub-flow output node's declaration, so `{NAME.field}` and routes on fields work.
    returns: dict[str, Any] | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    guard: Guard | None = None
    loop: str | None = None
    span: SpanTuple = (0, 0, 0, 0, 0, 0)


#: How a sub-flow's node is named in its caller's record: `review/critique`.
SUBFLOW_SEPARATOR = "/"


Node = Annotated[Step | Verify | Fuse | Route | Loop | Use, Field(discriminator="kind")]


def node_models(node: Step | Verify | Fuse | Route | Loop | Use) -> list[str]:
    """Every alias a node may call, in policy order, each once: models, fallbacks, panel, judge, escalate."""
    # isinstance, not getattr with a default: a pydantic model's missing attribute is a slow exception.
    if isinstance(node, Step | Verify):
        return list(dict.fromkeys((*node.models, *node.fallbacks)))
    if isinstance(node, Fuse):
        aliases = [*node.fallbacks, *node.panel]
        aliases += [a for a in (node.judge, node.escalate) if a]
        return list(dict.fromkeys(aliases))
    if isinstance(node, Use):
        return node.flow.aliases()
    return []


#: The input that carries a conversation's earlier turns (`baton serve` fills it from the request's messages). It is
#: optional: a flow that declares it runs on a single question too, with an empty history.
HISTORY = "history"


class InputSpec(Frozen):
    name: str
    description: str = ""


class Budget(Frozen):
    """Hard caps for one run; None means no cap of that kind."""

    #: Finite and >= 0 by construction: a NaN cap made every comparison false, so no call was ever refused.
    usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    tokens: int | None = Field(default=None, ge=0)
    calls: int | None = Field(default=None, ge=0)


class ExecutionPlan(Frozen):
    """What the checker learned about running a flow, kept so that nothing after it works it out again.

    `deps`: for each top-level node, the nodes it waits for (what it sees, a route's
    classifier and rule subjects, and for a route branch what its route decides by), in
    that order; inputs are not nodes. `order`: the top-level nodes in an order where each
    comes after everything it waits for. `guards`: route branches and the route that picks
    them. The executor, the graph and the cost model read it.
    """

    deps: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    order: tuple[str, ...] = ()
    guards: dict[str, Guard] = Field(default_factory=dict)


class Flow(Frozen):
    """A checked flow. `nodes` holds every node, loop members included; `order` is source order."""

    name: str
    description: str = ""
    version: int = 1
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    budget: Budget = Budget()
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    nodes: dict[str, Node] = Field(default_factory=dict)
    order: tuple[str, ...] = ()
    output: str
    source: str = ""
    filename: str = "<flow>"
    plan: ExecutionPlan = ExecutionPlan()

    def guarded_by(self, target: str, route: str) -> bool:
        """Whether `target` runs only when `route` picks it (rather than being needed for the decision)."""
        guard = self.plan.guards.get(target)
        return guard is not None and guard.route == route

    def where(self, name: str) -> str | None:
        """`file:line:col` of a node's definition, for errors at run time; None for a node without a span."""
        node = self.nodes.get(name)
        use, _, inner = name.partition(SUBFLOW_SEPARATOR)
        if node is None and inner and isinstance(self.nodes.get(use), Use):  # a sub-flow's step: in its own file
            return self.nodes[use].flow.where(inner)  # type: ignore[union-attr]
        if node is None or not node.span[0]:
            return None
        return f"{self.filename}:{node.span[0]}:{node.span[1]}"

    def uses(self) -> list[Use]:
        """Its sub-flow nodes, top-level (a loop holds only steps and a verifier)."""
        return [n for n in self.nodes.values() if isinstance(n, Use)]

    def counted(self) -> list[str]:
        """The names whose calls a run's totals count: its top-level nodes, and, nested, its sub-flows' (a sub-flow's
        steps are counted in its use once the use has finished, and by themselves while it runs or after a crash)."""
        names = self.top_level()
        for use in self.uses():
            names += [f"{use.name}{SUBFLOW_SEPARATOR}{n}" for n in use.flow.counted()]
        return names

    def top_level(self) -> list[str]:
        """Names of the nodes outside any loop, in source order."""
        return [n for n in self.order if self.nodes[n].loop is None]

    def aliases(self) -> list[str]:
        """Every model alias the flow may call (models, fallbacks, panels, judges, escalations), sorted, each once."""
        return sorted({a for n in self.nodes.values() for a in node_models(n)})


Use.model_rebuild()
