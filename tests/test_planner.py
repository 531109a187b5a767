"""Planners write flows: repair, limits, recursion, <think> replies, grammars, Conductor import."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.diagnostics import render_all
from engine.loading import check_source
from engine.planner.conductor import parse_completion, parse_map, to_flow
from engine.planner.extract import extract_flow
from engine.planner.gbnf import regex_to_gbnf, to_gbnf
from engine.planner.limits import PlanLimits
from engine.planner.plan import plan, planner_gbnf
from engine.planner.rounds import ask_rounds
from engine.pool import load_pool
from engine.providers.scripted import ScriptedProvider
from engine.run.protocol import ChatRequest
from tests.conftest import ROOT, WORKFLOWS

POOL = load_pool(WORKFLOWS / "models.toml")
GOOD = 'input question\nstep s1 { model: fast  task: "Answer {question}" }\n'
TWO = 'input question\nstep a { model: fast  task: "Draft {question}" }\nstep b { model: strong  sees: a  task: "Improve" }\n'


def planner(*replies: str) -> ScriptedProvider:
    return ScriptedProvider(script={"planner": list(replies)})


def run_plan(provider: ScriptedProvider, **kw: object) -> object:
    return asyncio.run(plan("What is 2+2?", POOL, "fast", provider, **kw))  # type: ignore[arg-type]


def test_valid_first_reply_is_accepted_and_formatted() -> None:
    result = run_plan(planner(f"Here is my plan:\n```flow\n{TWO}```\nDone."))
    assert result.ok and len(result.attempts) == 1  # type: ignore[attr-defined]
    assert result.text.startswith("input question\n\nstep a {")  # type: ignore[attr-defined]
    assert result.worst.calls == 6  # type: ignore[attr-defined]


def test_repair_after_an_invalid_reply_sends_the_diagnostics_back() -> None:
    bad = 'input question\nstep a { model: fast  task: "Draft {question}" }\nstep b { model: fast  task: "use {a}" }\n'
    provider = planner(bad, TWO)
    result = run_plan(provider)
    assert result.ok and len(result.attempts) == 2  # type: ignore[attr-defined]
    repair = provider.requests[1].messages[-1]["content"]
    assert "plan-1.flow:3:34: error[E302]: `b` cannot see `a`" in repair
    assert "add `a` to its `sees:`" in repair
    assert provider.requests[1].messages[-2] == {"role": "assistant", "content": bad}


def test_a_taken_plan_shows_its_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    """A plan with a step nobody sees is valid, but the user is told: that step still costs its calls."""
    from engine.cli.plan import report

    dead = 'input question\nstep a { model: fast  task: "Draft {question}" }\nstep b { model: strong  task: "Answer {question}" }\n'
    result = run_plan(planner(dead))
    assert result.ok  # type: ignore[attr-defined]
    report(result)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "plan attempt 1: valid, 1 warning(s)" in err
    assert "2:6: W401 the output of `a` is never used" in err


def test_strict_planning_sends_warnings_back() -> None:
    dead = 'input question\nstep a { model: fast  task: "Draft {question}" }\nstep b { model: strong  task: "Answer {question}" }\n'
    provider = planner(dead, TWO)
    result = run_plan(provider, strict=True)
    assert result.ok and len(result.attempts) == 2 and not result.attempts[0].valid  # type: ignore[attr-defined]
    assert "warning[W401]: the output of `a` is never used" in provider.requests[1].messages[-1]["content"]


def test_gives_up_after_the_repair_bound_keeping_every_attempt() -> None:
    result = run_plan(planner("I cannot plan."), repairs=2)
    assert not result.ok and len(result.attempts) == 3  # type: ignore[attr-defined]
    assert all(not a.valid and a.diagnostics for a in result.attempts)  # type: ignore[attr-defined]


@pytest.mark.parametrize("reply, message", [
    ('input question\nstep a { model: gpt5  task: "{question}" }', "unknown model `gpt5`"),
    ("input question\n" + "".join(f'step s{i} {{ model: fast  task: "{{question}}" }}\n' for i in range(7)), "at most 5 are allowed"),
    ('input question\nbudget $5\nstep a { model: fast  task: "{question}" }', "above the allowed $0.5"),
    ('input question\nloop l { step w { model: fast task: "{question}" } verify v { model: fast sees: w task: "ok?" } }', "has no bound"),
    ('input question\nroute r { when question matches /x/ -> a  else -> a }\nstep a { model: fast  task: "{question}" }', "`route` is not allowed"),
    ('input task\nstep a { model: fast  task: "{task}" }', "must declare `input question`"),
])
def test_untrusted_plans_are_rejected_before_any_run(reply: str, message: str) -> None:
    result = run_plan(planner(reply), repairs=0, limits=PlanLimits(budget_usd=0.5))
    assert not result.ok  # type: ignore[attr-defined]
    assert any(message in d["message"] for d in result.attempts[0].diagnostics), result.attempts[0].diagnostics  # type: ignore[attr-defined]


def test_think_blocks_and_preambles_are_stripped() -> None:
    reply = f"<think>\nLet me think. step x {{ broken\n</think>\nSure! Here it is:\n\n{TWO}\nHope this helps."
    assert extract_flow(reply).startswith("input question")
    result = run_plan(planner(reply))
    assert result.ok  # type: ignore[attr-defined]
    unclosed = f"reasoning without an opening tag</think>\n```flow\n{GOOD}```"
    assert extract_flow(unclosed) == GOOD


def test_recursion_accepts_with_keep(tmp_path: Path) -> None:
    plans = planner(GOOD, "KEEP")

    async def go() -> object:
        async def p(task: str, keep: bool) -> object:
            return await plan(task, POOL, "fast", plans, allow_keep=keep)
        return await ask_rounds("What is 2+2?", POOL, p, rounds=3, home=tmp_path,  # type: ignore[arg-type]
                                run_kwargs={"providers": {"*": ScriptedProvider(script={"s1": "4"})}})

    outcome = asyncio.run(go())
    assert [r["decision"] for r in outcome.rounds] == ["run", "keep"]  # type: ignore[attr-defined]
    assert outcome.summary.output == "4"  # type: ignore[attr-defined]
    assert "A plan already ran for this task" in plans.requests[1].messages[0]["content"]
    record = json.loads((tmp_path / "runs" / outcome.summary.run_id / "ask.json").read_text())  # type: ignore[attr-defined]
    assert len(record["rounds"]) == 2


def test_recursion_replans_with_the_previous_answer(tmp_path: Path) -> None:
    second = 'input question\ninput previous\nstep fix { model: strong  sees: previous  task: "Fix the answer to {question}" }\n'
    plans = planner(GOOD, second)
    workers = ScriptedProvider(script={"s1": "5", "fix": "4"})

    async def go() -> object:
        async def p(task: str, keep: bool) -> object:
            return await plan(task, POOL, "fast", plans, allow_keep=keep)
        return await ask_rounds("What is 2+2?", POOL, p, rounds=2, home=tmp_path, run_kwargs={"providers": {"*": workers}})  # type: ignore[arg-type]

    outcome = asyncio.run(go())
    assert [r["decision"] for r in outcome.rounds] == ["run", "run"]  # type: ignore[attr-defined]
    fix_request = next(r for r in workers.requests if r.step == "fix")
    assert "5" in fix_request.messages[-1]["content"]  # the previous answer, through `sees: previous`
    assert outcome.summary.output == "4"  # type: ignore[attr-defined]


# -- grammars ----------------------------------------------------------------------------


def test_gbnf_is_generated_from_the_lark_grammar() -> None:
    g = to_gbnf()
    assert 't-step ::= "step"' in g and "t-key ::= [A-Za-z_]" in g
    assert "start-star-0 ::= (item) (ws (item))*" in g  # left recursion removed
    assert regex_to_gbnf(r"[0-9]+(?:\.[0-9]+)?(?![A-Za-z_])") == '[0-9] + ("." [0-9] +) ?'


def test_planner_grammar_is_specialised_per_request() -> None:
    g = planner_gbnf(POOL, PlanLimits(max_steps=2))
    assert '"step" ws "s2"' in g and '"s3"' not in g
    assert '("question" | "s1")' in g  # s2 may see only question and s1
    assert '"strong"' in g and '"claude"' in g


def test_planner_grammar_makes_the_last_step_see_an_earlier_one() -> None:
    """The last step is the output; if it saw no earlier step, every earlier step would be dead (W401)."""
    rules = dict(line.split(" ::= ", 1) for line in planner_gbnf(POOL, PlanLimits(max_steps=3)).splitlines() if " ::= " in line)
    assert rules["start"] == '"input" ws "question" ws plan-step-1 (ws (plan-last-2 | plan-step-2 ws plan-last-3))?'
    assert '"sees:" ws ("question" ws "," ws)? ("s1" | "s2") ' in rules["plan-last-3"]  # required, and names a step
    assert '("sees:" ws' in rules["plan-step-2"] and "plan-step-3" not in rules  # earlier steps: sees stays optional


def test_planner_grammar_loads_in_llama_cpp() -> None:
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    llama_grammar.LlamaGrammar.from_string(planner_gbnf(POOL, PlanLimits()), verbose=False)
    llama_grammar.LlamaGrammar.from_string(to_gbnf(), verbose=False)


def test_grammar_request_reaches_the_endpoint() -> None:
    provider = planner(GOOD)
    run_plan(provider, constrain="gbnf")
    request: ChatRequest = provider.requests[0]
    assert request.grammar_format == "gbnf" and request.grammar and "plan-step-1" in request.grammar


# -- Conductor -----------------------------------------------------------------------------

EXAMPLE = """The plan: model 1 sketches two approaches independently, model 0 compares them and answers.
model_id = [1, 1, 0]
subtasks = ["Solve it with dynamic programming.", "Solve it greedily.", "Compare both solutions, fix mistakes, give the final answer."]
access_list = [[], [], ["all"]]
"""

VARIANTS = {
    "example": EXAMPLE,
    "think_fence_smart_quotes_colons": "<think>maybe model_id = [9]</think>\n```python\nmodel_id: [0, 1]\nsubtasks: [\u201cPlan it.\u201d, \u201cDo it.\u201d]\naccess_list: [[], [0]]\n```",
    "positional_access": 'model_id = [0, 0, 1]\nsubtasks = ["a", "b", "c"]\naccess_list = [[], [0], [0, 1]]',
    "empty_plan": "model_id = []\nsubtasks = []\naccess_list = []",
    "unequal_lengths": 'model_id = [0, 1]\nsubtasks = ["a"]\naccess_list = [[], []]',
    "unknown_model": 'model_id = [0, 7]\nsubtasks = ["a", "b"]\naccess_list = [[], []]',
    "forward_access": 'model_id = [0, 1]\nsubtasks = ["a", "b"]\naccess_list = [[1], []]',
    "self_access": 'model_id = [0, 1]\nsubtasks = ["a", "b"]\naccess_list = [[], [1]]',
    "no_lists": "I think the answer is 42.",
    "unclosed": 'model_id = [0, 1\nsubtasks = ["a"]',
    "not_a_list": 'model_id = [0]\nsubtasks = [a b c]\naccess_list = [[]]',
}
MAP = {0: "strong", 1: "fast"}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_conductor_import(name: str, snapshot) -> None:  # type: ignore[no-untyped-def]
    text = VARIANTS[name]
    plan_, diags = parse_completion(text, f"{name}.txt")
    flow_text = None
    if plan_ is not None and not plan_.empty:
        flow_text, diags = to_flow(plan_, MAP, "imported", f"{name}.txt")
    if flow_text is not None:
        result = check_source(flow_text, POOL, "imported.flow")
        assert result.flow is not None, result.diagnostics
        assert (flow_text, [d.code for d in result.diagnostics]) == snapshot
    elif plan_ is not None and plan_.empty:
        assert name == "empty_plan"
    else:
        assert diags
        assert render_all(diags, text, colour=False) == snapshot


def test_imported_example_runs(tmp_path: Path) -> None:
    from engine.session import run_flow_sync

    plan_, _ = parse_completion(EXAMPLE)
    assert plan_ is not None
    flow_text, _ = to_flow(plan_, MAP)
    path = tmp_path / "c.flow"
    path.write_text(flow_text or "")
    provider = ScriptedProvider()
    summary = run_flow_sync(path, {"question": "Max subarray sum of [1,-2,3]?"}, pool=POOL, providers={"*": provider}, home=tmp_path)
    assert summary.status == "ok" and summary.steps["s3"].model == "strong"
    s3 = next(r for r in provider.requests if r.step == "s3").messages[-1]["content"]
    assert "step s1" in s3 and "step s2" in s3  # "all": sees both earlier steps


def test_import_cli(tmp_path: Path) -> None:
    src = tmp_path / "c.txt"
    src.write_text(EXAMPLE)
    out = tmp_path / "c.flow"
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"}
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "import", "conductor", str(src), "--map", "0=strong,1=fast", "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run([sys.executable, "-m", "engine.cli.main", "validate", str(out), "--pool", str(WORKFLOWS / "models.toml")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert check.returncode == 0, check.stderr
    bad = subprocess.run([sys.executable, "-m", "engine.cli.main", "import", "conductor", str(src), "--map", "0=strong"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 1 and "error[E503]" in bad.stderr
    assert parse_map("0=a, 1=b") == {0: "a", 1: "b"}
    with pytest.raises(ValueError):
        parse_map("zero=a")


def test_hidden_names_are_shown_as_ids_and_revealed_in_the_plan() -> None:
    provider = planner('input question\nstep a { model: m2 then m0  task: "Answer {question}" }\n')
    result = run_plan(provider, hide_names=True)
    prompt = provider.requests[0].messages[0]["content"]
    assert "- m0:" in prompt and "- fast:" not in prompt
    aliases = list(POOL.models)
    assert result.ok and f"model: {aliases[2]} then {aliases[0]}" in result.text  # type: ignore[attr-defined]
