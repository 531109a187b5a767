"""Baton's Python API: load a flow, run it with inputs and a pool, get the output and the trace.

    from engine import run_flow_sync
    summary = run_flow_sync("workflows/hello.flow", {"question": "Why is the sky blue?"})
    print(summary.output, summary.cost, summary.steps["answer"].model)

`run_flow` is the async form. Both return a `RunSummary` (typed, JSON-serialisable) and
leave the run record in `.baton/runs/<run-id>/`. Failures raise `RunError` subclasses
after the record is written; `err.summary` holds the partial trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.errors import BudgetExceeded, InputError, PoolError, RunCancelled, RunError
from engine.loading import check_source, load_flow
from engine.model import Budget, Flow, node_models
from engine.pool import Pool, ProviderSpec, discover_pool
from engine.run.budget import BudgetGuard
from engine.run.cache import ResponseCache
from engine.run.calls import Caller, Limits, RetryPolicy
from engine.run.executor import Executor, Progress, summarise
from engine.run.protocol import Provider, ProviderFault
from engine.run.secrets import Secrets, key_warnings, secret_header
from engine.run.store import MemoryStore, RunStore, baton_home
from engine.run.trace import RunSummary, StepResult

MAX_INPUT_BYTES = 4 * 1024 * 1024


def check_inputs(flow: Flow, inputs: Mapping[str, str]) -> dict[str, str]:
    """Every declared input present, nothing undeclared, each a reasonable size of text."""
    missing = [n for n in flow.inputs if n not in inputs]
    unknown = [n for n in inputs if n not in flow.inputs]
    problems = []
    if missing:
        problems.append("missing input" + ("s" if len(missing) > 1 else "") + ": " + ", ".join(missing))
    if unknown:
        declared = ", ".join(flow.inputs) or "none"
        problems.append(f"unknown input{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} (the flow declares: {declared})")
    for name, value in inputs.items():
        if not isinstance(value, str):
            problems.append(f"input `{name}` must be text")
        elif len(value.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
            problems.append(f"input `{name}` is {len(value.encode('utf-8', 'surrogatepass'))} bytes; the limit is {MAX_INPUT_BYTES}")
        elif "\x00" in value:
            problems.append(f"input `{name}` contains NUL bytes; it looks binary")
    if problems:
        raise InputError("; ".join(problems))
    return dict(inputs)


def pool_snapshot(pool: Pool) -> dict[str, Any]:
    """The pool as recorded with a run: key *variable names* only, secret-looking headers masked."""
    data = pool.model_dump(mode="json")
    for spec in data.get("providers", {}).values():
        spec["headers"] = {k: ("***" if secret_header(k) else v) for k, v in spec.get("headers", {}).items()}
    data["source"] = pool.source
    return data


def unset_key_variable(spec: ProviderSpec) -> str | None:
    """The environment variable an HTTP provider reads its API key from, when it is not set."""
    if spec.kind == "openai" and spec.api_key_env and not os.environ.get(spec.api_key_env):
        return spec.api_key_env
    return None


class ProviderSet:
    """Provider instances for one run, created on first use and closed at the end."""

    def __init__(self, pool: Pool, overrides: Mapping[str, Provider] | None = None) -> None:
        self.pool = pool
        self.overrides = dict(overrides or {})
        self.instances: dict[str, Provider] = {}
        self.secrets = Secrets.of_pool(pool)

    def for_alias(self, alias: str) -> Provider:
        provider_name = self.pool.models[alias].provider
        if provider_name in self.overrides:
            return self.overrides[provider_name]
        if "*" in self.overrides:
            return self.overrides["*"]
        if provider_name not in self.instances:
            from engine.providers import make_provider

            try:
                self.instances[provider_name] = make_provider(provider_name, self.pool.provider(provider_name), self.secrets)
            except (ValueError, ImportError) as err:
                raise ProviderFault("client_error", str(err)) from None
        return self.instances[provider_name]

    def preflight(self, flow: Flow) -> list[str]:
        """Fail before any call when a provider the flow needs cannot run here (a missing key or extra, a key
        that cannot be sent: `PoolError`); returns warnings (a key that was trimmed)."""
        used = {a for n in flow.nodes.values() for a in node_models(n)}
        warnings = key_warnings(self.pool.provider(self.pool.models[a].provider) for a in sorted(used))
        for alias in sorted(used):
            pname = self.pool.models[alias].provider
            spec = self.pool.provider(pname)
            variable = unset_key_variable(spec)
            if variable and pname not in self.overrides and "*" not in self.overrides:
                raise RunError(f"model `{alias}` needs an API key in ${variable} (provider `{pname}`), which is not set")
            kind = spec.kind
            if kind == "local" and self.pool.models[alias].provider not in self.overrides and "*" not in self.overrides:
                from engine.providers.local import available

                hint = available()
                if hint:
                    raise RunError(f"model `{alias}`: {hint}")
        return warnings

    async def aclose(self) -> None:
        for p in self.instances.values():
            await p.aclose()


async def run_flow(
    flow: Flow | str | Path,
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
    """Run a flow (a `Flow`, or a path to a .flow file) and return its summary; see the module docstring."""
    store: RunStore
    completed = {}
    attempts_of_run = 1
    previous: RunSummary | None = None
    if resume is not None:
        store = RunStore.open(home, resume, durable)
        try:
            previous = store.read_summary()
            attempts_of_run = (previous.attempts_of_run + 1) if previous else 2
            flow_file = previous.flow_file if previous else ""
            pool = pool or discover_pool(flow_file or None)
            flow_obj = _recorded_flow(store, pool, flow_file)
            checked_inputs = check_inputs(flow_obj, store.read_inputs())
            completed = store.completed_steps()
        except BaseException:
            store.close()
            raise
    else:
        if isinstance(flow, Flow):
            flow_obj, flow_file = flow, flow.filename
            pool = pool or discover_pool(None)
        else:
            flow_obj, pool = load_flow(flow, pool)
            flow_file = str(flow)
        checked_inputs = check_inputs(flow_obj, inputs or {})  # before the run folder exists: bad inputs leave no record
    pool = pool.with_models(flow_obj.models)
    provider_set = ProviderSet(pool, providers)
    try:
        warnings = provider_set.preflight(flow_obj)  # a missing or broken key is found before a run folder exists
    except BaseException:
        if resume is not None:
            store.close()
        raise
    if resume is None:
        store = RunStore.create(home, durable) if record else MemoryStore()
    budget = flow_obj.budget
    if budget_usd is not None:
        budget = Budget(usd=min(budget_usd, budget.usd) if budget.usd is not None else budget_usd, tokens=budget.tokens, calls=budget.calls)
    summary = RunSummary(run_id=store.run_id, flow=flow_obj.name, flow_file=flow_file, started=time.time(),
                         attempts_of_run=attempts_of_run, budget=budget.model_dump(), output_step=flow_obj.output, warnings=warnings)
    before = _totals_so_far(previous, completed, flow_obj.top_level()) if resume is not None else RunSummary(run_id="", flow="")
    guard = BudgetGuard(budget, spent_usd=before.cost, spent_tokens=before.input_tokens + before.output_tokens,
                        spent_calls=before.calls, estimated_usd=before.estimated_cost)
    caller = Caller(pool=pool, providers=provider_set.for_alias, budget=guard, limits=Limits(pool),
                    cache=ResponseCache(baton_home(home) / "cache") if cache else None, retry=retry or RetryPolicy(),
                    secrets=provider_set.secrets)
    if sleep is not None:
        caller.sleep = sleep
    executor = Executor(flow_obj, caller, store, checked_inputs, completed, progress)
    if resume is None and record:
        store.write_setup(flow_obj.source, checked_inputs, pool_snapshot(pool))
    carried = summary.model_copy()  # while it runs, the summary on disk holds the earlier attempts' totals
    _add_totals(carried, before)
    carried.duration_s = before.duration_s
    store.write_summary(carried, final=False)
    store.event("run_resumed" if resume else "run_started", flow=flow_obj.name, attempt=attempts_of_run,
                resumed_steps=sorted(completed), budget=budget.model_dump())
    for warning in warnings:
        executor._emit("warning", step="", message=warning)
    error: RunError | None = None
    try:
        await executor.run()
        error = executor.failure
    except asyncio.CancelledError:
        error = RunCancelled("the run was interrupted; finished steps are kept (resume with --resume " + store.run_id + ")")
    except RunError as err:
        error = err
    finally:
        await provider_set.aclose()
        summarise(summary, executor.results, flow_obj.top_level())
        _add_totals(summary, before)
        summary.warnings += executor.warnings
        summary.finished = time.time()
        summary.duration_s = round(before.duration_s + summary.finished - summary.started, 4)
        out = executor.results.get(flow_obj.output)
        if error is None and out is not None and out.status == "ok":
            summary.status = "ok"
            summary.output = out.output
        else:
            summary.status = ("budget_exhausted" if isinstance(error, BudgetExceeded)
                              else "interrupted" if isinstance(error, RunCancelled) else "failed")
            summary.error = str(error) if error else "the output step did not finish"
            summary.error_step = getattr(error, "step", None)
        store.event("run_finished", status=summary.status, cost=round(summary.cost, 8), calls=summary.calls,
                    duration_s=summary.duration_s, error=summary.error)
        store.write_summary(summary)
        store.close()
    if summary.status != "ok":
        failure = error or RunError(summary.error or "run failed")
        failure.summary = summary
        raise failure
    return summary


def _recorded_flow(store: RunStore, pool: Pool, flow_file: str) -> Flow:
    """The flow a run recorded, checked against `pool`; when it no longer checks, say against which pool and why."""
    result = check_source(store.read_flow_source(), pool, flow_file or "flow.flow")
    if result.flow is not None:
        return result.flow
    problems = "; ".join(d.message for d in result.diagnostics if d.severity == "error")
    try:
        recorded = json.loads((store.dir / "pool.json").read_text(encoding="utf-8")).get("source", "")
    except (OSError, ValueError, AttributeError):
        recorded = ""
    hint = f"; the run was recorded with the pool {recorded} (pass it with --pool)" if recorded and recorded != pool.source else ""
    raise PoolError(f"run {store.run_id}: its recorded flow does not check against the pool {pool.source}: {problems}{hint}")


def _totals_so_far(previous: RunSummary | None, completed: dict[str, StepResult], top_level: list[str]) -> RunSummary:
    """What the run's earlier attempts spent.

    A finished attempt's summary holds them. The summary of an attempt that was killed still says
    `running` and holds only the totals carried from the attempts before it; what the killed attempt
    spent is rebuilt from the steps it finished (those the journal holds that started after it did).
    Its failed calls are in no journal, so that part can be low (docs/reliability.md).
    """
    if previous is not None and previous.status != "running":
        return previous
    since = previous.started if previous is not None else 0.0
    rebuilt = previous.model_copy() if previous is not None else RunSummary(run_id="", flow="")
    killed_attempt = {n: r for n, r in completed.items() if r.started >= since}
    summarise(rebuilt, killed_attempt, top_level)
    rebuilt.duration_s += max((r.finished for r in killed_attempt.values()), default=since) - since if killed_attempt else 0.0
    return rebuilt


def _add_totals(summary: RunSummary, before: RunSummary) -> None:
    summary.cost += before.cost
    summary.estimated_cost += before.estimated_cost
    summary.input_tokens += before.input_tokens
    summary.output_tokens += before.output_tokens
    summary.calls += before.calls
    summary.cache_hits += before.cache_hits


def run_flow_sync(flow: Flow | str | Path, inputs: Mapping[str, str] | None = None, **kwargs: Any) -> RunSummary:
    """`run_flow` for code that is not async."""
    return asyncio.run(run_flow(flow, inputs, **kwargs))
