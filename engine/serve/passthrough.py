"""A call to a pool alias through `baton serve`, recorded as a run of one step.

Every answer the server gives has a run record behind it, a flow's or an alias's: `baton
show` and `GET /v1/runs/{id}` find a pass-through call like any run, with its attempts
(retries, fallbacks), tokens and cost. The record is opened when the call starts (status
`running`, so `/runs` shows it in flight) and closed when it ends, however it ends: a
call cancelled by a client that went away keeps the attempts it sent and what they cost.
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.errors import RunError, run_status
from engine.run.store import RunStore
from engine.run.trace import CallResult, RunSummary, StepResult, Totals
from engine.session import Session

STEP = "call"


class CallRecord:
    """The run record of one pass-through call: `open` it before the call, `close` it after."""

    def __init__(self, session: Session, run_id: str, alias: str, messages: list[dict[str, Any]], tools: list[str] | None = None) -> None:
        """`tools` are the names of the tools the client offered, recorded with the step."""
        self.session = session
        self.run_id = run_id
        self.alias = alias
        self.messages = messages
        self.tools = tools or []
        self.started = time.time()
        #: Filled by `Session.call` as attempts are made: complete even when the call is cancelled.
        self.call = CallResult(text="", alias=alias, reason="")
        self._store: RunStore | None = None

    def open(self) -> None:
        self._store = RunStore.create(self.session.home, self.session.durable, self.run_id)
        self._store.write_setup("", {"messages": json.dumps(self.messages, ensure_ascii=False)}, self.session.pool_record(),
                                resumable=False)  # one call: nothing to resume, so no journal
        self._store.write_summary(RunSummary(run_id=self.run_id, flow=f"alias:{self.alias}", output_step=STEP, started=self.started),
                                  final=False)

    def close(self, error: RunError | None = None) -> RunSummary:
        """Write the call's final record and return its summary (the answer, or what the call cost before it failed)."""
        call = self.call
        step = StepResult(name=STEP, kind="step", status="ok" if error is None else "failed", output=call.text, model=call.alias,
                          reason=call.reason, error=str(error) if error else None, started=self.started, finished=time.time(),
                          subtask=str(self.messages[-1].get("content") or "") if self.messages else "", tools=self.tools)
        for attempt in call.attempts:
            step.add(attempt)
        step.latency_ms = (step.finished - self.started) * 1000
        summary = RunSummary(run_id=self.run_id, flow=f"alias:{self.alias}", output_step=STEP, started=self.started,
                             finished=step.finished, duration_s=round(step.finished - self.started, 4), steps={STEP: step},
                             output=call.text if error is None else None,
                             status=run_status(error),
                             error=str(error) if error else None, error_step=STEP if error else None)
        summary.add_totals(Totals.of(step.attempts))
        if self._store is None:
            self.open()
        assert self._store is not None
        try:
            self._store.write_summary(summary)
        finally:
            self._store.close()
        return summary
