"""Running flows over a dataset: concurrent items, a spending cap, resumable results, one report.

Each (flow, item) pair is one run through the ordinary executor (records kept in memory;
the evaluation's own `results.jsonl` is the durable record, appended as each item
finishes, so `--resume` skips what is done and never bills it again). Every run, and the
judge scorer's calls, go through one `Session`: the pool's concurrency limits hold across
all items at once, and the connections are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import BudgetExceeded, InputError, RunCancelled, RunError
from engine.eval.dataset import Item
from engine.eval.scorers import Scorer
from engine.eval.stats import mcnemar, pareto, percentile, wilson
from engine.model import Budget, Flow
from engine.pool import Pool
from engine.run.budget import BudgetGuard
from engine.run.home import RESULTS_JOURNAL, RunHome
from engine.run.journal import Journal, read_lines
from engine.run.protocol import DATASET_ITEM, Provider
from engine.session import Session
from engine.wiring import check_inputs


@dataclass
class ItemResult:
    flow: str
    item: str
    correct: bool
    cost: float
    latency_ms: float
    calls: int
    output: str
    error: str | None = None
    scoring_cost: float = 0.0  # a judge scorer's calls for this item
    #: The flow's reply tokens on this item: what an answer scorer learns how hard a model worked from.
    output_tokens: int = 0


@dataclass
class FlowReport:
    flow: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    total_cost: float
    mean_cost: float
    cost_per_correct: float | None
    latency_p50_ms: float
    latency_p95_ms: float
    calls_per_item: float
    failures: int
    pareto: bool = False


@dataclass
class EvalReport:
    eval_id: str
    dataset: str
    scorer: str
    flows: list[FlowReport] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    oracle: float | None = None
    #: Rows to judge the flows against, where the data allows: the best flow, random routing between the cheapest and
    #: the best flow at each other flow's cost (expected accuracy), and the oracle with its cost.
    references: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    duration_s: float = 0.0
    scoring_cost: float = 0.0  # what a judge scorer cost, over every item (not in any flow's cost)

    def to_json(self) -> dict[str, Any]:
        return {"eval_id": self.eval_id, "dataset": self.dataset, "scorer": self.scorer, "duration_s": self.duration_s,
                "flows": [asdict(f) for f in self.flows], "pairs": self.pairs, "oracle": self.oracle, "references": self.references,
                "stopped": self.stopped,
                "scoring_cost": self.scoring_cost}


def flow_inputs(flow: Flow, item: Item) -> dict[str, str]:
    """The item's fields that the flow declares as inputs."""
    return {k: v for k, v in item.fields.items() if k in flow.inputs}


def check_items(flows: list[tuple[str, Flow]], items: list[Item]) -> None:
    """Every item gives every flow its inputs; else `InputError` naming the first items that do not.

    Checked before anything runs: found at an item's turn, a missing field stopped the
    whole evaluation midway with a traceback.
    """
    problems = []
    for label, flow in flows:
        for item in items:
            try:
                check_inputs(flow, flow_inputs(flow, item))
            except InputError as err:
                problems.append(f"item {item.id}: {err} (flow {label})")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise InputError("the dataset does not fit the flows: " + "; ".join(problems[:3]) + more)


class Turns:
    """Items sharing an evaluation's account. Calls in flight hold reservations at their worst case, so the account
    can refuse an item while the money is not yet spent: such an item waits for another to finish and tries again.
    Refused while no other item holds anything, the budget is truly spent and the item stops."""

    def __init__(self) -> None:
        self.holding = 0
        self.finished = 0
        self.changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def item(self) -> AsyncIterator[None]:
        """Around an item's whole work (its run and its scoring: both reserve against the account)."""
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
            self.finished += 1
            async with self.changed:
                self.changed.notify_all()

    async def wait_for_room(self) -> bool:
        """After a refusal by the account: True once another item has finished (try again), False at once when no
        other item holds reservations (the budget is spent). Never waits on items that are themselves waiting."""
        if self.holding <= 1:
            return False
        seen = self.finished
        self.holding -= 1
        try:
            async with self.changed:
                await self.changed.wait_for(lambda: self.finished > seen)
        finally:
            self.holding += 1
        return True


#: The label of an evaluation's shared account: its refusals stop the evaluation, unlike a flow's own cap.
EVALUATION_BUDGET = "the evaluation's budget"


def evaluation_account(budget_usd: float) -> BudgetGuard:
    """The account every call of an evaluation reserves against (give a judge the same one)."""
    return BudgetGuard(Budget(usd=budget_usd), label=EVALUATION_BUDGET)


async def evaluate(flows: list[tuple[str, Flow]], items: list[Item], pool: Pool, scorer: Scorer, *, scorer_name: str = "",
                   dataset_name: str = "", providers: dict[str, Provider] | None = None, concurrency: int = 32,
                   budget_usd: float | None = None, home: str | Path | None = None, resume: str | None = None,
                   progress: Callable[[int, int, int, float], None] | None = None, eval_id: str | None = None,
                   session: Session | None = None, account: BudgetGuard | None = None) -> EvalReport:
    """Run every flow on every item; `resume` continues a recorded evaluation, `eval_id` names a new one.

    The runs go through `session` (a judge scorer should use the same one); without one, a
    session of the evaluation's own is opened on `pool` and `providers`, and closed at the end.

    `budget_usd` is a cap on the whole evaluation, the scorer's calls included: every call of every
    item reserves against one shared account (`account`, or one made here; give a judge the same
    one through `judge_through`), so items in flight together cannot overspend it. An item the
    account refuses is not recorded (a resume with a larger budget runs it) and no more start.
    """
    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, not {concurrency}")  # a zero semaphore would wait forever
    if session is None:
        async with Session(pool, home=home, cache=False, providers=providers) as own:
            return await evaluate(flows, items, pool, scorer, scorer_name=scorer_name, dataset_name=dataset_name,
                                  concurrency=concurrency, budget_usd=budget_usd, home=home, resume=resume, progress=progress,
                                  eval_id=eval_id, session=own)
    check_items(flows, items)
    folder = RunHome(home).eval_folder(eval_id, resume)
    eval_id = folder.name
    done: dict[tuple[str, str], ItemResult] = {}
    for line in read_lines(folder / RESULTS_JOURNAL):
        try:
            r = ItemResult(**json.loads(line))
        except (ValueError, TypeError):
            continue  # not a result (a line from a newer version): that item runs again
        done[(r.flow, r.item)] = r
    report = EvalReport(eval_id, dataset_name, scorer_name)
    spent = sum(r.cost + r.scoring_cost for r in done.values())
    if account is None and budget_usd is not None:
        account = evaluation_account(budget_usd)
    if account is not None:
        account.spent_usd += spent  # what the items recorded before a resume cost counts against this run's cap
    sem = asyncio.Semaphore(concurrency)
    total = len(flows) * len(items)
    counters = {"done": len(done), "right": sum(r.correct for r in done.values())}
    t0 = time.perf_counter()
    # the same journal as a run's steps: an item counts as done once its line is fsynced, so a crash
    # (even SIGKILL) never bills a finished item again; its first write cuts a line torn by a crash
    journal = Journal(folder / RESULTS_JOURNAL)
    turns = Turns()

    async def one(label: str, flow: Flow, item: Item) -> None:
        nonlocal spent
        if (label, item.id) in done:
            return
        async with sem, turns.item():
            if budget_usd is not None and spent >= budget_usd:
                report.stopped = f"budget ${budget_usd:g} reached after ${spent:.4f}"
                return
            inputs = flow_inputs(flow, item)
            DATASET_ITEM.set(item.id)  # this item's own task: the run's calls see it, no other item's do
            started = time.perf_counter()
            while True:
                try:
                    summary = await session.run(flow, inputs, record=False, cache=False, account=account)
                    output, cost, calls, error = summary.output or "", summary.cost, summary.calls, None
                    output_tokens = summary.output_tokens
                    break
                except RunCancelled:  # interrupted, not failed: nothing is recorded, so a resume runs the item again
                    raise asyncio.CancelledError from None
                except RunError as err:
                    partial = err.summary
                    if isinstance(err, BudgetExceeded) and err.budget == EVALUATION_BUDGET:  # not the flow's own cap
                        spent += partial.cost if partial is not None else 0.0
                        if await turns.wait_for_room():
                            continue
                        report.stopped = f"budget ${budget_usd:g} reached after ${spent:.4f}"
                        return
                    output, error, output_tokens = "", str(err), 0
                    cost = partial.cost if partial is not None else 0.0
                    calls = partial.calls if partial is not None else 0
                    break
            failed_cost = 0.0
            try:
                score = await scorer(output, item.reference, item.fields) if output else None
            except RunError as err:  # the judge failed for good (after its retries): the item is not scored, its calls still cost
                score, error = None, f"scoring failed: {err}"
                failed_cost = err.call.cost if err.call is not None else 0.0
            correct = score is not None and score.correct
            scoring_cost = score.cost if score is not None else failed_cost
            result = ItemResult(label, item.id, correct, cost, (time.perf_counter() - started) * 1000, calls, output[:500], error,
                                scoring_cost, output_tokens)
            spent += cost + scoring_cost
            done[(label, item.id)] = result
            await journal.append(json.dumps(asdict(result), ensure_ascii=False))
            counters["done"] += 1
            counters["right"] += correct
            if progress is not None:
                progress(counters["done"], total, counters["right"], spent)

    try:
        async with asyncio.TaskGroup() as group:  # on Ctrl-C it waits for every item to stop before the file closes
            for label, flow in flows:
                for item in items:
                    group.create_task(one(label, flow, item))
    finally:
        journal.close()
    report.duration_s = round(time.perf_counter() - t0, 2)
    report.scoring_cost = sum(r.scoring_cost for r in done.values())
    _summarise(report, [label for label, _ in flows], items, done)
    (folder / "report.json").write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    return report


def _references(report: EvalReport, labels: list[str], common: list[str], done: dict[tuple[str, str], ItemResult]) -> list[dict[str, Any]]:
    flows = {f.flow: f for f in report.flows}
    best = max(labels, key=lambda f: (flows[f].accuracy, -flows[f].mean_cost))
    cheapest = min(labels, key=lambda f: (flows[f].mean_cost, -flows[f].accuracy))
    rows: list[dict[str, Any]] = [{"row": "best flow", "flow": best, "accuracy": flows[best].accuracy, "mean_cost": flows[best].mean_cost}]
    c0, c1 = flows[cheapest].mean_cost, flows[best].mean_cost
    for f in labels:
        if f in (best, cheapest) or c1 <= c0:
            continue
        share = min(1.0, max(0.0, (flows[f].mean_cost - c0) / (c1 - c0)))
        expected = (1 - share) * flows[cheapest].accuracy + share * flows[best].accuracy
        rows.append({"row": f"random {cheapest}/{best} at the cost of {f}", "flow": f, "share_best": share, "accuracy": expected,
                     "mean_cost": flows[f].mean_cost, "flow_accuracy": flows[f].accuracy})
    oracle_cost = 0.0
    for i in common:
        right = [done[(lab, i)].cost for lab in labels if done[(lab, i)].correct]
        oracle_cost += min(right) if right else done[(cheapest, i)].cost
    rows.append({"row": "oracle (cheapest flow that got each item right)", "accuracy": report.oracle, "mean_cost": oracle_cost / len(common)})
    return rows


def _summarise(report: EvalReport, labels: list[str], items: list[Item], done: dict[tuple[str, str], ItemResult]) -> None:
    for label in labels:
        rs = [done[(label, it.id)] for it in items if (label, it.id) in done]
        n = len(rs)
        right = sum(r.correct for r in rs)
        low, high = wilson(right, n)
        cost = sum(r.cost for r in rs)
        lat = [r.latency_ms for r in rs]
        report.flows.append(FlowReport(
            flow=label, n=n, correct=right, accuracy=right / n if n else 0.0, ci_low=low, ci_high=high, total_cost=cost,
            mean_cost=cost / n if n else 0.0, cost_per_correct=cost / right if right else None,
            latency_p50_ms=percentile(lat, 0.5), latency_p95_ms=percentile(lat, 0.95),
            calls_per_item=sum(r.calls for r in rs) / n if n else 0.0, failures=sum(r.error is not None for r in rs),
        ))
    front = pareto([(f.flow, f.mean_cost, f.accuracy) for f in report.flows])
    for f in report.flows:
        f.pareto = f.flow in front
    if len(labels) > 1:
        common = [it.id for it in items if all((lab, it.id) in done for lab in labels)]
        report.oracle = sum(any(done[(lab, i)].correct for lab in labels) for i in common) / len(common) if common else None
        if common:
            report.references = _references(report, labels, common, done)
        for a_i, a in enumerate(labels):
            for b in labels[a_i + 1:]:
                only_a = sum(done[(a, i)].correct and not done[(b, i)].correct for i in common)
                only_b = sum(done[(b, i)].correct and not done[(a, i)].correct for i in common)
                report.pairs.append({"a": a, "b": b, "a_only": only_a, "b_only": only_b, "items": len(common),
                                     "mcnemar_p": mcnemar(only_a, only_b)})
