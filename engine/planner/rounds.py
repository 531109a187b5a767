"""`baton ask`: plan, run, and optionally let the planner revise (Conductor's recursion), bounded.

Round 1 plans for the task and runs the plan. In each further round the planner sees
the answer and either replies KEEP (the answer stands) or writes a new flow, which may
declare `input previous` to see the previous answer. Every round's plan (with all its
attempts) and run id are written to `ask.json` in the last run's directory, so one
record shows the whole exchange.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.planner.plan import PlanResult
from engine.pool import Pool
from engine.run.events import Progress
from engine.run.home import RunHome
from engine.run.trace import RunSummary
from engine.session import Session, run_flow

KEEP_WORDS = ("KEEP",)

RECURSION_TASK = """{task}

A plan already ran for this task and produced this answer:
---
{answer}
---
If the answer is right and complete, reply with the single word KEEP. Otherwise write a new flow
that improves it; it may declare `input previous` and list `previous` in `sees:` to use that answer."""


@dataclass
class AskOutcome:
    task: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    summary: RunSummary | None = None

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "rounds": self.rounds, "output": self.summary.output if self.summary else None,
                "run_id": self.summary.run_id if self.summary else None}


def is_keep(result: PlanResult) -> bool:
    return bool(result.attempts) and result.attempts[-1].reply.strip().strip(".").upper() in KEEP_WORDS


async def ask_rounds(task: str, pool: Pool, planner: Callable[[str, bool], Awaitable[PlanResult]], rounds: int = 1,
                     home: str | Path | None = None, progress: Progress | None = None,
                     run_kwargs: dict[str, Any] | None = None, session: Session | None = None) -> AskOutcome:
    """Plan, run, and let the planner keep the answer or re-plan, at most `rounds` times.

    The runs go through `session` when one is given (the planner's calls should use the same
    one); else each round runs in a session of its own (`run_flow`, with `run_kwargs`).
    """
    outcome = AskOutcome(task)
    answer: str | None = None
    for n in range(1, rounds + 1):
        prompt_task = task if answer is None else RECURSION_TASK.format(task=task, answer=answer)
        result = await planner(prompt_task, answer is not None)
        entry: dict[str, Any] = {"round": n, "plan": result.to_json()}
        if answer is not None and is_keep(result):
            entry["decision"] = "keep"
            outcome.rounds.append(entry)
            break
        if result.flow is None:
            entry["decision"] = "no valid plan"
            outcome.rounds.append(entry)
            break
        inputs = {"question": task} if "question" in result.flow.inputs else {}  # a chosen plan holds the task itself
        if "previous" in result.flow.inputs and answer is not None:
            inputs["previous"] = answer
        if session is not None:
            summary = await session.run(result.flow, inputs, progress=progress)
        else:
            summary = await run_flow(result.flow, inputs, pool=pool, home=home, progress=progress, **(run_kwargs or {}))
        entry.update(decision="run", run_id=summary.run_id, output=summary.output, cost=summary.cost)
        outcome.rounds.append(entry)
        outcome.summary = summary
        answer = summary.output or ""
    if outcome.summary is not None:
        record = RunHome(home).find_run(outcome.summary.run_id) / "ask.json"
        record.write_text(json.dumps(outcome.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
    return outcome
