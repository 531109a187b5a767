"""Watching runs as they go: what a tracer (OpenTelemetry, in `engine.tracing`) is told, and when.

A `RunObserver` hears that a run started, that each step finished (with its whole
`StepResult`, as the record gets it) and that the run ended. `ObservedRecord` wraps a
run's record and tells the observers exactly what it writes, so what they see and what
the record keeps cannot differ. An observer that raises is reported once and ignored:
watching a run never fails it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from engine.model import Flow
from engine.pool import Pool
from engine.run.store import RunRecord
from engine.run.trace import RunSummary, StepResult

log = logging.getLogger("baton.observer")


class RunObserver(Protocol):
    def run_started(self, summary: RunSummary, flow: Flow, pool: Pool, inputs: Mapping[str, str]) -> None:
        """`inputs` are the run's checked inputs, secrets scrubbed (a tracer shows them only when asked to)."""

    def step_finished(self, run_id: str, step: StepResult) -> None: ...

    def run_finished(self, summary: RunSummary) -> None: ...


class ObservedRecord:
    """A `RunRecord` that also tells `observers` what it records."""

    def __init__(self, inner: RunRecord, observers: Sequence[RunObserver], flow: Flow, pool: Pool,
                 inputs: Mapping[str, str] | None = None) -> None:
        self.inner = inner
        self.inputs = dict(inputs or {})
        self.observers = list(observers)
        self.flow = flow
        self.pool = pool
        self.run_id = inner.run_id
        self.keeps_events = inner.keeps_events
        self._started = False

    def _tell(self, method: str, *args: Any) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, method)(*args)
            except Exception:  # noqa: BLE001 - an observer's failure must not fail the run
                log.exception("run observer %r failed in %s; it is not told more of run %s", observer, method, self.run_id)
                self.observers.remove(observer)

    def event(self, name: str, **fields: Any) -> None:
        self.inner.event(name, **fields)

    def write_setup(self, flow_source: str, inputs: dict[str, str], pool_json: dict[str, Any] | str) -> None:
        self.inner.write_setup(flow_source, inputs, pool_json)

    async def commit_step(self, result: StepResult) -> None:
        await self.inner.commit_step(result)
        self._tell("step_finished", self.run_id, result)

    def write_summary(self, summary: RunSummary, final: bool = True) -> None:
        self.inner.write_summary(summary, final)
        if not self._started:
            self._started = True
            self._tell("run_started", summary, self.flow, self.pool, self.inputs)
        if final:
            self._tell("run_finished", summary)

    def close(self) -> None:
        self.inner.close()
