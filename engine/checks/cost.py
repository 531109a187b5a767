"""The static worst case of a flow: the most model calls, tokens and dollars one run can use.

Counted without calling any model: every retry, fallback, escalation level, panel member,
judge and loop round is assumed to happen, and only the most expensive branch of each
route. Prompt sizes are estimated (4 characters a token for task text, each seen step's
`max_tokens`, `INPUT_TOKENS` for each named input), so the figure is an estimate for
prompts and exact for the shape. The run-time budget reserves against real prompt sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.model import Flow, Fuse, Loop, Route, Step, Use, Verify
from engine.pool import ModelSpec, Pool

#: Assumed size of one named input when estimating a prompt statically.
INPUT_TOKENS = 1000
#: Fixed overhead of a chat request (roles, block delimiters).
OVERHEAD_TOKENS = 30


@dataclass(frozen=True)
class WorstCase:
    calls: int = 0
    tokens: int = 0
    usd: float = 0.0

    def __add__(self, other: WorstCase) -> WorstCase:
        return WorstCase(self.calls + other.calls, self.tokens + other.tokens, self.usd + other.usd)

    def times(self, n: int) -> WorstCase:
        return WorstCase(self.calls * n, self.tokens * n, self.usd * n)

    def to_json(self) -> dict[str, float | int]:
        return {"calls": self.calls, "tokens": self.tokens, "usd": round(self.usd, 6)}


def text_tokens(text: str) -> int:
    """A cheap, conservative token estimate for English-like text."""
    return len(text) // 4 + 1


class CostModel:
    """Computes worst cases node by node, memoised, over a checked flow."""

    def __init__(self, flow: Flow, pool: Pool, models: dict[str, ModelSpec] | None = None) -> None:
        self.flow = flow
        self.pool = pool
        self.models: dict[str, ModelSpec] = models if models is not None else {**pool.models, **flow.models}
        self._memo: dict[str, WorstCase] = {}

    def output_tokens(self, name: str) -> int:
        node = self.flow.nodes[name]
        if isinstance(node, (Step, Verify, Fuse)):
            return node.params.max_tokens
        if isinstance(node, Loop):
            return self.output_tokens(node.result) if node.result in self.flow.nodes else 0
        if isinstance(node, Use):
            return CostModel(node.flow, self.pool, self.models).output_tokens(node.flow.output)
        if isinstance(node, Route):
            return max((self.output_tokens(a.target) for a in node.arms if a.target in self.flow.nodes), default=0)
        return 0

    def prompt_tokens(self, node: Any, extra: int = 0) -> int:
        seen = 0
        inputs = self.flow.inputs
        for s in node.sees:
            seen += INPUT_TOKENS if s in inputs else self.output_tokens(s) if s in self.flow.nodes else 0
        named_inputs = 0
        if "{" in node.task:
            for s in inputs:
                if s not in node.sees and "{" + s + "}" in node.task:
                    named_inputs += INPUT_TOKENS
        system = text_tokens(node.params.system) if node.params.system else 0
        return OVERHEAD_TOKENS + text_tokens(node.task) + seen + named_inputs + system + extra

    def chain(self, levels: tuple[str, ...], fallbacks: tuple[str, ...], retries: int, prompt: int, completion: int) -> WorstCase:
        """Every level of an escalation chain, each with its fallbacks, each tried `1 + retries` times."""
        calls = 0
        usd = 0.0
        for level in levels:
            for alias in (level, *fallbacks):
                spec = self.models.get(alias)
                calls += 1 + retries
                if spec is not None:
                    usd += spec.worst_cost(prompt, completion) * (1 + retries)
        return WorstCase(calls, calls * (prompt + completion), usd)

    def node(self, name: str) -> WorstCase:
        if name in self._memo:
            return self._memo[name]
        node = self.flow.nodes[name]
        result = WorstCase()
        if isinstance(node, (Step, Verify)):
            result = self.chain(node.models, node.fallbacks, node.retries, self.prompt_tokens(node), node.params.max_tokens)
        elif isinstance(node, Fuse):
            prompt = self.prompt_tokens(node)
            for member in node.panel:
                result = result + self.chain((member,), node.fallbacks, node.retries, prompt, node.params.max_tokens)
            if node.judge:
                judge_prompt = prompt + len(node.panel) * node.params.max_tokens + text_tokens(node.judge_task)
                result = result + self.chain((node.judge,), (), node.retries, judge_prompt, node.params.max_tokens)
            if node.escalate:
                result = result + self.chain((node.escalate,), node.fallbacks, node.retries, prompt, node.params.max_tokens)
        elif isinstance(node, Loop):
            per_round = WorstCase()
            levels = 1
            for member in node.members:
                per_round = per_round + self.node(member)
                m = self.flow.nodes[member]
                if isinstance(m, (Step, Verify)):
                    levels = max(levels, len(m.models))
            rounds = node.max_rounds + (levels - 1 if node.exhausted == "escalate" else 0)
            result = per_round.times(rounds)
        elif isinstance(node, Use):  # its aliases are the caller's: the caller's prices; its own budget caps it at run time
            result = CostModel(node.flow, self.pool, self.models).flow_total()
            cap = node.flow.budget
            result = WorstCase(min(result.calls, cap.calls) if cap.calls is not None else result.calls,
                               min(result.tokens, cap.tokens) if cap.tokens is not None else result.tokens,
                               min(result.usd, cap.usd) if cap.usd is not None else result.usd)
        elif isinstance(node, Route):
            branches = [self.node(a.target) for a in node.arms if a.target in self.flow.nodes and self.flow.guarded_by(a.target, name)]
            if branches:
                result = max(branches, key=lambda w: (w.usd, w.calls))
        self._memo[name] = result
        return result

    def flow_total(self) -> WorstCase:
        calls = tokens = 0
        usd = 0.0
        for name in self.flow.top_level():
            if name not in self.flow.plan.guards:  # a branch is counted through its route
                w = self.node(name)
                calls += w.calls
                tokens += w.tokens
                usd += w.usd
        return WorstCase(calls, tokens, usd)


def worst_case(flow: Flow, pool: Pool) -> WorstCase:
    """The most calls, tokens and dollars one run of `flow` can use on `pool`."""
    return CostModel(flow, pool).flow_total()
