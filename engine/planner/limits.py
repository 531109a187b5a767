"""Limits on planner-written flows: they are untrusted input, checked before anything runs.

On top of every ordinary check (only pool models, bounded loops, visibility ...), a plan
must declare the input `question`, use at most `max_steps` model-calling steps, stay
within the user's budget, and use only the constructs the user allowed. Each breach is
an E311 diagnostic, fed back to the planner like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.diagnostics import Diagnostic
from engine.model import Flow, Fuse, Loop, Node, Route, Step, Use, Verify, node_models
from engine.syntax.ast import Span

ALL_CONSTRUCTS = ("step", "fuse", "route", "loop")


@dataclass(frozen=True)
class PlanLimits:
    max_steps: int = 5
    budget_usd: float | None = None
    allow: tuple[str, ...] = ("step", "fuse")
    models: tuple[str, ...] = field(default_factory=tuple)  # empty: every alias of the pool


def _span(node: object) -> Span:
    s = getattr(node, "span", (1, 1, 1, 2, 0, 0))
    return Span(*s) if s[0] else Span(1, 1, 1, 2)


def check_limits(flow: Flow, limits: PlanLimits, needs_question: bool = True) -> list[Diagnostic]:
    """Every breach of the limits, as E311. A written plan must take the task as `input question`; a chosen one (select
    style) is given the task's words as its pattern's input instead. A sub-flow's nodes count as the plan's own."""
    out: list[Diagnostic] = []

    def err(message: str, span: Span, hint: str | None = None) -> None:
        out.append(Diagnostic("E311", message, span, hint, flow.filename))

    if needs_question and "question" not in flow.inputs:
        err("a plan must declare `input question` (the task) and use it", Span(1, 1, 1, 2), "add `input question` at the top")
    calls = 0
    for node in _all_nodes(flow):
        kind = "loop" if isinstance(node, Loop) else "route" if isinstance(node, Route) else "fuse" if isinstance(node, Fuse) else "step"
        if isinstance(node, Verify) or (isinstance(node, Step) and node.loop):
            kind = "loop"
        if kind not in limits.allow:
            err(f"`{kind}` is not allowed in this plan (allowed: {', '.join(limits.allow)})", _span(node))
        if isinstance(node, (Step, Verify, Fuse)):
            calls += 1
            for alias in node_models(node):
                if limits.models and alias not in limits.models:
                    err(f"model `{alias}` is not one the planner may use ({', '.join(limits.models)})", _span(node))
    if calls > limits.max_steps:
        err(f"the plan has {calls} steps; at most {limits.max_steps} are allowed", Span(1, 1, 1, 2), "merge or drop steps")
    if limits.budget_usd is not None and flow.budget.usd is not None and flow.budget.usd > limits.budget_usd:
        err(f"the plan's budget ${flow.budget.usd:g} is above the allowed ${limits.budget_usd:g}", Span(1, 1, 1, 2))
    return out


def _all_nodes(flow: Flow) -> Iterator[Node]:
    """The flow's nodes, each sub-flow's in place of its `use` (its steps are what the plan runs)."""
    for node in flow.nodes.values():
        if isinstance(node, Use):
            yield from _all_nodes(node.flow)
        else:
            yield node
