"""The execution plan of a checked flow: what each top-level node waits for, and an order to run them in.

Built once, by the checker, from the finished nodes (no graph library here: `baton
validate` stays quick to start); the executor, `engine.graph` and the cost model read it
from `Flow.plan` instead of working it out again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.model import ExecutionPlan, Guard, Route


def execution_plan(nodes: Mapping[str, Any], inputs: Mapping[str, Any], order: tuple[str, ...]) -> ExecutionPlan:
    """The plan of an acyclic, checked set of nodes (`order` is source order)."""
    top = [n for n in order if nodes[n].loop is None]
    deps: dict[str, tuple[str, ...]] = {}
    guards: dict[str, Guard] = {}
    for name in top:
        node = nodes[name]
        if isinstance(node, Route):
            waits = [node.by, *(a.subject for a in node.arms)]
        else:
            waits = [s for s in node.sees if s != "feedback"]
        guard = node.guard
        if guard is not None:
            guards[name] = guard
            route = nodes[guard.route]
            waits += [route.by, *(a.subject for a in route.arms)]
        deps[name] = tuple(dict.fromkeys(w for w in waits if w and w in nodes and w not in inputs))
    return ExecutionPlan(deps=deps, order=_topological(top, deps), guards=guards)


def _topological(top: list[str], deps: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Kahn's algorithm, taking ready nodes in source order (so the order is stable and reads like the file)."""
    waiting = {n: set(deps[n]) for n in top}
    dependents: dict[str, list[str]] = {n: [] for n in top}
    for n in top:
        for d in deps[n]:
            dependents[d].append(n)
    position = {n: i for i, n in enumerate(top)}
    ready = sorted((n for n in top if not waiting[n]), key=position.__getitem__)
    out: list[str] = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for m in dependents[n]:
            waiting[m].discard(n)
            if not waiting[m]:
                ready.append(m)
        ready.sort(key=position.__getitem__)
    assert len(out) == len(top), "a checked flow is acyclic"
    return tuple(out)
