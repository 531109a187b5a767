"""Scorers: is a flow's output right for an item? Kept apart from flows, so one run can be scored many ways.

`exact` (trimmed, case-insensitive), `number` (the answer field's first number, else the
reply's last number, compared numerically, as ZeroEval's GSM8K scorer does), `regex:PATTERN`
(the reference is ignored; the output must match), `contains` (the reference occurs in
the output), `judge:ALIAS` (a model grades the output against the reference with the
rubric below; its reply must start with CORRECT or INCORRECT).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import InputError
from engine.model import Params
from engine.run.answers import answer_field, extract_answer, numbers_equal

if TYPE_CHECKING:
    from engine.run.budget import BudgetGuard
    from engine.session import Session

JUDGE_RUBRIC = """You grade an answer against a reference answer.
Question: {question}
Reference answer: {reference}
Answer to grade: {output}
Reply with CORRECT if the answer to grade means the same as the reference answer (ignore formatting and
wording; numbers must be equal), otherwise INCORRECT. Reply with one word."""

@dataclass(frozen=True)
class Score:
    """A verdict on one output, and what reaching it cost (a judge model's calls; 0 for the rule-based scorers)."""

    correct: bool
    cost: float = 0.0


Scorer = Callable[[str, str, dict[str, str]], Awaitable[Score]]
#: A judge: the rubric prompt in, the judge's reply and what it cost out.
Judge = Callable[[str], Awaitable[tuple[str, float]]]


def make_scorer(spec: str, judge: Judge | None = None) -> Scorer:
    """A scorer by name; `judge:ALIAS` needs `judge` (see `judge_through`). An unknown name is an `InputError`."""
    kind, _, arg = spec.partition(":")

    async def exact(output: str, reference: str, fields: dict[str, str]) -> Score:
        got = answer_field(output) or output
        return Score(got.strip().lower() == reference.strip().lower())

    async def number(output: str, reference: str, fields: dict[str, str]) -> Score:
        return Score(numbers_equal(extract_answer(output, "number"), reference))

    async def contains(output: str, reference: str, fields: dict[str, str]) -> Score:
        return Score(reference.strip().lower() in output.lower())

    async def regex(output: str, reference: str, fields: dict[str, str]) -> Score:
        return Score(re.search(arg, output) is not None)

    async def judged(output: str, reference: str, fields: dict[str, str]) -> Score:
        assert judge is not None
        verdict, cost = await judge(JUDGE_RUBRIC.format(question=fields.get("question", ""), reference=reference, output=output))
        return Score(verdict.strip().upper().startswith("CORRECT"), cost)

    table = {"exact": exact, "number": number, "contains": contains, "regex": regex, "judge": judged}
    if kind not in table or (kind in ("regex", "judge") and not arg):
        raise InputError(f"unknown scorer {spec!r}: use exact, number, contains, regex:PATTERN or judge:ALIAS")
    if kind == "judge" and judge is None:
        raise InputError(f"scorer {spec!r} needs a judge: pass judge_through(session, {arg!r})")
    if kind == "regex":
        try:
            re.compile(arg)
        except re.error as err:
            raise InputError(f"scorer {spec!r}: the pattern is not a valid regular expression: {err}") from None
    return table[kind]


def judge_through(session: Session, alias: str, retries: int = 2, account: BudgetGuard | None = None) -> Judge:
    """A judge that asks `alias` through `session`: with its retries, limits and cache, its cost counted (and reserved
    against `account`, an evaluation's shared budget, when given)."""

    async def judge(prompt: str) -> tuple[str, float]:
        result = await session.call(alias, [{"role": "user", "content": prompt}], params=Params(max_tokens=5), retries=retries,
                                    step="judge", role="judge", account=account)
        return result.text, result.cost

    return judge
