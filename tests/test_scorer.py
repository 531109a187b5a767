"""Answer scorers: the learned vote and the learned cascade. A scorer trained on a synthetic grid must learn which member
to trust; its threshold comes from the training items only; a fuse with it runs on replay exactly as the report's
simulation says, and against a real OpenAI-compatible server it escalates only what it does not trust; its file is
untrusted data, checked like a router's."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.loading import check_source
from engine.pool import default_pool, load_pool
from engine.router.files import load_scorer
from engine.router.model import RouterError
from engine.router.scorer import PanelAnswers, threshold_for
from engine.session import run_flow_sync
from engine.training.grid import grid_models, load_grid, split_grid
from engine.training.scoring import play
from tests.conftest import ROOT
from tests.helpers import write_grid_files

IDS = {"weak": "m-weak", "good": "m-good", "strong": "m-strong"}
ACCURACY = {"weak": 0.35, "good": 0.8, "strong": 0.95}

CASCADE = """version 1
flow learned "weak + good, scored; strong when the best answer is not trusted"

input question

fuse answer {
  panel: weak, good
  vote: number
  scorer: "synthetic.scorer"
  escalate: strong
  task: "{question}"
}
"""


def write_grid(folder: Path, n: int = 400, seed: int = 3) -> Path:
    """Three models: `weak` right 35% of the time, `good` 80%, `strong` 95%; a wrong answer is off by a random amount,
    so two wrong answers seldom agree. The pool binds each alias to its column and prices `strong` 30x the others."""
    rng = random.Random(seed)
    items, rows = [], {"correct.csv": [], "answers.csv": [], "output_tokens_o200k.csv": []}  # type: ignore[var-annotated]
    for i in range(n):
        gold = rng.randint(10, 999)
        items.append({"id": f"q{i}", "question": f"Question {i}: what is {gold - 7} plus 7?", "gold": str(gold), "prompt_tokens_o200k": 30})
        right = {a: int(rng.random() < p) for a, p in ACCURACY.items()}
        rows["correct.csv"].append({"id": f"q{i}", **{IDS[a]: r for a, r in right.items()}})
        rows["answers.csv"].append({"id": f"q{i}", **{IDS[a]: gold if r else gold + rng.randint(1, 50) for a, r in right.items()}})
        rows["output_tokens_o200k.csv"].append({"id": f"q{i}", **{m: 40 for m in IDS.values()}})
    write_grid_files(folder, items, rows, list(IDS.values()))
    pool = folder.parent / "models.toml"
    pool.write_text(f'[providers.replay]\nkind = "replay"\noptions = {{ dataset = "{folder.name}" }}\n\n'
                    + "".join(f'[models.{a}]\nprovider = "replay"\nid = "{m}"\ninput_price = {30.0 if a == "strong" else 1.0}\n'
                              f'output_price = {30.0 if a == "strong" else 1.0}\n\n' for a, m in IDS.items()))
    return pool


def baton(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def test_a_trained_scorer_trusts_the_good_member_and_escalates_what_it_does_not_trust(tmp_path: Path) -> None:
    write_grid(tmp_path / "grid")
    trained = baton("router", "train-scorer", "--grid", "grid", "--pool", "models.toml", "--panel", "weak,good", "--escalate", "strong",
                    "-o", "synthetic.scorer", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "held-out items" in trained.stdout and "escalated" in trained.stdout
    scorer = load_scorer(tmp_path / "synthetic.scorer")
    assert scorer.weights["says:good"] > scorer.weights["says:weak"] + 1.0  # learned who is worth what
    assert 0 < scorer.threshold < 1 and scorer.calibration["on"].endswith("out of fold")
    # the learned vote: when the two disagree, good's answer is rated above weak's, whichever is listed first
    ranked = scorer.score(PanelAnswers("Question: what is 1 plus 7?", {"weak": "8", "good": "9"})).ranked
    assert ranked[0][0].members == ("good",) and ranked[0][1] > ranked[1][1]
    agreed = scorer.score(PanelAnswers("Question: what is 1 plus 7?", {"weak": "8", "good": "8"})).best
    assert agreed is not None and agreed[1] > ranked[0][1] >= 0  # agreement is trusted more than good alone
    # on held-out items it beats the good member alone, and costs far less than the strong model alone
    pool = load_pool(tmp_path / "models.toml")
    models = grid_models(pool, tmp_path / "grid")
    test = split_grid(load_grid(tmp_path / "grid", models), 0.7, 0)[1]
    played = play(scorer, test, pool)
    good_alone = sum(i.example.right["good"] for i in test) / len(test)
    assert sum(played.right) / len(test) > good_alone + 0.03
    assert 0.05 < played.escalated < 0.9


def test_the_learned_cascade_runs_on_replay_as_the_report_simulates_it(tmp_path: Path) -> None:
    """Live decisions equal the simulation's item by item: the same features from the replies as from the grid."""
    pool_file = write_grid(tmp_path / "grid")
    assert baton("router", "train-scorer", "--grid", "grid", "--pool", "models.toml", "--panel", "weak,good", "--escalate", "strong",
                 "-o", "synthetic.scorer", cwd=tmp_path).returncode == 0
    (tmp_path / "learned.flow").write_text(CASCADE)
    pool = load_pool(pool_file)
    scorer = load_scorer(tmp_path / "synthetic.scorer")
    test = split_grid(load_grid(tmp_path / "grid", grid_models(pool, tmp_path / "grid")), 0.7, 0)[1][:40]
    escalated, right = 0, 0
    for item in test:
        summary = run_flow_sync(tmp_path / "learned.flow", {"question": item.example.text}, pool=pool, home=tmp_path / "home")
        step = summary.steps["answer"]
        assert step.scores and step.reason.startswith(("scorer:", "escalated to `strong`"))
        escalated += any(a.role == "escalate" for a in step.attempts)
        right += json.loads(summary.output)["answer"] == item.gold
    played = play(scorer, test, pool)
    assert escalated == round(played.escalated * len(test)) and right == sum(played.right)
    shown = baton("show", summary.run_id, "--home", "home", cwd=tmp_path)
    assert "scorer rated:" in shown.stdout and "round None" not in shown.stdout


def test_against_a_real_server_only_an_untrusted_answer_is_escalated(tmp_path: Path) -> None:
    from engine.testing.chat_server import ChatServer

    (tmp_path / "hand.scorer").write_text(json.dumps({  # plain data a person can write: agreement is trusted, one voice is not
        "format": "baton-scorer/1", "panel": ["a", "b"], "models": {"a": "model-a", "b": "model-b"}, "escalate": "big",
        "threshold": 0.6, "weights": {"bias": -2.0, "unanimous": 4.0, "says:a": 0.5, "says:b": 0.5}}))
    (tmp_path / "flow.flow").write_text(CASCADE.replace("weak, good", "a, b").replace("synthetic.scorer", "hand.scorer")
                                        .replace("escalate: strong", "escalate: big"))
    answers = {"model-a": "41", "model-b": "42", "model-big": "43"}
    with ChatServer(responder=lambda body: json.dumps({"answer": answers[body["model"]]})) as server:
        (tmp_path / "models.toml").write_text(f'[providers.up]\nkind = "openai"\nbase_url = "{server.url}"\n\n'
                                              + "".join(f'[models.{a}]\nprovider = "up"\nid = "model-{a}"\ninput_price = 1.0\n'
                                                        f'output_price = 1.0\n\n' for a in ("a", "b", "big")))
        pool = load_pool(tmp_path / "models.toml")
        split = run_flow_sync(tmp_path / "flow.flow", {"question": "q1"}, pool=pool, home=tmp_path / "home")
        assert json.loads(split.output) == {"answer": "43"} and server.count("model-big") == 1  # two voices, neither trusted
        assert split.steps["answer"].scores == {"41": pytest.approx(0.1824, abs=1e-3), "42": pytest.approx(0.1824, abs=1e-3)}
        answers["model-b"] = "41"
        agreed = run_flow_sync(tmp_path / "flow.flow", {"question": "q2"}, pool=pool, home=tmp_path / "home")
        assert json.loads(agreed.output) == {"answer": "41"} and server.count("model-big") == 1  # trusted: nobody else asked
        assert agreed.steps["answer"].verdict == "score 0.95 >= threshold 0.60"
        assert agreed.cost == pytest.approx(sum(b.usd(1.0, 1.0) for b in server.bills[-2:]))  # what the upstream could bill


def test_the_threshold_is_read_off_the_data() -> None:
    # five items, the best answer's probability and whether it is right; the strong model is right on all but the last
    best = [(0.2, False), (0.4, False), (0.6, True), (0.8, True), (0.9, True)]
    strong = [True, True, True, True, False]
    assert threshold_for(best, strong) == (0.6, 1.0, 0.4)  # the knee: escalate the two least trusted, all five right
    assert threshold_for(best, strong, target=0.8) == (0.4, 0.8, 0.2)
    assert threshold_for(best, strong, escalate_share=0.1) == (0.0, 0.6, 0.0)
    assert threshold_for(best, strong, target=2.0)[1] == 1.0  # out of reach: the most accurate


@pytest.mark.parametrize(("content", "message"), [
    ('{"format": "baton-scorer/1", "panel": ["a"], "weights": {"bias": NaN}}', "NaN is not a number"),
    ('{"format": "baton-scorer/1", "panel": ["a"], "weights": {"bias": 1e400}}', "finite"),
    ('{"format": "baton-scorer/1", "panel": ["a", "a"], "weights": {}}', "names an alias twice"),
    ('{"format": "baton-scorer/1", "panel": ["a"], "weights": {}, "threshold": 2}', "threshold"),
    ('{"format": "baton-router/1", "panel": ["a"], "weights": {}}', "not a Baton scorer file"),
    ('[' * 100_000, "nested too deeply"),
])
def test_a_malformed_scorer_file_is_named_not_a_traceback(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.scorer"
    path.write_text(content)
    with pytest.raises(RouterError, match=message):
        load_scorer(path)


def test_a_scorer_that_is_a_fifo_or_outside_the_flow_folder_is_a_diagnostic(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    os.mkfifo(flows / "fifo.scorer")
    (tmp_path / "outside.scorer").write_text("{}")
    for name, expected in (("fifo.scorer", "not a regular file"), ("../outside.scorer", "outside the flow's folder")):
        source = CASCADE.replace("synthetic.scorer", name).replace("weak, good", "local, smol").replace("strong", "local")
        result = check_source(source, default_pool(), str(flows / "f.flow"))
        assert [(d.code, expected in d.message) for d in result.diagnostics] == [("E315", True)]


@pytest.mark.parametrize(("change", "message"), [
    (("  vote: number\n", ""), "`scorer` needs `vote`"),
    (("  escalate: local\n", ""), "`threshold` needs `scorer` and `escalate`"),
    (("  vote: number\n", "  vote: number\n  agree: 2\n"), "`agree` counts votes"),
    (("escalate: local", "escalate: smol"), "set its threshold for escalating to `local`"),
])
def test_the_scorer_properties_are_checked(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    (tmp_path / "ls.scorer").write_text(json.dumps({"format": "baton-scorer/1", "panel": ["local", "smol"], "escalate": "local",
                                                     "weights": {"bias": 0.0}}))
    source = (CASCADE.replace("synthetic.scorer", "ls.scorer").replace("weak, good", "local, smol").replace("strong", "local")
              .replace("  escalate:", "  threshold: 0.7\n  escalate:"))
    assert not check_source(source, default_pool(), str(tmp_path / "f.flow")).diagnostics
    result = check_source(source.replace(*change), default_pool(), str(tmp_path / "f.flow"))
    assert any(message in d.message for d in result.diagnostics), [d.message for d in result.diagnostics]


def test_the_report_scores_the_learned_vote_and_cascade_on_held_out_items(tmp_path: Path) -> None:
    write_grid(tmp_path / "grid")
    report = baton("router", "report", "--grid", "grid", "--pool", "models.toml", "--learner", "logistic", "--splits", "3",
                   "--vote", "weak,good,strong", "--cascade", "weak,good,strong", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    for name in ("| learned vote (answer scorer): weak, good, strong", "| learned cascade: weak + good scored, else strong (knee)",
                 "| learned cascade: weak + good scored, else strong (to match strong on the training items)"):
        assert any(line.startswith(name) and "of 3 splits" in line for line in lines), (name, report.stdout)


def test_a_scorer_learns_from_baton_eval_runs_of_one_flow_per_member(tmp_path: Path) -> None:
    """Users without a grid evaluate one solo flow per model; each item's recorded reply is that member's answer."""
    write_grid(tmp_path / "grid")
    items = [json.loads(line) for line in (tmp_path / "grid" / "items.jsonl").read_text().splitlines()]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"id": i["id"], "question": i["question"], "answer": i["gold"]}) + "\n"
                                                 for i in items))
    flows = []
    for alias in IDS:
        (tmp_path / f"solo_{alias}.flow").write_text(f'version 1\ninput question\nstep answer {{\n  model: {alias}\n  task: "{{question}}"\n}}\n')
        flows.append(f"solo_{alias}.flow")
    evaluated = baton("eval", *flows, "--dataset", "data.jsonl", "--scorer", "number", "--pool", "models.toml", "--home", "home", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    folder = next((tmp_path / "home" / "evals").iterdir())
    eval_id = folder.name
    results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert all(r["output_tokens"] == 40 for r in results)  # the reply's tokens are recorded, as a grid records them
    trained = baton("router", "train-scorer", "--from", eval_id, "--dataset", "data.jsonl", "--pool", "models.toml", "--home", "home",
                    "--panel", "weak,good", "--escalate", "strong", "-o", "from_eval.scorer", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    from_eval = load_scorer(tmp_path / "from_eval.scorer")
    assert from_eval.trained_on["flows"] == {a: f"solo_{a}" for a in IDS}
    assert baton("router", "train-scorer", "--grid", "grid", "--pool", "models.toml", "--panel", "weak,good", "--escalate", "strong",
                 "-o", "from_grid.scorer", cwd=tmp_path).returncode == 0
    from_grid = load_scorer(tmp_path / "from_grid.scorer")
    for feature in ("says:good", "says:weak", "unanimous"):  # the same items, the same answers: the same scorer
        assert from_eval.weights[feature] == pytest.approx(from_grid.weights[feature], abs=1e-3), feature
