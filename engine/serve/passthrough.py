"""A call to a pool alias through `baton serve`, recorded as a run of one step.

Every answer the server gives has a run record behind it, a flow's or an alias's: `baton
show` and `GET /v1/runs/{id}` find a pass-through call like any run, with its attempts
(retries, fallbacks), tokens and cost.
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.errors import BudgetExceeded, RunCancelled, RunError
from engine.run.store import RunStore
from engine.run.trace import RunSummary, StepResult
from engine.session import CallResult, Session

STEP = "call"


def record_call(session: Session, run_id: str, alias: str, messages: list[dict[str, str]], result: Any, started: float,
                error: RunError | None = None) -> RunSummary:
    """Write the call's record and return its summary (the call's result, or what it cost before it failed)."""
    call = result if isinstance(result, CallResult) else CallResult(text="", alias=alias, reason="")
    step = StepResult(name=STEP, kind="step", status="ok" if error is None else "failed", output=call.text, model=call.alias,
                      reason=call.reason, error=str(error) if error else None, started=started, finished=time.time(),
                      subtask=messages[-1]["content"] if messages else "")
    for attempt in call.attempts:
        step.add(attempt)
    step.latency_ms = (step.finished - started) * 1000
    summary = RunSummary(run_id=run_id, flow=f"alias:{alias}", output_step=STEP, started=started, finished=step.finished,
                         duration_s=round(step.finished - started, 4), steps={STEP: step}, output=call.text if error is None else None,
                         status="ok" if error is None else "budget_exhausted" if isinstance(error, BudgetExceeded)
                         else "interrupted" if isinstance(error, RunCancelled) else "failed",
                         error=str(error) if error else None, error_step=STEP if error else None, cost=step.cost,
                         estimated_cost=sum(a.cost for a in step.attempts if a.cost_source == "estimated"),
                         input_tokens=step.input_tokens, output_tokens=step.output_tokens,
                         calls=sum(1 for a in step.attempts if a.status not in ("refused", "cache_hit")),
                         cache_hits=sum(1 for a in step.attempts if a.status == "cache_hit"))
    store = RunStore.create(session.home, session.durable, run_id)
    try:
        store.write_setup("", {"messages": json.dumps(messages, ensure_ascii=False)}, session.pool_record())
        store.write_summary(summary)
    finally:
        store.close()
    return summary
