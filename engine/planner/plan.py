"""`baton plan`: a model of the user's choice writes a flow; Baton checks it and asks again until it is sound.

Each attempt: build the request (the prompt, then for a repair the previous reply and the
exact diagnostics `baton validate` would print), call the planner (grammar-constrained
where its endpoint supports it), extract the flow, run every check plus the planner
limits. Every attempt is kept in the `PlanResult`, so the record shows what the planner
wrote, what was wrong and how it was fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.checks.cost import WorstCase
from engine.diagnostics import Diagnostic, render_all
from engine.errors import RunError
from engine.loading import check_source
from engine.model import Flow, Params
from engine.planner.extract import extract_flow
from engine.planner.gbnf import _sym, to_gbnf
from engine.planner.limits import ALL_CONSTRUCTS, PlanLimits, check_limits
from engine.planner.prompt import build_prompt, pool_summary
from engine.planner.select import catalogue, instantiate, offered, select_gbnf, select_prompt
from engine.pool import Pool
from engine.run.choices import gbnf_literal
from engine.run.protocol import Provider
from engine.session import Session
from engine.syntax import ast
from engine.syntax.fmt import format_source
from engine.syntax.parser import parse

Constrain = Literal["auto", "off", "gbnf", "lark"]
#: `write`: the planner writes the flow; `select`: it picks a library pattern, its models and its input (planner/select.py).
Style = Literal["write", "select"]


def default_style(pool: Pool, planner_alias: str) -> Style:
    """Small planners choose, larger ones write: the embedded models (provider kind `local`) select by default."""
    return "select" if pool.provider(pool.models[planner_alias].provider).kind == "local" else "write"


@dataclass
class PlanAttempt:
    reply: str
    flow_text: str
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    valid: bool = False
    constrained: str | None = None
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class PlanResult:
    task: str
    planner: str
    flow: Flow | None = None
    text: str = ""
    worst: WorstCase | None = None
    attempts: list[PlanAttempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.flow is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task, "planner": self.planner, "ok": self.ok, "flow": self.text,
            "worst_case": self.worst.to_json() if self.worst else None,
            "attempts": [a.__dict__ for a in self.attempts],
        }


def planner_gbnf(pool: Pool, limits: PlanLimits, allow_keep: bool = False) -> str:
    """The flow grammar specialised for one request, from grammar/flow.lark plus this request's data.

    What the generated grammar keeps: every terminal (strings, names, numbers) and rule
    shape. What the request narrows, as a small model needs: the pool's aliases as
    literals; steps named `s1`, `s2` ... in order, each able to see only `question` and
    the steps before it (so a plan cannot repeat a name or see forward), the last one
    (the output) seeing at least one of them; at most `max_steps` of them; the planner's
    property keys; task text of bounded length.
    """
    def one_of(names: list[str]) -> str:
        return "(" + " | ".join(gbnf_literal(n) for n in names) + ")"

    alias = one_of([a for a in pool.models if not limits.models or a in limits.models])
    text = _sym("STRING", True)
    overrides: dict[str, str] = {}

    def step_rule(k: int, sees: str) -> str:
        return f'"step" ws "s{k}" ws "{{" ws "model:" ws {alias} ws {sees} "task:" ws {text} ws "}}"'

    for k in range(1, limits.max_steps + 1):
        earlier = [f"s{i}" for i in range(1, k)]
        visible = one_of(["question", *earlier])
        if k < limits.max_steps or k == 1:
            overrides[f"plan_step_{k}"] = step_rule(k, f'("sees:" ws {visible} (ws "," ws {visible}){{0,{k - 1}}} ws)?')
        if earlier:  # the last step is the output: it must see an earlier step, or every earlier one is dead (W401)
            overrides[f"plan_last_{k}"] = step_rule(k, f'"sees:" ws ("question" ws "," ws)? {one_of(earlier)} (ws "," ws {visible}){{0,{k - 2}}} ws')
    # after step 1: either the last step (which sees back) or another step and more
    rest = f"plan-last-{limits.max_steps}"
    for k in range(limits.max_steps - 1, 1, -1):
        rest = f"(plan-last-{k} | plan-step-{k} ws {rest})"
    more = f" (ws {rest})?" if limits.max_steps > 1 else ""
    overrides["start"] = f'"input" ws "question" ws plan-step-1{more}'
    overrides["STRING"] = '"\\"" [^"\\\\\\n]{3,160} "\\""'
    overrides["ws"] = '(" " | "\\n" | "\\n  ")?'  # one separator, not a runaway of blank lines
    grammar = to_gbnf(overrides, drop=())
    if allow_keep:  # a recursion round may also answer KEEP
        grammar = grammar.replace("root ::= start", 'root ::= "KEEP" | start', 1)
    return grammar


MODEL_KEYS = ("model", "fallback", "panel", "judge", "escalate")


def reveal_names(text: str, names: dict[str, str]) -> str:
    """Replace hidden aliases (m0, m1 ...) by the real ones, in model positions only, by source span."""
    doc = parse(text)
    spans: list[tuple[int, int, str]] = []

    def visit(props: tuple[Any, ...]) -> None:
        for prop in props:
            if prop.key in MODEL_KEYS:
                for phrase in prop.value.phrases:
                    for atom in phrase.atoms:
                        if atom.kind == "NAME" and atom.value in names:
                            spans.append((atom.span.start, atom.span.end, names[atom.value]))

    for item in doc.items:
        if isinstance(item, (ast.Block, ast.LoopNode)):
            visit(item.props)
        elif isinstance(item, ast.UseNode):  # a select plan binds the pattern's roles to (hidden) aliases
            visit(tuple(p._replace(key="model") for p in item.props if p.key != "task"))
        for member in getattr(item, "members", ()):
            visit(member.props)
    for start, end, alias in sorted(spans, reverse=True):
        text = text[:start] + alias + text[end:]
    return text


def _constraint(mode: Constrain, provider_kind: str, options: dict[str, Any]) -> str | None:
    if mode == "off":
        return None
    if mode in ("gbnf", "lark"):
        return mode
    if provider_kind == "local":
        return "gbnf"
    fmt = options.get("grammar")
    return str(fmt) if fmt in ("gbnf", "lark") else None


def _repair_message(diagnostics: list[Diagnostic], text: str) -> str:
    return (f"Your flow has problems. `baton validate` says:\n\n{render_all(diagnostics, text, colour=False)}\n\n"
            "Write the corrected flow, complete, in one ```flow code block.")


async def plan(task: str, pool: Pool, planner_alias: str, via: Session | Provider, *, limits: PlanLimits | None = None,
               constrain: Constrain = "auto", repairs: int = 3, template: str | None = None, max_tokens: int = 600,
               temperature: float = 0.0, allow_keep: bool = False, hide_names: bool = False, strict: bool = False,
               style: Style = "write", given: str | None = None) -> PlanResult:
    """Ask the planner for a flow until one passes every check, at most `1 + repairs` times.

    The planner's calls go `via` a `Session` (its limits, retries and recorded usage); a bare
    `Provider` gets a session of its own. `strict` sends warnings back as well as errors, as
    `baton validate --strict` fails on them: a plan with a step whose output nobody sees is
    sound but pays for that step. In the select style, the chosen pattern is `given` the task (by default `task`
    itself; a recursion round of `baton ask` asks about the answer, and the pattern is given the user's task).
    """
    if not isinstance(via, Session):
        async with Session(pool, providers={"*": via}, cache=False) as own:
            return await plan(task, pool, planner_alias, own, limits=limits, constrain=constrain, repairs=repairs, template=template,
                              max_tokens=max_tokens, temperature=temperature, allow_keep=allow_keep, hide_names=hide_names,
                              strict=strict, style=style, given=given)
    session = via
    limits = limits or PlanLimits()
    spec = pool.models[planner_alias]
    pspec = pool.provider(spec.provider)
    real_pool = pool
    names: dict[str, str] = {}
    if hide_names:  # as Conductor does: the planner sees m0, m1 ... so model names cannot bias it
        allowed = [a for a in pool.models if not limits.models or a in limits.models]
        names = {f"m{i}": alias for i, alias in enumerate(allowed)}
        pool = pool.model_copy(update={"models": {hidden: pool.models[alias] for hidden, alias in names.items()}})
        limits = PlanLimits(limits.max_steps, limits.budget_usd, limits.allow, tuple(names))
    mode = _constraint(constrain, pspec.kind, dict(pspec.options))
    result = PlanResult(task=task, planner=planner_alias)
    if style == "select":
        patterns = offered(catalogue(), limits)
        if not patterns:
            result.attempts.append(PlanAttempt(reply="", flow_text="", diagnostics=[{"message": "no pattern of the library fits "
                                               f"the limits (allowed: {', '.join(limits.allow)}; at most {limits.max_steps} steps)"}]))
            return result
        mode = mode if mode == "gbnf" else None  # the library's grammar is GBNF; elsewhere the diagnostics repair
        aliases = [a for a in pool.models if not limits.models or a in limits.models]
        grammar = select_gbnf(patterns, aliases, allow_keep) if mode == "gbnf" else None
        prompt = select_prompt(task, patterns, pool_summary(pool, limits.models), aliases[0])
    else:
        grammar = planner_gbnf(pool, limits, allow_keep) if mode == "gbnf" else None
        if mode == "lark":
            from engine.planner.gbnf import to_lark

            grammar = to_lark([c for c in ALL_CONSTRUCTS if c not in limits.allow])
        prompt = build_prompt(task, pool, limits, template)
    messages: list[dict[str, str]] = [{"role": "user", "content": prompt}]
    for n in range(repairs + 1):
        # a repair at the same temperature from a deterministic model tends to repeat the same flow
        params = Params(temperature=temperature if n == 0 else max(temperature, 0.7), max_tokens=max_tokens)
        t0 = time.perf_counter()
        try:
            response = await session.call(planner_alias, messages, params=params, timeout=600, cache=False, step="planner",
                                          role="planner", grammar=(grammar, mode) if grammar and mode else None)
            reply = response.text
        except RunError as err:  # the call failed after its retries, or the budget refused it
            result.attempts.append(PlanAttempt(reply="", flow_text="", diagnostics=[{"message": f"planner call failed: {err}"}],
                                               constrained=mode, latency_s=time.perf_counter() - t0))
            break
        if allow_keep and reply.strip().strip(".").upper() == "KEEP":
            result.attempts.append(PlanAttempt(reply=reply, flow_text="", valid=True, constrained=mode,
                                               latency_s=round(time.perf_counter() - t0, 3)))
            return result
        text = instantiate(reply, given if given is not None else task) if style == "select" else extract_flow(reply)
        checked = check_source(text, pool, f"plan-{n + 1}.flow")
        diags = list(checked.diagnostics)
        if checked.flow is not None:
            diags += check_limits(checked.flow, limits, needs_question=style == "write")
        errors = [d for d in diags if d.severity == "error" or strict]
        attempt = PlanAttempt(reply=reply, flow_text=text, diagnostics=[d.to_json() for d in diags], valid=not errors,
                              constrained=mode, latency_s=round(time.perf_counter() - t0, 3),
                              input_tokens=response.input_tokens, output_tokens=response.output_tokens)
        result.attempts.append(attempt)
        if not errors and checked.flow is not None:
            if names:
                text = reveal_names(text, names)
                checked = check_source(text, real_pool, f"plan-{n + 1}.flow")
                assert checked.flow is not None, "renaming hidden aliases cannot make a valid plan invalid"
            result.flow = checked.flow
            result.text = format_source(text)
            result.worst = checked.worst
            return result
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": _repair_message(errors, text)}]
    return result
