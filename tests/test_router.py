"""Learned routing: a router trained on a synthetic grid whose right routing is known must recover it; router files;
the `route ... by router` construct checked and run through replay; `baton router` commands; compare's reference rows."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.loading import check_source
from engine.pool import load_pool
from engine.router.files import load_router
from engine.router.model import train_router
from engine.router.policy import calibrate_strong_share, choose
from engine.session import run_flow_sync
from engine.training.grid import grid_models, load_grid, split_grid
from tests.conftest import ROOT, WORKFLOWS
from tests.helpers import write_grid_files

MODELS = {"cheap": "m-cheap", "strong": "m-strong"}
TOPICS = {  # questions about sums: both models right; about integrals: only the strong one
    "sum": ["What is the sum of {a} and {b} apples?", "Add {a} and {b} marbles; how many in all?", "A box has {a} pens and gets {b} more."],
    "integral": ["Compute the integral of x^{a} from 0 to {b}.", "Evaluate the definite integral of {a}x dx up to {b}.",
                 "Find the integral of sin({a}x) over {b} periods."],
}


def write_grid(folder: Path, n: int = 300, seed: int = 1) -> Path:
    rng = random.Random(seed)
    items, correct, answers, tokens = [], [], [], []
    for i in range(n):
        topic = "sum" if i % 2 else "integral"
        question = rng.choice(TOPICS[topic]).format(a=rng.randint(2, 99), b=rng.randint(2, 99))
        cheap_right = 1 if topic == "sum" else int(rng.random() < 0.1)
        items.append({"id": f"q{i}", "question": question, "gold": "1", "prompt_tokens_o200k": 40})
        correct.append({"id": f"q{i}", "m-cheap": cheap_right, "m-strong": 1})
        answers.append({"id": f"q{i}", "m-cheap": "1" if cheap_right else "2", "m-strong": "1"})
        tokens.append({"id": f"q{i}", "m-cheap": 20, "m-strong": 200})
    write_grid_files(folder, items, {"correct.csv": correct, "answers.csv": answers, "output_tokens_o200k.csv": tokens},
                     ["m-cheap", "m-strong"])
    pool = folder.parent / "models.toml"
    pool.write_text(f'[providers.replay]\nkind = "replay"\noptions = {{ dataset = "{folder.name}" }}\n\n'
                    '[models.cheap]\nprovider = "replay"\nid = "m-cheap"\ninput_price = 0.1\noutput_price = 0.4\n\n'
                    '[models.strong]\nprovider = "replay"\nid = "m-strong"\ninput_price = 5.0\noutput_price = 15.0\n')
    return pool


@pytest.mark.parametrize("learner", ["logistic", "knn"])
def test_a_router_recovers_the_routing_a_synthetic_grid_was_built_with(tmp_path: Path, learner: str) -> None:
    pool = load_pool(write_grid(tmp_path / "grid"))
    models = grid_models(pool, tmp_path / "grid")
    assert models == MODELS
    train, test = split_grid(load_grid(tmp_path / "grid", models), 0.7, 0)
    assert 180 < len(train) < 240 and len(train) + len(test) == 300
    router = train_router([i.example for i in train], models, learner)
    costs = {a: router.cost(a, pool.models[a].input_price, pool.models[a].output_price) for a in models}
    assert costs["cheap"] < costs["strong"]
    picks = [(i, choose(router.predict(i.example.text), costs, list(models), threshold=0.7).alias) for i in test]
    right_routing = sum((alias == "cheap") == ("integral" not in item.example.text) for item, alias in picks) / len(picks)
    assert right_routing >= 0.95, right_routing  # sums to the cheap model, integrals to the strong one
    assert sum(item.example.right[alias] for item, alias in picks) / len(picks) >= 0.97
    saved = tmp_path / "r.router"
    router.save(saved)
    again = load_router(saved)
    assert again.predict(test[0].example.text) == pytest.approx(router.predict(test[0].example.text), abs=0.02)


def test_calibration_sends_the_asked_share_to_the_strong_model(tmp_path: Path) -> None:
    pool = load_pool(write_grid(tmp_path / "grid"))
    models = grid_models(pool, tmp_path / "grid")
    train, test = split_grid(load_grid(tmp_path / "grid", models), 0.7, 0)
    router = train_router([i.example for i in train], models)
    costs = {a: router.cost(a, pool.models[a].input_price, pool.models[a].output_price) for a in models}
    predictions = [router.predict(i.example.text) for i in test]
    t = calibrate_strong_share(predictions, costs, list(models), "strong", 0.5)
    share = sum(choose(p, costs, list(models), threshold=t).alias == "strong" for p in predictions) / len(predictions)
    assert abs(share - 0.5) < 0.08  # the integrals are about half the items


ROUTED = """version 1
flow routed "learned"

input question

route answer by router "synthetic.router" threshold 0.7 {
  "cheap" -> fast_path
  "strong" -> slow_path
}

step fast_path {
  model: cheap
  task: "{question}"
}

step slow_path {
  model: strong
  task: "{question}"
}

output answer
"""


def baton(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"} | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_the_commands_and_a_learned_route_run_end_to_end(tmp_path: Path) -> None:
    write_grid(tmp_path / "grid")
    trained = baton("router", "train", "--grid", "grid", "--pool", "models.toml", "-o", "synthetic.router", "--held-out", "held.jsonl",
                    cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    meta = json.loads((tmp_path / "synthetic.router").read_text())["trained_on"]
    assert meta["models"] == MODELS and meta["n_train"] + meta["n_test"] == 300 and len(meta["data_hash"]) == 16
    assert meta["prices"]["strong"] == [5.0, 15.0] and meta["learner"] == "logistic"
    assert len((tmp_path / "held.jsonl").read_text().splitlines()) == meta["n_test"]
    calibrated = baton("router", "calibrate", "synthetic.router", "--strong-share", "0.5", "--pool", "models.toml", cwd=tmp_path)
    assert calibrated.returncode == 0 and "threshold" in calibrated.stdout, calibrated.stderr
    curve = baton("router", "curve", "synthetic.router", "--pool", "models.toml", "--svg", "c.svg", cwd=tmp_path)
    assert curve.returncode == 0 and "<svg" in (tmp_path / "c.svg").read_text(), curve.stderr
    report = baton("router", "report", "--grid", "grid", "--pool", "models.toml", "--learner", "logistic", cwd=tmp_path)
    assert report.returncode == 0 and "| oracle" in report.stdout and "APGR" in report.stdout and "McNemar" in report.stdout
    assert "5 seeded splits (seeds 0-4)" in report.stdout and " ± " in report.stdout  # k splits by default
    assert re.search(r"\| router over all 2, 50% to the strongest \| [\d.]+% ± [\d.]+% \| \$[\d.]+ \| 1.00 \| 1.00 \| when a model changes \(prices are read at run time\) \| \d of 5 splits \|", report.stdout), report.stdout
    one = baton("router", "report", "--grid", "grid", "--pool", "models.toml", "--learner", "logistic", "--splits", "1", cwd=tmp_path)
    assert one.returncode == 0 and "asked 50% to strong, got" in one.stdout, one.stdout  # what calibration achieved, said
    (tmp_path / "routed.flow").write_text(ROUTED)
    assert baton("validate", "routed.flow", cwd=tmp_path).returncode == 0
    pool = load_pool(tmp_path / "models.toml")
    for line in (tmp_path / "held.jsonl").read_text().splitlines()[:6]:
        item = json.loads(line)
        summary = run_flow_sync(tmp_path / "routed.flow", {"question": item["question"]}, pool=pool, home=tmp_path / "home")
        decision = summary.steps["answer"].decision
        assert decision is not None and set(decision.predictions) == {"cheap", "strong"} and decision.costs["strong"] > decision.costs["cheap"]
        expected = "slow_path" if "integral" in item["question"] else "fast_path"
        assert decision.chosen == expected and decision.matched.startswith("router: ")
    shown = baton("show", summary.run_id, "--home", "home", cwd=tmp_path)
    assert "router predicted: cheap" in shown.stdout
    compare = baton("compare", "routed.flow", *_solo_flows(tmp_path), "--dataset", "held.jsonl", "--scorer", "number",
                    "--home", "evals", cwd=tmp_path)
    assert compare.returncode == 0, compare.stderr
    assert "reference: best flow" in compare.stdout and "reference: oracle" in compare.stdout and "reference: random" in compare.stdout
    bad = baton("router", "train", "--grid", "nope", "--pool", "models.toml", "-o", "x.router", cwd=tmp_path)
    assert bad.returncode == 2 and "missing" in bad.stderr and "Traceback" not in bad.stderr


def _solo_flows(folder: Path) -> list[str]:
    for alias in ("cheap", "strong"):
        (folder / f"solo_{alias}.flow").write_text(f'version 1\nflow solo_{alias} "one model"\n\ninput question\n\n'
                                                   f'step answer {{\n  model: {alias}\n  task: "{{question}}"\n}}\n')
    return ["solo_cheap.flow", "solo_strong.flow"]


def test_a_stale_router_is_a_validate_error_at_the_arm(tmp_path: Path) -> None:
    pool = load_pool(write_grid(tmp_path / "grid"))
    models = grid_models(pool, tmp_path / "grid", ["cheap"])
    train_router([i.example for i in load_grid(tmp_path / "grid", models)], models).save(tmp_path / "synthetic.router")
    (tmp_path / "routed.flow").write_text(ROUTED)
    result = check_source(ROUTED, pool, str(tmp_path / "routed.flow"))
    (error,) = [d for d in result.diagnostics if d.severity == "error"]
    assert error.code == "E313" and error.span.line == ROUTED.split("\n").index('  "strong" -> slow_path') + 1 and error.span.column == 3
    assert "trained on cheap, not on `strong`" in error.message


def test_the_reference_routed_flow_checks_and_its_router_records_its_training() -> None:
    pool = load_pool(WORKFLOWS / "eval" / "models.toml")
    result = check_source((WORKFLOWS / "eval" / "routed.flow").read_text(), pool, str(WORKFLOWS / "eval" / "routed.flow"))
    assert result.flow is not None, result.diagnostics
    route = result.flow.nodes["answer"]
    router = load_router(route.router)  # type: ignore[union-attr, arg-type]
    assert route.threshold == router.calibration["threshold"]  # type: ignore[union-attr]
    assert router.trained_on["n_train"] == 937 and set(router.models) == {"flash", "gpt4o"}


def test_a_router_on_embeddings_from_an_openai_compatible_endpoint(tmp_path: Path) -> None:
    from engine.testing.chat_server import ChatServer

    pool_file = write_grid(tmp_path / "grid")
    with ChatServer() as endpoint:
        # the embeddings come from a pool alias: the pool, not the router file, says where and with which key
        pool_file.write_text(pool_file.read_text() + f'\n[providers.emb]\nkind = "openai"\nbase_url = "{endpoint.url}"\n\n'
                             '[models.embedder]\nprovider = "emb"\nid = "bag-of-words"\n')
        trained = baton("router", "train", "--grid", "grid", "--pool", "models.toml", "-o", "synthetic.router", "--held-out", "held.jsonl",
                        "--embeddings", "embedder", "--models", "cheap,strong", "--learner", "knn", cwd=tmp_path)
        assert trained.returncode == 0, trained.stderr
        assert endpoint.embedded >= 200  # every training question went through the endpoint
        router = load_router(tmp_path / "synthetic.router")
        assert router.features == {"kind": "embeddings", "alias": "embedder"}
        assert not router.idf  # no hashed features at all
        (tmp_path / "routed.flow").write_text(ROUTED)
        pool = load_pool(tmp_path / "models.toml")
        before = endpoint.embedded
        held = [json.loads(line) for line in (tmp_path / "held.jsonl").read_text().splitlines()]
        routed_right = 0
        for item in held[:10]:
            summary = run_flow_sync(tmp_path / "routed.flow", {"question": item["question"]}, pool=pool, home=tmp_path / "home")
            decision = summary.steps["answer"].decision
            assert decision is not None
            routed_right += decision.chosen == ("slow_path" if "integral" in item["question"] else "fast_path")
        assert endpoint.embedded == before + 10 and routed_right >= 9  # one embedding per run, the routing recovered
    from engine.errors import RouteError

    with pytest.raises(RouteError, match="embeddings endpoint"):  # the endpoint is gone now: the run fails at the route, clearly
        run_flow_sync(tmp_path / "routed.flow", {"question": held[0]["question"]}, pool=pool, home=tmp_path / "home")


def test_the_choice_rules() -> None:
    predicted, costs = {"a": 0.80, "b": 0.93, "c": 0.97}, {"a": 0.001, "b": 0.01, "c": 0.1}
    assert choose(predicted, costs, ["a", "b", "c"], threshold=0.9).alias == "b"  # the cheapest that reaches 0.9
    assert choose(predicted, costs, ["a", "b", "c"], threshold=0.99).alias == "c"  # none reaches it: the best predicted
    assert choose(predicted, costs, ["a", "b", "c"], tradeoff=0.0).alias == "c"  # quality only
    assert choose(predicted, costs, ["a", "b", "c"], tradeoff=1.0).alias == "b"  # 0.93 - 0.1 beats 0.97 - 1.0 and 0.80 - 0.01
    assert "cheapest with predicted accuracy >= 0.9" in choose(predicted, costs, ["a", "b"], threshold=0.9).why


def test_vote_and_cascade_rows_compare_letter_answers(tmp_path: Path) -> None:
    """A multiple-choice grid (MMLU-Pro's answers are letters): the report's vote row said 0.0% and its cascade row
    "100% escalated", because both compared answers as numbers. All three models answer `B` (the gold), except the
    cheap one, which answers `(C)` on every other item."""
    folder = tmp_path / "grid"
    names = {"cheap": "m-cheap", "mid": "m-mid", "strong": "m-strong"}
    rows: dict[str, list[dict[str, object]]] = {"correct.csv": [], "answers.csv": [], "output_tokens_o200k.csv": []}
    items = []
    for i in range(80):
        cheap = "(C)" if i % 2 else "B"
        items.append({"id": f"q{i}", "question": f"Which letter is right in question {i}? {'integral' if i % 2 else 'sum'}",
                      "gold": "B", "prompt_tokens_o200k": 40})
        rows["answers.csv"].append({"id": f"q{i}", "m-cheap": cheap, "m-mid": "b.", "m-strong": "B"})
        rows["correct.csv"].append({"id": f"q{i}", "m-cheap": int(cheap == "B"), "m-mid": 1, "m-strong": 1})
        rows["output_tokens_o200k.csv"].append({"id": f"q{i}", "m-cheap": 5, "m-mid": 20, "m-strong": 50})
    write_grid_files(folder, items, rows, list(names.values()))
    (tmp_path / "models.toml").write_text(f'[providers.replay]\nkind = "replay"\noptions = {{ dataset = "{folder.name}" }}\n'
                                          + "".join(f'[models.{a}]\nprovider = "replay"\nid = "{m}"\ninput_price = {p}\noutput_price = {p}\n'
                                                    for (a, m), p in zip(names.items(), (0.1, 1.0, 5.0), strict=True)))
    report = baton("router", "report", "--grid", "grid", "--pool", "models.toml", "--vote", "cheap,mid,strong",
                   "--cascade", "cheap,mid,strong", "--splits", "1", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    vote = next(line for line in report.stdout.splitlines() if line.startswith("| majority vote"))
    cascade = next(line for line in report.stdout.splitlines() if line.startswith("| cascade"))
    assert "| 100.0%" in vote, vote
    escalated = int(re.search(r"(\d+)% escalated", cascade).group(1))  # type: ignore[union-attr]
    assert 30 <= escalated <= 70 and "| 100.0%" in cascade, cascade  # escalated where cheap said (C), about half the held-out items
    assert re.search(r"\| 2\.[1-9]\d \|", cascade), cascade  # calls per item: the pair, and the strong model when escalated
    assert "| 3.00 |" in vote  # three voters, three calls


def test_the_fast_strong_share_curve_is_the_one_deciding_at_every_threshold() -> None:
    """Calibration decides each prediction once per interval between its candidates' predicted accuracies, not at
    each of the 1,001 thresholds (which was 90% of `baton router report`'s time): the shares must be the same,
    boundary values (0.5, 0.9, 1.0, three decimals) included."""
    from engine.router.policy import STEPS, choose, strong_share_curve

    rng = random.Random(3)
    for _ in range(25):
        candidates = ["a", "b", "c"][: rng.randint(2, 3)]
        costs = {a: rng.random() for a in candidates}
        predictions = [{a: rng.choice([rng.random(), round(rng.random(), 3), 0.5, 0.9, 1.0, 0.0]) for a in candidates} for _ in range(40)]
        strong = max(candidates, key=lambda a: costs[a])
        every = [sum(choose(p, costs, candidates, threshold=s / STEPS).alias == strong for p in predictions) / len(predictions)
                 for s in range(STEPS + 1)]
        assert strong_share_curve(predictions, costs, candidates, strong) == every


def test_random_routing_mixes_over_every_model_at_equal_cost() -> None:
    """The baseline a strategy must beat is the best random mix of any models at its cost: with a model above the
    line from the cheapest to the best, mixing only those two (as the report did) understated random routing."""
    from engine.training.report import Row, random_at_cost

    cheap, middle, best = Row("cheap", [1] * 50 + [0] * 50, 1.0), Row("middle", [1] * 85 + [0] * 15, 2.0), Row("best", [1] * 90 + [0] * 10, 5.0)
    accuracy, mix = random_at_cost([cheap, middle, best], 2.0)
    assert accuracy == pytest.approx(0.85) and mix == "middle"  # the cheapest/best line gives 0.5 + 0.4 / 4 = 0.6 here
    accuracy, mix = random_at_cost([cheap, middle, best], 3.5)
    assert accuracy == pytest.approx(0.875) and mix == "50% middle, 50% best"
    assert random_at_cost([cheap, middle, best], 0.5) == (0.5, "cheap")  # below every model's cost: the cheapest
    assert random_at_cost([cheap, middle, best], 9.0)[0] == pytest.approx(0.9)


def test_a_grid_in_mmlu_pros_layout_is_read(tmp_path: Path) -> None:
    """MMLU-Pro's grid names its ids `question_id`, its answers `preds.csv` and its key `answer`, lists the options
    apart from the question, records no prompt sizes and marks items a run saw in another version."""
    folder = tmp_path / "mmlu"
    folder.mkdir()
    items = [{"question_id": 70, "question": "Which is prime?", "options": ["4", "6", "7"], "answer": "C", "version_conflict": False},
             {"question_id": 71, "question": "Which is even?", "options": ["3", "8"], "answer": "B", "version_conflict": True}]
    (folder / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (folder / "preds.csv").write_text("question_id,m-a,m-b\n70,C,A\n71,B,B\n")
    (folder / "correct.csv").write_text("question_id,m-a,m-b\n70,1,0\n71,1,1\n")
    (folder / "output_tokens_o200k.csv").write_text("question_id,m-a,m-b\n70,12,30\n71,5,6\n")
    (item,) = load_grid(folder, {"a": "m-a", "b": "m-b"})  # 71 is left out: a version conflict
    assert item.id == "70" and item.gold == "C" and item.answers == {"a": "C", "b": "A"}
    assert item.example.text == "Which is prime?\nA. 4\nB. 6\nC. 7" and item.example.right == {"a": 1, "b": 0}
    assert item.example.prompt_tokens == len(item.example.text) // 4 and item.example.output_tokens == {"a": 12, "b": 30}


def test_a_weighted_vote_counts_a_reliable_voter_for_more_than_two_weak_ones() -> None:
    """Voters weighted by the log-odds of their accuracy on the training items: two weak voters that agree on a wrong
    answer are outvoted by one reliable voter, where a plain majority follows them."""
    from engine.pool import ModelSpec, Pool
    from engine.router.model import Example
    from engine.training.grid import GridItem
    from engine.training.report import _vote_row, voter_weights

    def item(i: int, answers: dict[str, str], gold: str = "7") -> GridItem:
        right = {a: int(v == gold) for a, v in answers.items()}
        return GridItem(f"q{i}", Example("q", right, 10, {a: 1 for a in answers}), gold, answers)

    train = [item(i, {"weak1": "7" if i % 2 else "1", "weak2": "7" if i % 3 else "2", "strong": "7" if i % 20 else "3"}) for i in range(100)]
    weights = voter_weights(train, ["weak1", "weak2", "strong"])
    assert weights["strong"] > weights["weak1"] + weights["weak2"]
    test = [item(0, {"weak1": "5", "weak2": "5", "strong": "7"})]
    pool = Pool(models={a: ModelSpec(provider="p", id=a) for a in ("weak1", "weak2", "strong")})
    assert _vote_row(test, pool, ["weak1", "weak2", "strong"]).right == [0]  # the majority follows the weak pair
    assert _vote_row(test, pool, ["weak1", "weak2", "strong"], weights).right == [1]


def test_the_curve_thresholds_come_from_the_data(tmp_path: Path) -> None:
    """`baton router curve` sweeps the thresholds that send 0%..100% to the strongest model, not a fixed 0.80..1.00
    (on a hard grid every prediction sat below 0.8, and the whole fixed range sent everything to one model)."""
    from engine.training.report import curve_thresholds, router_curve

    pool = load_pool(write_grid(tmp_path / "grid"))
    items = load_grid(tmp_path / "grid", MODELS)
    train, test = split_grid(items, 0.7, 0)
    router = train_router([i.example for i in train], MODELS, "logistic")
    thresholds = curve_thresholds(router, test, pool, list(MODELS))
    shares = [s["strong"] for *_rest, s in router_curve(router, test, pool, list(MODELS), thresholds)]
    assert len(thresholds) >= 3 and min(shares) <= 0.05 and max(shares) >= 0.95
    assert shares == sorted(shares)  # a higher threshold never sends fewer items to the strongest
