"""Rendering run records for people: the run list and a per-step view of one run.

`show` answers, for each step: which model produced the output, why that model (first
choice, fallback, escalation, route decision, judge), every attempt with its cause,
tokens, cost and latency, verdicts and skipped branches. Runs are read by
`engine.run.reader` (`load_run`, `list_runs`, re-exported here), as `--resume` reads them.
"""

from __future__ import annotations

import json

from engine.run.reader import list_runs, load_run
from engine.run.trace import RunSummary, StepResult, is_nested, nested_in
from engine.terminal import for_terminal

__all__ = ["list_runs", "load_run", "render_run", "run_json", "runs_table"]


def runs_table(runs: list[RunSummary]) -> str:
    rows = [("RUN", "FLOW", "STATUS", "COST", "CALLS", "DURATION")]
    for r in runs:
        rows.append((r.run_id, r.flow, r.status, f"${r.cost:.4f}", str(r.calls), f"{r.duration_s:.1f}s"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return for_terminal("\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows))


def _short(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def render_run(summary: RunSummary, full_output_step: str | None = None) -> str:
    lines = [
        f"run {summary.run_id}  flow {summary.flow}  {summary.status}",
        f"  cost ${summary.cost:.6f}  calls {summary.calls}  cache hits {summary.cache_hits}  "
        f"tokens {summary.input_tokens} in / {summary.output_tokens} out  {summary.duration_s:.2f}s"
        + (f"  (attempt {summary.attempts_of_run} of this run)" if summary.attempts_of_run > 1 else ""),
    ]
    if summary.estimated_cost > 0:
        lines.append(f"  of the cost, ${summary.estimated_cost:.6f} is estimated: replies without readable usage were booked at their worst case")
    lines.extend(f"  warning: {w}" for w in summary.warnings)
    if summary.error:
        lines.append(f"  error: {summary.error}")
    if summary.error_at:
        lines.append(f"  at: {summary.error_at} (step `{summary.error_step}`)")
    lines.append("")
    for name, step in summary.steps.items():
        if not is_nested(name):
            lines.extend(_render_nested(summary, step, full_output_step, 0))
    why = {"budget_exhausted": "the budget ran out", "interrupted": "the run was interrupted",
           "running": "the run has not finished"}.get(summary.status, f"the run {summary.status}")
    shown = _short(summary.output, 300) if summary.output is not None else f"none ({why})"
    if summary.tool_calls_by:
        calls = ", ".join(str((c.get("function") or {}).get("name")) for c in summary.steps[summary.tool_calls_by].tool_calls)
        lines.append(f"answer: the tool calls of step `{summary.tool_calls_by}` ({calls}), for the client to run")
    else:
        lines.append(f"output ({summary.output_step}): {shown}")
    return for_terminal("\n".join(lines))


def _render_nested(summary: RunSummary, step: StepResult, full_output_step: str | None, depth: int) -> list[str]:
    """A step, then (for a `use`) the steps of its sub-run under it, indented."""
    lines = [("    " * depth + line) if line else line for line in _render_step(step.name, step, full_output_step == step.name)]
    for inner in nested_in(summary.steps, step.name):
        lines.extend(_render_nested(summary, inner, full_output_step, depth + 1))
    return lines


def _render_step(name: str, s: StepResult, full: bool) -> list[str]:
    head = f"{s.kind} {name}: {s.status}"
    if s.model:
        head += f"  model {s.model}"
    if s.resumed:
        head += "  (from the previous attempt; not called again)"
    out = [head]
    if s.reason:
        out.append(f"  why: {s.reason}")
    if s.tools:
        out.append(f"  tools offered: {', '.join(s.tools)}")
    if s.decision is not None:
        d = s.decision
        label = f"label {d.label!r}, " if d.label is not None else ""
        out.append(f"  decision: {label}{d.matched} -> {d.chosen}; skipped: {', '.join(d.skipped) or 'none'}")
        if d.predictions:
            out.append("  router predicted: " + ", ".join(f"{a} {p:.3f} (${d.costs.get(a, 0.0):.6f})" for a, p in d.predictions.items()))
    if s.scores:
        out.append("  scorer rated: " + ", ".join(f"{answer!r} {p:.3f}" for answer, p in s.scores.items()))
    if s.verdict:
        out.append(f"  verdict (round {s.rounds}): {_short(s.verdict)}" if s.rounds is not None else f"  verdict: {_short(s.verdict)}")
    if s.status == "ok" or s.attempts:
        out.append(f"  tokens {s.input_tokens} in / {s.output_tokens} out  cost ${s.cost:.6f}  {s.latency_ms / 1000:.2f}s")
    for a in s.attempts if s.kind != "use" else ():  # a sub-flow's calls are listed under its steps
        cause = f" {a.cause}" if a.cause else ""
        finish = f"  finish {a.finish_reason}" if a.finish_reason else ""
        truncated = "  TRUNCATED at max_tokens" if a.truncated else ""
        reason = f": {_short(a.reason, 80)}" if a.reason and not a.answered else ""
        out.append(f"    - {a.role:<14} {a.alias:<10} {a.status}{cause}  {a.input_tokens}+{a.output_tokens} tok  "
                   f"${a.cost:.6f} ({a.cost_source})  {a.latency_ms:.0f} ms{finish}{truncated}{reason}")
        if a.cost_note:
            out.append(f"      cost: {a.cost_note}")
        for call in a.tool_calls:
            function = call.get("function") or {}
            out.append(f"      tool call: {function.get('name')}({_short(str(function.get('arguments', '')), 100)})")
    if s.error:
        out.append(f"  error: {s.error}")
    if s.output:
        out.append("  output: " + (s.output if full else _short(s.output)))
    out.append("")
    return out


def run_json(summary: RunSummary) -> str:
    return json.dumps(summary.model_dump(mode="json"), indent=2)
