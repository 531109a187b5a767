"""`baton eval` / `baton compare`: replay of real recorded models, statistics, the HTML report, live endpoints."""

from __future__ import annotations

import asyncio
import csv
import html
import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.eval.dataset import load_dataset
from engine.eval.runner import EvalReport, evaluate
from engine.eval.scorers import make_scorer
from engine.eval.stats import mcnemar, pareto, wilson
from engine.loading import check_source, load_flow
from engine.pool import load_pool
from engine.providers import make_provider
from engine.testing.chat_server import ChatServer
from tests.conftest import ROOT, loopback_pool

EVAL = ROOT / "workflows" / "eval"
DATA = EVAL / "gsm8k" / "items.jsonl"
SOLO = sorted(EVAL.glob("solo_*.flow"))


def label_grid_accuracy(model: str) -> float:
    with open(EVAL / "gsm8k" / "correct.csv", newline="") as fh:
        cells = [row[model] for row in csv.DictReader(fh) if row[model] != ""]
    return sum(c == "1" for c in cells) / len(cells)


def run_eval(paths: list[Path], limit: int | None = None, **kw: object):  # type: ignore[no-untyped-def]
    pool = load_pool(EVAL / "models.toml")
    flows = [(p.stem, load_flow(p, pool)[0]) for p in paths]
    providers = {name: make_provider(name, spec) for name, spec in pool.providers.items()}
    items = load_dataset(DATA, limit)
    return asyncio.run(evaluate(flows, items, pool, make_scorer("number"), providers=providers, **kw))  # type: ignore[arg-type]


def test_replay_accuracy_equals_the_label_grid_for_every_solo_flow(tmp_path: Path) -> None:
    report = run_eval(SOLO, home=tmp_path)
    pool = load_pool(EVAL / "models.toml")
    for path, flow_report in zip(SOLO, report.flows, strict=True):
        flow, _ = load_flow(path, pool)
        alias = flow.nodes["answer"].models[0]  # type: ignore[union-attr]
        assert flow_report.n == 1319
        assert flow_report.accuracy == pytest.approx(label_grid_accuracy(pool.models[alias].id), abs=1e-12), path.stem


def test_vote_and_cascade_match_the_grid(tmp_path: Path) -> None:
    report = run_eval([EVAL / "vote3.flow", EVAL / "cascade.flow"], home=tmp_path)
    vote, cascade = report.flows
    assert round(vote.accuracy * 100, 1) == 95.0  # the figure computed directly from the grid
    assert cascade.calls_per_item < 3 and cascade.accuracy > vote.accuracy


def test_compare_cli_on_all_items_writes_the_report(tmp_path: Path) -> None:
    flows = [str(EVAL / f"{n}.flow") for n in ("solo_gpt4o", "solo_gpt4o_mini", "solo_haiku", "vote3", "cascade", "self_moa")]
    html_path = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "compare", *flows, "--dataset", str(DATA), "--scorer", "number",
                           "--report", str(html_path), "--home", str(tmp_path), "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "BATON_POOL"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [f["n"] for f in report["flows"]] == [1319] * 6
    assert report["oracle"] > max(f["accuracy"] for f in report["flows"])
    assert len(report["pairs"]) == 15
    page = html_path.read_text()
    parser = _Tags()
    parser.feed(page)
    assert {"html", "table", "svg", "circle", "polyline"} <= parser.tags
    assert len(report["references"]) >= 3  # the best flow, random routing at some flow's cost, the oracle
    for ref in report["references"]:  # the HTML report has the rows the CLI prints
        assert f"<td>{html.escape(ref['row'])}</td><td>{ref['accuracy'] * 100:.1f}%</td><td>${ref['mean_cost']:.6f}</td>" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # no network at view time


def test_chart_axes_have_round_ticks_in_plain_dollars() -> None:
    """Axis labels a reader can take in: round accuracies, and costs as decimals (no `$3e-05`)."""
    import math

    from engine.eval.html import _accuracy_ticks, _cost_ticks, _dollars

    assert [round(a, 4) for a in _accuracy_ticks(0.915, 1.0)] == [0.92, 0.94, 0.96, 0.98, 1.0]
    assert [round(a, 4) for a in _accuracy_ticks(0.0, 1.0)] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    labels = [_dollars(c) for c in _cost_ticks(math.log10(3e-5) - 0.2, math.log10(0.0018) + 0.2)]
    assert labels == ["$0.000020", "$0.000050", "$0.00010", "$0.00020", "$0.00050", "$0.0010", "$0.0020"]
    assert len(_cost_ticks(-9.2, -0.5)) <= 10  # nine decades: one tick per power of ten
    assert (_dollars(1.5), _dollars(1e-9)) == ("$1.50", "$0")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)


def test_eval_resumes_without_rerunning_finished_items(tmp_path: Path) -> None:
    first = run_eval([EVAL / "solo_haiku.flow"], limit=50, home=tmp_path)
    results = tmp_path / "evals" / first.eval_id / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:20]) + "\n" + lines[20][:15])  # a crash mid-write
    second = run_eval([EVAL / "solo_haiku.flow"], limit=50, home=tmp_path, resume=first.eval_id)
    assert second.flows[0].n == 50 and second.flows[0].correct == first.flows[0].correct
    assert len(results.read_text().splitlines()) == 50  # 20 kept, the torn line dropped, 30 re-run


def test_budget_stops_starting_items(tmp_path: Path) -> None:
    report = run_eval([EVAL / "solo_gpt4o.flow"], limit=200, home=tmp_path, budget_usd=0.05, concurrency=1)
    assert report.stopped and report.flows[0].n < 200
    assert report.flows[0].total_cost <= 0.05 + 0.01


def test_replay_refuses_requests_it_has_no_record_for(tmp_path: Path) -> None:
    from engine.errors import ProviderError
    from engine.session import run_flow_sync

    pool = load_pool(EVAL / "models.toml")
    result = check_source('input question\nstep a { model: haiku  task: "Please answer: {question}"  retries: 0 }', pool)
    assert result.flow is not None
    with pytest.raises(ProviderError, match="no recorded answer"):
        run_flow_sync(result.flow, {"question": "What is 2+2?"}, pool=pool, home=tmp_path)


def test_eval_against_a_live_endpoint(tmp_path: Path) -> None:
    dataset = tmp_path / "tiny.jsonl"
    dataset.write_text("\n".join(json.dumps({"id": i, "question": f"What is {i} + {i}?", "answer": str(2 * i)}) for i in range(8)))

    def responder(body: dict[str, object]) -> str:
        content = body["messages"][-1]["content"]  # type: ignore[index]
        n = int(content.split()[2])
        return f"The answer is {2 * n if n % 4 else 2 * n + 1}."  # wrong on 0 and 4

    with ChatServer(responder=responder) as server:
        pool = loopback_pool(server.url)
        flow = check_source('input question\nstep a { model: fast  task: "{question}" }', pool).flow
        assert flow is not None
        providers = {"loop": make_provider("loop", pool.provider("loop"))}

        async def go() -> EvalReport:
            try:
                return await evaluate([("live", flow)], load_dataset(dataset), pool, make_scorer("number"), providers=providers,
                                      home=tmp_path)
            finally:
                await providers["loop"].aclose()  # the caller's providers are the caller's to close

        report = asyncio.run(go())
        assert report.flows[0].correct == 6 and server.count() == 8
        assert report.flows[0].total_cost > 0


def test_an_interrupted_eval_records_no_interrupted_item_and_resumes(tmp_path: Path) -> None:
    """Ctrl-C mid-eval: items cut short are not recorded as failures (a resume would have kept them as wrong)."""
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("\n".join(json.dumps({"id": i, "question": f"What is {i} + {i}?", "answer": str(2 * i)}) for i in range(12)))

    def responder(body: dict[str, object]) -> str:
        return f"The answer is {2 * int(body['messages'][-1]['content'].split()[2])}."  # type: ignore[index]

    with ChatServer(responder=responder, latency=0.2) as server:
        pool = loopback_pool(server.url)
        flow = check_source('input question\nstep a { model: fast  task: "{question}" }', pool).flow
        assert flow is not None

        async def go(resume: str | None) -> EvalReport:
            providers = {"loop": make_provider("loop", pool.provider("loop"))}
            try:
                return await evaluate([("live", flow)], load_dataset(dataset), pool, make_scorer("number"), providers=providers,
                                      home=tmp_path, concurrency=4, resume=resume, eval_id="e1")
            finally:
                await providers["loop"].aclose()

        async def interrupted() -> None:
            task = asyncio.create_task(go(None))
            journal = tmp_path / "evals" / "e1" / "results.jsonl"
            for _ in range(600):  # until an item is done (not a fixed sleep: under load the first may take longer)
                if journal.exists() and journal.read_text().strip():
                    break
                await asyncio.sleep(0.01)
            task.cancel()  # the next items are in flight
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(interrupted())
        results = tmp_path / "evals" / "e1" / "results.jsonl"
        rows = [json.loads(line) for line in results.read_text().splitlines()]
        assert 0 < len(rows) < 12 and not any(r["error"] for r in rows)
        report = asyncio.run(go("e1"))
        assert report.flows[0].n == 12 and report.flows[0].correct == 12
    with pytest.raises(InputError, match="no evaluation 'e2' to resume"):
        asyncio.run(evaluate([("live", flow)], load_dataset(dataset), pool, make_scorer("number"), home=tmp_path, resume="e2"))


def test_statistics() -> None:
    low, high = wilson(90, 100)
    assert 0.82 < low < 0.83 and 0.94 < high < 0.95
    assert mcnemar(0, 0) == 1.0 and mcnemar(10, 10) == 1.0
    assert mcnemar(20, 5) == pytest.approx(0.004077, abs=1e-5)
    assert pareto([("a", 1.0, 0.9), ("b", 2.0, 0.8), ("c", 0.5, 0.7)]) == {"a", "c"}


@pytest.mark.parametrize("b, c", [(600, 500), (520, 504), (5000, 4000), (1, 2_000), (0, 1_500)])
def test_mcnemar_holds_for_any_number_of_discordant_items(b: int, c: int) -> None:
    """Two flows that differ on 1,024 or more items: 2**n no longer fits a float, and the report crashed with an
    OverflowError after everything was billed. The p-value is the exact binomial tail, computed in fractions here."""
    n, k = b + c, min(b, c)
    exact = float(min(Fraction(1), 2 * Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)))
    assert mcnemar(b, c) == pytest.approx(exact, rel=1e-7, abs=1e-300)
    assert mcnemar(c, b) == mcnemar(b, c)


@pytest.mark.parametrize("text, code", [
    ('input q\nfuse f { panel: a1, a2  vote: number  judge: a1  task: "{q}" }', "E208"),
    ('input q\nfuse f { panel: a1, a2  agree: 2  task: "{q}" }', "E208"),
    ('input q\nfuse f { panel: a1, a2  vote: number  agree: 3  task: "{q}" }', "E306"),
    ('input q\nfuse f { panel: a1, a2  vote: maybe  task: "{q}" }', "E208"),
    ('input q\nfuse f { panel: a1, a2  tie: escalate  task: "{q}" }', "E208"),
    ('input q\nfuse f { panel: a1, a2  vote: number  tie: last  task: "{q}" }', "E208"),
])
def test_vote_properties_are_checked(text: str, code: str) -> None:
    from engine.pool import ModelSpec, Pool

    pool = Pool(models={"a1": ModelSpec(provider="openai", id="x"), "a2": ModelSpec(provider="openai", id="y")})
    assert code in {d.code for d in check_source(text, pool).diagnostics}


def test_a_dataset_that_does_not_fit_the_flow_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(json.dumps({"question": "q1", "answer": "1"}) + "\n" + json.dumps({"q": "q2", "answer": "2"}) + "\n")
    flow = tmp_path / "f.flow"
    flow.write_text('input question\nstep a { model: local  task: "{question}" }\n')
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "eval", str(flow), "--dataset", str(dataset), "--home", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "BATON_POOL"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "item 2: missing input: question (flow f)" in proc.stderr
    assert not (tmp_path / "evals").exists()


@pytest.mark.model
def test_eval_against_the_local_model(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    dataset = tmp_path / "tiny.jsonl"
    dataset.write_text("\n".join(json.dumps({"question": q, "answer": a}) for q, a in [("2 + 2 =", "4"), ("The capital of France is", "Paris")]))
    flow = tmp_path / "f.flow"
    flow.write_text('input question\nstep a { model: local  task: "{question}"  max_tokens: 16 }\n')
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "eval", str(flow), "--dataset", str(dataset), "--scorer", "contains",
                           "--home", str(tmp_path), "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "BATON_POOL"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["flows"][0]["n"] == 2 and report["flows"][0]["failures"] == 0


def test_judge_scorer_asks_a_model_with_the_rubric(tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"ref{i}"}) for i in range(4)))

    def responder(body: dict[str, object]) -> str:
        content = body["messages"][-1]["content"]  # type: ignore[index]
        if "You grade an answer" in content:
            return "CORRECT" if "Answer to grade: good" in content else "INCORRECT"
        return "good" if content in ("q0", "q1") else "bad"

    with ChatServer(responder=responder) as server:
        flow = tmp_path / "f.flow"
        flow.write_text('input question\nstep a { model: fast  task: "{question}" }\n')
        pool_file = tmp_path / "models.toml"
        pool_file.write_text(f'[providers.loop]\nkind = "openai"\nbase_url = "{server.url}"\n'
                             '[models.fast]\nprovider = "loop"\nid = "fast"\n[models.grader]\nprovider = "loop"\nid = "grader"\n')
        proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "eval", str(flow), "--dataset", str(dataset), "--scorer",
                               "judge:grader", "--pool", str(pool_file), "--home", str(tmp_path), "--json"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["flows"][0]["correct"] == 2
        grading = [b for b in server.requests if b["model"] == "grader"]
        assert len(grading) == 4 and "Reference answer: ref0" in json.dumps(grading)


def test_judge_and_escalate_must_be_aliases() -> None:
    from engine.pool import ModelSpec, Pool

    pool = Pool(models={"a1": ModelSpec(provider="openai", id="x")})
    result = check_source('input q\nfuse f { panel: a1  judge: "a1"  task: "{q}" }', pool)
    assert [(d.code, d.message) for d in result.errors] == [("E208", '`judge` takes a model alias, found `"a1"`')]


def test_replay_answers_each_item_of_a_repeated_question_with_its_own_record(tmp_path: Path) -> None:
    """Two items ask the same question (750 of MMLU-Pro's items share their text): each gets its own recorded answer,
    not the first item's for both."""
    data = tmp_path / "grid"
    data.mkdir()
    question = "Which option is right?"
    (data / "items.jsonl").write_text("".join(json.dumps({"id": i, "question": question, "gold": gold, "prompt_tokens_o200k": 10}) + "\n"
                                              for i, gold in (("q-a", "1"), ("q-b", "2"))))
    (data / "answers.csv").write_text("id,m\nq-a,1\nq-b,2\n")
    (data / "correct.csv").write_text("id,m\nq-a,1\nq-b,1\n")
    (data / "output_tokens_o200k.csv").write_text("id,m\nq-a,3\nq-b,4\n")
    (tmp_path / "models.toml").write_text(f'[providers.replay]\nkind = "replay"\noptions = {{ dataset = "{data}" }}\n'
                                          '[models.m]\nprovider = "replay"\nid = "m"\ninput_price = 1.0\noutput_price = 1.0\n')
    pool = load_pool(tmp_path / "models.toml")
    flow = check_source('input question\nstep answer { model: m  task: "{question}" }', pool).flow
    assert flow is not None
    providers = {name: make_provider(name, spec) for name, spec in pool.providers.items()}
    report = asyncio.run(evaluate([("solo", flow)], load_dataset(data / "items.jsonl"), pool, make_scorer("number"), providers=providers,
                                  home=tmp_path / "home"))
    assert report.flows[0].accuracy == 1.0 and report.flows[0].n == 2  # the first item's answer for both scored 50%


@pytest.mark.parametrize("panel, tie, answer, why", [
    ("a1, a2", "", "1", "tied with '2', tie: first"),  # the rule when the flow says nothing, now said in the record
    ("a2, a1", "first", "2", "tied with '1', tie: first"),  # the panel's order decides, as the flow says
    ("a1, a2", "escalate", "3", "escalated to `a3`: the vote tied"),
])
def test_a_tied_vote_follows_the_flows_rule(panel: str, tie: str, answer: str, why: str, tmp_path: Path) -> None:
    """Two voters, two answers: a tie went silently to the first-listed member (reordering a panel moved a vote from
    54.2% to 58.9%). `tie: first` says so; `tie: escalate` asks the `escalate` model."""
    from engine.pool import ModelSpec, Pool, ProviderSpec
    from engine.session import run_flow_sync
    from engine.testing.chat_server import Reply

    with ChatServer(responder=lambda body: Reply(text=f"ANSWER: {body['model'][-1]}")) as server:
        pool = Pool(providers={"loop": ProviderSpec(kind="openai", base_url=server.url)},
                    models={name: ModelSpec(provider="loop", id=name) for name in ("a1", "a2", "a3")})
        flow = check_source(f'input q\nfuse f {{ panel: {panel}  vote: number  {"tie: " + tie if tie else ""}  escalate: a3  task: "{{q}}" }}',
                            pool).flow
        assert flow is not None
        summary = run_flow_sync(flow, {"q": "1 or 2?"}, pool=pool, home=tmp_path)
    assert summary.output == f"ANSWER: {answer}" and why in summary.steps["f"].reason, summary.steps["f"].reason
