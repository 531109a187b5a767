"""Sub-flows: `use "FILE" as NAME { ... }` runs another flow as one node. It is checked in its own file, given only what
its use binds, run over the caller's budget, cache and record (its steps recorded as NAME/STEP), resumed across the
boundary, and shown nested by `baton show`, the run page and the spans. The pattern library's flows all check."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from engine.checks.subflows import library_names
from engine.errors import BudgetExceeded, RunError
from engine.loading import check_file, load_flow
from engine.model import Step, Use
from engine.pool import Pool
from engine.records.render import render_run
from engine.semdiff import diff_flows, render_flow_diff
from engine.session import run_flow
from engine.syntax.fmt import format_source
from engine.testing.chat_server import ChatServer, Reply
from engine.tracing.spans import run_spans
from tests.conftest import WORKFLOWS, loopback_pool
from tests.helpers import run

CRITIQUE = """\
flow crit "draft, critique, revise"
input task
step draft { model: writer  task: "Draft: {task}" }
step critique { model: critic  sees: task, draft  task: "Find the faults." }
step revise { model: writer  sees: draft, critique  task: "Revise the draft." }
output revise
"""

CALLER = """\
input question
input secret
use "crit.flow" as review {
  task: question
  writer: fast
  critic: cheap
}
step final { model: strong  sees: review, secret  task: "Answer, using the review." }
output final
"""


def echo(body: dict) -> Reply:  # type: ignore[type-arg]
    task = body["messages"][-1]["content"].rsplit("Your assigned subtask:", 1)[-1].strip()
    return Reply(text=f"[{body['model']}] {task}")


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder / next(iter(files))


def problems(path: Path, pool: Pool | None = None) -> list[str]:
    result, _ = check_file(path, pool or reference_pool())
    return [f"{d.code} {d.message}" for d in result.diagnostics]


def reference_pool() -> Pool:
    from engine.pool import load_pool

    return load_pool(WORKFLOWS / "models.toml")


# -- checks ---------------------------------------------------------------------------------------


def test_a_use_is_checked_bound_and_renamed_to_the_callers_models(tmp_path: Path) -> None:
    path = write(tmp_path, {"main.flow": CALLER, "crit.flow": CRITIQUE})
    flow, pool = load_flow(path, reference_pool())
    use = flow.nodes["review"]
    assert isinstance(use, Use) and use.inputs == {"task": "question"} and use.sees == ("question",)
    assert [n.models for n in use.flow.nodes.values() if isinstance(n, Step)] == [("fast",), ("cheap",), ("fast",)]
    assert flow.aliases() == ["cheap", "fast", "strong"] and flow.plan.deps["final"] == ("review",)
    alone, _ = check_file(path, pool)
    sub, _ = check_file(tmp_path / "crit.flow", pool.with_models({"writer": pool.models["fast"], "critic": pool.models["cheap"]}))
    final = check_file(write(tmp_path, {"final.flow": 'input secret\nstep final { model: strong  sees: secret  task: "Answer, using the review." }'}),
                       pool)[0]
    assert alone.worst is not None and sub.worst is not None and final.worst is not None
    assert alone.worst.calls == sub.worst.calls + final.worst.calls == 12  # the sub-flow's worst case is the caller's
    assert alone.worst.usd == pytest.approx(sub.worst.usd + final.worst.usd, rel=0.2)


@pytest.mark.parametrize(("change", "expected"), [
    (('"crit.flow"', '"critic"'), "E320 the pattern library has no `critic`"),
    (('"crit.flow"', '"../crit.flow"'), "E320 sub-flow ../crit.flow is outside the flow's folder"),
    (('"crit.flow"', '"nothere.flow"'), "E320 no sub-flow nothere.flow"),
    (("  task: question\n", ""), "E323 `use review` does not give the sub-flow its input `task`"),
    (("  critic: cheap\n", "  critic: cheap\n  tone: fast\n"), "E323 sub-flow crit.flow has no input or model `tone`"),
    (("  critic: cheap\n", '  critic: cheap\n  tone: "dry"\n'), "E323 the sub-flow has no input `tone`"),
    (("critic: cheap", "critic: nosuch"), "E202 unknown model `nosuch`"),
    (("task: question", "task: nothing"), "E201 `nothing` is not an input or a step"),
    (("task: question", "task: final"), "E300 cycle"),
    (("task: question", "task: 12"), "E208 input `task` is given a name"),
    (("  writer: fast\n", ""), "E322 sub-flow crit.flow does not check: crit.flow:3:21: E202 unknown model `writer` (and 1 more)"),
])
def test_what_a_use_gets_wrong_is_said_at_the_use(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    path = write(tmp_path / "flows", {"main.flow": CALLER.replace(*change), "crit.flow": CRITIQUE})
    (tmp_path / "crit.flow").write_text(CRITIQUE)
    found = problems(path)
    assert any(p.startswith(expected) for p in found), found


def test_sub_flows_that_use_each_other_are_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, {"a.flow": 'input q\nuse "b.flow" as b { q: q }', "b.flow": 'input q\nuse "a.flow" as a { q: q }'})
    assert problems(path) == ["E322 sub-flow b.flow does not check: b.flow:2:5: E321 sub-flows use each other in a cycle: "
                              "a.flow -> b.flow -> a.flow"]


def test_a_sub_flow_file_is_read_as_untrusted_data(tmp_path: Path) -> None:
    """A FIFO is never waited on, a huge file is refused by its size, binary is not text: each an error at the use."""
    main = write(tmp_path, {"main.flow": CALLER.replace("crit.flow", "pipe.flow")})
    os.mkfifo(tmp_path / "pipe.flow")
    assert problems(main)[:1] == ["E320 sub-flow pipe.flow is not a regular file (a FIFO, a device or a folder)"]
    (tmp_path / "pipe.flow").unlink()
    with open(tmp_path / "pipe.flow", "wb") as fh:
        fh.truncate(5 * 1024 * 1024)
    assert problems(main)[0].startswith("E320 sub-flow pipe.flow is 5242880 bytes, over the 4 MB limit")
    (tmp_path / "pipe.flow").write_bytes(b"input task\nstep a { model: x task: \"\xff\" }")
    assert problems(main)[0].startswith("E322 sub-flow pipe.flow does not parse: pipe.flow:2:26: E106 file is not UTF-8 text")


def test_a_sub_flows_own_models_join_the_callers_unless_they_clash(tmp_path: Path) -> None:
    own = CRITIQUE + 'models { critic { provider: local  id: "smollm2-135m-instruct-q4_1" } }\n'
    path = write(tmp_path, {"main.flow": CALLER.replace("  critic: cheap\n", ""), "crit.flow": own})
    flow, _ = load_flow(path, reference_pool())
    assert "critic" in flow.models and flow.aliases() == ["critic", "fast", "strong"]
    clash = CALLER.replace("  critic: cheap\n", "") + 'models { critic { provider: local  id: "gemma-3-270m-q4_k_m" } }\n'
    write(tmp_path, {"main.flow": clash})
    assert "E200 sub-flow crit.flow defines model `critic` differently from this flow's" in problems(path)


def test_every_pattern_of_the_library_checks_alone_and_used(tmp_path: Path) -> None:
    assert set(library_names()) >= {"solo", "critique", "panel", "vote", "cascade", "verify_loop", "route_by_label"}
    pool = reference_pool()
    for name in library_names():
        path = WORKFLOWS / "patterns" / f"{name}.flow"
        result, text = check_file(path, pool)
        assert result.flow is not None and not result.diagnostics, (name, result.diagnostics)
        assert result.flow.description and result.flow.name == name, name  # a one-line description, named as the file
        assert list(result.flow.inputs) == ["task"] and result.flow.inputs["task"].description, name
        roles = sorted(result.flow.models)
        caller = write(tmp_path, {f"{name}_caller.flow": f'input q\nuse "{name}" as it {{\n  task: q\n'
                                  + "".join(f"  {role}: fast\n" for role in roles) + "}\n"})
        used, _ = check_file(caller, pool)
        assert used.flow is not None and not used.diagnostics, (name, used.diagnostics)
        assert used.flow.aliases() == ["fast"] and not used.flow.models, name  # every role bound: only the caller's model


def test_fmt_and_diff_read_a_use(tmp_path: Path, snapshot) -> None:  # type: ignore[no-untyped-def]
    messy = 'input q\nuse   "critique"    as review{task:q # the question\nwriter:fast critic :strong}\n'
    formatted = format_source(messy)
    assert formatted == format_source(formatted)
    before = write(tmp_path, {"before.flow": formatted})
    after = write(tmp_path, {"after.flow": 'input q\nuse "panel" as review {\n  task: q\n  first: fast\n  second: fast\n  third: cheap\n'
                                           '  judge: strong\n}\n'})
    pool = reference_pool()
    old, _ = load_flow(before, pool)
    new, _ = load_flow(after, pool)
    assert (formatted, render_flow_diff(diff_flows(old, new), "before.flow", "after.flow")) == snapshot


# -- runs -----------------------------------------------------------------------------------------


def test_a_sub_flow_sees_only_what_its_use_binds_and_its_run_nests(tmp_path: Path) -> None:
    path = write(tmp_path, {"main.flow": CALLER, "crit.flow": CRITIQUE})
    with ChatServer(responder=echo) as server:
        pool = loopback_pool(server.url)
        summary = run(path, {"question": "Why is the sky blue?", "secret": "PINEAPPLE-7"}, pool, tmp_path / "home")
        sub_bodies = [b for b in server.bodies() if '"model": "strong"' not in b]
    assert summary.status == "ok" and server.count() == 4 == summary.calls
    assert [server.count(m) for m in ("fast", "cheap", "strong")] == [2, 1, 1]
    assert all("PINEAPPLE-7" not in b for b in sub_bodies)  # the caller's other input never reaches the sub-flow
    assert "Draft: Why is the sky blue?" in sub_bodies[0]
    assert list(summary.steps) == ["review/draft", "review/critique", "review/revise", "review", "final"]
    review = summary.steps["review"]
    assert review.output == summary.steps["review/revise"].output and review.model == "fast"
    assert review.cost == pytest.approx(sum(summary.steps[f"review/{s}"].cost for s in ("draft", "critique", "revise")))
    assert summary.cost == pytest.approx(review.cost + summary.steps["final"].cost)
    shown = render_run(summary)
    assert shown.index("use review: ok") < shown.index("    step review/draft: ok") < shown.index("step final: ok")
    spans = run_spans(summary, lambda n: "/" not in n, pool, False)
    use_span = next(s for s in spans.children if s.name.endswith("review"))
    assert [c.name.rsplit(" ", 1)[-1] for c in use_span.children] == ["review/draft", "review/critique", "review/revise"]
    assert all(len(c.children) == 1 and c.children[0].kind == "client" for c in use_span.children)


def test_a_sub_flows_typed_output_is_read_by_field_and_routed_on(tmp_path: Path) -> None:
    triage = ('input task\nstep label { model: writer  sees: task  task: "Label it."\n  returns: priority one of "high" "low", topic text }\n'
              "output label\n")
    caller = ('input q\nuse "triage.flow" as t { task: q  writer: fast }\nroute pick by t.priority { "high" -> urgent  "low" -> later }\n'
              'step urgent { model: strong  sees: t  task: "Now: {t.topic}" }\nstep later { model: cheap  sees: t  task: "Later: {t.topic}" }\n'
              "output pick\n")
    path = write(tmp_path, {"main.flow": caller, "triage.flow": triage})
    assert problems(path) == []
    assert any(p.startswith("E318 step `t` returns no field `topik`") for p in problems(write(tmp_path, {"main.flow": caller.replace("{t.topic}", "{t.topik}", 1)})))
    write(tmp_path, {"main.flow": caller})
    with ChatServer(responder=echo) as server:
        server.script["fast"] = [Reply(text='{"priority": "high", "topic": "outage"}')]
        summary = run(path, {"q": "The site is down"}, loopback_pool(server.url), tmp_path / "home")
    assert summary.status == "ok" and summary.output == "[strong] Now: outage"
    assert summary.steps["pick"].decision is not None and summary.steps["pick"].decision.chosen == "urgent"


def test_a_run_resumes_across_the_boundary_calling_only_what_did_not_finish(tmp_path: Path) -> None:
    path = write(tmp_path, {"main.flow": CALLER.replace("critic: cheap", "critic: gpt"), "crit.flow": CRITIQUE.replace("step revise { model: writer", "step revise { model: writer  retries: 0")})
    home = tmp_path / "home"
    with ChatServer(responder=echo) as server:
        pool = loopback_pool(server.url)
        server.script["fast"] = [Reply(text="draft one"), Reply(status=400), Reply(text="revised")]
        with pytest.raises(RunError) as info:
            run(path, {"question": "q", "secret": "s"}, pool, home)
        failed = info.value.summary  # type: ignore[attr-defined]
        assert failed.status == "failed" and failed.error_step == "review/revise"
        assert failed.error.startswith("in sub-flow `review`: step `revise` failed") and failed.error_at == f"{tmp_path}/crit.flow:5:1"
        assert failed.steps["review"].status == "failed" and failed.steps["review/revise"].status == "failed"
        assert failed.cost == pytest.approx(sum(failed.steps[f"review/{s}"].cost for s in ("draft", "critique", "revise")))
        assert (server.count("fast"), server.count("gpt"), server.count("strong")) == (2, 1, 0)
        summary = asyncio.run(run_flow(None, None, pool=pool, home=home, resume=failed.run_id))  # type: ignore[arg-type]
        assert summary.status == "ok" and summary.steps["review/revise"].output == "revised"
        assert (server.count("fast"), server.count("gpt"), server.count("strong")) == (3, 1, 1)
        assert summary.steps["review/draft"].resumed and summary.steps["review/critique"].resumed
        again = run(path, {"question": "q", "secret": "s"}, pool, home)  # every reply is cached at temperature 0
        assert again.status == "ok" and server.count() == 5 and again.cache_hits == 4


def test_a_run_begun_from_one_folder_resumes_from_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the run recorded `main.flow` as given, so a resume from elsewhere looked for `crit.flow` beside the wrong folder."""
    project = tmp_path / "project"
    write(project, {"main.flow": CALLER, "crit.flow": CRITIQUE})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    with ChatServer(responder=echo) as server:
        pool = loopback_pool(server.url)
        server.script["strong"] = [Reply(status=400), Reply(text="final")]
        monkeypatch.chdir(project)
        with pytest.raises(RunError) as info:
            run(Path("main.flow"), {"question": "q", "secret": "s"}, pool, home)
        failed = info.value.summary  # type: ignore[attr-defined]
        assert failed.flow_file == str(project / "main.flow")
        monkeypatch.chdir(elsewhere)
        summary = asyncio.run(run_flow(None, None, pool=pool, home=home, resume=failed.run_id))  # type: ignore[arg-type]
    assert summary.status == "ok" and summary.output == "final" and summary.steps["review/revise"].resumed


def test_the_callers_budget_caps_its_sub_flows_calls(tmp_path: Path) -> None:
    path = write(tmp_path, {"main.flow": "budget calls 2\n" + CALLER, "crit.flow": CRITIQUE})
    with ChatServer(responder=echo) as server:
        with pytest.raises(BudgetExceeded) as info:
            run(path, {"question": "q", "secret": "s"}, loopback_pool(server.url), tmp_path / "home")
        assert server.count() == 2  # the upstream's own count: the third call was never sent
    summary = info.value.summary
    assert summary.status == "budget_exhausted" and summary.calls == 2
    assert summary.steps["review/critique"].status == "ok" and summary.steps["review/revise"].status == "failed"
    assert summary.steps["final"].status == "not_run" and summary.error_step == "review/revise"


def test_the_language_server_indexes_and_hovers_a_use(tmp_path: Path) -> None:
    from engine.lsp import features

    path = write(tmp_path, {"main.flow": CALLER, "crit.flow": CRITIQUE})
    analysis = features.analyse(CALLER, reference_pool(), str(path))
    text, _span = features.hover(analysis, 3, 22) or ("", None)
    assert text.startswith("**use `review`**") and "runs `crit.flow`: draft, critique, revise" in text and "`task` ← question" in text
    assert [d.name for d in features.outline(analysis)] == ["review", "final"]
    assert {u.span.line for u in analysis.index.uses_of("question")} == {4}  # type: ignore[union-attr]  # given to the sub-flow


def test_the_language_server_completes_inside_a_use(tmp_path: Path) -> None:
    from engine.lsp import features

    source = 'input question\nstep plan { model: fast  task: "Plan: {question}" }\nuse "critique" as review {\n  \n  task: \n  writer: \n}\noutput review\n'
    analysis = features.analyse(source, reference_pool(), str(tmp_path / "main.flow"))
    keys = {c.label: c.detail for c in features.complete(analysis, 4, 3)}
    assert keys == {"task": "input: What to write or solve", "writer": "a model alias it calls: give it one of yours",
                    "critic": "a model alias it calls: give it one of yours"}
    assert {c.label for c in features.complete(analysis, 5, 9)} == {"question", "plan"}  # an input: what the caller has
    assert {c.label for c in features.complete(analysis, 6, 11)} == set(reference_pool().models)  # a role: our aliases
    path = write(tmp_path, {"crit.flow": CRITIQUE})  # a file beside the flow: its inputs and the aliases its steps call
    on_file = features.analyse(source.replace('"critique"', '"crit.flow"'), reference_pool(), str(path.parent / "main.flow"))
    assert [c.label for c in features.complete(on_file, 4, 3)] == ["task", "writer", "critic"]
    missing = features.analyse(source.replace('"critique"', '"nowhere.flow"'), reference_pool(), str(tmp_path / "main.flow"))
    assert features.complete(missing, 4, 3) == []


def test_a_sub_flows_own_budget_caps_it_inside_its_caller_and_across_a_resume(tmp_path: Path) -> None:
    path = write(tmp_path, {"main.flow": CALLER, "crit.flow": "budget calls 2\n" + CRITIQUE})
    worst = check_file(path, reference_pool())[0].worst
    assert worst is not None and worst.calls == 2 + 3  # the use is capped at its 2 calls; `final` retries twice
    home = tmp_path / "home"
    with ChatServer(responder=echo) as server:
        pool = loopback_pool(server.url)
        with pytest.raises(BudgetExceeded) as info:
            run(path, {"question": "q", "secret": "s"}, pool, home)
        assert server.count() == 2  # the upstream's own count: the sub-flow's third call was never sent
        assert str(info.value).startswith("in sub-flow `review`: the sub-flow's own budget: call cap 2 reached")
        summary = info.value.summary
        assert summary.steps["review/revise"].status == "failed" and summary.steps["final"].status == "not_run"
        with pytest.raises(BudgetExceeded):  # what its finished steps spent still counts: no call is sent
            asyncio.run(run_flow(None, None, pool=pool, home=home, resume=summary.run_id))  # type: ignore[arg-type]
        assert server.count() == 2


def test_a_served_flow_is_checked_again_when_a_sub_flow_it_uses_changes(tmp_path: Path) -> None:
    """Before: `baton serve --reload` re-read a flow only when its own file changed, and went on serving its callers'
    copy of an edited pattern."""
    from engine.serve.catalog import Catalog

    flows = tmp_path / "flows"
    write(flows, {"main.flow": CALLER.replace('"crit.flow"', '"patterns/crit.flow"'), "patterns/crit.flow": CRITIQUE})
    crit = flows / "patterns" / "crit.flow"
    catalog = Catalog.load(flows, reference_pool())
    assert set(catalog.flows) == {"flow/main"} and catalog.reload() == []

    def edit(text: str) -> None:
        before = crit.stat().st_mtime_ns
        crit.write_text(text)
        os.utime(crit, ns=(before + 10**9, before + 10**9))  # a later time, however coarse the file system's clock

    edit(CRITIQUE.replace("Find the faults.", "List three faults."))
    assert catalog.reload() == [f"{flows / 'main.flow'}: reloaded as flow/main"]
    review = catalog.flows["flow/main"].flow.nodes["review"]
    assert isinstance(review, Use) and review.flow.nodes["critique"].task == "List three faults."  # type: ignore[union-attr]
    edit(CRITIQUE.replace("model: critic", "model: nosuch"))
    notes = catalog.reload()
    assert len(notes) == 1 and "main.flow: does not check; keeps serving its last good version" in notes[0] and "crit.flow:" in notes[0]
    assert catalog.reload() == []  # the same broken version is not checked again
    assert catalog.flows["flow/main"].flow.nodes["review"].flow.nodes["critique"].task == "List three faults."  # type: ignore[union-attr]


def test_a_learned_vote_and_a_learned_route_inside_a_sub_flow_keep_their_trained_names(tmp_path: Path) -> None:
    """Before: binding a sub-flow's models to the caller's renamed the panel its scorer reads (so it scored the answers
    as if from models it never saw) and the arms its router prices (a KeyError on a name the caller's pool lacks)."""
    import json

    from engine.router.files import load_router

    (tmp_path / "hand.scorer").write_text(json.dumps({
        "format": "baton-scorer/1", "panel": ["a", "b"], "models": {"a": "model-a", "b": "model-b"}, "escalate": "big",
        "threshold": 0.6, "weights": {"bias": -2.0, "unanimous": 4.0, "says:a": 0.5, "says:b": 0.5}}))
    vote = ('flow vote "a and b, scored"\ninput question\n'
            'fuse answer {\n  panel: a, b\n  vote: number\n  scorer: "hand.scorer"\n  escalate: big\n  task: "{question}"\n}\n')
    router = tmp_path / "gsm8k.router"
    router.write_text((WORKFLOWS / "eval" / "gsm8k.router").read_text())
    routed = (WORKFLOWS / "eval" / "routed.flow").read_text()
    caller = ('input question\nuse "vote.flow" as v { question: question  a: fast  b: cheap  big: strong }\n'
              'use "routed.flow" as r { question: question  flash: fast  gpt4o: strong }\n'
              'step both { model: fast  sees: v, r  task: "both" }\noutput both\n')
    path = write(tmp_path, {"main.flow": caller, "vote.flow": vote, "routed.flow": routed})
    with ChatServer(responder=lambda body: Reply(text="41")) as server:
        pool = loopback_pool(server.url)
        summary = run(path, {"question": "What is 40 + 1?"}, pool, tmp_path / "home")
    assert summary.status == "ok"
    assert summary.steps["v/answer"].verdict == "score 0.95 >= threshold 0.60"  # says:a and says:b weighed: 0.88 without them
    decision = summary.steps["r/answer"].decision
    assert decision is not None and set(decision.costs) == {"flash", "gpt4o"}
    trained = load_router(str(router))
    for label, alias in (("flash", "fast"), ("gpt4o", "strong")):  # the router's estimate, at the prices of the model it calls
        price = pool.models[alias]
        assert decision.costs[label] == round(trained.cost(label, price.input_price, price.output_price), 8)
    assert summary.steps[f"r/{decision.chosen}"].model == {"cheap": "fast", "strong": "strong"}[decision.chosen]
