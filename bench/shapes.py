"""Flow shapes for the engine benchmarks, as plain DAGs and as Baton flow text.

A shape is a list of (node, dependencies); every node makes one model call whose prompt
includes its dependencies' outputs. Route and loop shapes carry their control decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Shape:
    name: str
    nodes: list[tuple[str, list[str]]] = field(default_factory=list)
    route: tuple[str, dict[str, str]] | None = None  # (classifier, label -> branch)
    loop_rounds: int = 0  # worker/verifier rounds (the verifier accepts in the last one)

    @property
    def depth(self) -> int:
        """Model calls on the critical path."""
        if self.loop_rounds:
            return 2 * self.loop_rounds
        level: dict[str, int] = {}
        for node, deps in self.nodes:
            level[node] = 1 + max((level[d] for d in deps), default=0)
        if self.route:
            return 2
        return max(level.values())

    @property
    def calls(self) -> int:
        if self.loop_rounds:
            return 2 * self.loop_rounds
        if self.route:
            return 2
        return len(self.nodes)


def chain(n: int) -> Shape:
    return Shape(f"chain {n}", [(f"n{i}", [f"n{i - 1}"] if i else []) for i in range(n)])


def fan(width: int) -> Shape:
    nodes = [("root", [])] + [(f"w{i}", ["root"]) for i in range(width)] + [("join", [f"w{i}" for i in range(width)])]
    return Shape(f"fan-out 1>{width}>1", nodes)


def layers(depth: int, width: int) -> Shape:
    nodes: list[tuple[str, list[str]]] = []
    prev: list[str] = []
    for d in range(depth):
        cur = [f"l{d}_{i}" for i in range(width)]
        nodes += [(c, list(prev)) for c in cur]
        prev = cur
    return Shape(f"layers {depth}x{width}", nodes)


def generated(n: int) -> Shape:
    return Shape(f"generated {n}", [(f"s{i}", [f"s{j}" for j in range(max(0, i - 2), i)]) for i in range(n)])


def fuse(width: int) -> Shape:
    nodes = [(f"p{i}", []) for i in range(width)] + [("judge", [f"p{i}" for i in range(width)])]
    return Shape(f"fuse panel {width}", nodes)


def route() -> Shape:
    return Shape("route", [("triage", []), ("a", []), ("b", []), ("c", [])], route=("triage", {"a": "a", "b": "b", "c": "c"}))


def loop(rounds: int) -> Shape:
    return Shape(f"loop {rounds} rounds", [("draft", []), ("check", ["draft"])], loop_rounds=rounds)


ALL = [chain(10), fan(50), layers(5, 10), fan(500), fuse(8), route(), loop(3), generated(1000)]


def to_flow(shape: Shape) -> str:
    """The shape as a Baton flow over alias `m` (every node one step)."""
    lines = ["input question"]
    if shape.route:
        classifier, arms = shape.route
        lines.append(f'step {classifier} {{ model: m  task: "label {{question}}"  retries: 0 }}')
        lines.append(f"route r by {classifier} {{ " + "  ".join(f'"{lab}" -> {t}' for lab, t in arms.items()) + "  else -> a }")
        for t in arms.values():
            lines.append(f'step {t} {{ model: m  task: "branch {t} {{question}}"  retries: 0 }}')
        lines.append("output r")
        return "\n".join(lines) + "\n"
    if shape.loop_rounds:
        lines.append(f"loop l max {shape.loop_rounds} {{")
        lines.append('  step draft { model: m  sees: question, feedback  task: "draft"  retries: 0 }')
        lines.append('  verify check { model: m  sees: draft  task: "verify"  accept: /ACCEPT/  retries: 0 }')
        lines.append("}")
        return "\n".join(lines) + "\n"
    if shape.name.startswith("fuse"):
        width = len(shape.nodes) - 1
        lines.append(f'fuse f {{ panel: m x {width}  judge: m  task: "answer {{question}}"  retries: 0 }}')
        return "\n".join(lines) + "\n"
    for node, deps in shape.nodes:
        sees = f"  sees: {', '.join(deps)}" if deps else ""
        lines.append(f'step {node} {{ model: m{sees}  task: "work {node} on {{question}}"  retries: 0  max_tokens: 32 }}')
    lines.append(f"output {shape.nodes[-1][0]}")
    return "\n".join(lines) + "\n"
