"""Is the team worth it? Every strategy scored on the same held-out items of a recorded grid.

Rows, all on the test part only (the router never saw those items):

- each single model, the best and the cheapest marked;
- the learned router at the thresholds that send 25%, 50% and 75% of the items to the
  strongest model (what it was asked, and what it got), or at given thresholds, and the
  cheapest/best pair at 50% (for PGR and APGR);
- majority vote of three cheap models (self-consistency across models), and the same vote
  with each voter weighted by the log-odds of its accuracy on the training items;
- the cascade: two cheap models, the strong one when they disagree (FrugalGPT);
- the learned vote and the learned cascade: an answer scorer (`engine.router.scorer`) trained on
  the training items picks among the panel's answers, and escalates below its threshold (set
  on out-of-fold scores of the training items, at the knee and to match the strong model);
- the oracle: the cheapest model that got the item right (an upper bound, not a strategy).

Each strategy is set beside random routing over every model at its mean cost (the best
expected accuracy a random mix of models reaches for that money). One split flatters or
slights by chance, so `k_split_report` repeats it over seeded splits and reports each
strategy's mean and standard deviation, and in how many splits it beat random.

Accuracy has a 95% Wilson interval; cost is the recorded tokens at the pool's prices; the
router is compared with the best single model by an exact McNemar test on the same items.
PGR at 50% strong share is RouteLLM's "performance gap recovered": (router - weak) /
(strong - weak); APGR averages it over strong shares 0%, 10%, ..., 100%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.eval.stats import mcnemar, wilson
from engine.pool import Pool
from engine.router.model import Router
from engine.router.policy import calibrate_strong_share, choose, strongest
from engine.run.answers import answer_key, answers_equal
from engine.training.grid import GridItem, item_cost
from engine.training.scoring import Target, fit, play


@dataclass
class Row:
    name: str
    right: list[int]
    cost: float  # mean USD per item
    note: str = ""
    strong_share: float | None = None
    #: What the row is across splits (its name carries numbers that change with the split, like a threshold).
    key: str = ""
    #: The expected accuracy of random routing over every model at this row's mean cost (None for a single model and
    #: the oracle), and the mix that reaches it.
    random: float | None = None
    random_mix: str = ""
    #: Model calls per item: a control cost beside the money (latency and rate limits grow with it); None for the oracle.
    calls: float | None = 1.0
    #: Calls one after another per item (a panel answers at once; an escalation waits for it): what latency grows with.
    rounds: float | None = 1.0
    #: What must be learned again, and when, for the row to hold.
    retrain: str = "nothing"

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


def random_at_cost(singles: Sequence[Row], cost: float) -> tuple[float, str]:
    """The best expected accuracy of random routing over every model at a mean cost of at most `cost`, and its mix.

    Sending a share of the items to one model and the rest to another costs the shares' mix of their costs; the best
    such mix at a cost is the upper envelope of the models' (cost, accuracy) points there. Mixing only the cheapest
    and the best model, as the report did, is a weaker baseline whenever a model between them lies above that line."""
    best, mix = -1.0, ""
    for a in singles:
        if a.cost <= cost + 1e-15 and a.accuracy > best:
            best, mix = a.accuracy, a.name
        for b in singles:
            if a.cost < cost < b.cost:
                share = (cost - a.cost) / (b.cost - a.cost)
                value = (1 - share) * a.accuracy + share * b.accuracy
                if value > best + 1e-12:
                    best, mix = value, f"{1 - share:.0%} {a.name}, {share:.0%} {b.name}"
    if best < 0:  # cheaper than every model: the cheapest is the least it can spend
        cheapest = min(singles, key=lambda r: r.cost)
        return cheapest.accuracy, cheapest.name
    return best, mix


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


#: A router predicts each model's accuracy from recorded outcomes, and reads prices from the pool at run time.
RETRAIN_ROUTER = "when a model changes (prices are read at run time)"

#: Without `--thresholds`, the router is run at the thresholds that send these shares of the held-out items to the
#: strongest model, found from its predictions: fixed thresholds (0.9, 0.95) suited GSM8K's accuracies and sent
#: nothing anywhere on harder grids.
SHARES = (0.25, 0.5, 0.75)


def build_router_report(router: Router, train: Sequence[GridItem], test: Sequence[GridItem], pool: Pool, *,
                        thresholds: Sequence[float] | None = None, vote: Sequence[str] = (),
                        cascade: tuple[str, str, str] | None = None) -> Report:
    aliases = list(router.models)
    singles = [Row(a, [i.example.right[a] for i in test], sum(item_cost(i, a, pool) for i in test) / len(test), key=a) for a in aliases]
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
    if thresholds is not None:
        for t in thresholds:
            right, cost, share = _routed(router, test, predictions, pool, aliases, t)
            router_rows.append(Row(f"router over all {len(aliases)}, threshold {t:g}", right, cost, strong_share=share, retrain=RETRAIN_ROUTER,
                                   key=f"router over all {len(aliases)}, threshold {t:g}"))
    else:
        top = strongest({a: router.models[a].accuracy for a in aliases}, aliases)
        for asked in SHARES:
            t = calibrate_strong_share(predictions, router.arm_costs(aliases, pool), aliases, top, asked)
            right, cost, share = _routed(router, test, predictions, pool, aliases, t)
            router_rows.append(Row(f"router over all {len(aliases)}, {asked:.0%} to {top} (threshold {t:.3f})", right, cost, retrain=RETRAIN_ROUTER,
                                   note=f"asked {asked:.0%} to {top}, got {share:.0%}", key=f"router over all {len(aliases)}, {asked:.0%} to the strongest"))
    right, cost, share = _routed(router, test, predictions, pool, pair, half)
    half_row = Row(f"router {weak}/{strong}, 50% strong (threshold {half:.3f})", right, cost, strong_share=share, retrain=RETRAIN_ROUTER,
                   key="router cheapest/best single model, 50% strong")
    router_rows.append(half_row)
    rows += router_rows
    if vote:
        rows.append(_vote_row(test, pool, list(vote)))
        rows.append(_vote_row(test, pool, list(vote), voter_weights(train, list(vote))))
    if cascade:
        rows.append(_cascade_row(test, pool, cascade))
    models = {a: s.model_id for a, s in router.models.items()}
    rows += _scorer_rows(train, test, pool, models, list(vote), cascade)
    for r in rows[len(singles):]:  # every strategy against random routing over every model at its cost
        r.random, r.random_mix = random_at_cost(singles, r.cost)
    oracle_right, oracle_cost = [], 0.0
    for item in test:
        ok = [a for a in aliases if item.example.right[a]]
        pick = min(ok, key=lambda a: item_cost(item, a, pool)) if ok else cheapest.name
        oracle_right.append(1 if ok else 0)
        oracle_cost += item_cost(item, pick, pool)
    rows.append(Row("oracle (cheapest right model; an upper bound)", oracle_right, oracle_cost / len(test), key="oracle", calls=None, rounds=None, retrain=""))
    gap = best.accuracy - cheapest.accuracy
    pgr = (half_row.accuracy - cheapest.accuracy) / gap if gap > 0 else 0.0
    shares = []
    for step in range(11):
        t = calibrate_strong_share(predictions, pair_costs, pair, strong, step / 10)
        acc = sum(_routed(router, test, predictions, pool, pair, t)[0]) / len(test)
        shares.append((acc - cheapest.accuracy) / gap if gap > 0 else 0.0)
    b = sum(1 for x, y in zip(half_row.right, best.right, strict=True) if x and not y)
    c = sum(1 for x, y in zip(half_row.right, best.right, strict=True) if y and not x)
    return Report(rows, len(train), len(test), weak, strong, pgr, sum(shares) / len(shares), mcnemar(b, c), (b, c), best.name)


def voter_weights(train: Sequence[GridItem], panel: Sequence[str]) -> dict[str, float]:
    """Each voter's weight learned from the training items: log(p (K - 1) / (1 - p)), where p is its accuracy there
    (with one right and one wrong answer added, so no weight is infinite) and K the number of different answers an
    item may have (estimated as the different correct answers among the training items: 10 letters on MMLU-Pro,
    hundreds of numbers on GSM8K). Summing them is the optimal vote of independent voters of known accuracy
    (Nitzan and Paroush): a voter counts for less the weaker it is, and against only below chance (1 / K). Without
    the K term a 44%-accurate voter on ten options counted against its answer, and the vote lost 1.5 points."""
    k = max(2, len({answer_key(i.gold) for i in train}))
    out = {}
    for a in panel:
        right = sum(i.example.right[a] for i in train)
        p = (right + 1) / (len(train) + 2)
        out[a] = math.log(p * (k - 1) / (1 - p))
    return out


def _vote_row(test: Sequence[GridItem], pool: Pool, panel: list[str], weights: Mapping[str, float] | None = None) -> Row:
    right, cost = [], 0.0
    for item in test:
        tally: dict[str, float] = {}
        for a in panel:  # numbers by value, letters by letter; ties go to the first-listed voter's answer (`tie: first`)
            key = answer_key(item.answers[a])
            if key:
                tally[key] = tally.get(key, 0.0) + (weights[a] if weights is not None else 1.0)
        winner = max(tally, key=lambda k: tally[k]) if tally else ""
        right.append(1 if winner and winner == answer_key(item.gold) else 0)
        cost += sum(item_cost(item, a, pool) for a in panel)
    name = f"{'weighted' if weights is not None else 'majority'} vote: {', '.join(panel)}"
    note = "weights from the training items: " + ", ".join(f"{a} {w:.2f}" for a, w in weights.items()) if weights is not None else ""
    return Row(name, right, cost / len(test), note=note, key=name, calls=float(len(panel)),
               retrain="when a panel model changes" if weights is not None else "nothing")


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
    name = f"cascade: {first} + {second}, else {strong}"
    return Row(name, right, cost / len(test), note=f"{escalated / len(test):.0%} escalated", key=name, calls=2 + escalated / len(test),
               rounds=1 + escalated / len(test))


def _scorer_rows(train: Sequence[GridItem], test: Sequence[GridItem], pool: Pool, models: dict[str, str], vote: list[str],
                 cascade: tuple[str, str, str] | None) -> list[Row]:
    """The learned vote (an answer scorer picks among the vote panel's answers) and the learned cascade (the cascade's
    pair answers; below the scorer's threshold, its strong model does), thresholds set on the training items only."""
    rows = []
    if vote:
        played = play(fit(train, vote, models, None), test, pool, escalate=False)
        name = f"learned vote (answer scorer): {', '.join(vote)}"
        rows.append(Row(name, played.right, played.cost, key=name, calls=float(len(vote)), retrain="when a panel model changes"))
    if cascade:
        first, second, strong = cascade
        for target, how in ((Target(), "knee"), (Target(match_escalate=True), f"to match {strong} on the training items")):
            scorer = fit(train, [first, second], models, strong, target)
            played = play(scorer, test, pool)
            name = f"learned cascade: {first} + {second} scored, else {strong} ({how})"
            rows.append(Row(f"{name}, threshold {scorer.threshold:.3f}", played.right, played.cost, note=f"{played.escalated:.0%} escalated",
                            key=name, calls=2 + played.escalated, rounds=1 + played.escalated,
                            retrain="when a panel model or the escalate model changes"))
    return rows


@dataclass
class Summary:
    """One strategy over k splits."""

    key: str
    accuracy: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    retrain: str = ""
    beat_random: int = 0
    against_random: int = 0


@dataclass
class KSplitReport:
    reports: list[Report]
    seeds: list[int]

    def summaries(self) -> list[Summary]:
        out: dict[str, Summary] = {}
        for report in self.reports:
            for row in report.rows:
                summary = out.setdefault(row.key or row.name, Summary(row.key or row.name))
                summary.accuracy.append(row.accuracy)
                summary.cost.append(row.cost)
                if row.calls is not None:
                    summary.calls.append(row.calls)
                if row.rounds is not None:
                    summary.rounds.append(row.rounds)
                summary.retrain = row.retrain
                if row.random is not None:
                    summary.against_random += 1
                    summary.beat_random += row.accuracy > row.random + 1e-12
        return list(out.values())


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, sd


def render_k_split_report(k: KSplitReport, title: str) -> str:
    first = k.reports[0]
    out = [f"{title}: {len(k.seeds)} seeded splits (seeds {k.seeds[0]}-{k.seeds[-1]}), each {first.n_train} items to train and "
           f"{first.n_test} held out; mean ± sd over the splits, on held-out items only", "",
           "| strategy | accuracy | mean cost per item | calls per item | calls in sequence | retrain | beat random over every model at its cost |",
           "|---|---|---|---|---|---|---|"]
    for s in k.summaries():
        (acc, sd), (cost, _) = _mean_sd(s.accuracy), _mean_sd(s.cost)
        beat = f"{s.beat_random} of {s.against_random} splits" if s.against_random else ""
        missing = f" (in {len(s.accuracy)} of {len(k.seeds)} splits)" if len(s.accuracy) != len(k.seeds) else ""
        calls = f"{_mean_sd(s.calls)[0]:.2f}" if s.calls else ""
        rounds = f"{_mean_sd(s.rounds)[0]:.2f}" if s.rounds else ""
        out.append(f"| {s.key}{missing} | {acc:.1%} ± {sd:.1%} | ${cost:.6f} | {calls} | {rounds} | {s.retrain} | {beat} |")
    pgr, apgr = _mean_sd([r.pgr_at_half for r in k.reports]), _mean_sd([r.apgr for r in k.reports])
    weak = {r.weak for r in k.reports}
    strong = {r.strong for r in k.reports}
    significant = sum(r.mcnemar_p < 0.05 for r in k.reports)
    out += ["", f"weak {'/'.join(sorted(weak))}, strong {'/'.join(sorted(strong))}: PGR at 50% strong share {pgr[0]:.2f} ± {pgr[1]:.2f}; "
                f"APGR {apgr[0]:.2f} ± {apgr[1]:.2f} (random routing between the two is 0.50)",
            f"router (50% strong) vs the best single model: McNemar p < 0.05 in {significant} of {len(k.reports)} splits "
            "(p >= 0.05 says the test could not tell them apart on this many items, not that they are equal)"]
    return "\n".join(out)


def render_router_report(report: Report, title: str) -> str:
    out = [f"{title}: {report.n_train} items to train, {report.n_test} held out (scores below are on those only)", "",
           "| strategy | accuracy (95% CI) | mean cost per item | calls per item | calls in sequence | retrain | random over every model at that cost | note |",
           "|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        lo, hi = r.interval
        share = f"{r.strong_share:.0%} to the strongest" if r.strong_share is not None and "asked" not in r.note else ""
        note = "; ".join(x for x in (r.note, share) if x)
        random = f"{r.random:.1%} ({r.random_mix}): {(r.accuracy - r.random) * 100:+.1f} pts" if r.random is not None else ""
        calls = f"{r.calls:.2f}" if r.calls is not None else ""
        rounds = f"{r.rounds:.2f}" if r.rounds is not None else ""
        out.append(f"| {r.name} | {r.accuracy:.1%} ({lo:.1%}-{hi:.1%}) | ${r.cost:.6f} | {calls} | {rounds} | {r.retrain} | {random} | {note} |")
    b, c = report.mcnemar_counts
    out += ["", f"weak {report.weak}, strong {report.strong}: PGR at 50% strong share {report.pgr_at_half:.2f}; "
                f"APGR over strong shares 0-100% {report.apgr:.2f}",
            f"router (50% strong) vs the best single model ({report.best_single}), exact McNemar on the same items: "
            f"{b} only the router got right, {c} only {report.best_single}; p = {report.mcnemar_p:.3f}"]
    return "\n".join(out)


def curve_thresholds(router: Router, items: Sequence[GridItem], pool: Pool, candidates: Sequence[str], points: int = 21) -> list[float]:
    """Thresholds read off the data: those sending 0%, 5%, ..., 100% of the items to the strongest candidate.

    A fixed range (0.80 to 1.00) suited GSM8K, where every model is right nine times in ten; on MATH level 5 the
    predictions sit near 0.3-0.6 and every threshold in that range sent everything to one model."""
    predictions = [router.predict(i.example.text) for i in items]
    costs = router.arm_costs(candidates, pool)
    top = strongest({a: router.models[a].accuracy for a in candidates}, candidates)
    shares = [k / (points - 1) for k in range(points)]
    return sorted({calibrate_strong_share(predictions, costs, candidates, top, s) for s in shares})


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
