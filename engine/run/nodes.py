"""How each kind of node runs: a step, a fuse (panel, then judge or vote), a route, a loop.

The scheduler (`engine.run.executor.Executor`) knows only the DAG and its futures: it
waits for what a node needs, then hands the node to `run_node`, which picks the handler
for its kind. A handler turns the node into calls through the run's `Caller`, fills the
node's `StepResult` and raises a `RunError` when the node fails. What a node is shown is
exactly what its `sees` allows (`seen_by`, and `engine.run.prompt`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from engine.checks.returns import response_format
from engine.errors import BudgetExceeded, RouteError, RunError, VerificationFailed
from engine.model import Fuse, Loop, Route, Step, Verify
from engine.router.files import cached_router, cached_scorer
from engine.router.model import RouterError
from engine.router.policy import choose
from engine.router.scorer import PanelAnswers
from engine.run import prompt
from engine.run.answers import answer_key, extract_answer
from engine.run.calls import Validator, check_reply
from engine.run.choices import choice_of, choices_check, choices_grammar
from engine.run.context import NodeContext
from engine.run.trace import RouteDecision, StepResult

DEFAULT_JUDGE_TASK = (
    "Several answers to the same task are given above. Compare them: where they agree, where they "
    "contradict each other, what each misses. Then write the single best answer to the task."
)


def normalise_label(text: str) -> str:
    return re.sub(r"[^\w\s-]", "", text).strip().lower()


async def run_node(ex: NodeContext, node: Step | Verify | Fuse | Loop, result: StepResult) -> dict[str, StepResult]:
    """Run one top-level node that calls models to completion (its result filled in), or raise a `RunError`.

    Returns the other results it finished (a loop's members, from its last round) for the executor to record;
    a route is decided by `decide` and finished by `take_branch`, the executor waiting for the branch between them.
    """
    if isinstance(node, Loop):
        return await run_loop(ex, node, result)
    if isinstance(node, Fuse):
        await run_fuse(ex, node, result, seen_by(ex, node))
    else:
        await run_call(ex, node, result, seen_by(ex, node))
    return {}


def seen_by(ex: NodeContext, node: Any, scope: dict[str, StepResult] | None = None, feedback: str = "") -> tuple[dict[str, str], list[prompt.Block]]:
    """The values its template may name and the blocks it is shown: exactly its `sees` (plus named inputs)."""
    values: dict[str, str] = {}
    blocks: list[prompt.Block] = []
    for name in prompt.template_names(node):
        if name in ex.inputs:
            values[name] = ex.inputs[name]
    for seen in node.sees:
        if seen in ex.flow.inputs:
            values[seen] = ex.inputs.get(seen, "")
            if values[seen]:  # an empty input (a first message's `history`) is not shown, as empty feedback is not
                blocks.append(prompt.Block(f"input {seen}", values[seen]))
        elif seen == "feedback":
            values["feedback"] = feedback
            if feedback:
                blocks.append(prompt.Block("feedback from the verifier on the previous round", feedback))
        else:
            res = (scope or {}).get(seen) or ex.results[seen]
            values[seen] = res.output
            blocks.append(prompt.Block(f"step {seen}", res.output, subtask=res.subtask or None))
    return values, blocks

async def run_call(ex: NodeContext, node: Step | Verify, result: StepResult, visible: tuple[dict[str, str], list[prompt.Block]],
                level_offset: int = 0) -> None:
    values, blocks = visible
    task = prompt.render_task(node.task, values)
    result.subtask = task
    system = prompt.render_system(node.params.system, values)
    messages = prompt.messages(system, blocks, task)
    result.prompts.append(prompt.record("verifier" if isinstance(node, Verify) else "worker", system, blocks, task))
    validate = _validator(node)
    levels = node.models[min(level_offset, len(node.models) - 1):]
    # a checked reply may be rejected, and a loop member's may be revised: only an unchecked step's reply is streamed
    stream = ex.stream_for(node.name) if isinstance(node, Step) and validate is None and node.loop is None else None
    text, alias, why = await ex.caller.chain(node.name, levels, node.fallbacks, node.retries, messages, node.params,
                                               node.timeout, validate, role="verifier" if isinstance(node, Verify) else "worker",
                                               record=result.add, stream=stream,
                                               local_grammar=choices_grammar(node.choices) if node.choices else None)
    if node.choices:
        text = choice_of(text, node.choices) or text  # the choice as the flow writes it
    result.output = text
    result.model = alias
    result.reason = why
    if node.params.tools:
        result.tools = [t["function"]["name"] for t in node.params.tools]

def _validator(node: Step | Verify) -> Validator | None:
    """The reply checks of a step: its `expect:` conditions, then its `choices:`."""
    checks = [check_reply(node.expect)] if isinstance(node, Step) and node.expect else []
    if node.choices:
        checks.append(choices_check(node.choices))
    if len(checks) <= 1:
        return checks[0] if checks else None

    def validate(text: str) -> str | None:
        return next((problem for check in checks if (problem := check(text)) is not None), None)

    return validate


async def run_fuse(ex: NodeContext, node: Fuse, result: StepResult, visible: tuple[dict[str, str], list[prompt.Block]]) -> None:
    values, blocks = visible
    task = prompt.render_task(node.task, values)
    result.subtask = task
    system = prompt.render_system(node.params.system, values)
    messages = prompt.messages(system, blocks, task)
    result.prompts.append(prompt.record("panel", system, blocks, task))

    async def member(i: int, alias: str) -> tuple[int, str, str | None, str]:
        # one seed for every member would make `panel: m x 4` four copies of one sample: member i gets seed + i
        params = node.params if node.params.seed is None else node.params.model_copy(update={"seed": node.params.seed + i})
        try:
            text, used, _why = await ex.caller.chain(node.name, (alias,), node.fallbacks, node.retries, messages, params,
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
        ex.emit("panel_failures", step=node.name, failed=failed)
    if len(ok) < node.quorum:
        raise RunError(f"fuse `{node.name}`: {len(ok)} of {len(node.panel)} panel members answered, quorum is {node.quorum}; "
                       + "; ".join(failed), step=node.name)
    if node.vote is not None:
        await _vote(ex, node, result, ok, messages)
        return
    if node.judge is None:
        i, alias, text = ok[0]
        result.output, result.model = text or "", alias
        result.reason = f"no judge: first answering panel member (panel[{i}])"
        return
    judge_blocks = [*blocks, *(prompt.Block(f"panel answer {i + 1} of {len(node.panel)} (model {alias})", text or "")
                               for i, alias, text in ok)]
    judge_task = prompt.render_task(node.judge_task, values) if node.judge_task else DEFAULT_JUDGE_TASK
    judge_full_task = f"{judge_task}\n\nThe task was:\n{task}"
    judge_messages = prompt.messages(system, judge_blocks, judge_full_task)
    result.prompts.append(prompt.record("judge", system, judge_blocks, judge_full_task))
    judge_params = node.params.model_copy(update={"temperature": 0.0})
    if node.returns is not None:  # the judge writes the fuse's output: it, not the panel, is held to the declared fields
        judge_params = judge_params.model_copy(update={"response_format": response_format(node.name, node.returns)})
    text, alias, _why = await ex.caller.chain(node.name, (node.judge,), (), node.retries, judge_messages, judge_params,
                                                node.timeout, role="judge", record=result.add, stream=ex.stream_for(node.name))
    result.output, result.model = text, alias
    result.reason = f"judge `{alias}` over {len(ok)} of {len(node.panel)} panel answers" + (f" ({len(failed)} failed)" if failed else "")

async def _vote(ex: NodeContext, node: Fuse, result: StepResult, ok: Sequence[tuple[int, str, str | None]],
                messages: tuple[dict[str, str], ...]) -> None:
    """Majority vote over extracted answers (self-consistency); below `agree`, escalate (a FrugalGPT-style cascade)."""
    if node.scorer is not None:
        await _scored_vote(ex, node, result, ok, messages)
        return
    answers = [(i, alias, text or "", extract_answer(text or "", node.vote or "number")) for i, alias, text in ok]
    counts = Counter(a for *_rest, a in answers if a)  # in panel order: the first-listed member's answer comes first
    winner, votes = counts.most_common(1)[0] if counts else ("", 0)
    tied = [a for a, c in counts.items() if c == votes] if counts else []
    tally = ", ".join(f"{a!r} x{c}" for a, c in counts.most_common())
    ex.emit("vote", step=node.name, tally=tally, winner=winner, votes=votes, agree=node.agree, tied=len(tied) > 1)
    tie_note = f"; tied with {', '.join(repr(a) for a in tied if a != winner)}, tie: {node.tie}" if len(tied) > 1 else ""
    if votes >= node.agree and (len(tied) == 1 or node.tie == "first"):
        i, alias, text, _a = next(x for x in answers if x[3] == winner)
        result.output, result.model = text, alias
        result.reason = f"vote: {winner!r} by {votes} of {len(node.panel)} ({tally}{tie_note})"
        result.verdict = f"agreement {votes}/{len(node.panel)} >= {node.agree}"
        return
    why = (f"the vote tied ({tally}), and tie is escalate" if votes >= node.agree
           else f"only {votes} of {len(node.panel)} agree ({tally}); agree is {node.agree}")
    await _escalate(ex, node, result, messages, why, f"agreement {votes}/{len(node.panel)}: " + ("tied" if votes >= node.agree else f"< {node.agree}"))


async def _escalate(ex: NodeContext, node: Fuse, result: StepResult, messages: tuple[dict[str, str], ...], why: str, verdict: str) -> None:
    """The panel's answer is not trusted: the `escalate` model answers, or without one the step fails."""
    if node.escalate is None:
        raise VerificationFailed(f"fuse `{node.name}`: {why}", step=node.name)
    text, alias, _why = await ex.caller.chain(node.name, (node.escalate,), node.fallbacks, node.retries, messages, node.params,
                                                node.timeout, role="escalate", record=result.add)
    result.output, result.model = text, alias
    result.reason = f"escalated to `{alias}`: {why}"
    result.verdict = verdict


async def _scored_vote(ex: NodeContext, node: Fuse, result: StepResult, ok: Sequence[tuple[int, str, str | None]],
                       messages: tuple[dict[str, str], ...]) -> None:
    """A learned vote: the answer scorer rates each distinct answer of the panel from who gave it and how; the best
    stands, unless (with `escalate`) it is rated below the threshold, and then the escalate model answers."""
    assert node.scorer is not None
    scorer = cached_scorer(node.scorer)
    answers: dict[str, str] = {}
    tokens: dict[str, int] = {}
    replies: dict[str, tuple[str, str]] = {}
    for i, alias, text in ok:
        member = (node.scorer_panel or node.panel)[i]  # the scorer knows members by their panel alias, whichever fallback answered
        answers[member] = answer_key(extract_answer(text or "", node.vote or "number"))
        replies.setdefault(answers[member], (alias, text or ""))
        tokens[member] = next((a.output_tokens for a in reversed(result.attempts) if a.role == f"panel[{i}]" and a.answered), 0)
    question = "\n\n".join(ex.inputs.get(name, "") for name in ex.flow.inputs)  # what a grid records as the question
    scored = scorer.score(PanelAnswers(question, answers, tokens))
    result.scores = {c.answer: round(p, 4) for c, p in scored.ranked}
    threshold = node.threshold if node.threshold is not None else scorer.threshold
    rated = ", ".join(f"{c.answer!r} {p:.2f} by {'+'.join(c.members)}" for c, p in scored.ranked) or "no answer"
    ex.emit("scored_vote", step=node.name, scores=result.scores, threshold=threshold)
    best = scored.best
    if best is not None and (node.escalate is None or best[1] >= threshold):
        candidate, p = best
        result.output, result.model = replies[candidate.answer][1], replies[candidate.answer][0]
        bar = f" >= threshold {threshold:.2f}" if node.escalate is not None else ""
        result.reason = f"scorer: {candidate.answer!r} rated {p:.2f}{bar} ({rated})"
        result.verdict = f"score {p:.2f}{bar}"
        return
    why = f"the best answer is rated {best[1]:.2f} < threshold {threshold:.2f} ({rated})" if best else "no member gave an answer"
    await _escalate(ex, node, result, messages, why, f"score {best[1]:.2f} < {threshold:.2f}" if best else "no answer")


def learned_decision(ex: NodeContext, route: Route) -> RouteDecision:
    """A learned route: the router predicts each arm's model from the flow's inputs, and its rule picks one."""
    assert route.router is not None
    router = cached_router(route.router)
    text = "\n\n".join(ex.inputs.get(name, "") for name in ex.flow.inputs)
    candidates = [label for arm in route.arms for label in arm.labels]
    embedder = None
    if router.embeddings_alias is not None:
        if ex.caller.embedder is None:
            raise RouterError(f"the router embeds questions with `{router.embeddings_alias}`, and this run has no embedder")
        embedder = ex.caller.embedder(router.embeddings_alias)
    predicted = {a: round(p, 4) for a, p in router.predict(text, embedder).items() if a in candidates}
    pool = ex.caller.pool
    costs = {label: round(router.cost(label, pool.models[alias].input_price, pool.models[alias].output_price), 8)
             for label, alias in ((c, route.arm_models.get(c, c)) for c in candidates)}
    choice = choose(predicted, costs, candidates, threshold=route.threshold, tradeoff=route.tradeoff)
    arm = next(a for a in route.arms if choice.alias in a.labels)
    targets = list(dict.fromkeys(a.target for a in route.arms))
    return RouteDecision(route=route.name, matched=f"router: {choice.why}", chosen=arm.target, predictions=predicted, costs=costs,
                         skipped=[t for t in targets if t != arm.target and ex.flow.guarded_by(t, route.name)])


def _field_decision(ex: NodeContext, route: Route) -> RouteDecision:
    assert route.by is not None and route.by_field is not None
    value = prompt.field_text(ex.results[route.by].output, route.by_field, f"{route.by}.{route.by_field}")
    arm = next((a for a in route.arms if a.kind == "label" and value in a.labels), None)
    matched = f"field {route.by}.{route.by_field} = {value!r}"
    if arm is None:
        arm = next((a for a in route.arms if a.kind == "else"), None)
        matched += " (no arm: else)"
    if arm is None:
        raise RouteError(f"route `{route.name}`: {route.by}.{route.by_field} is {value!r}, and no arm takes it", step=route.name)
    targets = list(dict.fromkeys(a.target for a in route.arms))
    return RouteDecision(route=route.name, label=value, matched=matched, chosen=arm.target,
                         skipped=[t for t in targets if t != arm.target and ex.flow.guarded_by(t, route.name)])


def decide_route(ex: NodeContext, route: Route) -> RouteDecision:
    if route.router is not None:
        return learned_decision(ex, route)
    if route.by and route.by_field:  # a field's value picks the arm, exactly as written
        return _field_decision(ex, route)
    label = normalise_label(ex.results[route.by].output) if route.by else None
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
                subject = ex.inputs.get(arm.subject) if arm.subject in ex.flow.inputs else ex.results[arm.subject].output
                if arm.condition.holds(subject or ""):
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
                         skipped=[t for t in targets if t != chosen_arm.target and ex.flow.guarded_by(t, route.name)])

async def decide(ex: NodeContext, route: Route) -> RouteDecision:
    """Which branch a route takes (`RouteError` when none can be chosen)."""
    try:
        # a learned route may embed the question over HTTP: off the event loop, so other nodes keep running
        return await asyncio.to_thread(decide_route, ex, route) if route.router else decide_route(ex, route)
    except RouterError as err:
        raise RouteError(f"route `{route.name}`: {err}", step=route.name) from None


def take_branch(route: Route, result: StepResult, decision: RouteDecision, chosen: StepResult) -> None:
    """A route's result is its chosen branch's, once that finished."""
    result.decision = decision
    if chosen.status != "ok":
        raise RunError(f"route `{route.name}`: branch `{decision.chosen}` did not finish: {chosen.error or chosen.reason}", step=route.name)
    result.output, result.model, result.subtask = chosen.output, chosen.model, chosen.subtask
    result.reason = f"{decision.matched} -> `{decision.chosen}`"


async def run_loop(ex: NodeContext, loop: Loop, result: StepResult) -> dict[str, StepResult]:
    feedback = ""
    rounds = loop.max_rounds
    levels = max((len(getattr(ex.flow.nodes[m], "models", ())) for m in loop.members), default=1)
    extra = levels - 1 if loop.exhausted == "escalate" else 0
    scope: dict[str, StepResult] = {}
    for round_no in range(1, rounds + extra + 1):
        offset = max(0, round_no - rounds)
        scope = {}
        for member in loop.members:
            node = ex.flow.nodes[member]
            assert isinstance(node, (Step, Verify))
            mres = StepResult(name=member, kind=node.kind, started=time.time())
            t0 = time.perf_counter()
            await run_call(ex, node, mres, seen_by(ex, node, scope, feedback), level_offset=offset)
            mres.latency_ms = (time.perf_counter() - t0) * 1000
            mres.status = "ok"
            for a in mres.attempts:
                result.add(a.model_copy(update={"role": f"{a.role} r{round_no} {member}"}))
            result.prompts.extend(p.model_copy(update={"role": f"r{round_no} {member}"}) for p in mres.prompts)
            scope[member] = mres
        verdict = scope[loop.verifier].output
        verifier = ex.flow.nodes[loop.verifier]
        assert isinstance(verifier, Verify)
        if verifier.accept_field is not None:
            name, value = verifier.accept_field
            accepted = prompt.field_text(verdict, name, f"{verifier.name}.{name}") == value
        else:
            accepted = re.search(verifier.accept, verdict) is not None
        ex.emit("verdict", step=loop.name, round=round_no, verifier=loop.verifier, accepted=accepted, verdict=verdict[:500])
        result.rounds = round_no
        result.verdict = ("ACCEPTED: " if accepted else "REJECTED: ") + verdict[:500]
        result.verdicts.append(result.verdict)
        if accepted:
            break
        feedback = verdict
    else:
        if loop.exhausted in ("fail", "escalate"):  # escalate: the extra rounds were the escalation
            raise VerificationFailed(f"loop `{loop.name}`: the verifier did not accept within {result.rounds} rounds", step=loop.name)
    out = scope[loop.result]
    result.output, result.model, result.subtask = out.output, out.model, out.subtask
    result.reason = f"{'accepted' if result.verdict and result.verdict.startswith('ACCEPTED') else 'not accepted; kept the last'} round {result.rounds} of {loop.max_rounds}"
    return scope  # the last round's members: the executor records and commits them


