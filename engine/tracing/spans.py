"""A run's span tree, built from its record: plain data, no OpenTelemetry import.

One workflow span for the run; under it one span per top-level node that ran (a loop's
members are parts of their loop: their calls hang under the loop's span, named by round;
a sub-flow's `use` has the spans of its sub-run's nodes under it, nested as deep as they go);
under each node one client span per model call, with its tokens, cost, why it was made
(first call, retry, fallback, escalation, cache hit) and how it ended. Times are the
record's. Prompt and reply text are added only when `content` is asked for: they are the
users' data, and a trace store is often read by more people than the run's owner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.pool import Pool
from engine.records.explain import call_causes, prompt_for
from engine.run.prompt import recorded_messages
from engine.run.trace import Attempt, RunSummary, StepResult, nested_in
from engine.tracing import names as n

Attributes = dict[str, Any]


@dataclass
class SpanSpec:
    name: str
    kind: str  # "internal" or "client"
    start: float  # epoch seconds
    end: float
    attributes: Attributes
    error: str | None = None
    children: list[SpanSpec] = field(default_factory=list)


def _clean(attrs: Attributes) -> Attributes:
    """Attributes without empty values (OpenTelemetry drops None with a warning)."""
    return {k: v for k, v in attrs.items() if v is not None and v != "" and v != []}


def workflow_span(summary: RunSummary, end: float | None = None, content: bool = False,
                  inputs: Mapping[str, str] | None = None) -> SpanSpec:
    """The run's root span; its children are added by the caller. With `content`, its input (the run's inputs, when
    known) and output (the answer), which a backend's trace list shows for the run."""
    attrs: Attributes = {n.OPERATION: n.OP_WORKFLOW, n.WORKFLOW_NAME: summary.flow, n.AGENT_NAME: summary.flow,
             n.CONVERSATION: summary.run_id, n.RUN_ID: summary.run_id, n.RUN_STATUS: summary.status,
             n.RUN_ATTEMPT: summary.attempts_of_run, n.FLOW_FILE: summary.flow_file, n.COST: round(summary.cost, 10),
             n.INPUT_TOKENS: summary.input_tokens, n.OUTPUT_TOKENS: summary.output_tokens,
             n.OI_KIND: n.OI_CHAIN, n.LF_TYPE: n.LF_CHAIN}
    if content:
        if inputs:
            attrs[n.OI_INPUT] = next(iter(inputs.values())) if len(inputs) == 1 else json.dumps(dict(inputs), ensure_ascii=False)
        if summary.output is not None:
            attrs[n.OI_OUTPUT] = summary.output
    failed = summary.status not in ("ok", "running")
    return SpanSpec(n.WORKFLOW_SPAN.format(flow=summary.flow), "internal", summary.started,
                    end if end is not None else (summary.finished or summary.started), _clean(attrs),
                    error=(summary.error or summary.status) if failed else None)


def node_span(step: StepResult, pool: Pool | None, content: bool, steps: Mapping[str, StepResult] | None = None) -> SpanSpec | None:
    """A node's span with its calls, or None for a node that did not run (skipped, not run). A sub-flow's `use` has its
    sub-run's node spans (from the run's `steps`) under it instead, each with its own calls."""
    if step.status in ("skipped", "not_run") or not step.started:
        return None
    attrs: Attributes = {n.OPERATION: n.OP_AGENT, n.AGENT_NAME: step.name, n.STEP_KIND: step.kind, n.STEP_STATUS: step.status,
                         n.STEP_REASON: step.reason, n.STEP_MODEL: step.model, n.STEP_RESUMED: step.resumed or None,
                         n.COST: round(step.cost, 10), n.INPUT_TOKENS: step.input_tokens, n.OUTPUT_TOKENS: step.output_tokens,
                         n.STEP_ERROR: step.error, n.OI_KIND: n.OI_AGENT, n.LF_TYPE: n.LF_AGENT}
    if step.decision is not None:
        d = step.decision
        attrs.update({n.ROUTE_LABEL: d.label, n.ROUTE_MATCHED: d.matched, n.ROUTE_CHOSEN: d.chosen, n.ROUTE_SKIPPED: list(d.skipped),
                      n.ROUTE_PREDICTIONS: json.dumps(d.predictions) if d.predictions else None})
    if step.rounds is not None:
        attrs[n.LOOP_ROUNDS] = step.rounds
    if step.verdict:
        attrs[n.VERDICT] = step.verdict
    if step.status == "failed":
        attrs[n.LF_LEVEL] = "ERROR"
    if content:
        attrs[n.OI_INPUT] = step.subtask
        attrs[n.OI_OUTPUT] = step.output
    span = SpanSpec(n.NODE_SPAN.format(step=step.name), "internal", step.started, step.finished or step.started, _clean(attrs),
                    error=step.error if step.status == "failed" else None)
    if step.kind == "use":
        for inner in nested_in(steps or {}, step.name):
            child = node_span(inner, pool, content, steps)
            if child is not None:
                span.children.append(child)
        return span
    last_ok = max((i for i, a in enumerate(step.attempts) if a.answered and a.alias == step.model), default=-1)
    for i, (attempt, why) in enumerate(zip(step.attempts, call_causes(step), strict=True)):
        reply = step.output if i == last_ok else attempt.reply_preview
        span.children.append(call_span(step, attempt, why, pool, reply if content else None, content))
    return span


def _request_model(pool: Pool | None, attempt: Attempt) -> str:
    spec = pool.models.get(attempt.alias) if pool is not None else None
    return spec.id if spec is not None else attempt.model_id


def _provider(pool: Pool | None, alias: str) -> str:
    spec = pool.models.get(alias) if pool is not None else None
    return spec.provider if spec is not None else ""


def call_span(step: StepResult, a: Attempt, why: str, pool: Pool | None, reply: str | None, content: bool) -> SpanSpec:
    model = _request_model(pool, a)
    provider = _provider(pool, a.alias)
    answered = a.status in ("ok", "cache_hit", "rejected")
    attrs: Attributes = {
        n.OPERATION: n.OP_CHAT, n.PROVIDER: provider, n.REQUEST_MODEL: model, n.RESPONSE_MODEL: a.model_id if answered else None,
        n.INPUT_TOKENS: a.input_tokens, n.OUTPUT_TOKENS: a.output_tokens, n.CACHE_READ_TOKENS: a.cached_tokens or None,
        n.FINISH_REASONS: [a.finish_reason] if a.finish_reason else None, n.ERROR_TYPE: a.cause or None,
        n.ALIAS: a.alias, n.CALL_ROLE: a.role, n.CALL_STATUS: a.status, n.CALL_WHY: why, n.CALL_CAUSE: a.cause,
        n.CACHE_HIT: a.status == "cache_hit", n.TRUNCATED: a.truncated or None, n.COST: round(a.cost, 10), n.COST_SOURCE: a.cost_source,
        n.OI_KIND: n.OI_LLM, n.OI_MODEL: model, n.OI_PROVIDER: provider, n.OI_PROMPT_TOKENS: a.input_tokens,
        n.OI_COMPLETION_TOKENS: a.output_tokens, n.OI_TOTAL_TOKENS: a.input_tokens + a.output_tokens, n.OI_COST: round(a.cost, 10),
        n.LF_TYPE: n.LF_GENERATION, n.LF_COST: json.dumps({"total": round(a.cost, 10)}),
        n.LF_LEVEL: "ERROR" if a.status in ("fault", "refused") else "WARNING" if a.status == "rejected" else None,
    }
    if content:
        sent = prompt_for(step, a)
        if sent is not None:
            messages = recorded_messages(sent)
            attrs[n.INPUT_MESSAGES] = json.dumps(input_messages(messages), ensure_ascii=False)
            # a backend's span list shows `input.value`: Phoenix otherwise shows nothing there, and the response's
            # model id (`{"model": ...}`, made from `gen_ai.response.model`) as the output
            attrs[n.OI_INPUT] = str(messages[-1].get("content") or "") if messages else None
        if reply or a.tool_calls:
            attrs[n.OUTPUT_MESSAGES] = json.dumps(output_messages(reply or "", a), ensure_ascii=False)
            attrs[n.OI_OUTPUT] = reply or json.dumps(a.tool_calls, ensure_ascii=False)
    failed = a.status in ("fault", "refused", "rejected")
    end = a.started + a.latency_ms / 1000 if a.started else step.finished
    return SpanSpec(n.CALL_SPAN.format(model=model), "client", a.started or step.started, end, _clean(attrs),
                    error=f"{a.status}: {a.cause}: {a.reason}" if failed else None)


def input_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the GenAI semantic conventions' `gen_ai.input.messages` spells them (each message's text in
    `parts`, `{"type": "text", "content": ...}`), the shape Phoenix and other backends read."""
    return [{"role": m["role"], "parts": [{"type": "text", "content": str(m.get("content") or "")}]} for m in messages]


def output_messages(reply: str, a: Attempt) -> list[dict[str, Any]]:
    """The reply as `gen_ai.output.messages`: its text, and its tool calls as `tool_call` parts, with the finish reason."""
    parts: list[dict[str, Any]] = [{"type": "text", "content": reply}] if reply else []
    parts += [{"type": "tool_call", "id": c.get("id"), "name": (c.get("function") or {}).get("name"),
               "arguments": (c.get("function") or {}).get("arguments")} for c in a.tool_calls]
    return [{"role": "assistant", "parts": parts, "finish_reason": a.finish_reason or "stop"}]


def run_spans(summary: RunSummary, top_level: Callable[[str], bool], pool: Pool | None, content: bool,
              inputs: Mapping[str, str] | None = None) -> SpanSpec:
    """The whole tree of a recorded run, in the order its nodes started."""
    root = workflow_span(summary, content=content, inputs=inputs)
    for step in sorted(summary.steps.values(), key=lambda s: s.started):
        if top_level(step.name):
            span = node_span(step, pool, content, summary.steps)
            if span is not None:
                root.children.append(span)
    return root
