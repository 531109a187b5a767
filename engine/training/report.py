"""Is the team worth it? Every strategy scored on the same held-out items of a recorded grid.

Rows, all on the test part only (the router never saw those items):

- each single model, the best and the cheapest marked;
- random routing between the cheapest and the best model at the router's cost (expected);
- the learned router at a few thresholds, and at the threshold that sends 50% to the strong
  model (for APGR);
- majority vote of three cheap models (self-consistency across models);
- the cascade: two cheap models, the strong one when they disagree (FrugalGPT);
- the oracle: the cheapest model that got the item right (an upper bound, not a strategy).

Accuracy has a 95% Wilson interval; cost is the recorded tokens at the pool's prices; the
router is compared with the best single model by an exact McNemar test on the same items.
PGR at 50% strong share is RouteLLM's "performance gap recovered": (router - weak) /
(strong - weak); APGR averages it over strong shares 0%, 10%, ..., 100%.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.eval.stats import mcnemar, wilson
from engine.pool import Pool
from engine.router.model import Router
from engine.router.policy import calibrate_strong_share, choose, strongest
from engine.run.answers import answer_key, answers_equal
from engine.training.grid import GridItem


@dataclass
class Row:
    name: str
    right: list[int]
    cost: float  # mean USD per item
    note: str = ""
    strong_share: float | None = None

    @property
    def accuracy(self) -> float:
        return sum(self.right) / len(self.right) if self.right else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(sum(self.right), len(self.right))


@dataclass
class Report:
    rows: list[Row]
    n_train: int
    n_test: int
    weak: str
    strong: str
    pgr_at_half: float
    apgr: float
    mcnemar_p: float
    mcnemar_counts: tuple[int, int]
    best_single: str
    notes: list[str] = field(default_factory=list)


def item_cost(item: GridItem, alias: str, pool: Pool) -> float:
    spec = pool.models[alias]
    return (item.example.prompt_tokens * (spec.input_price or 0.0) + item.example.output_tokens.get(alias, 0) * (spec.output_price or 0.0)) / 1e6


def _routed(router: Router, test: Sequence[GridItem], predictions: Sequence[Mapping[str, float]], pool: Pool,
            candidates: Sequence[str], threshold: float) -> tuple[list[int], float, float]:
    costs = router.arm_costs(candidates, pool)
    strong = strongest({a: router.models[a].accuracy for a in candidates}, candidates)
    right, spent, sent = [], 0.0, 0
    for item, predicted in zip(test, predictions, strict=True):
        alias = choose(predicted, costs, candidates, threshold=threshold).alias
        right.append(item.example.right[alias])
        spent += item_cost(item, alias, pool)
        sent += alias == strong
    return right, spent / len(test), sent / len(test)


def build_router_report(router: Router, train: Sequence[GridItem], test: Sequence[GridItem], pool: Pool, *,
                 thresholds: Sequence[float] = (0.9, 0.95), vote: Sequence[str] = (), cascade: tuple[str, str, str] | None = None) -> Report:
    aliases = list(router.models)
    singles = [Row(a, [i.example.right[a] for i in test], sum(item_cost(i, a, pool) for i in test) / len(test)) for a in aliases]
    best = max(singles, key=lambda r: (r.accuracy, -r.cost))
    cheapest = min(singles, key=lambda r: (r.cost, -r.accuracy))
    best.note, cheapest.note = "best single", "cheapest" if cheapest is not best else best.note
    weak, strong = cheapest.name, best.name
    rows: list[Row] = sorted(singles, key=lambda r: r.cost)
    pair = [weak, strong]
    predictions = [router.predict(i.example.text) for i in test]
    pair_costs = router.arm_costs(pair, pool)
    half = calibrate_strong_share(predictions, pair_costs, pair, strong, 0.5)
    router_rows = []
    for t in thresholds:
        right, cost, share = _routed(router, test, predictions, pool, aliases, t)
        router_rows.append(Row(f"router over all {len(aliases)}, threshold {t:g}", right, cost, strong_share=share))
    right, cost, share = _routed(router, test, predictions, pool, pair, half)
    half_row = Row(f"router {weak}/{strong}, 50% strong (threshold {half:.3f})", right, cost, strong_share=share)
    router_rows.append(half_row)
    rows += router_rows
    for r in router_rows:  # random routing between weak and strong at the same mean cost: its expected accuracy
        p = min(1.0, max(0.0, (r.cost - cheapest.cost) / (best.cost - cheapest.cost))) if best.cost > cheapest.cost else 0.0
        expected = round(sum((1 - p) * i.example.right[weak] + p * i.example.right[strong] for i in test))
        rows.append(Row(f"random {weak}/{strong} at the cost of: {r.name}", [1] * expected + [0] * (len(test) - expected),
                        cheapest.cost + p * (best.cost - cheapest.cost), note=f"{p:.0%} to {strong} (expected)"))
    if vote:
        rows.append(_vote_row(test, pool, list(vote)))
    if cascade:
        rows.append(_cascade_row(test, pool, cascade))
    oracle_right, oracle_cost = [], 0.0
    for item in test:
        ok = [a for a in aliases if item.example.right[a]]
        pick = min(ok, key=lambda a: item_cost(item, a, pool)) if ok else cheapest.name
        oracle_right.append(1 if ok else 0)
        oracle_cost += item_cost(item, pick, pool)
    rows.append(Row("oracle (cheapest right model; an upper bound)", oracle_right, oracle_cost / len(test)))
    gap = best.accuracy - cheapest.accuracy
    pgr = (half_row.accuracy - cheapest.accuracy) / gap if gap > 0 else 0.0
    shares = []
    for s in range(11):
        t = calibrate_strong_share(predictions, pair_costs, pair, strong, s / 10)
        acc = sum(_routed(router, test, predictions, pool, pair, t)[0]) / len(test)
        shares.append((acc - cheapest.accuracy) / gap if gap > 0 else 0.0)
    b = sum(1 for x, y in zip(half_row.right, best.right, strict=True) if x and not y)
    c = sum(1 for x, y in zip(half_row.right, best.right, strict=True) if y and not x)
    return Report(rows, len(train), len(test), weak, strong, pgr, sum(shares) / len(shares), mcnemar(b, c), (b, c), best.name)


def _vote_row(test: Sequence[GridItem], pool: Pool, panel: list[str]) -> Row:
    right, cost = [], 0.0
    for item in test:
        tally = Counter(key for a in panel if (key := answer_key(item.answers[a])))  # numbers by value, letters by letter
        winner = tally.most_common(1)[0][0] if tally else ""
        right.append(1 if winner and winner == answer_key(item.gold) else 0)
        cost += sum(item_cost(item, a, pool) for a in panel)
    return Row(f"majority vote: {', '.join(panel)}", right, cost / len(test))


def _cascade_row(test: Sequence[GridItem], pool: Pool, cascade: tuple[str, str, str]) -> Row:
    first, second, strong = cascade
    right, cost, escalated = [], 0.0, 0
    for item in test:
        cost += item_cost(item, first, pool) + item_cost(item, second, pool)
        if answers_equal(item.answers[first], item.answers[second]):
            right.append(item.example.right[first])
        else:
            escalated += 1
            cost += item_cost(item, strong, pool)
            right.append(item.example.right[strong])
    return Row(f"cascade: {first} + {second}, else {strong}", right, cost / len(test), note=f"{escalated / len(test):.0%} escalated")


def render_router_report(report: Report, title: str) -> str:
    out = [f"{title}: {report.n_train} items to train, {report.n_test} held out (scores below are on those only)", "",
           "| strategy | accuracy (95% CI) | mean cost per item | note |", "|---|---|---|---|"]
    for r in report.rows:
        lo, hi = r.interval
        share = f"{r.strong_share:.0%} to the strongest" if r.strong_share is not None else ""
        note = "; ".join(x for x in (r.note, share) if x)
        out.append(f"| {r.name} | {r.accuracy:.1%} ({lo:.1%}-{hi:.1%}) | ${r.cost:.6f} | {note} |")
    b, c = report.mcnemar_counts
    out += ["", f"weak {report.weak}, strong {report.strong}: PGR at 50% strong share {report.pgr_at_half:.2f}; "
                f"APGR over strong shares 0-100% {report.apgr:.2f}",
            f"router (50% strong) vs the best single model ({report.best_single}), exact McNemar on the same items: "
            f"{b} only the router got right, {c} only {report.best_single}; p = {report.mcnemar_p:.3f}"]
    return "\n".join(out)


def router_curve(router: Router, items: Sequence[GridItem], pool: Pool, candidates: Sequence[str],
                     steps: Sequence[float]) -> list[tuple[float, float, float, Mapping[str, float]]]:
    """(threshold, accuracy, mean cost, share sent to each alias) as the threshold moves."""
    costs = router.arm_costs(candidates, pool)
    out: list[tuple[float, float, float, Mapping[str, float]]] = []
    predictions = [router.predict(i.example.text) for i in items]
    for t in steps:
        picks = [choose(p, costs, candidates, threshold=t).alias for p in predictions]
        acc = sum(i.example.right[a] for i, a in zip(items, picks, strict=True)) / len(items)
        cost = sum(item_cost(i, a, pool) for i, a in zip(items, picks, strict=True)) / len(items)
        shares = {a: picks.count(a) / len(picks) for a in candidates}
        out.append((t, acc, cost, shares))
    return out
