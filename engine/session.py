"""`Session`: the engine as a long-lived object, shared by every run and call it makes.

    async with Session(pool) as session:          # one per application, as with httpx.Client
        summary = await session.run("workflows/hello.flow", {"question": "Why is the sky blue?"})
        reply = await session.call("fast", [{"role": "user", "content": "Say OK."}])

A session owns what must outlive one run: the provider instances and their connection
pools (a run per request no longer opens new connections, or a new TLS handshake, each
time), the concurrency limits of the pool (global, per provider, per alias: they hold
across every run and call at once, so an evaluation at concurrency 32 still sends at most
an alias's `max_concurrency`), the response cache and the run home. Each run gets its own
budget, record and executor. `SyncSession` is the same for code that is not async.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import PoolError, RunCancelled, RunError, run_status
from engine.loading import load_flow
from engine.model import Budget, Flow, Params
from engine.pool import Pool, discover_pool
from engine.providers.embeddings import pool_embedder
from engine.run.budget import BudgetGuard, usd_cap
from engine.run.cache import CacheStore, ResponseCache
from engine.run.calls import Caller, Limits, Observed, RetryPolicy
from engine.run.events import Progress, RunEvents
from engine.run.executor import Executor, summarise
from engine.run.home import RunHome
from engine.run.observer import ObservedRecord, RunObserver
from engine.run.protocol import Provider, ToolOffer
from engine.run.reader import completed_steps, read_setup, read_summary, recheck_flow
from engine.run.store import MemoryStore, RunRecord, RunStore
from engine.run.streaming import StreamMismatch, TextSink, TextStream
from engine.run.trace import CallResult, RunSummary, StepResult, in_flight_totals
from engine.wiring import ProviderSet, check_inputs, pool_snapshot


class Session:
    """Providers, limits, cache and run home for many runs; close it (or use `async with`) when done."""

    def __init__(self, pool: Pool | None = None, *, home: str | Path | None = None, cache: bool = True,
                 retry: RetryPolicy | None = None, providers: Mapping[str, Provider] | None = None, durable: bool = True,
                 sleep: Callable[[float], Awaitable[None]] | None = None, observers: Sequence[RunObserver] = ()) -> None:
        self.pool = pool if pool is not None else discover_pool(None)
        #: The run home, resolved and checked once (a file where the folder should be is a `HomeError` here).
        self.home = RunHome(home)
        self.durable = durable
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.providers = ProviderSet(self.pool, providers)
        self.limits = Limits(self.pool)
        self.cache: CacheStore | None = ResponseCache(self.home.cache) if cache else None
        #: What replies showed beyond the pool's figures, per alias: reservations of later runs account for it too.
        self.observed: dict[str, Observed] = {}
        self._observed_by_owner: dict[str, dict[str, Observed]] = {}
        self._own_pool_text: str | None = None
        #: Told of every run's start, finished steps and end (an `engine.tracing.otel.OtelObserver` exports spans).
        self.observers = list(observers)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every provider's connections."""
        await self.providers.aclose()

    # -- one model call ------------------------------------------------------------------------

    async def call(self, alias: str, messages: Sequence[Mapping[str, Any]], *, params: Params | None = None, retries: int = 2,
                   fallbacks: Sequence[str] = (), timeout: float = 120.0, budget_usd: float | None = None, cache: bool = True,
                   grammar: tuple[str, str] | None = None, step: str = "call", role: str = "worker",
                   on_text: TextSink | None = None, account: BudgetGuard | None = None, into: CallResult | None = None,
                   tools: ToolOffer | None = None) -> CallResult:
        """One model call through the same caller as a step: limits, budget, cache, retries, fallbacks, recorded usage.

        `on_text` receives the reply as it is produced (see `run`); `account` is a budget shared with other calls.
        `into` is the `CallResult` to fill: its attempts are there even when the call is cancelled (a record of a
        call that a client abandoned still says what was sent and what it cost). `tools` are offered to the model as
        sent, and `messages` may then carry an assistant's `tool_calls` and `tool` results; the reply's tool calls are
        `result.tool_calls`.

        Raises `ProviderError` when every attempt failed, `BudgetExceeded` when the call could break `budget_usd`;
        either way `err.call` is the `CallResult` so far (its attempts, and what they cost).
        """
        for name in (alias, *fallbacks):
            if name not in self.pool.models:
                raise PoolError(f"{self.pool.source}: no model alias `{name}` (known: {', '.join(self.pool.models)})")
        self.providers.preflight_aliases([alias, *fallbacks])
        self.providers.secrets.refresh(self.pool)
        caller = self._caller(self.pool, BudgetGuard(Budget(usd=usd_cap(budget_usd)), parent=account), cache)
        stream = TextStream(on_text, self.providers.secrets) if on_text is not None else None
        result = into if into is not None else CallResult(text="", alias=alias, reason="")
        chat = tuple(self._scrubbed_message(m) for m in messages)
        try:
            text, used, why = await caller.chain(step, (alias,), tuple(fallbacks), retries, chat, params or Params(), timeout,
                                                 role=role, record=result.attempts.append, grammar=grammar, stream=stream, tools=tools)
        except RunError as err:
            err.call = result  # the attempts made, and what they cost, before it failed
            raise
        result.text, result.alias, result.reason = text, used, why
        return result

    def _scrubbed_message(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """A message as sent, with the pool's secrets hidden in its text (and in a tool call's arguments)."""
        scrub = self.providers.secrets.scrub
        out: dict[str, Any] = {**message, "role": str(message["role"])}
        content = message.get("content")
        out["content"] = scrub(content) if isinstance(content, str) else None if content is None else scrub(str(content))
        if message.get("tool_calls"):
            out["tool_calls"] = [{**c, "function": {**c["function"], "arguments": scrub(str(c["function"].get("arguments", "")))}}
                                 for c in message["tool_calls"]]
        return out

    # -- runs ----------------------------------------------------------------------------------

    async def run(self, flow: Flow | str | Path, inputs: Mapping[str, str] | None = None, *, budget_usd: float | None = None,
                  record: bool = True, progress: Progress | None = None, cache: bool = True, on_text: TextSink | None = None,
                  account: BudgetGuard | None = None, run_id: str | None = None, notes: Sequence[str] = ()) -> RunSummary:
        """Run a flow (a checked `Flow`, or a .flow file checked against this session's pool) and return its summary.

        Failures raise `RunError` subclasses after the record is written; `err.summary` holds the partial trace.
        `on_text` receives the answer as it is produced: the output step's tokens when its reply is one
        unchecked call (a step, or a fuse's judge), else the whole answer once it is final; the texts it
        receives add up to `summary.output`. `account` is a budget shared with other runs (an API key's
        allowance in `baton serve`): every call also reserves against it. `run_id` names the run (it must be new).
        `notes` are warnings the caller already has about this run (what a server left out of the request), recorded
        with it and returned in `summary.warnings`.
        """
        if isinstance(flow, Flow):
            flow_obj, flow_file = flow, _recorded_path(flow.filename)
        else:
            flow_obj, _pool = load_flow(flow, self.pool)
            flow_file = _recorded_path(str(flow))
        run_pool, checked_inputs, warnings = self._prepare(flow_obj, inputs or {})  # before the run folder exists
        warnings = [*notes, *warnings]
        store: RunRecord = RunStore.create(self.home, self.durable, run_id) if record else MemoryStore(run_id)
        if record:
            store.write_setup(flow_obj.source, checked_inputs, self.pool_record(run_pool))
        return await self._execute(flow_obj, flow_file, run_pool, store, checked_inputs, {}, None, 1, warnings, budget_usd,
                                   progress, cache, on_text, account)

    async def resume(self, run_id: str, *, budget_usd: float | None = None, progress: Progress | None = None,
                     cache: bool = True) -> RunSummary:
        """Finish a recorded run: its finished steps are kept (not called or billed again), the rest run."""
        store = RunStore.open(self.home, run_id, self.durable)
        try:
            previous = read_summary(store.dir)
            flow_file = previous.flow_file if previous else ""
            flow_source, recorded_inputs = read_setup(store.dir)  # one read of the journal's setup line
            flow_obj = _recorded_flow(store, flow_source, self.pool, flow_file)
            run_pool, checked_inputs, warnings = self._prepare(flow_obj, recorded_inputs)
            completed = completed_steps(store.dir)
        except BaseException:
            store.close()
            raise
        attempts_of_run = (previous.attempts_of_run + 1) if previous else 2
        return await self._execute(flow_obj, flow_file, run_pool, store, checked_inputs, completed, previous, attempts_of_run,
                                   warnings, budget_usd, progress, cache)

    def _prepare(self, flow: Flow, inputs: Mapping[str, str]) -> tuple[Pool, dict[str, str], list[str]]:
        """Everything a run needs settled before its folder exists, for a new run and a resumed one alike: the run's pool
        (the session's, with the flow's inline models), its inputs checked and scrubbed of secrets, and the providers'
        preflight (a missing or broken key is found here), with its warnings."""
        checked_inputs = check_inputs(flow, inputs)  # bad inputs leave no record
        run_pool = self.pool.with_models(flow.models)
        checked_inputs = self._scrubbed(run_pool, checked_inputs)
        foreign = [a for a in flow.aliases() if a not in run_pool.models]
        if foreign:  # a Flow checked against another pool
            raise PoolError(f"{self.pool.source}: this session's pool has no model alias {', '.join(f'`{a}`' for a in foreign)}, "
                            f"which flow `{flow.name}` uses (it was checked against another pool)")
        return run_pool, checked_inputs, self.providers.preflight(flow, run_pool)

    def _scrubbed(self, pool: Pool, inputs: dict[str, str]) -> dict[str, str]:
        """Inputs with the pool's secrets hidden: a key pasted into an input reaches no prompt and no record.

        Refreshes the secrets for `pool` first, for the rest of the run as well (keys set since)."""
        secrets = self.providers.secrets
        secrets.refresh(pool)
        return {name: secrets.scrub(value) for name, value in inputs.items()} if secrets else inputs

    def pool_record(self, pool: Pool | None = None) -> str:
        """The pool's snapshot (key variable names only) as JSON, as recorded with each run: rendered once for the session's own pool."""
        pool = pool or self.pool
        if pool is self.pool:
            if self._own_pool_text is None:
                self._own_pool_text = json.dumps(pool_snapshot(pool), ensure_ascii=False, indent=2)
            return self._own_pool_text
        return json.dumps(pool_snapshot(pool), ensure_ascii=False, indent=2)

    @staticmethod
    def recorded_flow_file(run_id: str, home: str | Path | None = None) -> str | None:
        """The flow file a recorded run came from (to find its pool as `baton run` did), if it recorded one."""
        summary = read_summary(RunHome(home).find_run(run_id))
        return summary.flow_file if summary is not None and summary.flow_file else None

    def _caller(self, pool: Pool, guard: BudgetGuard, cache: bool, events: RunEvents | None = None) -> Caller:
        """A run's or a call's caller; its entry point has refreshed the secrets for `pool` (keys set since).

        Calls under an account with an owner (an API key) get that owner's response cache partition and
        their own record of overruns: one tenant's replies neither answer nor shrink another's."""
        owner = guard.owner
        observed = self.observed if owner is None else self._observed_by_owner.setdefault(owner, {})
        caller = Caller(pool=pool, providers=lambda alias: self.providers.for_provider(pool.models[alias].provider), budget=guard,
                        limits=self.limits, cache=self.cache if cache else None, retry=self.retry, secrets=self.providers.secrets,
                        observed=observed, cache_partition=owner or "", embedder=lambda alias: pool_embedder(pool, alias),
                        on_attempt=events.attempt if events else None, on_retry=events.retry if events else None,
                        on_warning=events.warning if events else None)
        if self.sleep is not None:
            caller.sleep = self.sleep
        return caller

    async def _execute(self, flow_obj: Flow, flow_file: str, run_pool: Pool, store: RunRecord, checked_inputs: dict[str, str],
                       completed: dict[str, StepResult], previous: RunSummary | None, attempts_of_run: int, warnings: list[str],
                       budget_usd: float | None, progress: Progress | None, cache: bool, on_text: TextSink | None = None,
                       account: BudgetGuard | None = None) -> RunSummary:
        budget = flow_obj.budget
        budget_usd = usd_cap(budget_usd)
        if budget_usd is not None:
            budget = Budget(usd=min(budget_usd, budget.usd) if budget.usd is not None else budget_usd, tokens=budget.tokens,
                            calls=budget.calls)
        resumed = attempts_of_run > 1
        summary = RunSummary(run_id=store.run_id, flow=flow_obj.name, flow_file=flow_file, started=time.time(),
                             attempts_of_run=attempts_of_run, budget=budget.model_dump(), output_step=flow_obj.output, warnings=warnings)
        before = _totals_so_far(previous, completed, flow_obj.counted()) if resumed else RunSummary(run_id="", flow="")
        guard = BudgetGuard(budget, spent_usd=before.cost, spent_tokens=before.input_tokens + before.output_tokens,
                            spent_calls=before.calls, estimated_usd=before.estimated_cost, parent=account)
        stream = TextStream(on_text, self.providers.secrets) if on_text is not None else None
        if self.observers:
            store = ObservedRecord(store, self.observers, flow_obj, run_pool, checked_inputs)
        events = RunEvents(store, progress)
        executor = Executor(flow_obj, self._caller(run_pool, guard, cache, events), store, checked_inputs, events, completed, stream)
        carried = summary.model_copy()  # while it runs, the summary on disk holds the earlier attempts' totals
        carried.add_totals(before.totals)
        carried.duration_s = before.duration_s
        store.write_summary(carried, final=False)
        store.event("run_resumed" if resumed else "run_started", flow=flow_obj.name, attempt=attempts_of_run,
                    resumed_steps=sorted(completed), budget=budget.model_dump())
        for warning in warnings:
            events.warn("", warning)
        error: RunError | None = None
        try:
            await executor.run()
            error = executor.failure
        except asyncio.CancelledError:
            kept = sum(1 for r in executor.results.values() if r.status == "ok" and not r.resumed)
            error = RunCancelled("the run was interrupted" + (f"; {kept} finished step{'s are' if kept != 1 else ' is'} kept" if kept else ""))
        except RunError as err:
            error = err
        finally:
            summarise(summary, executor.results, flow_obj.top_level())
            summary.add_totals(before.totals)
            summary.warnings = [*warnings, *events.warnings]
            summary.finished = time.time()
            summary.duration_s = round(before.duration_s + summary.finished - summary.started, 4)
            out = executor.results.get(flow_obj.output)
            if error is None and executor.tool_calls_by is not None:
                summary.status = "ok"  # answered with a step's tool calls: the client runs them, and asks again
                summary.tool_calls_by = executor.tool_calls_by
                summary.output = executor.results[executor.tool_calls_by].output
            elif error is None and out is not None and out.status == "ok":
                summary.status = "ok"
                summary.output = out.output
                if stream is not None:
                    _finish_stream(stream, out.output, summary)
            else:
                summary.status = run_status(error) if error is not None else "failed"
                summary.error = str(error) if error else "the output step did not finish"
                summary.error_step = error.step if error is not None else None
                summary.error_at = flow_obj.where(summary.error_step) if summary.error_step else None
            store.event("run_finished", status=summary.status, cost=round(summary.cost, 8), calls=summary.calls,
                        duration_s=summary.duration_s, error=summary.error)
            store.write_summary(summary)
            store.close()
        if summary.status != "ok":
            failure = error or RunError(summary.error or "run failed")
            failure.summary = summary
            failure.where = summary.error_at
            raise failure
        return summary


class SyncSession:
    """A `Session` for code that is not async: one event loop kept for the session's life (its connections live on it)."""

    def __init__(self, pool: Pool | None = None, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self.session: Session = self._runner.run(_make(pool, kwargs))

    def run(self, flow: Flow | str | Path, inputs: Mapping[str, str] | None = None, **kwargs: Any) -> RunSummary:
        return self._runner.run(self.session.run(flow, inputs, **kwargs))

    def resume(self, run_id: str, **kwargs: Any) -> RunSummary:
        return self._runner.run(self.session.resume(run_id, **kwargs))

    def call(self, alias: str, messages: Sequence[Mapping[str, str]], **kwargs: Any) -> CallResult:
        return self._runner.run(self.session.call(alias, messages, **kwargs))

    def close(self) -> None:
        self._runner.run(self.session.aclose())
        self._runner.close()

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(pool: Pool | None, kwargs: dict[str, Any]) -> Session:
    return Session(pool, **kwargs)  # inside the runner's loop: the limits' semaphores belong to it


def _finish_stream(stream: TextStream, output: str, summary: RunSummary) -> None:
    """Send the reader what it does not have of the answer (all of it, when the output was not streamed)."""
    try:
        stream.finish(output)
    except StreamMismatch as err:  # pragma: no cover - a streamed reply is the step's output by construction
        summary.warnings.append(f"the streamed answer differs from the recorded one: {err}")


def _recorded_path(filename: str) -> str:
    """A flow file's path as its run records it: absolute, so that `--resume` from another folder finds the
    sub-flows it uses (named relative to it) and the pool beside it. A name that is no file ("<stdin>") stays."""
    path = Path(filename)
    return str(path.absolute()) if not path.is_absolute() and path.is_file() else filename


def _recorded_flow(store: RunStore, source: str, pool: Pool, flow_file: str) -> Flow:
    """The flow a run recorded, checked against `pool`; when it no longer checks, say against which pool and why."""
    flow, problems = recheck_flow(source, pool, flow_file)
    if flow is not None:
        return flow
    try:
        recorded = json.loads((store.dir / "pool.json").read_text(encoding="utf-8")).get("source", "")
    except (OSError, ValueError, AttributeError):
        recorded = ""
    hint = f"; the run was recorded with the pool {recorded} (pass it with --pool)" if recorded and recorded != pool.source else ""
    raise PoolError(f"run {store.run_id}: its recorded flow does not check against the pool {pool.source}: {problems}{hint}")


def _totals_so_far(previous: RunSummary | None, completed: dict[str, StepResult], top_level: list[str]) -> RunSummary:
    """What the run's earlier attempts spent: a finished attempt's summary holds it; a killed one's is rebuilt from
    the steps it finished (`in_flight_totals`), its time up to the last of them."""
    if previous is not None and previous.status != "running":
        return previous
    rebuilt = previous.model_copy() if previous is not None else RunSummary(run_id="", flow="")
    rebuilt.add_totals(in_flight_totals(rebuilt, completed, top_level))
    killed_attempt = [r for r in completed.values() if r.started >= rebuilt.started]
    rebuilt.duration_s += max(r.finished for r in killed_attempt) - rebuilt.started if killed_attempt else 0.0
    return rebuilt


# -- one run, one session: the function form -------------------------------------------------


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
    observers: Sequence[RunObserver] = (),
) -> RunSummary:
    """Run a flow (a `Flow`, or a path to a .flow file), or `resume` a recorded run, in a session of its own."""
    if resume is not None:
        if pool is None:  # found as the first attempt found it: from the recorded flow file's folder
            pool = discover_pool(Session.recorded_flow_file(resume, home))
    elif isinstance(flow, Flow):
        pool = pool or discover_pool(None)
    elif flow is not None:
        flow, pool = load_flow(flow, pool)
    async with Session(pool, home=home, cache=cache, retry=retry, providers=providers, durable=durable, sleep=sleep,
                       observers=observers) as session:
        if resume is not None:
            return await session.resume(resume, budget_usd=budget_usd, progress=progress)
        if flow is None:
            raise TypeError("run_flow needs a flow, or resume=RUN_ID")
        return await session.run(flow, inputs, budget_usd=budget_usd, record=record, progress=progress)


def run_flow_sync(flow: Flow | str | Path | None, inputs: Mapping[str, str] | None = None, **kwargs: Any) -> RunSummary:
    """`run_flow` for code that is not async."""
    return asyncio.run(run_flow(flow, inputs, **kwargs))
