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

from engine.run.answers import answer_field, extract_answer, numbers_equal

JUDGE_RUBRIC = """You grade an answer against a reference answer.
Question: {question}
Reference answer: {reference}
Answer to grade: {output}
Reply with CORRECT if the answer to grade means the same as the reference answer (ignore formatting and
wording; numbers must be equal), otherwise INCORRECT. Reply with one word."""

Scorer = Callable[[str, str, dict[str, str]], Awaitable[bool]]


def make_scorer(spec: str, judge: Callable[[str], Awaitable[str]] | None = None) -> Scorer:
    kind, _, arg = spec.partition(":")

    async def exact(output: str, reference: str, fields: dict[str, str]) -> bool:
        got = answer_field(output) or output
        return got.strip().lower() == reference.strip().lower()

    async def number(output: str, reference: str, fields: dict[str, str]) -> bool:
        return numbers_equal(extract_answer(output, "number"), reference)

    async def contains(output: str, reference: str, fields: dict[str, str]) -> bool:
        return reference.strip().lower() in output.lower()

    async def regex(output: str, reference: str, fields: dict[str, str]) -> bool:
        return re.search(arg, output) is not None

    async def judged(output: str, reference: str, fields: dict[str, str]) -> bool:
        assert judge is not None
        verdict = await judge(JUDGE_RUBRIC.format(question=fields.get("question", ""), reference=reference, output=output))
        return verdict.strip().upper().startswith("CORRECT")

    table = {"exact": exact, "number": number, "contains": contains, "regex": regex, "judge": judged}
    if kind not in table or (kind in ("regex", "judge") and not arg):
        raise ValueError(f"unknown scorer {spec!r}: use exact, number, contains, regex:PATTERN or judge:ALIAS")
    if kind == "regex":
        re.compile(arg)
    return table[kind]
