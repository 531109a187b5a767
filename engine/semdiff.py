"""What a change to a flow means: `baton diff OLD NEW`, over two checked flows rather than two texts.

Nodes are matched by name, then (for the ones left over) by content: same kind and a task
at least 80% alike is a rename, and references to a renamed node are read under its new
name, so a rename is one change and not a change in every step that sees it. Per node it
reports what changed in the order a reviewer should read it: visibility (`sees`, the
security boundary) first, then models, fallbacks, the task (a word diff), checks and
parameters. Then the DAG's edges and the worst case before and after. Comparing the
checked `Flow`s means layout, comments and spelling of defaults are no change at all.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from engine.checks.cost import WorstCase
from engine.graph import build_graph
from engine.model import Condition, Flow, Use

#: Node fields compared, in the order changes are reported; `sees` first (visibility).
FIELDS = ("sees", "kind", "source", "inputs", "texts", "calls", "models", "panel", "judge", "escalate", "fallbacks", "task", "judge_task", "system", "expect", "choices",
          "fields", "returns", "accept", "quorum", "vote", "agree", "tie", "scorer", "threshold", "by", "arms", "members", "max_rounds", "verifier", "result", "exhausted", "loop",
          "guard", "temperature", "max_tokens", "top_p", "reasoning", "seed", "retries", "timeout")
TEXT_FIELDS = {"task", "judge_task", "system"}
RENAME_SIMILARITY = 0.8


@dataclass
class NodeChange:
    name: str
    kind: str
    renamed_from: str | None = None
    #: (field, before, after), in `FIELDS` order; text fields (task, system, judge_task) as they were and are.
    changes: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def visibility(self) -> bool:
        return any(f == "sees" for f, _b, _a in self.changes)


@dataclass
class FlowDiff:
    flow: list[tuple[str, str, str]] = field(default_factory=list)  # name, description, inputs, budget, output
    added: list[tuple[str, str]] = field(default_factory=list)  # (name, kind)
    removed: list[tuple[str, str]] = field(default_factory=list)
    changed: list[NodeChange] = field(default_factory=list)
    edges_added: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, kind)
    edges_removed: list[tuple[str, str, str]] = field(default_factory=list)
    worst_before: WorstCase | None = None
    worst_after: WorstCase | None = None

    @property
    def equal(self) -> bool:
        return not (self.flow or self.added or self.removed or self.changed or self.edges_added or self.edges_removed)


def _node_fields(node: Any, rename: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = node.model_dump(exclude={"span", "name", "params", "flow"})
    data.update(node.params.model_dump() if hasattr(node, "params") else {})
    if isinstance(node, Use):  # a sub-flow: which one, what it is given, which of our models it calls
        data["inputs"] = {k: rename.get(v, v) for k, v in node.inputs.items()}
        data["calls"] = node.flow.aliases()
    for key in ("sees", "members"):
        if key in data:
            data[key] = [rename.get(n, n) for n in data[key]]
    for key in ("by", "verifier", "result", "loop"):
        if data.get(key):
            data[key] = rename.get(data[key], data[key])
    if data.get("arms"):
        data["arms"] = [{**arm, "target": rename.get(arm["target"], arm["target"]),
                         "subject": rename.get(arm["subject"], arm["subject"]) if arm.get("subject") else arm.get("subject")}
                        for arm in data["arms"]]
    if data.get("guard"):
        data["guard"] = {**data["guard"], "route": rename.get(data["guard"]["route"], data["guard"]["route"])}
    return data


def _show(key: str, value: Any) -> str:
    if value is None or value == [] or value == ():
        return "none" if key == "sees" else "-"
    if key in ("inputs", "texts"):
        return ", ".join(f"{k}: {v if key == 'inputs' else repr(v)}" for k, v in value.items()) if value else "-"
    if key in ("sees", "models", "panel", "fallbacks", "members", "choices", "calls"):
        joiner = " then " if key == "models" else ", "
        return joiner.join(str(v) for v in value)
    if key == "fields":
        return ", ".join(f"{name} {kind}" for name, kind in value.items()) if value else "text (no fields)"
    if key == "returns":
        return "a JSON Schema" if value else "-"
    if key == "expect":
        return ", ".join(Condition.model_validate(c).describe() for c in value)
    if key == "arms":
        return "; ".join(_arm(a) for a in value)
    if key == "guard":
        return f"branch of route {value['route']}"
    return str(value)


def _arm(a: dict[str, Any]) -> str:
    if a["kind"] == "label":
        return " | ".join(f'"{lab}"' for lab in a["labels"]) + f" -> {a['target']}"
    if a["kind"] == "rule":
        return f"when {a['subject']} {a['op']} {a['pattern']!r} -> {a['target']}"
    return f"else -> {a['target']}"


def word_diff(before: str, after: str) -> str:
    """`[-removed-]{+added+}` inline, as `git diff --word-diff` shows it."""
    a, b = before.split(), after.split()
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.extend(a[i1:i2])
            continue
        if i2 > i1:
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(out)


def _renames(old: Flow, new: Flow) -> dict[str, str]:
    """Old name -> new name, for nodes that lost their name but kept their content."""
    gone = [n for n in old.order if n not in new.nodes]
    fresh = [n for n in new.order if n not in old.nodes]
    out: dict[str, str] = {}
    for name in gone:
        node = old.nodes[name]
        best, best_ratio = None, RENAME_SIMILARITY
        for candidate in fresh:
            other = new.nodes[candidate]
            if other.kind != node.kind or candidate in out.values():
                continue
            ratio = difflib.SequenceMatcher(a=_signature(node), b=_signature(other), autojunk=False).ratio()
            if ratio >= best_ratio:
                best, best_ratio = candidate, ratio
        if best is not None:
            out[name] = best
    return out


def _signature(node: Any) -> str:
    """What identifies a node apart from its name: its task (or, for routes and loops, its shape)."""
    if isinstance(node, Use):
        return f"{node.source} {sorted(node.inputs.items())} {sorted(node.texts.items())}"
    return str(getattr(node, "task", "") or node.model_dump(exclude={"span", "name"}))


def diff_flows(old: Flow, new: Flow, worst_before: WorstCase | None = None, worst_after: WorstCase | None = None) -> FlowDiff:
    d = FlowDiff(worst_before=worst_before, worst_after=worst_after)
    rename = _renames(old, new)
    for key, was, now in (("name", old.name, new.name), ("description", old.description, new.description),
                               ("inputs", ", ".join(old.inputs), ", ".join(new.inputs)),
                               ("budget", _budget(old), _budget(new)), ("output", rename.get(old.output, old.output), new.output)):
        if was != now:
            d.flow.append((key, was or "-", now or "-"))
    for name in old.order:
        target = rename.get(name, name)
        if target not in new.nodes:
            d.removed.append((name, old.nodes[name].kind))
            continue
        before, after = _node_fields(old.nodes[name], rename), _node_fields(new.nodes[target], {})
        change = NodeChange(target, new.nodes[target].kind, renamed_from=name if target != name else None)
        for key in FIELDS:
            if before.get(key) != after.get(key):
                if key == "returns" and before.get("fields") != after.get("fields"):
                    continue  # the fields' change says it
                if key == "returns" and before.get(key) and after.get(key):
                    change.changes.append((key, "a JSON Schema", "a changed JSON Schema (its nested fields or constraints)"))
                elif key in TEXT_FIELDS:
                    change.changes.append((key, str(before.get(key) or ""), str(after.get(key) or "")))
                else:
                    change.changes.append((key, _show(key, before.get(key)), _show(key, after.get(key))))
        if change.changes or change.renamed_from:
            d.changed.append(change)
    renamed_to = set(rename.values())
    d.added = [(n, new.nodes[n].kind) for n in new.order if n not in old.nodes and n not in renamed_to]
    d.changed.sort(key=lambda c: not c.visibility)  # visibility first: it is what a reviewer must not miss
    old_edges = {(rename.get(u, u), rename.get(v, v), k) for u, v, k in build_graph(old).edges(data="kind")}
    new_edges = set(build_graph(new).edges(data="kind"))
    d.edges_added = sorted(new_edges - old_edges)
    d.edges_removed = sorted(old_edges - new_edges)
    return d


def _budget(flow: Flow) -> str:
    b = flow.budget
    parts = [f"${b.usd:g}" if b.usd is not None else "", f"{b.tokens} tokens" if b.tokens else "", f"{b.calls} calls" if b.calls else ""]
    return ", ".join(p for p in parts if p)


EDGE_WORDS = {"sees": "{v} sees {u}", "template": "{v} names {u} in its task", "label": "{v} routes on {u}'s label",
              "rule": "{v} has a rule on {u}", "branch": "{v} takes {u}'s output", "guard": "{v} waits for {u}"}


def render_flow_diff(d: FlowDiff, old_name: str, new_name: str) -> str:
    """The diff as a reviewer reads it."""
    if d.equal:
        return f"{old_name} -> {new_name}: no change in meaning"
    out = [f"{old_name} -> {new_name}"]
    for key, before, after in d.flow:
        out.append(f"  ~ flow {key}: {before} -> {after}")
    for name, kind in d.removed:
        out.append(f"  - {kind} {name}")
    for name, kind in d.added:
        out.append(f"  + {kind} {name}")
    for c in d.changed:
        head = f"  ~ {c.kind} {c.name}" + (f" (renamed from {c.renamed_from})" if c.renamed_from else "")
        out.append(head + ("  [VISIBILITY]" if c.visibility else ""))
        for key, before, after in c.changes:
            out.append(f"      {key}: {word_diff(before, after)}" if key in TEXT_FIELDS else f"      {key}: {before} -> {after}")
    if d.edges_added or d.edges_removed:
        out.append("  edges:")
        out.extend("    + " + EDGE_WORDS.get(k, "{v} " + k + " {u}").format(u=u, v=v) for u, v, k in d.edges_added)
        out.extend("    - " + EDGE_WORDS.get(k, "{v} " + k + " {u}").format(u=u, v=v) for u, v, k in d.edges_removed)
    if d.worst_before is not None and d.worst_after is not None:
        b, a = d.worst_before, d.worst_after
        sign = "+" if a.usd >= b.usd else "-"
        out.append(f"  worst case: {b.calls} calls, ~{b.tokens} tokens, ${b.usd:.4f} -> {a.calls} calls, ~{a.tokens} tokens, "
                   f"${a.usd:.4f} ({sign}${abs(a.usd - b.usd):.4f})")
    return "\n".join(out)


def flow_diff_json(d: FlowDiff) -> dict[str, Any]:
    return {
        "equal": d.equal,
        "flow": [{"field": k, "before": b, "after": a} for k, b, a in d.flow],
        "added": [{"name": n, "kind": k} for n, k in d.added],
        "removed": [{"name": n, "kind": k} for n, k in d.removed],
        "changed": [{"name": c.name, "kind": c.kind, "renamed_from": c.renamed_from, "visibility": c.visibility,
                     "changes": [{"field": f, "before": b, "after": a, **({"word_diff": word_diff(b, a)} if f in TEXT_FIELDS else {})}
                                 for f, b, a in c.changes]} for c in d.changed],
        "edges_added": [{"from": u, "to": v, "kind": k} for u, v, k in d.edges_added],
        "edges_removed": [{"from": u, "to": v, "kind": k} for u, v, k in d.edges_removed],
        "worst_case": {"before": d.worst_before.to_json() if d.worst_before else None,
                       "after": d.worst_after.to_json() if d.worst_after else None},
    }
