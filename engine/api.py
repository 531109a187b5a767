"""Baton's Python API, as functions: run a flow once with a pool and get its summary.

    from engine import run_flow_sync
    summary = run_flow_sync("workflows/hello.flow", {"question": "Why is the sky blue?"})
    print(summary.output, summary.cost, summary.steps["answer"].model)

`run_flow` is the async form. Each call opens a `Session` for one run and closes it; an
application that runs many flows keeps one `engine.Session` instead (its connections,
limits and cache are then shared). Both return a `RunSummary` (typed, JSON-serialisable)
and leave the run record in `.baton/runs/<run-id>/`. Failures raise `RunError`
subclasses after the record is written; `err.summary` holds the partial trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.loading import load_flow
from engine.model import Flow
from engine.pool import Pool, discover_pool
from engine.run.calls import RetryPolicy
from engine.run.executor import Progress
from engine.run.protocol import Provider
from engine.run.trace import RunSummary
from engine.session import Session
from engine.wiring import MAX_INPUT_BYTES, ProviderSet, check_inputs, pool_snapshot, unset_key_variable

__all__ = ["MAX_INPUT_BYTES", "ProviderSet", "check_inputs", "pool_snapshot", "run_flow", "run_flow_sync", "unset_key_variable"]


async def run_flow(
    flow: Flow | str | Path | None,
    inputs: Mapping[str, str] | None = None,
    *,
    pool: Pool | None = None,
    providers: Mapping[str, Provider] | None = None,
    home: str | Path | None = None,
    budget_usd: float | None = None,
    cache: bool = True,
    resume: str | None = None,
    progress: Progress | None = None,
    durable: bool = True,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Any] | None = None,
    record: bool = True,
) -> RunSummary:
    """Run a flow (a `Flow`, or a path to a .flow file), or `resume` a recorded run, in a session of its own."""
    if resume is not None:
        if pool is None:  # found as the first attempt found it: from the recorded flow file's folder
            pool = discover_pool(Session.recorded_flow_file(resume, home))
    elif isinstance(flow, Flow):
        pool = pool or discover_pool(None)
    elif flow is not None:
        flow, pool = load_flow(flow, pool)
    async with Session(pool, home=home, cache=cache, retry=retry, providers=providers, durable=durable, sleep=sleep) as session:
        if resume is not None:
            return await session.resume(resume, budget_usd=budget_usd, progress=progress)
        if flow is None:
            raise TypeError("run_flow needs a flow, or resume=RUN_ID")
        return await session.run(flow, inputs, budget_usd=budget_usd, record=record, progress=progress)


def run_flow_sync(flow: Flow | str | Path | None, inputs: Mapping[str, str] | None = None, **kwargs: Any) -> RunSummary:
    """`run_flow` for code that is not async."""
    return asyncio.run(run_flow(flow, inputs, **kwargs))
