"""Planning by choosing: the planner picks a library pattern and its models under a grammar made from the library and the
pool; Baton gives the pattern the task, wraps it in a flow and checks it. With a scripted planner, and on the
embedded model as a new user runs it (no pool file, no key)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.loading import check_source
from engine.model import Use
from engine.planner.limits import ALL_CONSTRUCTS, PlanLimits
from engine.planner.plan import default_style, plan
from engine.planner.rounds import ask_rounds
from engine.planner.select import catalogue, instantiate, offered, select_gbnf, select_prompt
from engine.pool import default_pool, load_pool
from engine.providers.scripted import ScriptedProvider
from tests.conftest import WORKFLOWS

POOL = load_pool(WORKFLOWS / "models.toml")
ALL = PlanLimits(allow=ALL_CONSTRUCTS)
CRITIQUE = 'use "critique" as answer {\n  writer: fast\n  critic: strong\n}'


def planner(*replies: str) -> ScriptedProvider:
    return ScriptedProvider(script={"planner": list(replies)})


def test_the_catalogue_is_the_library_with_examples_and_the_limits_narrow_it() -> None:
    patterns = {p.name: p for p in catalogue()}
    assert patterns["critique"].roles == ("writer", "critic") and patterns["critique"].calls == 3
    assert patterns["verify_loop"].constructs == ("loop",) and patterns["route_by_label"].constructs == ("step", "route")
    assert all(p.examples and p.description for p in patterns.values())
    assert [p.name for p in offered(list(patterns.values()), PlanLimits(allow=("step", "fuse"), max_steps=2))] == \
        ["cascade", "panel", "solo", "vote"]


def test_a_chosen_pattern_is_given_the_tasks_own_text_exactly() -> None:
    task = 'Rewrite "gonna be late" formally\nand sign it C:\\Users\\me'
    text = instantiate(f"Sure!\n{CRITIQUE}\nThat fits.", task)
    checked = check_source(text, POOL, "plan-1.flow")
    assert checked.flow is not None, checked.diagnostics
    use = checked.flow.nodes["answer"]
    assert isinstance(use, Use) and use.texts == {"task": task} and use.source == "critique"
    assert checked.flow.output == "answer" and checked.flow.aliases() == ["fast", "strong"]
    kept = instantiate('use "solo" as answer { task: "my own words"  writer: fast }', task)  # a planner's own `task:` stays
    assert check_source(kept, POOL, "p.flow").flow.nodes["answer"].texts == {"task": "my own words"}  # type: ignore[union-attr]


def test_the_grammar_allows_exactly_the_librarys_patterns_with_their_roles() -> None:
    patterns = offered(catalogue(), ALL)
    grammar = select_gbnf(patterns, ["fast", "strong"], allow_keep=True)
    assert grammar.startswith('root ::= "KEEP" | plan\n')
    assert '"use \\"critique\\" as answer {" "\\n  writer: " alias "\\n  critic: " alias "\\n}"' in grammar
    assert 'alias ::= "fast" | "strong"' in grammar
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    llama_grammar.LlamaGrammar.from_string(grammar, verbose=False)  # llama.cpp's own parser takes it


def test_the_prompt_shows_worked_choices_nearest_last() -> None:
    prompt = select_prompt("Write a limerick about a cat who sleeps", offered(catalogue(), ALL), "- fast: x", "fast")
    last_example = prompt.rsplit("Task: ", 2)[-2]
    assert "limerick" in last_example and 'use "critique"' in last_example  # the closest worked choice, just before the task
    assert prompt.endswith("Task: Write a limerick about a cat who sleeps\n")


def test_select_repairs_like_write_and_sends_the_grammar() -> None:
    provider = planner('use "critic" as answer {\n  writer: fast\n}', CRITIQUE)
    result = asyncio.run(plan("Write a limerick about a lazy dog", POOL, "fast", provider, limits=ALL, style="select",
                              constrain="gbnf"))
    assert result.ok and len(result.attempts) == 2
    assert provider.requests[0].grammar_format == "gbnf" and 'use \\"verify_loop\\" as answer' in (provider.requests[0].grammar or "")
    assert "error[E320]: the pattern library has no `critic`" in provider.requests[1].messages[-1]["content"]
    assert result.text.startswith('version 1\nflow plan "Write a limerick about a lazy dog"')
    assert 'task: "Write a limerick about a lazy dog"' in result.text and result.worst is not None and result.worst.calls == 9


def test_hidden_names_are_revealed_in_a_chosen_plans_roles() -> None:
    provider = planner('use "critique" as answer {\n  writer: m0\n  critic: m1\n}')
    result = asyncio.run(plan("Write a poem", POOL, "fast", provider, limits=PlanLimits(allow=ALL_CONSTRUCTS, models=("fast", "strong")),
                              style="select", hide_names=True))
    assert result.ok and "writer: fast" in result.text and "critic: strong" in result.text
    assert "m0" in provider.requests[0].messages[0]["content"] and "- fast" not in provider.requests[0].messages[0]["content"]


def test_small_planners_choose_and_others_write() -> None:
    assert default_style(default_pool(), "smol") == "select" and default_style(POOL, "fast") == "write"


def test_ask_runs_a_chosen_plan_and_a_recursion_round_gives_the_pattern_the_users_task(tmp_path: Path) -> None:
    plans = planner('use "solo" as answer {\n  writer: fast\n}', 'use "solo" as answer {\n  writer: strong\n}')
    workers = ScriptedProvider(script={"fast": "5", "strong": "4"})

    async def go() -> object:
        async def p(task: str, keep: bool) -> object:
            return await plan(task, POOL, "fast", plans, limits=ALL, allow_keep=keep, style="select", given="What is 2+2?")
        return await ask_rounds("What is 2+2?", POOL, p, rounds=2, home=tmp_path, run_kwargs={"providers": {"*": workers}})  # type: ignore[arg-type]

    outcome = asyncio.run(go())
    assert [r["decision"] for r in outcome.rounds] == ["run", "run"]  # type: ignore[attr-defined]
    second = outcome.rounds[1]["plan"]["flow"]  # type: ignore[attr-defined]
    assert 'task: "What is 2+2?"' in second and "A plan already ran" not in second
    assert workers.requests[-1].messages[-1]["content"] == "What is 2+2?"


@pytest.mark.model
def test_a_new_user_plans_by_choosing_with_no_pool_and_no_key(tmp_path: Path) -> None:
    """`baton plan` as a new user runs it: the embedded planner chooses, and the plan checks and is about the task."""
    env = {k: v for k, v in os.environ.items() if k not in ("BATON_POOL", "OPENAI_API_KEY", "OPENROUTER_API_KEY")}
    task = "Write a short poem about a lighthouse keeper"
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "plan", task, "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["ok"] and record["attempts"][0]["constrained"] == "gbnf"
    assert f'task: "{task}"' in record["flow"] and 'use "' in record["flow"]
    checked = check_source(record["flow"], default_pool(), str(tmp_path / "plan.flow"))
    assert checked.flow is not None and not checked.errors
