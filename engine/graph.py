"""The flow drawn as a graph, for `baton graph` and the critical path: a rendering, not a plan.

What runs after what is decided once, by the checker (`Flow.plan`, which the executor and
the cost model read); this module only labels the relations a reader wants to see. Nodes are the flow's top-level nodes (a loop is one node; its members hang off it as
attributes) plus one node per input. Edges carry what flows along them:
`sees` (an output is shown to a later step), `label` (a route reads its classifier),
`guard` (a branch waits for its route's decision) and `branch` (a route takes the
output of the branch that ran).
"""

from __future__ import annotations

import json
from typing import Any

import networkx as nx

from engine.model import Flow, Fuse, Loop, Route, Step, Use, Verify, node_models


def build_graph(flow: Flow) -> nx.DiGraph:
    """A DiGraph of inputs and top-level nodes with labelled edges; acyclic for a checked flow."""
    g: nx.DiGraph = nx.DiGraph(name=flow.name)
    for name in flow.inputs:
        g.add_node(name, kind="input", models=[])
    top = flow.top_level()
    for name in top:
        node = flow.nodes[name]
        attrs: dict[str, Any] = {"kind": node.kind, "models": node_models(node)}
        if isinstance(node, Fuse):
            counts = {a: node.panel.count(a) for a in dict.fromkeys(node.panel)}
            panel = ", ".join(f"{a} x{n}" if n > 1 else a for a, n in counts.items())
            last = f"judge {node.judge}" if node.judge else f"vote ({node.vote})" if node.vote else "first answer"
            attrs["roles"] = f"{panel} -> {last}" + (f", else {node.escalate}" if node.escalate else "")
        if isinstance(node, Loop):
            attrs["members"] = [(m, flow.nodes[m].kind, node_models(flow.nodes[m])) for m in node.members]
            attrs["max_rounds"] = node.max_rounds
        if isinstance(node, Use):
            attrs["uses"] = node.source
        g.add_node(name, **attrs)
    for name in top:
        node = flow.nodes[name]
        if isinstance(node, Route):
            if node.by:
                g.add_edge(node.by, name, kind="label")
            for arm in node.arms:
                if arm.subject:
                    g.add_edge(arm.subject, name, kind="rule")
                if g.has_edge(arm.target, name) and g.edges[arm.target, name]["kind"] == "branch":
                    g.edges[arm.target, name]["arm"] += " | " + arm.describe()
                else:
                    g.add_edge(arm.target, name, kind="branch", arm=arm.describe())
            continue
        for seen in node.sees:
            if seen in g and seen != "feedback":
                g.add_edge(seen, name, kind="sees")
        if isinstance(node, (Step, Verify, Fuse)):
            for placeholder in _template_inputs(flow, node):
                if not g.has_edge(placeholder, name):
                    g.add_edge(placeholder, name, kind="template")
        guard = flow.plan.guards.get(name)
        if guard is not None:  # the plan's dependencies past what the node sees are its route's decision inputs
            for dep in flow.plan.deps[name]:
                if dep in g and not g.has_edge(dep, name):
                    g.add_edge(dep, name, kind="guard", route=guard.route)
    return g


def _template_inputs(flow: Flow, node: Step | Verify | Fuse) -> list[str]:
    from engine.checks.templates import names

    return [n for n in names(node.task) if n in flow.inputs]


def critical_path(flow: Flow) -> list[str]:
    """The longest chain of model-calling nodes (each counted once): the ideal wall time in calls."""
    g = build_graph(flow)
    model_nodes = g.subgraph([n for n, d in g.nodes(data=True) if d["kind"] != "input"])
    return list(nx.dag_longest_path(model_nodes)) if model_nodes.number_of_nodes() else []


# -- renderers -------------------------------------------------------------------------


def _label(name: str, data: dict[str, Any]) -> str:
    models = data.get("roles") or ", ".join(data.get("models") or [])
    head = f"{data['kind']} {name}" if data["kind"] != "step" else name
    head += f' "{data["uses"]}"' if data.get("uses") else ""
    return f"{head}\\n{models}" if models else head


def to_mermaid(flow: Flow) -> str:
    g = build_graph(flow)
    lines = ["flowchart TD"]
    shapes = {"input": ('[/"', '"/]'), "route": ('{"', '"}'), "fuse": ('[["', '"]]'), "loop": ('(("', '"))')}
    for name, data in g.nodes(data=True):
        left, right = shapes.get(data["kind"], ('["', '"]'))
        label = _label(name, data).replace("\\n", "<br/>").replace('"', "'")
        if data["kind"] == "loop":
            members = "<br/>".join(f"{m} ({k}: {', '.join(ms)})" for m, k, ms in data["members"])
            label += f"<br/>max {data['max_rounds']}<br/>{members}"
        lines.append(f"  {name}{left}{label}{right}")
    for u, v, data in g.edges(data=True):
        tag = data["kind"] if data["kind"] != "branch" else data.get("arm", "branch")
        style = "-.->" if data["kind"] in ("guard", "label", "rule") else "-->"
        lines.append(f'  {u} {style}|"{tag.replace(chr(34), chr(39))}"| {v}')
    if flow.output in g:
        lines.append(f"  style {flow.output} stroke-width:3px")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\\\\n", "\\n") + '"'


def to_dot(flow: Flow) -> str:
    g = build_graph(flow)
    shapes = {"input": "parallelogram", "route": "diamond", "fuse": "box3d", "loop": "doubleoctagon", "step": "box"}
    lines = [f"digraph {_dot_quote(flow.name)} {{", "  rankdir=TB;"]
    for name, data in g.nodes(data=True):
        label = _label(name, data)
        if data["kind"] == "loop":
            label += f"\\nmax {data['max_rounds']}: " + ", ".join(m for m, _k, _ms in data["members"])
        extra = ", penwidth=3" if name == flow.output else ""
        lines.append(f"  {_dot_quote(name)} [shape={shapes.get(data['kind'], 'box')}, label={_dot_quote(label)}{extra}];")
    for u, v, data in g.edges(data=True):
        tag = data["kind"] if data["kind"] != "branch" else data.get("arm", "branch")
        style = ", style=dashed" if data["kind"] in ("guard", "label", "rule") else ""
        lines.append(f"  {_dot_quote(u)} -> {_dot_quote(v)} [label={_dot_quote(tag)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(flow: Flow) -> str:
    g = build_graph(flow)
    nodes = []
    for name, data in g.nodes(data=True):
        entry: dict[str, Any] = {"id": name, "kind": data["kind"], "models": data.get("models", [])}
        if data.get("uses"):
            entry["uses"] = data["uses"]
        if data["kind"] == "loop":
            entry["max_rounds"] = data["max_rounds"]
            entry["members"] = [{"id": m, "kind": k, "models": ms} for m, k, ms in data["members"]]
        nodes.append(entry)
    edges = [{"from": u, "to": v, **{k: val for k, val in d.items()}} for u, v, d in g.edges(data=True)]
    return json.dumps({"flow": flow.name, "output": flow.output, "nodes": nodes, "edges": edges}, indent=2) + "\n"
