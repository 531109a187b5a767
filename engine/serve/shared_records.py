"""Finished runs' records in the shared ledger, so that any replica lists and shows any run (`Ledger.shares_records`).

An observer of the server's session: it keeps what a run started with (the flow's source,
the inputs, the pool) until the run finishes, then writes the summary and that setup in one
row. The run's folder is still written as on one machine; this is the copy other machines read.

On a ledger across a network (`Ledger.remote`) the row is written by a task, so that the
event loop serves other requests meanwhile; the server awaits it (`landed`) before it answers,
so a client that asks another replica for the run right after its answer finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from engine.model import Flow
from engine.pool import Pool
from engine.records.explain import RecordedRun, recorded_run_from
from engine.run.trace import RunSummary, StepResult
from engine.serve.ledger import Ledger
from engine.wiring import pool_snapshot

log = logging.getLogger("baton.serve")


class SharedRecords:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._setups: dict[str, str] = {}
        self._landing: dict[str, asyncio.Task[None]] = {}  # rows being written, by run id (a remote ledger's)

    def run_started(self, summary: RunSummary, flow: Flow, pool: Pool, inputs: Mapping[str, str]) -> None:
        self._setups[summary.run_id] = _setup(flow.source, inputs, pool_snapshot(pool))

    def step_finished(self, run_id: str, step: StepResult) -> None:
        pass

    def run_finished(self, summary: RunSummary) -> None:
        setup = self._setups.pop(summary.run_id, None)
        if setup is None or summary.status == "running":
            return
        if not self.ledger.remote:
            self._keep(summary, setup)
            return
        task = asyncio.ensure_future(self._keep_async(summary, setup))
        task.add_done_callback(_log_failure)
        self._landing[summary.run_id] = task

    async def landed(self, run_id: str) -> None:
        """Wait until the run's row is written (at once if it was written inline); a failure was logged."""
        task = self._landing.pop(run_id, None)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def drain(self) -> None:
        """Every row still being written (before the ledger closes)."""
        for run_id in list(self._landing):
            await self.landed(run_id)

    def keep_call(self, summary: RunSummary, messages: str, pool: dict[str, Any]) -> None:
        """A pass-through call's record (it has no flow: its messages are its input)."""
        self._keep(summary, _setup("", {"messages": messages}, pool))

    async def keep_call_async(self, summary: RunSummary, messages: str, pool: dict[str, Any]) -> None:
        """`keep_call`, awaiting a ledger across a network."""
        await self._keep_async(summary, _setup("", {"messages": messages}, pool))

    async def _keep_async(self, summary: RunSummary, setup: str) -> None:
        await self.ledger.keep_record_async(*_row(summary, setup))

    def _keep(self, summary: RunSummary, setup: str) -> None:
        self.ledger.keep_record(*_row(summary, setup))


def _row(summary: RunSummary, setup: str) -> tuple[str, str, str, float, int, float, float, str, str]:
    """`Ledger.keep_record`'s arguments for a finished run."""
    return (summary.run_id, summary.flow, summary.status, summary.cost, summary.input_tokens + summary.output_tokens,
            summary.started, summary.started + summary.duration_s, summary.model_dump_json(), setup)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a finished run's record could not be kept in the shared ledger: %s", task.exception())


def _setup(source: str, inputs: Mapping[str, str], pool: dict[str, Any]) -> str:
    """What a run started with, as the run page rebuilds it: the flow, the inputs, and the pool as runs record it (key
    variable names, never values)."""
    return json.dumps({"flow": source, "inputs": dict(inputs), "pool": pool}, ensure_ascii=False)


def shared_record(ledger: Ledger | None, run_id: str) -> RecordedRun | None:
    """A run another replica finished, from the shared ledger; None when it holds none."""
    kept = ledger.record(run_id) if ledger is not None and ledger.shares_records else None
    if kept is None:
        return None
    setup = json.loads(kept[1])
    return recorded_run_from(RunSummary.model_validate_json(kept[0]), setup["flow"], setup["inputs"], Pool.model_validate(setup["pool"]))


def shared_summary(ledger: Ledger | None, run_id: str) -> RunSummary | None:
    """A run another replica finished, its summary alone (its flow is not checked again, as a page needs it to be)."""
    kept = ledger.record(run_id) if ledger is not None and ledger.shares_records else None
    return RunSummary.model_validate_json(kept[0]) if kept is not None else None


def shared_summaries(ledger: Ledger, limit: int) -> list[RunSummary]:
    """The newest runs the ledger keeps, newest first (what `baton runs --db` lists)."""
    return [RunSummary.model_validate_json(text) for text in ledger.recent_records(limit)]
