"""Answer scorers from recorded grids: train one, set its threshold, and score a learned vote and cascade on held-out items.

The scorer (`engine.router.scorer`) reads a panel's answers; a grid records every model's
answer and reply length per item, so the same features are computed here from the grid as a
run computes them from replies. Its threshold is set on out-of-fold scores of the training
items (each scored by a scorer trained without it), never on the items the report holds out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.pool import Pool
from engine.router.model import RouterError
from engine.router.scorer import Outcome, PanelAnswers, Scorer, out_of_fold_best, threshold_for, train_scorer
from engine.run.answers import answer_key
from engine.training.from_eval import items_from_eval
from engine.training.grid import GridItem, grid_models, item_cost, load_grid, split_grid
from engine.training.service import beside


def outcome(item: GridItem, panel: Sequence[str]) -> Outcome:
    return Outcome(item.id, PanelAnswers(item.example.text, {a: answer_key(item.answers[a]) for a in panel},
                                         {a: item.example.output_tokens.get(a, 0) for a in panel}), answer_key(item.gold))


@dataclass(frozen=True)
class Target:
    """How a scorer's threshold is set on the training items: the knee (default), an accuracy, or an escalated share."""

    accuracy: float | None = None
    escalate_share: float | None = None
    #: Reach the escalate model's own accuracy on the training items, escalating as few as possible.
    match_escalate: bool = False

    def describe(self) -> str:
        if self.match_escalate:
            return "the least escalation reaching the escalate model's accuracy"
        if self.accuracy is not None:
            return f"the least escalation reaching {self.accuracy:.1%}"
        if self.escalate_share is not None:
            return f"escalate at most {self.escalate_share:.0%}"
        return "the knee: furthest above random mixing of panel and escalate model"


def fit(train: Sequence[GridItem], panel: Sequence[str], models: dict[str, str], escalate: str | None,
        target: Target = Target(), seed: int = 0) -> Scorer:
    """A scorer trained on `train`, its threshold set on their out-of-fold scores."""
    outcomes = [outcome(i, panel) for i in train]
    scorer = train_scorer(outcomes, panel, {a: models[a] for a in panel}, escalate=escalate)
    if escalate is None:
        return scorer
    best = out_of_fold_best(outcomes, panel, models, seed=seed)
    strong_right = [bool(i.example.right[escalate]) for i in train]
    goal = sum(strong_right) / len(strong_right) if target.match_escalate else target.accuracy
    threshold, accuracy, share = threshold_for(best, strong_right, goal, target.escalate_share)
    scorer.threshold = threshold
    scorer.calibration = {"rule": target.describe(), "threshold": round(threshold, 6), "accuracy": round(accuracy, 4),
                          "escalated": round(share, 4), "on": f"{len(train)} training items, out of fold"}
    return scorer


def _members(panel: list[str], escalate: str | None) -> list[str]:
    if escalate is not None and escalate in panel:
        raise RouterError(f"`{escalate}` is in the panel; the escalate model answers when the panel is not trusted")
    if len(set(panel)) != len(panel):
        raise RouterError("the panel names an alias twice: a scorer tells members apart by alias")
    return [*panel, *([escalate] if escalate else [])]


def _train_and_save(items: list[GridItem], models: dict[str, str], source: dict[str, Any], output: str | Path, panel: list[str],
                    escalate: str | None, target: Target, train_share: float, seed: int) -> tuple[Scorer, list[GridItem], list[GridItem]]:
    train, test = split_grid(items, train_share, seed)
    if not train:
        raise RouterError("no items to train on")
    scorer = fit(train, panel, models, escalate, target, seed)
    scorer.trained_on = {**source, "n_train": len(train), "n_test": len(test), "train_share": train_share, "seed": seed,
                         "models": models, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    scorer.save(output)
    return scorer, train, test


def train_scorer_on_grid(pool: Pool, grid: str | Path, output: str | Path, panel: list[str], escalate: str | None, *,
                         target: Target = Target(), train_share: float = 0.7,
                         seed: int = 0) -> tuple[Scorer, list[GridItem], list[GridItem]]:
    """A scorer for `panel` (and `escalate`) trained on a grid's training part and saved to `output`; (scorer, train, test)."""
    models = grid_models(pool, grid, _members(panel, escalate))
    return _train_and_save(load_grid(grid, models), models, {"grid": beside(grid, output)}, output, panel, escalate, target,
                           train_share, seed)


def train_scorer_on_evals(pool: Pool, eval_ids: list[str], dataset: str | Path, output: str | Path, panel: list[str],
                          escalate: str | None, *, mapping: dict[str, str] | None = None, home: str | Path | None = None,
                          target: Target = Target(), train_share: float = 0.7,
                          seed: int = 0) -> tuple[Scorer, list[GridItem], list[GridItem]]:
    """A scorer trained on `baton eval` runs of one flow per member (a solo flow per alias, as for a router): each item's
    recorded reply is that member's answer. Split into train and held-out parts as a grid is."""
    members = _members(panel, escalate)
    items, labels = items_from_eval(eval_ids, dataset, set(members), home, mapping)
    missing = [a for a in members if a not in labels]
    if missing:
        raise RouterError(f"no flow of those evaluations stands for {', '.join(missing)} (name flows after aliases, or pass --as LABEL=ALIAS)")
    models = {a: pool.models[a].id for a in members}
    source = {"evals": eval_ids, "flows": labels, "dataset": beside(dataset, output)}
    return _train_and_save(items, models, source, output, panel, escalate, target, train_share, seed)


@dataclass
class Played:
    """A scorer played over items: each item right or not, its cost, and whether it was escalated."""

    right: list[int]
    cost: float  # mean USD per item
    escalated: float  # share


def play(scorer: Scorer, items: Sequence[GridItem], pool: Pool, threshold: float | None = None, escalate: bool = True) -> Played:
    """What a fuse with this scorer would have done on recorded items: the panel answers; the best-scored answer stands,
    or (below the threshold, with an escalate model) the escalate model's does."""
    limit = scorer.threshold if threshold is None else threshold
    right, cost, sent = [], 0.0, 0
    for item in items:
        o = outcome(item, scorer.panel)
        cost += sum(item_cost(item, a, pool) for a in scorer.panel)
        best = scorer.score(o.answers).best
        if escalate and scorer.escalate is not None and (best is None or best[1] < limit):
            sent += 1
            cost += item_cost(item, scorer.escalate, pool)
            right.append(item.example.right[scorer.escalate])
        else:
            right.append(int(best is not None and best[0].answer == o.gold))
    return Played(right, cost / len(items), sent / len(items))
