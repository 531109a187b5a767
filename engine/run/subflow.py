"""Running a sub-flow (`use "critique" as review { ... }`) inside its caller's run.

The scheduler runs the sub-flow with an executor of its own over the same run: the same budget, cache, limits and
record. What changes is only the names: the sub-flow's nodes are recorded, reported and traced as `review/draft`,
so the caller's record holds the sub-run nested inside it, `--resume` finds its finished steps, and no name of the
sub-flow can collide with the caller's. The sub-flow is given exactly what its `use` binds: the text of the caller's
inputs and outputs it names, and literal texts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.errors import RunError
from engine.model import SUBFLOW_SEPARATOR, Budget, Flow, Use
from engine.run.budget import BudgetGuard
from engine.run.calls import Caller
from engine.run.events import RunEvents
from engine.run.store import RunRecord
from engine.run.trace import RunSummary, StepResult, in_flight_totals


def prefix_of(use: str) -> str:
    return use + SUBFLOW_SEPARATOR


def given_inputs(use: Use, flow: Flow, inputs: Mapping[str, str], results: Mapping[str, StepResult]) -> dict[str, str]:
    """The sub-flow's inputs: literal texts, and the text of each caller's input or output bound to one."""
    given = dict(use.texts)
    for name, source in use.inputs.items():
        given[name] = inputs.get(source, "") if source in flow.inputs else results[source].output
    return given


def completed_inside(use: str, completed: Mapping[str, StepResult]) -> dict[str, StepResult]:
    """The caller's finished steps that belong to the sub-flow, named as the sub-flow names them (for `--resume`)."""
    prefix = prefix_of(use)
    return {name[len(prefix):]: r.model_copy(update={"name": name[len(prefix):]})
            for name, r in completed.items() if name.startswith(prefix)}


def nested_results(use: str, results: Mapping[str, StepResult]) -> dict[str, StepResult]:
    """A sub-flow's results named as its caller records them (`review/draft`); its own sub-flows' are already nested."""
    prefix = prefix_of(use)
    return {prefix + name: r.model_copy(update={"name": prefix + name}) for name, r in results.items()}


def sub_caller(caller: Caller, use: Use, completed: Mapping[str, StepResult]) -> Caller:
    """The run's caller (its budget, cache and limits), reporting the sub-flow's calls under their nested names.

    A sub-flow that declares a `budget` is held to it inside its caller as well: its calls reserve against a guard of
    its own whose parent is the run's, so either cap refuses a call. On `--resume`, what its finished steps (`completed`,
    named as the sub-flow names them) spent counts against it."""
    prefix = prefix_of(use.name)
    on_attempt, on_retry, on_warning = caller.on_attempt, caller.on_retry, caller.on_warning
    budget = caller.budget
    if use.flow.budget != Budget():
        before = in_flight_totals(RunSummary(run_id="", flow="", started=0.0), completed, use.flow.counted())
        budget = BudgetGuard(use.flow.budget, spent_usd=before.cost, spent_tokens=before.input_tokens + before.output_tokens,
                             spent_calls=before.calls, estimated_usd=before.estimated_cost, parent=caller.budget,
                             label="the sub-flow's own budget")
    return dataclasses.replace(
        caller,
        budget=budget,
        on_attempt=(lambda step, a: on_attempt(prefix + step, a)) if on_attempt else None,
        on_retry=(lambda step, alias, s: on_retry(prefix + step, alias, s)) if on_retry else None,
        on_warning=(lambda step, message: on_warning(prefix + step, message)) if on_warning else None,
    )


class SubflowEvents(RunEvents):
    """The run's events, with the sub-flow's step names nested (`review/draft`)."""

    def __init__(self, parent: RunEvents, use: str) -> None:  # noqa: D107 - shares the parent's sinks, not new ones
        self.parent = parent
        self.prefix = prefix_of(use)
        self.store = parent.store
        self.progress = parent.progress
        self.observed = parent.observed
        self.warnings = parent.warnings

    def emit(self, name: str, **fields: Any) -> None:
        if isinstance(fields.get("step"), str):
            fields["step"] = self.prefix + fields["step"]
        self.parent.emit(name, **fields)


class SubflowRecord:
    """The run's record, as a sub-flow's executor commits to it: each finished step under its nested name."""

    def __init__(self, parent: RunRecord, use: str) -> None:
        self.parent = parent
        self.prefix = prefix_of(use)
        self.run_id = parent.run_id
        self.keeps_events = parent.keeps_events

    def event(self, name: str, **fields: Any) -> None:
        self.parent.event(name, **fields)

    def write_setup(self, flow_source: str, inputs: dict[str, str], pool_json: dict[str, Any] | str) -> None:
        raise AssertionError("a sub-flow's run is part of its caller's: the caller writes the setup")

    async def commit_step(self, result: StepResult) -> None:
        await self.parent.commit_step(result.model_copy(update={"name": self.prefix + result.name}))

    def write_summary(self, summary: RunSummary, final: bool = True) -> None:
        raise AssertionError("a sub-flow's run is part of its caller's: the caller writes the summary")

    def close(self) -> None:
        return None


def failed_inside(use: str, err: RunError) -> RunError:
    """The sub-flow's failure as the caller's: its step named as recorded (`review/revise`), its message saying where."""
    if err.step is not None:
        err.step = prefix_of(use) + err.step
    err.args = (f"in sub-flow `{use}`: {err}",)
    return err


def count_calls(use: Use, result: StepResult, results: Mapping[str, StepResult]) -> None:
    """The sub-flow's calls are counted in the use's result (as a loop's are in its), role by nested step: whether it
    finished or failed, what it spent is the caller's."""
    for name in use.flow.top_level():
        r = results.get(name)
        if r is not None and not r.resumed:
            for a in r.attempts:
                result.add(a.model_copy(update={"role": f"{name} {a.role}"}))


def finish_use(use: Use, result: StepResult, results: Mapping[str, StepResult]) -> None:
    """The use's result is its sub-flow's output."""
    out = results[use.flow.output]
    result.output, result.model, result.subtask = out.output, out.model, out.subtask
    result.reason = f"sub-flow {use.source}: output `{use.flow.output}`" + (f" by `{out.model}`" if out.model else "")
