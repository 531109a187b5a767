"""The checked flow's execution plan: built once by the checker, the same DAG the graph draws."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
from pydantic import ValidationError

from engine.graph import build_graph
from engine.loading import load_flow
from tests.conftest import ROOT, WORKFLOWS

FLOWS = sorted(WORKFLOWS.glob("*.flow")) + sorted((WORKFLOWS / "eval").glob("*.flow"))


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_the_plan_is_the_graph_the_executor_used_to_build(path: Path) -> None:
    flow, _pool = load_flow(path)
    g = build_graph(flow)
    expected = {n: [u for u in g.predecessors(n) if u not in flow.inputs and g.edges[u, n]["kind"] != "branch"] for n in flow.top_level()}
    assert {n: list(d) for n, d in flow.plan.deps.items()} == expected
    order = list(flow.plan.order)
    assert sorted(order) == sorted(flow.top_level())
    assert all(order.index(d) < order.index(n) for n, deps in flow.plan.deps.items() for d in deps)
    assert nx.is_directed_acyclic_graph(g)


def test_a_checked_flow_is_immutable() -> None:
    flow, _pool = load_flow(WORKFLOWS / "route_label.flow")
    with pytest.raises(ValidationError):
        flow.output = "x"  # type: ignore[misc]
    node = next(iter(flow.nodes.values()))
    with pytest.raises(ValidationError):
        node.name = "x"
    engine = ROOT / "engine"
    assert not [p for p in engine.rglob("*.py") if "object.__setattr__" in p.read_text()]
