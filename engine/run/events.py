"""A run's events: to its record's event log, and to whoever watches its progress.

Built before the run's `Caller`, so the caller is given its sinks (attempts, retries, budget
warnings) when it is made, and the executor emits through the same object: nothing rebinds
another object's callbacks after the fact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.run.store import RunRecord
from engine.run.trace import Attempt

Progress = Callable[[str, dict[str, Any]], None]


class RunEvents:
    def __init__(self, store: RunRecord, progress: Progress | None = None) -> None:
        self.store = store
        self.progress = progress
        #: Whether anyone reads events: the per-call ones are not even built for an in-memory run.
        self.observed = store.keeps_events or progress is not None
        #: What the run noticed and did not stop for (a trimmed key, spending booked past a cap).
        self.warnings: list[str] = []

    def emit(self, name: str, **fields: Any) -> None:
        self.store.event(name, **fields)
        if self.progress is not None:
            self.progress(name, fields)

    def attempt(self, step: str, a: Attempt) -> None:
        if not self.observed:
            return
        self.emit(
            "attempt", step=step, role=a.role, alias=a.alias, status=a.status, cause=a.cause, reason=a.reason,
            **{"gen_ai.request.model": a.model_id, "gen_ai.usage.input_tokens": a.input_tokens,
               "gen_ai.usage.output_tokens": a.output_tokens, "cached_tokens": a.cached_tokens,
               "reasoning_tokens": a.reasoning_tokens},
            cost=a.cost, cost_source=a.cost_source, cost_note=a.cost_note, finish_reason=a.finish_reason, truncated=a.truncated,
            latency_ms=round(a.latency_ms, 1),
        )

    def retry(self, step: str, alias: str, delay_s: float) -> None:
        if self.observed:
            self.emit("retry", step=step, alias=alias, delay_s=round(delay_s, 3))

    def warning(self, step: str, message: str) -> None:
        """A warning the run's summary keeps, shown too."""
        self.warnings.append(message)
        self.warn(step, message)

    def warn(self, step: str, message: str) -> None:
        """Record and show a warning (the run goes on)."""
        self.emit("warning", step=step, message=message)
