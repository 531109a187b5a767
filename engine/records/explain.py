"""Facts a person needs about a recorded run that the record implies but does not spell out.

Why each call was made (first call, retry, fallback, escalation, cache hit), which recorded
prompt a call was sent, which steps the run's wall time waited on (its critical path), and
the flow a run recorded, checked again so its graph can be drawn. The run viewer and the
trace exporter both read them from here, so the page and the spans agree.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import networkx as nx

from engine.graph import build_graph
from engine.model import Flow
from engine.pool import Pool
from engine.run.home import RunHome
from engine.run.prompt import recorded_messages
from engine.run.reader import read_run, read_setup, recheck_flow
from engine.run.trace import Attempt, Prompt, RunSummary, StepResult, in_flight_totals


@dataclass(frozen=True)
class RecordedRun:
    """A run's record with the flow and pool it ran: what the viewer and the exporter start from."""

    summary: RunSummary
    flow: Flow | None
    pool: Pool | None
    inputs: dict[str, str]
    #: Why `flow` is None: the record's flow no longer reads or checks (it is drawn from its steps alone).
    flow_problem: str = ""

    def source_line(self, name: str) -> str:
        """The flow line that defines node `name` (stripped), or "" when the record's flow is gone or has no span for it."""
        node = self.flow.nodes.get(name) if self.flow is not None else None
        if self.flow is None or node is None or not node.span[0]:
            return ""
        lines = self.flow.source.splitlines()
        return lines[node.span[0] - 1].strip() if node.span[0] <= len(lines) else ""

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The flow's DAG (built once: the page, its critical path and its layout all read it); without a flow,
        the recorded steps as unconnected nodes."""
        if self.flow is not None:
            return build_graph(self.flow)
        g: nx.DiGraph = nx.DiGraph()
        for name, step in self.summary.steps.items():
            g.add_node(name, kind=step.kind, models=[step.model] if step.model else [])
        return g

    def top_level(self) -> list[str]:
        """The nodes that are drawn and traced: a loop's members are parts of their loop."""
        if self.flow is not None:
            return self.flow.top_level()
        return list(self.summary.steps)



def read_recorded_run(run_dir: Path) -> RecordedRun:
    """A run folder read back whole; a flow that no longer checks leaves `flow` None and says why."""
    summary = read_run(run_dir)
    try:
        source, inputs = read_setup(run_dir)
    except (OSError, ValueError, KeyError):
        return RecordedRun(summary, None, None, {}, "the run's flow and inputs are not in its record")
    try:
        pool = Pool.model_validate_json((run_dir / "pool.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RecordedRun(summary, None, None, inputs, "the run's pool.json cannot be read")
    return recorded_run_from(summary, source, inputs, pool)


def recorded_run_from(summary: RunSummary, source: str, inputs: dict[str, str], pool: Pool) -> RecordedRun:
    """A run's record from its parts, wherever they were kept (a run folder, or a replica's shared ledger)."""
    if not source.strip():  # a pool alias called through `baton serve`: one step, its messages are its input
        return RecordedRun(summary, None, pool, inputs)
    flow, problems = recheck_flow(source, pool, summary.flow_file)
    if flow is None:
        return RecordedRun(summary, None, pool, inputs, f"the recorded flow does not check: {problems}")
    if summary.status == "running":
        summary = totals_so_far(summary, flow.counted())
    return RecordedRun(summary, flow, pool, inputs)


def totals_so_far(summary: RunSummary, top_level: list[str]) -> RunSummary:
    """A run in flight as it stands: its summary on disk holds only what earlier attempts spent, so the
    steps this attempt has finished are added, and the wall time runs to now."""
    live = summary.model_copy()
    live.add_totals(in_flight_totals(summary, summary.steps, top_level))
    live.duration_s = round(summary.duration_s + max(0.0, time.time() - summary.started), 2) if summary.started else 0.0
    return live


def load_recorded_run(run_id: str, home: str | Path | None = None) -> RecordedRun:
    """A run by id or unique prefix, with its flow; `UnknownRun` when none (or several) match."""
    return read_recorded_run(RunHome(home).find_run(run_id))


def call_causes(step: StepResult) -> list[str]:
    """Why each of a step's attempts was made, in order: `first call`, `retry after timeout`,
    `fallback after http_5xx`, `escalation after expect`, `cache hit`, `refused by the budget`."""
    out: list[str] = []
    previous: dict[str, Attempt] = {}  # the last attempt of each caller (a panel's members call side by side)
    for a in step.attempts:
        caller = a.role
        before = previous.get(caller)
        if a.from_cache:
            why = "cache hit"
        elif before is None or before.answered:
            why = "first call"
        elif before.status == "rejected":
            why = f"escalation after {before.cause or 'a rejected reply'}"
        elif before.alias == a.alias:
            why = f"retry after {before.cause}"
        else:
            why = f"fallback after {before.cause}"
        if a.status == "refused":
            why += " (refused by the budget)"
        out.append(why)
        previous[caller] = a
    return out


def prompt_role(attempt: Attempt) -> str:
    """The role of the recorded prompt an attempt sent: a panel's members and an escalation share the panel's;
    a loop's attempt `worker r2 draft` sent the prompt `r2 draft`."""
    role = attempt.role
    if role.startswith("panel[") or role == "escalate":
        return "panel"
    head, _, rest = role.partition(" ")
    return rest if rest else head


def prompt_for(step: StepResult, attempt: Attempt) -> Prompt | None:
    wanted = prompt_role(attempt)
    return next((p for p in step.prompts if p.role == wanted), None)


def critical_path(run: RecordedRun) -> list[str]:
    """The chain of steps the run's end waited on: from the output step, back through whichever dependency finished last."""
    steps = run.summary.steps
    g = run.graph
    ran = {n for n, s in steps.items() if s.finished > 0 and s.status != "skipped"}
    end = run.summary.output_step if run.summary.output_step in ran else max(ran, key=lambda n: steps[n].finished, default=None)
    path: list[str] = []
    while end is not None and end not in path:
        path.append(end)
        before = [p for p in g.predecessors(end) if p in ran] if end in g else []
        end = max(before, key=lambda n: steps[n].finished, default=None)
    return path[::-1]


def pretty_messages(prompt: Prompt) -> str:
    """The exact messages a prompt was sent as, as indented JSON."""
    return json.dumps(list(recorded_messages(prompt)), ensure_ascii=False, indent=2)
