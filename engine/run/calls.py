"""One model call with the user's policy around it: limits, budget, cache, retries, fallbacks, escalation.

`Caller.chain` is the single place where a node's request meets providers:

    for each escalation level (`model: a then b`):        an `expect` failure moves up a level
        for the level's model, then each `fallback`:      exhausted retries move to the next
            up to 1 + retries attempts                    timeouts, 429, 5xx, bad replies retried
                                                          with exponential backoff + jitter,
                                                          Retry-After honoured

Every attempt, including refused and cached ones, is returned as an `Attempt` with its
cause, so the trace says exactly why the final model was the one that answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import BudgetExceeded, ProviderError, VerificationFailed
from engine.model import Check, Params
from engine.pool import ModelSpec, Pool
from engine.router.model import Embedder
from engine.run.budget import BudgetGuard, Reservation, prompt_token_bound
from engine.run.cache import CacheStore, ResponseCache
from engine.run.protocol import ChatRequest, ChatResponse, Provider, ProviderFault, StreamingProvider, ToolOffer
from engine.run.secrets import Secrets
from engine.run.streaming import StreamMismatch, TextStream
from engine.run.structured import reply_problem
from engine.run.trace import Attempt, CostSource

Validator = Callable[[str], "str | None"]


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable faults: base * 2**n seconds with full jitter, capped."""

    base: float = 0.5
    cap: float = 20.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return rng.uniform(0, min(self.cap, self.base * (2**attempt)))


class Limits:
    """Concurrency limits: global, per provider and per model alias.

    One `Limits` is shared by every run and call of a `Session`, so the pool's limits hold
    across runs (an evaluation of 100 items at concurrency 32 still sends at most an
    alias's `max_concurrency` at once).
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.global_slots = asyncio.Semaphore(pool.max_concurrency)
        self._provider: dict[str, asyncio.Semaphore] = {}
        self._model: dict[str, asyncio.Semaphore] = {}
        self._of_alias: dict[str, list[asyncio.Semaphore]] = {}

    def semaphores(self, alias: str, spec: ModelSpec | None = None) -> list[asyncio.Semaphore]:
        """The slots a call to `alias` holds, to take in this order; `spec` for an alias the pool lacks (a flow's inline `models`)."""
        slots = self._of_alias.get(alias)
        if slots is None:
            slots = self._of_alias[alias] = self._slots(alias, spec or self.pool.models[alias])
        return slots

    def _slots(self, alias: str, spec: ModelSpec) -> list[asyncio.Semaphore]:
        out = [self.global_slots]
        if spec.provider not in self._provider:
            self._provider[spec.provider] = asyncio.Semaphore(self.pool.provider(spec.provider).max_concurrency)
        out.append(self._provider[spec.provider])
        if spec.max_concurrency:
            if alias not in self._model:
                self._model[alias] = asyncio.Semaphore(spec.max_concurrency)
            out.append(self._model[alias])
        return out


@dataclass
class Observed:
    """How far an alias's replies went past the pool's figures; reservations are scaled by it."""

    output_overrun: float = 1.0  # the largest output_tokens / max_tokens seen
    price_overrun: float = 1.0  # the largest reported cost / cost at the pool's prices
    dearest_call: float = 0.0  # for an alias without prices: the largest reported cost of one call


def check_reply(checks: tuple[Check, ...]) -> Validator:
    """A validator for `expect:` checks: None when the reply passes, else why it failed."""

    def validate(text: str) -> str | None:
        for check in checks:
            if not check.holds(text):
                return f"expect {check.describe()} failed"
        return None

    return validate


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call is booked at, and on what grounds."""

    usd: float
    tokens: int
    source: CostSource
    note: str = ""

    @property
    def estimated(self) -> bool:
        return self.source == "estimated"


@dataclass
class Caller:
    """Everything a run needs to make calls; one per run."""

    pool: Pool
    providers: Callable[[str], Provider]
    budget: BudgetGuard
    limits: Limits
    cache: CacheStore | None = None
    cache_all: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    secrets: Secrets = field(default_factory=lambda: Secrets(()))
    on_attempt: Callable[[str, Attempt], None] | None = None
    on_retry: Callable[[str, str, float], None] | None = None  # (step, alias, seconds of backoff before the next try)
    on_warning: Callable[[str, str], None] | None = None  # (step, message)
    #: Per alias, what replies showed beyond the pool's figures: output tokens over `max_tokens`
    #: (reasoning models), reported costs over the pool's prices, the dearest call of an unpriced alias.
    observed: dict[str, Observed] = field(default_factory=dict)
    #: Whose calls these are, for the response cache (an API key's name in `baton serve`): tenants never share hits.
    cache_partition: str = ""
    #: A learned route's embedder for a pool alias (network code, given by the session: the run layer never imports it).
    embedder: Callable[[str], Embedder] | None = None

    def _charge(self, spec: ModelSpec, resp: ChatResponse, reservation: Reservation) -> Charge:
        """Every call that reached the provider is booked: as reported, computed, or at its worst case."""
        if resp.usage_source != "reported":
            return Charge(reservation.usd, reservation.tokens, "estimated", f"{resp.usage_note}; booked at the call's worst case")
        tokens = resp.input_tokens + resp.output_tokens
        if resp.reported_cost is not None:
            return Charge(resp.reported_cost, tokens, "reported", resp.usage_note)
        if spec.priced or self.pool.provider(spec.provider).free:
            return Charge(spec.cost(resp.input_tokens, resp.output_tokens, resp.cached_tokens, resp.cache_write_tokens), tokens,
                          "computed", resp.usage_note)
        return Charge(0.0, tokens, "unknown", resp.usage_note)

    def _charge_fault(self, spec: ModelSpec, fault: ProviderFault, reservation: Reservation) -> Charge:
        if fault.billed is not None:
            return self._charge(spec, fault.billed, reservation)
        if fault.kind == "timeout":
            return Charge(reservation.usd, reservation.tokens, "estimated",
                          "timed out after the request was sent (the provider may have billed it); booked at the call's worst case")
        return Charge(0.0, 0, "not_billed")

    def _settle(self, step: str, reservation: Reservation, charge: Charge) -> None:
        """Settle now, without awaiting: for a call interrupted mid-flight (its task may be cancelled)."""
        self._warn(step, self.budget.settle(reservation, charge.usd, charge.tokens, estimated=charge.estimated))

    async def _settle_async(self, step: str, reservation: Reservation, charge: Charge) -> None:
        self._warn(step, await self.budget.settle_async(reservation, charge.usd, charge.tokens, estimated=charge.estimated))

    def _warn(self, step: str, warning: str | None) -> None:
        if warning is not None and self.on_warning is not None:
            self.on_warning(step, warning)

    async def _reserve(self, step: str, alias: str, spec: ModelSpec, messages: tuple[Mapping[str, Any], ...], max_tokens: int,
                 tools: ToolOffer | None = None) -> Reservation:
        """The call's worst case, raised by what earlier replies of this alias showed."""
        prompt_bound = prompt_token_bound(messages, tools.tools if tools is not None else ())
        seen = self.observed.get(alias) or Observed()
        if (not spec.priced and not seen.dearest_call and self.budget.caps_usd
                and not self.pool.provider(spec.provider).free):
            raise BudgetExceeded(f"step `{step}`: a dollar cap is set, but `{alias}` has no prices in the pool, so the cost of a call "
                                 f"cannot be bounded before it is sent; give `{alias}` input_price and output_price (an upper "
                                 "bound will do; 0 for a free server)", step=step, cap="usd")
        output_bound = math.ceil(max_tokens * seen.output_overrun)
        usd = max(spec.worst_cost(prompt_bound, output_bound) * seen.price_overrun, seen.dearest_call)
        return await self.budget.reserve_async(step, usd, prompt_bound + output_bound)

    def _observe(self, alias: str, spec: ModelSpec, max_tokens: int, resp: ChatResponse, charge: Charge) -> None:
        if resp.usage_source != "reported":
            return
        seen = self.observed.setdefault(alias, Observed())
        if max_tokens and resp.output_tokens > max_tokens:
            seen.output_overrun = max(seen.output_overrun, resp.output_tokens / max_tokens)
        computed = spec.cost(resp.input_tokens, resp.output_tokens, resp.cached_tokens, resp.cache_write_tokens)
        if charge.source == "reported" and computed > 0 and charge.usd > computed:
            seen.price_overrun = max(seen.price_overrun, charge.usd / computed)
        if charge.source == "reported" and computed == 0:
            seen.dearest_call = max(seen.dearest_call, charge.usd)

    async def attempt(self, step: str, alias: str, role: str, messages: tuple[Mapping[str, Any], ...], params: Params,
                      timeout: float, validate: Validator | None = None, grammar: tuple[str, str] | None = None,
                      stream: TextStream | None = None, local_grammar: str | None = None,
                      record: Callable[[Attempt], None] | None = None, tools: ToolOffer | None = None,
                      ) -> tuple[ChatResponse | None, Attempt, ProviderFault | None]:
        """One call to one alias, inside limits and budget; never raises for provider faults.

        A reply is returned only when it passed `validate`; only such replies are cached.
        With `stream`, the reply's text goes to it as the provider produces it (a cache hit, or a
        provider that cannot stream, sends it whole once it passed).

        A call that was sent is always charged: when it ends any other way than with a reply or a
        classified fault (the task is cancelled by a client that went away, SIGINT or SIGTERM, or the
        reply crashes a reader), it is booked at its reservation, marked estimated, and handed to
        `record` as an `interrupted` fault before the exception goes on: the provider may bill it.
        """
        spec = self.pool.models[alias]
        if tools is None and params.tools:
            tools = ToolOffer(params.tools, params.tool_choice)
        if grammar is None and local_grammar is not None and self.providers(alias).enforces_grammar:
            grammar = (local_grammar, "gbnf")
        if spec.max_output_tokens is not None and params.max_tokens > spec.max_output_tokens:
            params = params.model_copy(update={"max_tokens": spec.max_output_tokens})
        request = ChatRequest(
            model_id=spec.id, messages=messages, temperature=params.temperature, max_tokens=params.max_tokens,
            top_p=params.top_p, seed=params.seed, reasoning=params.reasoning, timeout=timeout, step=step, alias=alias,
            grammar=grammar[0] if grammar else None, grammar_format=grammar[1] if grammar else None, tools=tools,
            response_format=params.response_format,
        )
        cache_key = None
        began = time.time()
        # a call with tools is not cached: its answer may be a tool call, whose result the client has not sent yet
        if self.cache is not None and tools is None and (params.temperature == 0 or self.cache_all):
            endpoint = f"{spec.provider}:{self.pool.provider(spec.provider).base_url or ''}"
            cache_key = ResponseCache.key(endpoint, request, self.cache_partition)
            hit = await self.cache.fetch(cache_key)
            if hit is not None:
                hit_attempt = Attempt(alias=alias, model_id=spec.id, role=role, status="cache_hit", input_tokens=hit.input_tokens,
                                      output_tokens=hit.output_tokens, cost=0.0, cost_source="cache", finish_reason=hit.finish_reason,
                                      truncated=hit.truncated, started=began, reply_preview=hit.text[:200])
                reply, hit_attempt = self._validated(hit, hit_attempt, validate)
                if reply is not None and stream is not None:
                    stream.finish(reply.text)
                return reply, hit_attempt, None
        slots = self.limits.semaphores(alias, spec)
        held = 0
        try:
            for sem in slots:
                await sem.acquire()
                held += 1
            reservation = await self._reserve(step, alias, spec, messages, params.max_tokens, tools)
            began = time.time()
            started = time.perf_counter()
            try:
                provider = self.providers(alias)
                async with asyncio.timeout(timeout):  # not wait_for: that wraps every call in a task of its own
                    if stream is not None and validate is None and request.response_format is None and isinstance(provider, StreamingProvider):
                        response = await provider.stream(request, stream.feed)
                    else:
                        response = await provider.complete(request)
                if self.secrets:
                    response = dataclasses.replace(response, text=self.secrets.scrub(response.text),
                                                   tool_calls=self._scrubbed_calls(response.tool_calls))
                if not response.text.strip() and not response.tool_calls:
                    raise ProviderFault("empty_reply", "the model returned an empty message", billed=response)
                if request.response_format is not None and not response.tool_calls:
                    problem = reply_problem(response.text, request.response_format)
                    if problem:
                        raise ProviderFault("bad_response", f"{alias}: {problem}", billed=response)
            except (ProviderFault, TimeoutError) as err:
                fault = err if isinstance(err, ProviderFault) else ProviderFault("timeout", f"no reply within {timeout:g}s")
                charge = self._charge_fault(spec, fault, reservation)
                await self._settle_async_or_record(step, alias, spec, role, reservation, charge, began, started, record)
                billed = fault.billed
                if billed is not None:  # a rejected reply still shows what this alias spends (reasoning past max_tokens)
                    self._observe(alias, spec, params.max_tokens, billed, charge)
                return None, Attempt(
                    alias=alias, model_id=spec.id, role=role, status="fault", cause=fault.kind, reason=self.secrets.scrub(str(fault)),
                    input_tokens=billed.input_tokens if billed else 0, output_tokens=billed.output_tokens if billed else 0,
                    cost=charge.usd, cost_source=charge.source, cost_note=charge.note, finish_reason=fault.finish_reason,
                    latency_ms=(time.perf_counter() - started) * 1000, started=began), fault
            except BaseException as err:
                self._interrupted(step, alias, spec, role, reservation, err, began, started, record)
                raise
            latency = (time.perf_counter() - started) * 1000
            charge = self._charge(spec, response, reservation)
            await self._settle_async_or_record(step, alias, spec, role, reservation, charge, began, started, record)
            self._observe(alias, spec, params.max_tokens, response, charge)
        finally:
            for sem in slots[:held]:
                sem.release()
        done = Attempt(
            alias=alias, model_id=response.response_model or spec.id, role=role, status="ok", input_tokens=response.input_tokens,
            output_tokens=response.output_tokens, cached_tokens=response.cached_tokens, reasoning_tokens=response.reasoning_tokens,
            cost=charge.usd, cost_source=charge.source, cost_note=charge.note, finish_reason=response.finish_reason,
            truncated=response.truncated, latency_ms=latency, started=began, reply_preview=response.text[:200],
            tool_calls=[dict(c) for c in response.tool_calls],
        )
        reply, done = self._validated(response, done, validate)
        if reply is not None and stream is not None:
            try:
                stream.finish(reply.text)
            except StreamMismatch as err:
                done.status, done.cause, done.reason = "fault", "bad_response", str(err)
                return None, done, ProviderFault("bad_response", str(err), billed=response)
        if reply is not None and cache_key is not None and self.cache is not None:
            await self.cache.keep(cache_key, reply)
        return reply, done, None

    def _scrubbed_calls(self, calls: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        """Tool calls with the secrets of the pool hidden in their arguments (a model may echo a key into them)."""
        return tuple({**c, "function": {**c["function"], "arguments": self.secrets.scrub(c["function"]["arguments"])}} for c in calls)

    async def _settle_async_or_record(self, step: str, alias: str, spec: ModelSpec, role: str, reservation: Reservation,
                                      charge: Charge, began: float, started: float, record: Callable[[Attempt], None] | None) -> None:
        """Settle a call that ended, awaiting a ledger across a network. Interrupted while it waits, the settling still
        finishes (in its thread), and the call is recorded at what it was booked at before the interruption goes on."""
        try:
            await self._settle_async(step, reservation, charge)
        except BaseException as err:
            self._interrupted(step, alias, spec, role, reservation, err, began, started, record, charge)
            raise

    def _interrupted(self, step: str, alias: str, spec: ModelSpec, role: str, reservation: Reservation, err: BaseException,
                     began: float, started: float, record: Callable[[Attempt], None] | None, booked: Charge | None = None) -> None:
        """Book and record a sent call that ended without a reply or a fault (see `attempt`); `booked`: what a call that
        ended was being booked at when the interruption came."""
        what = ("the call was interrupted (cancelled: the client went away, or the run was stopped)"
                if isinstance(err, (asyncio.CancelledError, KeyboardInterrupt)) else
                f"reading the reply failed ({type(err).__name__})")
        charge = booked or Charge(reservation.usd, reservation.tokens, "estimated",
                                  f"{what} after the request was sent (the provider may have billed it); booked at the call's "
                                  "worst case")
        self._settle(step, reservation, charge)
        self._record(step, record, Attempt(
            alias=alias, model_id=spec.id, role=role, status="fault", cause="interrupted", reason=what, cost=charge.usd,
            cost_source=charge.source, cost_note=charge.note, latency_ms=(time.perf_counter() - started) * 1000, started=began))

    @staticmethod
    def _validated(response: ChatResponse, attempt: Attempt, validate: Validator | None) -> tuple[ChatResponse | None, Attempt]:
        """An `expect` failure makes the attempt `rejected`: the reply is kept in the record, not returned. A reply of tool
        calls has no answer text to check yet: the answer comes on the turn after the client runs them."""
        problem = validate(response.text) if validate is not None and not response.tool_calls else None
        if problem is None:
            return response, attempt
        attempt.status = "rejected"
        attempt.cause = "expect"
        attempt.reason = problem
        return None, attempt

    async def chain(self, step: str, levels: tuple[str, ...], fallbacks: tuple[str, ...], retries: int,
                    messages: tuple[Mapping[str, Any], ...], params: Params, timeout: float, validate: Validator | None = None,
                    role: str = "worker", record: Callable[[Attempt], None] | None = None,
                    grammar: tuple[str, str] | None = None, stream: TextStream | None = None,
                    local_grammar: str | None = None, tools: ToolOffer | None = None) -> tuple[str, str, str]:
        """Run the retry / fallback / escalation policy; returns (text, alias, why this alias).

        `grammar` is (text, format) for a grammar-constrained call (the planner's); `local_grammar` a GBNF
        grammar for local models only (`choices:`). With `stream`
        (only for a call whose reply is not checked), an attempt that fails after part of its
        text was sent is not retried: the reader cannot be given a second reply after part of a first."""
        last_problem = ""
        for level_index, level in enumerate(levels):
            escalate_reason = ""
            for cand_index, alias in enumerate((level, *fallbacks)):
                for n in range(retries + 1):
                    try:
                        response, attempt, fault = await self.attempt(step, alias, role, messages, params, timeout, validate, grammar,
                                                                      stream, local_grammar, record, tools)
                    except BudgetExceeded as err:
                        refused = Attempt(alias=alias, role=role, status="refused", cause="budget", reason=str(err), cost_source="not_billed",
                                          started=time.time())
                        self._record(step, record, refused)
                        raise
                    self._record(step, record, attempt)
                    if response is not None:
                        return response.text, alias, self._why(level_index, cand_index, levels, alias, last_problem)
                    if attempt.status == "rejected":
                        escalate_reason = f"{attempt.reason} on `{alias}`"
                        last_problem = escalate_reason
                        break
                    assert fault is not None
                    last_problem = f"`{alias}`: {fault.kind}: {attempt.reason}"
                    if stream is not None and stream.started:
                        raise ProviderError(f"step `{step}` failed after its reply began streaming (not retried: the reader "
                                            f"already has part of it); {last_problem}", step=step)
                    if stream is not None:
                        stream.restart()
                    if not fault.retryable:
                        break
                    if n < retries:
                        delay = self.retry.delay(n, fault.retry_after, self.rng)
                        if self.on_retry is not None:
                            self.on_retry(step, alias, delay)
                        await self.sleep(delay)
                if escalate_reason:
                    break
            if not escalate_reason and level_index == len(levels) - 1:
                raise ProviderError(f"step `{step}` failed: every model failed; last: {last_problem}", step=step)
        raise VerificationFailed(f"step `{step}`: {last_problem}; no model left to escalate to", step=step)

    def _record(self, step: str, record: Callable[[Attempt], None] | None, attempt: Attempt) -> None:
        if record is not None:
            record(attempt)
        if self.on_attempt is not None:
            self.on_attempt(step, attempt)

    @staticmethod
    def _why(level: int, cand: int, levels: tuple[str, ...], alias: str, last_problem: str) -> str:
        if level == 0 and cand == 0:
            return f"first choice `{alias}`" + (" (after retries)" if last_problem else "")
        if cand > 0:
            return f"fallback `{alias}` after {last_problem}"
        return f"escalated to `{alias}` (level {level + 1} of {len(levels)}) after {last_problem}"
