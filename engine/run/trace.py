"""The typed trace of a run: every attempt, every step, and the run as a whole.

These objects are what the Python API returns, what `summary.json` and the per-step
output files hold, and what `baton show` renders. Token fields follow OpenTelemetry's
GenAI names in the event log (`gen_ai.usage.input_tokens` ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

StepStatus = Literal["ok", "failed", "skipped", "not_run"]
RunStatus = Literal["running", "ok", "failed", "budget_exhausted", "interrupted"]
#: reported: the provider's `usage.cost`; computed: tokens x the alias's prices; estimated: the reply's usage was
#: missing or unreadable (or the call timed out after it was sent), so the call is booked at its worst case;
#: not_billed: the provider answered with an HTTP error or was never reached; unknown: no prices and no
#: reported cost; cache: a cache hit.
CostSource = Literal["reported", "computed", "estimated", "not_billed", "unknown", "cache"]


class Attempt(BaseModel):
    """One call (or one refused call) to one model."""

    alias: str
    model_id: str = ""
    role: str = "worker"
    status: Literal["ok", "fault", "rejected", "refused", "cache_hit"]
    cause: str = ""
    reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float = 0.0
    cost_source: CostSource = "unknown"
    #: Why the cost is what it is when it is not simply as reported (usage missing, a reported cost ignored).
    cost_note: str = ""
    #: The provider's `finish_reason` (`stop`, `length`, `content_filter`, `error`, ...), when it sent one.
    finish_reason: str = ""
    #: The reply stopped at `max_tokens`: it was kept as the answer, but it may be cut short.
    truncated: bool = False
    latency_ms: float = 0.0
    #: When the call began (epoch seconds; for a cache hit, when it was looked up): the viewer's time line.
    started: float = 0.0
    reply_preview: str = ""
    #: The tool calls the reply made (a pass-through call with tools): id, function name and arguments, scrubbed.
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def answered(self) -> bool:
        """The attempt gave the reply its caller kept (a call, or a cache hit, that passed its checks)."""
        return self.status in ("ok", "cache_hit")

    @property
    def from_cache(self) -> bool:
        """Answered from the response cache (even if the cached reply then failed a check): no request was sent."""
        return self.cost_source == "cache"

    @property
    def sent(self) -> bool:
        """A request left for the provider: what a run's `calls` counts."""
        return self.status != "refused" and not self.from_cache


class PromptBlock(BaseModel):
    """One piece of visible material, as `engine.run.prompt.Block` framed it."""

    title: str
    body: str
    subtask: str | None = None


class Prompt(BaseModel):
    """What a call of a step was shown: its system text, the blocks its `sees` allowed, its own subtask.

    The exact messages are rebuilt from it (`engine.run.prompt.messages`), so the record keeps
    each visible output once per reader and not a second time as a rendered message.
    """

    #: Which call(s) it was sent by: `worker`, `verifier`, `panel` (every member), `judge`, `r2 draft` (a loop's round 2).
    role: str
    system: str | None = None
    blocks: list[PromptBlock] = Field(default_factory=list)
    task: str


class RouteDecision(BaseModel):
    route: str
    label: str | None = None
    matched: str
    chosen: str
    skipped: list[str] = Field(default_factory=list)
    #: A learned route: what the router predicted for each candidate model, and each one's expected cost (USD).
    predictions: dict[str, float] = Field(default_factory=dict)
    costs: dict[str, float] = Field(default_factory=dict)


def answered_tool_calls(attempts: Iterable[Attempt]) -> list[dict[str, Any]]:
    """The tool calls of the last attempt that answered: a step's or a call's answer when it called tools."""
    answered = [a for a in attempts if a.answered]
    return answered[-1].tool_calls if answered else []


class StepResult(BaseModel):
    """What one node did: its output, which model produced it and why, and what it cost."""

    name: str
    kind: str
    status: StepStatus = "not_run"
    output: str = ""
    subtask: str = ""
    model: str | None = None
    reason: str = ""
    attempts: list[Attempt] = Field(default_factory=list)
    prompts: list[Prompt] = Field(default_factory=list)
    verdict: str | None = None
    #: A loop's verdict of every round, first to last (`verdict` is the last of them).
    verdicts: list[str] = Field(default_factory=list)
    decision: RouteDecision | None = None
    #: A fuse with an answer scorer: the probability it gave each distinct answer of the panel (best first).
    scores: dict[str, float] = Field(default_factory=dict)
    rounds: int | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    resumed: bool = False
    #: The tools a client offered with a pass-through call (their names): what the model could call.
    tools: list[str] = Field(default_factory=list)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls of the reply that answered (none when it answered with text alone)."""
        return answered_tool_calls(self.attempts)

    def add(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        self.input_tokens += attempt.input_tokens
        self.output_tokens += attempt.output_tokens
        self.cost += attempt.cost


@dataclass(frozen=True, slots=True)
class Totals:
    """What some attempts add up to, the one way: attempts, steps, calls and runs are all totalled by it.

    `cost` includes `estimated_cost` (calls booked at their worst case); tokens count calls, not cache hits;
    `calls` are requests that were sent (`Attempt.sent`), `cache_hits` replies taken from the cache.
    """

    cost: float = 0.0
    estimated_cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    cache_hits: int = 0

    @classmethod
    def of(cls, attempts: Iterable[Attempt]) -> Totals:
        cost = estimated = 0.0
        input_tokens = output_tokens = calls = cache_hits = 0
        for a in attempts:
            cost += a.cost
            if a.cost_source == "estimated":
                estimated += a.cost
            if a.from_cache:
                cache_hits += 1
                continue
            input_tokens += a.input_tokens
            output_tokens += a.output_tokens
            calls += a.sent
        return cls(cost, estimated, input_tokens, output_tokens, calls, cache_hits)

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.cost + other.cost, self.estimated_cost + other.estimated_cost, self.input_tokens + other.input_tokens,
                      self.output_tokens + other.output_tokens, self.calls + other.calls, self.cache_hits + other.cache_hits)


def in_flight_totals(summary: RunSummary, steps: Mapping[str, StepResult], top_level: Iterable[str]) -> Totals:
    """What an attempt that is running (or was killed) has spent beyond its summary's carried totals.

    While an attempt runs, its summary on disk holds only the totals of the attempts before it; what this one
    spent is in the steps it finished, those that started after it did. `baton show` of a live run and a resume
    of a killed one both count them this way (a killed attempt's failed calls are in no journal: docs/reliability.md).
    """
    since = summary.started
    counted = list(top_level)
    # a sub-flow's step (`review/draft`) is counted by itself only while its `use` has not finished: then the use counts it
    return sum((Totals.of(steps[n].attempts) for n in counted
                if n in steps and not steps[n].resumed and steps[n].started >= since and not _inside_finished(n, steps)), Totals())


def nested_in(steps: Mapping[str, StepResult], name: str) -> list[StepResult]:
    """The steps of the sub-flow a `use` named `name` ran (`name/draft`, not deeper), in the order they started."""
    prefix = name + "/"
    return sorted((s for n, s in steps.items() if n.startswith(prefix) and "/" not in n[len(prefix):]), key=lambda s: s.started)


def is_nested(name: str) -> bool:
    """Whether a recorded step belongs to a sub-flow (`review/draft`)."""
    return "/" in name


def _inside_finished(name: str, steps: Mapping[str, StepResult]) -> bool:
    parts = name.split("/")
    return any("/".join(parts[:i]) in steps for i in range(1, len(parts)))


class RunSummary(BaseModel):
    run_id: str
    flow: str
    flow_file: str = ""
    status: RunStatus = "running"
    output: str | None = None
    output_step: str = ""
    #: The step whose reply of tool calls ended the run (a step marked `tools: client` other than the output): its
    #: calls are the run's answer, and the steps after it did not run.
    tool_calls_by: str | None = None
    error: str | None = None
    error_step: str | None = None
    #: Where the failed node is defined in the flow (`file:line:col`), when a node failed.
    error_at: str | None = None
    cost: float = 0.0
    #: The part of `cost` booked at calls' worst case because their usage was missing or unreadable.
    estimated_cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    cache_hits: int = 0
    #: What the run noticed and did not stop for: a trimmed API key, spending booked past the cap.
    warnings: list[str] = Field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    duration_s: float = 0.0
    attempts_of_run: int = 1
    budget: dict[str, float | int | None] = Field(default_factory=dict)
    steps: dict[str, StepResult] = Field(default_factory=dict)

    @property
    def totals(self) -> Totals:
        return Totals(self.cost, self.estimated_cost, self.input_tokens, self.output_tokens, self.calls, self.cache_hits)

    def add_totals(self, more: Totals) -> None:
        """Count `more` in (a step's attempts, an earlier attempt of the run)."""
        self.cost += more.cost
        self.estimated_cost += more.estimated_cost
        self.input_tokens += more.input_tokens
        self.output_tokens += more.output_tokens
        self.calls += more.calls
        self.cache_hits += more.cache_hits


@dataclass
class CallResult:
    """One `Session.call`: the answer, the alias that gave it and why, and every attempt with its cost."""

    text: str
    alias: str
    reason: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def totals(self) -> Totals:
        return Totals.of(self.attempts)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls of the reply that answered (none when it answered with text alone)."""
        return answered_tool_calls(self.attempts)

    @property
    def cost(self) -> float:
        return self.totals.cost

    @property
    def input_tokens(self) -> int:
        return self.totals.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.totals.output_tokens
