"""The scheduler: runs a checked flow's DAG, each node as soon as what it sees is ready.

Every top-level node gets one asyncio task that waits for the futures of the nodes it
depends on, so the wall time approaches the DAG's critical path; the `Caller` bounds
real concurrency per model, provider and run. A node receives exactly what its `sees`
allows (see `engine.run.prompt`). Route branches wait for their route's decision and
are skipped when not chosen. A failed node stops new work from starting, lets calls in
flight finish, and keeps every finished output on disk for `--resume`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import BudgetExceeded, RouteError, RunCancelled, RunError, VerificationFailed
from engine.model import Flow, Fuse, Loop, Route, Step, Verify
from engine.run import prompt
from engine.run.answers import extract_answer
from engine.run.calls import Caller, check_reply
from engine.run.store import RunRecord
from engine.run.trace import Attempt, RouteDecision, RunSummary, StepResult

Progress = Callable[[str, dict[str, Any]], None]

DEFAULT_JUDGE_TASK = (
    "Several answers to the same task are given above. Compare them: where they agree, where they "
    "contradict each other, what each misses. Then write the single best answer to the task."
)


def normalise_label(text: str) -> str:
    return re.sub(r"[^\w\s-]", "", text).strip().lower()


class Executor:
    """Runs one flow once (or resumes it). Create a new one per run."""

    def __init__(self, flow: Flow, caller: Caller, store: RunRecord, inputs: dict[str, str],
                 completed: dict[str, StepResult] | None = None, progress: Progress | None = None) -> None:
        self.flow = flow
        self.caller = caller
        self.store = store
        self.inputs = inputs
        self.completed = completed or {}
        self.progress = progress
        #: Whether anyone reads events: the per-call ones are not even built for an in-memory run.
        self.observed = store.keeps_events or progress is not None
        self.results: dict[str, StepResult] = {}
        self.futures: dict[str, asyncio.Future[StepResult]] = {}
        self.decisions: dict[str, asyncio.Future[RouteDecision | None]] = {}
        self.failure: RunError | None = None
        self.warnings: list[str] = []
        self.deps = flow.plan.deps  # built once by the checker

    # -- events ---------------------------------------------------------------------------

    def _emit(self, name: str, **fields: Any) -> None:
        self.store.event(name, **fields)
        if self.progress is not None:
            self.progress(name, fields)

    def _on_attempt(self, step: str, a: Attempt) -> None:
        if not self.observed:
            return
        self._emit(
            "attempt", step=step, role=a.role, alias=a.alias, status=a.status, cause=a.cause, reason=a.reason,
            **{"gen_ai.request.model": a.model_id, "gen_ai.usage.input_tokens": a.input_tokens,
               "gen_ai.usage.output_tokens": a.output_tokens, "cached_tokens": a.cached_tokens,
               "reasoning_tokens": a.reasoning_tokens},
            cost=a.cost, cost_source=a.cost_source, cost_note=a.cost_note, finish_reason=a.finish_reason, truncated=a.truncated,
            latency_ms=round(a.latency_ms, 1),
        )

    def _on_warning(self, step: str, message: str) -> None:
        self.warnings.append(message)
        self.warn(step, message)

    def warn(self, step: str, message: str) -> None:
        """Record and show a warning (the run goes on)."""
        self._emit("warning", step=step, message=message)

    def _on_retry(self, step: str, alias: str, delay_s: float) -> None:
        if self.observed:
            self._emit("retry", step=step, alias=alias, delay_s=round(delay_s, 3))

    # -- run ------------------------------------------------------------------------------

    async def run(self) -> dict[str, StepResult]:
        self.caller.on_attempt = self._on_attempt
        self.caller.on_retry = self._on_retry
        self.caller.on_warning = self._on_warning
        loop = asyncio.get_running_loop()
        top = self.flow.top_level()
        for name in top:
            self.futures[name] = loop.create_future()
            if isinstance(self.flow.nodes[name], Route):
                self.decisions[name] = loop.create_future()
        tasks = [asyncio.create_task(self._node(name), name=f"baton:{name}") for name in top]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.failure = self.failure or RunCancelled("the run was interrupted")
            raise
        return self.results

    async def _finish(self, result: StepResult) -> StepResult:
        result.finished = result.finished or time.time()
        self.results[result.name] = result
        if result.status == "ok" and not result.resumed:
            await self.store.commit_step(result)
        if self.observed:
            self._emit("step_finished", step=result.name, kind=result.kind, status=result.status, model=result.model,
                       reason=result.reason, cost=round(result.cost, 8), input_tokens=result.input_tokens,
                       output_tokens=result.output_tokens, latency_ms=round(result.latency_ms, 1), error=result.error,
                       resumed=result.resumed)
        fut = self.futures.get(result.name)
        if fut is not None and not fut.done():
            fut.set_result(result)
        return result

    async def _node(self, name: str) -> None:
        node = self.flow.nodes[name]
        result = StepResult(name=name, kind=node.kind)
        try:
            deps = [await self.futures[d] for d in self.deps[name]]
            if name in self.completed:
                done = self.completed[name].model_copy(update={"resumed": True})
                if isinstance(node, Route):
                    self.decisions[name].set_result(done.decision)
                await self._finish(done)
                return
            guard = getattr(node, "guard", None)
            if guard is not None:
                decision = await self.decisions[guard.route]
                if decision is None or decision.chosen != name:
                    result.status = "skipped"
                    result.reason = f"route `{guard.route}` chose `{decision.chosen if decision else 'nothing'}`"
                    await self._finish(result)
                    return
            blocked = [d.name for d in deps if d.status not in ("ok",)]
            if blocked or self.failure is not None:
                result.status = "not_run"
                result.reason = f"waiting on {', '.join(blocked)}, which did not finish" if blocked else "the run stopped before this step"
                if isinstance(node, Route):
                    self.decisions[name].set_result(None)
                await self._finish(result)
                return
            result.started = time.time()
            if self.observed:
                self._emit("step_started", step=name, kind=node.kind)
            t0 = time.perf_counter()
            if isinstance(node, Route):
                await self._route(node, result)
            elif isinstance(node, Loop):
                await self._loop(node, result)
            elif isinstance(node, Fuse):
                await self._fuse(node, result, self._visible(node))
            else:
                await self._call(node, result, self._visible(node))
            result.latency_ms = (time.perf_counter() - t0) * 1000
            result.status = "ok"
            await self._finish(result)
        except RunError as err:
            if result.started:  # it ran and failed: how long it tried is part of the record
                result.latency_ms = (time.time() - result.started) * 1000
            result.status = "failed"
            result.error = str(err)
            self.failure = self.failure or err
            if isinstance(node, Route) and not self.decisions[name].done():
                self.decisions[name].set_result(None)
            await self._finish(result)

    # -- what a node sees -----------------------------------------------------------------

    def _visible(self, node: Any, scope: dict[str, StepResult] | None = None, feedback: str = "") -> tuple[dict[str, str], list[prompt.Block]]:
        """The values its template may name and the blocks it is shown: exactly its `sees` (plus named inputs)."""
        values: dict[str, str] = {}
        blocks: list[prompt.Block] = []
        for name in prompt.template_names(node):
            if name in self.inputs:
                values[name] = self.inputs[name]
        for seen in node.sees:
            if seen in self.flow.inputs:
                values[seen] = self.inputs.get(seen, "")
                blocks.append(prompt.Block(f"input {seen}", values[seen]))
            elif seen == "feedback":
                values["feedback"] = feedback
                if feedback:
                    blocks.append(prompt.Block("feedback from the verifier on the previous round", feedback))
            else:
                res = (scope or {}).get(seen) or self.results[seen]
                values[seen] = res.output
                blocks.append(prompt.Block(f"step {seen}", res.output, subtask=res.subtask or None))
        return values, blocks

    async def _call(self, node: Step | Verify, result: StepResult, visible: tuple[dict[str, str], list[prompt.Block]],
                    level_offset: int = 0) -> None:
        values, blocks = visible
        task = prompt.render_task(node.task, values)
        result.subtask = task
        messages = prompt.messages(prompt.render_system(node.params.system, values), blocks, task)
        validate = check_reply(node.expect) if isinstance(node, Step) and node.expect else None
        levels = node.models[min(level_offset, len(node.models) - 1):]
        text, alias, why = await self.caller.chain(node.name, levels, node.fallbacks, node.retries, messages, node.params,
                                                   node.timeout, validate, role="verifier" if isinstance(node, Verify) else "worker",
                                                   record=result.add)
        result.output = text
        result.model = alias
        result.reason = why

    async def _fuse(self, node: Fuse, result: StepResult, visible: tuple[dict[str, str], list[prompt.Block]]) -> None:
        values, blocks = visible
        task = prompt.render_task(node.task, values)
        result.subtask = task
        system = prompt.render_system(node.params.system, values)
        messages = prompt.messages(system, blocks, task)

        async def member(i: int, alias: str) -> tuple[int, str, str | None, str]:
            # one seed for every member would make `panel: m x 4` four copies of one sample: member i gets seed + i
            params = node.params if node.params.seed is None else node.params.model_copy(update={"seed": node.params.seed + i})
            try:
                text, used, _why = await self.caller.chain(node.name, (alias,), node.fallbacks, node.retries, messages, params,
                                                           node.timeout, role=f"panel[{i}]", record=result.add)
                return i, used, text, ""
            except BudgetExceeded:
                raise
            except RunError as err:
                return i, alias, None, str(err)

        gathered = await asyncio.gather(*(member(i, a) for i, a in enumerate(node.panel)), return_exceptions=True)
        for item in gathered:
            if isinstance(item, BaseException):
                raise item
        answers = [a for a in gathered if not isinstance(a, BaseException)]
        ok = [(i, alias, text) for i, alias, text, _err in answers if text is not None]
        failed = [f"panel[{i}] `{alias}`: {err}" for i, alias, text, err in answers if text is None]
        if failed:
            self._emit("panel_failures", step=node.name, failed=failed)
        if len(ok) < node.quorum:
            raise RunError(f"fuse `{node.name}`: {len(ok)} of {len(node.panel)} panel members answered, quorum is {node.quorum}; "
                           + "; ".join(failed), step=node.name)
        if node.vote is not None:
            await self._vote(node, result, ok, messages)
            return
        if node.judge is None:
            i, alias, text = ok[0]
            result.output, result.model = text or "", alias
            result.reason = f"no judge: first answering panel member (panel[{i}])"
            return
        judge_blocks = [*blocks, *(prompt.Block(f"panel answer {i + 1} of {len(node.panel)} (model {alias})", text or "")
                                   for i, alias, text in ok)]
        judge_task = prompt.render_task(node.judge_task, values) if node.judge_task else DEFAULT_JUDGE_TASK
        judge_messages = prompt.messages(system, judge_blocks, f"{judge_task}\n\nThe task was:\n{task}")
        judge_params = node.params.model_copy(update={"temperature": 0.0})
        text, alias, _why = await self.caller.chain(node.name, (node.judge,), (), node.retries, judge_messages, judge_params,
                                                    node.timeout, role="judge", record=result.add)
        result.output, result.model = text, alias
        result.reason = f"judge `{alias}` over {len(ok)} of {len(node.panel)} panel answers" + (f" ({len(failed)} failed)" if failed else "")

    async def _vote(self, node: Fuse, result: StepResult, ok: Sequence[tuple[int, str, str | None]],
                    messages: tuple[dict[str, str], ...]) -> None:
        """Majority vote over extracted answers (self-consistency); below `agree`, escalate (a FrugalGPT-style cascade)."""
        answers = [(i, alias, text or "", extract_answer(text or "", node.vote or "number")) for i, alias, text in ok]
        counts = Counter(a for *_rest, a in answers if a)
        winner, votes = counts.most_common(1)[0] if counts else ("", 0)
        tally = ", ".join(f"{a!r} x{c}" for a, c in counts.most_common())
        self._emit("vote", step=node.name, tally=tally, winner=winner, votes=votes, agree=node.agree)
        if votes >= node.agree:
            i, alias, text, _a = next(x for x in answers if x[3] == winner)
            result.output, result.model = text, alias
            result.reason = f"vote: {winner!r} by {votes} of {len(node.panel)} ({tally})"
            result.verdict = f"agreement {votes}/{len(node.panel)} >= {node.agree}"
            return
        if node.escalate is None:
            raise VerificationFailed(f"fuse `{node.name}`: only {votes} of {len(node.panel)} agree ({tally}); agree is {node.agree}",
                                     step=node.name)
        text, alias, _why = await self.caller.chain(node.name, (node.escalate,), node.fallbacks, node.retries, messages, node.params,
                                                    node.timeout, role="escalate", record=result.add)
        result.output, result.model = text, alias
        result.reason = f"escalated to `{alias}`: only {votes} of {len(node.panel)} agreed ({tally}); agree is {node.agree}"
        result.verdict = f"agreement {votes}/{len(node.panel)} < {node.agree}"

    # -- routes ---------------------------------------------------------------------------

    def _decide(self, route: Route) -> RouteDecision:
        label = normalise_label(self.results[route.by].output) if route.by else None
        chosen_arm = None
        matched = ""
        if label is not None:
            for arm in route.arms:
                if arm.kind == "label" and any(normalise_label(lab) == label for lab in arm.labels):
                    chosen_arm, matched = arm, f"label {arm.describe()} (exact)"
                    break
            if chosen_arm is None:
                best: tuple[int, Any] | None = None
                for arm in route.arms:
                    for lab in arm.labels if arm.kind == "label" else ():
                        m = re.search(rf"\b{re.escape(normalise_label(lab))}\b", label)
                        if m and (best is None or m.start() < best[0]):
                            best = (m.start(), arm)
                if best is not None:
                    chosen_arm, matched = best[1], f"label {best[1].describe()} (first label found in the reply)"
        if chosen_arm is None:
            for arm in route.arms:
                if arm.kind == "rule" and arm.subject is not None:
                    subject = self.inputs.get(arm.subject) if arm.subject in self.flow.inputs else self.results[arm.subject].output
                    hit = re.search(arm.pattern, subject or "") is not None if "matches" in (arm.op or "") else arm.pattern in (subject or "")
                    if (arm.op or "").startswith("not_"):
                        hit = not hit
                    if hit:
                        chosen_arm, matched = arm, f"rule {arm.describe()}"
                        break
        if chosen_arm is None:
            chosen_arm = next((a for a in route.arms if a.kind == "else"), None)
            matched = "else"
        if chosen_arm is None:
            raise RouteError(f"route `{route.name}`: no arm matches " + (f"label {label!r}" if label is not None else "the rules")
                             + " and there is no `else`", step=route.name)
        targets = list(dict.fromkeys(a.target for a in route.arms))
        return RouteDecision(route=route.name, label=label, matched=matched, chosen=chosen_arm.target,
                             skipped=[t for t in targets if t != chosen_arm.target and self.flow.guarded_by(t, route.name)])

    async def _route(self, route: Route, result: StepResult) -> None:
        try:
            decision = self._decide(route)
        except RouteError:
            self.decisions[route.name].set_result(None)
            raise
        self.decisions[route.name].set_result(decision)
        self._emit("route_decision", step=route.name, label=decision.label, matched=decision.matched, chosen=decision.chosen,
                   skipped=decision.skipped)
        result.decision = decision
        chosen = await self.futures[decision.chosen]
        if chosen.status != "ok":
            raise RunError(f"route `{route.name}`: branch `{decision.chosen}` did not finish: {chosen.error or chosen.reason}", step=route.name)
        result.output, result.model, result.subtask = chosen.output, chosen.model, chosen.subtask
        result.reason = f"{decision.matched} -> `{decision.chosen}`"

    # -- loops ----------------------------------------------------------------------------

    async def _loop(self, loop: Loop, result: StepResult) -> None:
        feedback = ""
        rounds = loop.max_rounds
        levels = max((len(getattr(self.flow.nodes[m], "models", ())) for m in loop.members), default=1)
        extra = levels - 1 if loop.exhausted == "escalate" else 0
        scope: dict[str, StepResult] = {}
        for round_no in range(1, rounds + extra + 1):
            offset = max(0, round_no - rounds)
            scope = {}
            for member in loop.members:
                node = self.flow.nodes[member]
                assert isinstance(node, (Step, Verify))
                mres = StepResult(name=member, kind=node.kind, started=time.time())
                t0 = time.perf_counter()
                await self._call(node, mres, self._visible(node, scope, feedback), level_offset=offset)
                mres.latency_ms = (time.perf_counter() - t0) * 1000
                mres.status = "ok"
                for a in mres.attempts:
                    result.add(a.model_copy(update={"role": f"{a.role} r{round_no} {member}"}))
                scope[member] = mres
            verdict = scope[loop.verifier].output
            accepted = re.search(self.flow.nodes[loop.verifier].accept, verdict) is not None  # type: ignore[union-attr]
            self._emit("verdict", step=loop.name, round=round_no, verifier=loop.verifier, accepted=accepted, verdict=verdict[:500])
            result.rounds = round_no
            result.verdict = ("ACCEPTED: " if accepted else "REJECTED: ") + verdict[:500]
            if accepted:
                break
            feedback = verdict
        else:
            if loop.exhausted in ("fail", "escalate"):  # escalate: the extra rounds were the escalation
                raise VerificationFailed(f"loop `{loop.name}`: the verifier did not accept within {result.rounds} rounds", step=loop.name)
        for member, mres in scope.items():
            self.results[member] = mres
        await asyncio.gather(*(self.store.commit_step(mres) for mres in scope.values()))
        out = scope[loop.result]
        result.output, result.model, result.subtask = out.output, out.model, out.subtask
        result.reason = f"{'accepted' if result.verdict and result.verdict.startswith('ACCEPTED') else 'not accepted; kept the last'} round {result.rounds} of {loop.max_rounds}"


def summarise(summary: RunSummary, results: dict[str, StepResult], top_level: list[str]) -> None:
    """Fill a summary's totals from step results; loop members are counted through their loop."""
    summary.steps = results
    cost = estimated = 0.0
    input_tokens = output_tokens = calls = cache_hits = 0
    for name in top_level:
        r = results.get(name)
        if r is None or r.resumed:
            continue
        for a in r.attempts:
            cost += a.cost
            if a.cost_source == "estimated":
                estimated += a.cost
            if a.status == "cache_hit":
                cache_hits += 1
                continue
            input_tokens += a.input_tokens
            output_tokens += a.output_tokens
            if a.status != "refused":
                calls += 1
    summary.cost += cost
    summary.estimated_cost += estimated
    summary.input_tokens += input_tokens
    summary.output_tokens += output_tokens
    summary.calls += calls
    summary.cache_hits += cache_hits
