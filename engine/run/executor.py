"""The scheduler: runs a checked flow's DAG, each node as soon as what it sees is ready.

It knows the DAG (`Flow.plan`), the futures of the nodes and of the routes' decisions,
and the run's record; how each kind of node runs is in `engine.run.nodes`.

Every top-level node gets one asyncio task that waits for the futures of the nodes it
depends on, so the wall time approaches the DAG's critical path; the `Caller` bounds
real concurrency per model, provider and run. A node receives exactly what its `sees`
allows (see `engine.run.prompt`). Route branches wait for their route's decision and
are skipped when not chosen. A failed node stops new work from starting, lets calls in
flight finish, and keeps every finished output on disk for `--resume`. So does a step
marked `tools: client` that answers with tool calls: those calls are the run's answer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.errors import RunCancelled, RunError
from engine.model import Flow, Route, Step, Use
from engine.run import nodes, subflow
from engine.run.calls import Caller
from engine.run.events import RunEvents
from engine.run.store import RunRecord
from engine.run.streaming import TextStream
from engine.run.trace import RouteDecision, RunSummary, StepResult, Totals


class Executor:
    """Runs one flow once (or resumes it). Create a new one per run; its `caller` was built with `events`' sinks."""

    def __init__(self, flow: Flow, caller: Caller, store: RunRecord, inputs: dict[str, str], events: RunEvents,
                 completed: dict[str, StepResult] | None = None, stream: TextStream | None = None) -> None:
        self.flow = flow
        self.caller = caller
        self.store = store
        self.inputs = inputs
        self.events = events
        self.completed = completed or {}
        self.stream = stream
        self.observed = events.observed
        self.results: dict[str, StepResult] = {}
        self.futures: dict[str, asyncio.Future[StepResult]] = {}
        self.decisions: dict[str, asyncio.Future[RouteDecision | None]] = {}
        self.failure: RunError | None = None
        #: The step marked `tools: client` whose reply of tool calls ended the run (not the output step).
        self.tool_calls_by: str | None = None
        self.deps = flow.plan.deps  # built once by the checker

    def emit(self, name: str, **fields: Any) -> None:
        self.events.emit(name, **fields)

    def stream_for(self, name: str) -> TextStream | None:
        """The reader of the run's answer, for the node whose reply is that answer (the output, or a branch of an output route)."""
        if self.stream is None:
            return None
        if name == self.flow.output:
            return self.stream
        output = self.flow.nodes[self.flow.output]
        return self.stream if isinstance(output, Route) and self.flow.guarded_by(name, output.name) else None

    # -- run ------------------------------------------------------------------------------

    async def run(self) -> dict[str, StepResult]:
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
            self.emit("step_finished", step=result.name, kind=result.kind, status=result.status, model=result.model,
                       reason=result.reason, cost=round(result.cost, 8), input_tokens=result.input_tokens,
                       output_tokens=result.output_tokens, latency_ms=round(result.latency_ms, 1), error=result.error,
                       resumed=result.resumed)
        fut = self.futures.get(result.name)
        if fut is not None and not fut.done():
            fut.set_result(result)
        return result

    async def _route(self, route: Route, result: StepResult) -> None:
        """Decide, tell the branches (they wait on the decision), then wait for the chosen one."""
        try:
            decision = await nodes.decide(self, route)
        except RunError:
            self.decisions[route.name].set_result(None)
            raise
        self.decisions[route.name].set_result(decision)
        self.emit("route_decision", step=route.name, label=decision.label, matched=decision.matched, chosen=decision.chosen,
                  skipped=decision.skipped)
        result.decision = decision  # on record while the branch runs
        nodes.take_branch(route, result, decision, await self.futures[decision.chosen])

    async def _node(self, name: str) -> None:
        node = self.flow.nodes[name]
        result = StepResult(name=name, kind=node.kind)
        try:
            deps = [await self.futures[d] for d in self.deps[name]]
            if name in self.completed:
                done = self.completed[name].model_copy(update={"resumed": True})
                if isinstance(node, Use):  # its sub-run's steps are on record too
                    prefix = subflow.prefix_of(name)
                    self.results.update({k: r.model_copy(update={"resumed": True}) for k, r in self.completed.items() if k.startswith(prefix)})
                if isinstance(node, Route):
                    self.decisions[name].set_result(done.decision)
                self._note_tool_calls(node, done)  # a resumed run ends where the recorded one did
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
            if blocked or self.failure is not None or self.tool_calls_by is not None:
                result.status = "not_run"
                result.reason = (f"waiting on {', '.join(blocked)}, which did not finish" if blocked
                                 else "the run stopped before this step" if self.failure is not None
                                 else f"step `{self.tool_calls_by}` answered with tool calls for the client")
                if isinstance(node, Route):
                    self.decisions[name].set_result(None)
                await self._finish(result)
                return
            result.started = time.time()
            if self.observed:
                self.emit("step_started", step=name, kind=node.kind)
            t0 = time.perf_counter()
            if isinstance(node, Route):
                await self._route(node, result)
            elif isinstance(node, Use):
                await self._use(node, result)
            else:
                members = await nodes.run_node(self, node, result)
                self.results.update(members)  # a loop's members, from its last round
                await asyncio.gather(*(self.store.commit_step(m) for m in members.values()))
            result.latency_ms = (time.perf_counter() - t0) * 1000
            result.status = "ok"
            self._note_tool_calls(node, result)
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
        except asyncio.CancelledError:
            if result.started:  # it was calling when the run stopped: its calls were sent, and the record keeps them
                result.latency_ms = (time.time() - result.started) * 1000
                result.status = "failed"
                result.error = "interrupted while it was running"
                await self._finish(result)  # a failed result is not committed: nothing here suspends
            raise
    async def _use(self, use: Use, result: StepResult) -> None:
        """Run a sub-flow inside this run: its own scheduler over the same budget (and its own, when it declares one),
        cache and record, its steps named `use/step`. It is given exactly the texts its `use` binds."""
        completed = subflow.completed_inside(use.name, self.completed)
        child = Executor(use.flow, subflow.sub_caller(self.caller, use, completed), subflow.SubflowRecord(self.store, use.name),
                         subflow.given_inputs(use, self.flow, self.inputs, self.results), subflow.SubflowEvents(self.events, use.name),
                         completed, self.stream_for(use.name))
        try:
            await child.run()
        finally:  # finished or failed, its steps and what they spent are on the caller's record
            self.results.update(subflow.nested_results(use.name, child.results))
            subflow.count_calls(use, result, child.results)
        if child.failure is not None:
            raise subflow.failed_inside(use.name, child.failure)
        subflow.finish_use(use, result, child.results)

    def _note_tool_calls(self, node: object, result: StepResult) -> None:
        """A step marked `tools: client` (not the output) that answered with tool calls ends the run: no new step
        starts, and its calls are the run's answer (the output step's tool calls already are)."""
        if (isinstance(node, Step) and node.client_tools and node.name != self.flow.output and self.tool_calls_by is None
                and result.tool_calls):
            self.tool_calls_by = node.name
            self.emit("tool_calls", step=node.name, calls=[c["function"]["name"] for c in result.tool_calls])

def summarise(summary: RunSummary, results: dict[str, StepResult], top_level: list[str]) -> None:
    """Fill a summary's totals from step results; loop members are counted through their loop."""
    summary.steps = results
    totals = Totals()
    for name in top_level:
        r = results.get(name)
        if r is not None and not r.resumed:
            totals += Totals.of(r.attempts)
    summary.add_totals(totals)
