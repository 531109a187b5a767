"""A learned answer scorer: how likely each answer a panel gave is right, from features of the answers themselves.

A question-only router guesses who will be right before anyone answers; the recorded grids
say the signal is in the answers (who agrees with whom, how long each model worked), as
FrugalGPT's scorer found. So a panel of cheap models answers first, every distinct answer is
a candidate, and one logistic regression gives each candidate the probability that it is
right. The fuse takes the best candidate (a vote whose voters are weighted by what they are
worth, learned per model) and, when even that is below the threshold, asks the `escalate`
model (a cascade that reads the answers).

A candidate's features, all computable live and from a recorded grid:

- which members gave it (`says:ALIAS`): each member's learned reliability, the weighted vote;
- its share of the panel, whether the panel was unanimous, how many distinct answers there were;
- the log of each supporting member's reply tokens (`tokens:ALIAS`): long work on a problem
  marks a hard one;
- the question's size (words, how many numbers), and the answer's shape (a whole number, its digits).

The file (`.scorer`, JSON) is plain data: weights by feature name, the panel it was trained
for, a threshold calibrated on held-out folds of the training items, and what it was trained
on. Training is Newton's method on a few dozen features, pure Python like the router.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.router.model import RouterError, _sigmoid

FORMAT = "baton-scorer/1"
_WORDS_AND_NUMBERS = ("question_words", "question_numbers")


@dataclass(frozen=True)
class PanelAnswers:
    """What one item's panel said: each member's answer (compared as `answer_key` does; '' for none) and reply tokens."""

    question: str
    answers: Mapping[str, str]
    output_tokens: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    answer: str
    members: tuple[str, ...]


def candidates(item: PanelAnswers, panel: Sequence[str]) -> list[Candidate]:
    """Each distinct answer with the members that gave it, in the order the panel first gave them."""
    by_answer: dict[str, list[str]] = {}
    for alias in panel:
        answer = item.answers.get(alias, "")
        if answer:
            by_answer.setdefault(answer, []).append(alias)
    return [Candidate(a, tuple(m)) for a, m in by_answer.items()]


def _question_size(text: str) -> tuple[float, float]:
    words = text.split()
    numbers = sum(any(ch.isdigit() for ch in w) for w in words)
    return math.log2(len(words) + 1) / 10, min(numbers, 16) / 16


def feature_names(panel: Sequence[str]) -> list[str]:
    return (["bias", "share", "unanimous", "distinct", *_WORDS_AND_NUMBERS, "whole_number", "digits"]
            + [f"says:{a}" for a in panel] + [f"tokens:{a}" for a in panel])


def features(item: PanelAnswers, panel: Sequence[str], candidate: Candidate, n_candidates: int) -> dict[str, float]:
    answered = sum(1 for a in panel if item.answers.get(a, ""))
    words, numbers = _question_size(item.question)
    try:
        value: float | None = float(candidate.answer)
    except ValueError:
        value = None
    out = {"bias": 1.0, "share": len(candidate.members) / len(panel), "unanimous": float(len(candidate.members) == answered),
           "distinct": (n_candidates - 1) / max(1, len(panel) - 1), "question_words": words, "question_numbers": numbers,
           "whole_number": float(value is not None and math.isfinite(value) and value.is_integer()),
           "digits": min(sum(ch.isdigit() for ch in candidate.answer), 12) / 12 if value is not None else 0.0}
    for alias in candidate.members:
        out[f"says:{alias}"] = 1.0
        out[f"tokens:{alias}"] = math.log1p(max(0, item.output_tokens.get(alias, 0))) / 8
    return out


@dataclass
class Scored:
    """A scorer's reading of one item: every candidate with its probability, best first."""

    ranked: list[tuple[Candidate, float]]

    @property
    def best(self) -> tuple[Candidate, float] | None:
        return self.ranked[0] if self.ranked else None


@dataclass
class Scorer:
    panel: list[str]
    models: dict[str, str]  # alias -> the model id it was trained on
    weights: dict[str, float]  # feature name -> weight
    threshold: float = 0.5
    escalate: str | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)

    def score(self, item: PanelAnswers) -> Scored:
        """Every candidate answer with the probability it is right; ties keep the panel's order."""
        found = candidates(item, self.panel)
        scored = [(c, _sigmoid(sum(self.weights.get(k, 0.0) * v for k, v in features(item, self.panel, c, len(found)).items())))
                  for c in found]
        return Scored(sorted(scored, key=lambda t: -t[1]))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "panel": self.panel, "models": self.models, "escalate": self.escalate,
                "threshold": round(self.threshold, 6), "calibration": self.calibration, "trained_on": self.trained_on,
                "weights": {k: round(v, 6) for k, v in self.weights.items()}}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")


# -- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One recorded item for training: what the panel said and the right answer (as `answer_key` gives it)."""

    id: str
    answers: PanelAnswers
    gold: str


def _rows(outcomes: Sequence[Outcome], panel: Sequence[str], names: Sequence[str]) -> tuple[list[list[float]], list[int]]:
    xs, ys = [], []
    for o in outcomes:
        found = candidates(o.answers, panel)
        for c in found:
            f = features(o.answers, panel, c, len(found))
            xs.append([f.get(n, 0.0) for n in names])
            ys.append(int(c.answer == o.gold))
    return xs, ys


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """a x = b by Gaussian elimination with partial pivoting (a is small, symmetric and made positive definite by L2)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        if abs(m[col][col]) < 1e-12:
            continue
        for r in range(col + 1, n):
            factor = m[r][col] / m[col][col]
            if factor:
                for c in range(col, n + 1):
                    m[r][c] -= factor * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        if abs(m[r][r]) >= 1e-12:
            x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def fit_logistic(xs: Sequence[Sequence[float]], ys: Sequence[int], l2: float = 1.0, iterations: int = 25) -> list[float]:
    """L2-regularised logistic regression by Newton's method (the bias, column 0, is not regularised)."""
    d = len(xs[0]) if xs else 0
    w = [0.0] * d
    for _ in range(iterations):
        grad = [l2 * w[j] if j else 0.0 for j in range(d)]
        hess = [[(l2 if i == j and i else 0.0) for j in range(d)] for i in range(d)]
        for x, y in zip(xs, ys, strict=True):
            p = _sigmoid(sum(wj * xj for wj, xj in zip(w, x, strict=True)))
            g, h = p - y, max(p * (1 - p), 1e-9)
            for i in range(d):
                if x[i]:
                    grad[i] += g * x[i]
                    hx = h * x[i]
                    row = hess[i]
                    for j in range(d):
                        if x[j]:
                            row[j] += hx * x[j]
        for i in range(d):
            hess[i][i] += 1e-9
        step = _solve(hess, grad)
        w = [wj - sj for wj, sj in zip(w, step, strict=True)]
        if max((abs(s) for s in step), default=0.0) < 1e-7:
            break
    return w


def train_scorer(outcomes: Sequence[Outcome], panel: Sequence[str], models: Mapping[str, str], *, escalate: str | None = None,
                 l2: float = 1.0, trained_on: dict[str, Any] | None = None) -> Scorer:
    """A scorer for `panel` from recorded outcomes; its threshold is set afterwards (`threshold_for`, on out-of-fold scores)."""
    if not outcomes:
        raise RouterError("no training items")
    names = feature_names(panel)
    xs, ys = _rows(outcomes, panel, names)
    if not xs:
        raise RouterError("no member of the panel answered any training item")
    w = fit_logistic(xs, ys, l2)
    return Scorer(list(panel), dict(models), {n: v for n, v in zip(names, w, strict=True) if v}, escalate=escalate,
                  trained_on=dict(trained_on or {}))


def fold_of(item_id: str, folds: int, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"fold:{seed}:{item_id}".encode()).digest()[:8], "big") % folds


def out_of_fold_best(outcomes: Sequence[Outcome], panel: Sequence[str], models: Mapping[str, str], *, folds: int = 3,
                     seed: int = 0, l2: float = 1.0) -> list[tuple[float, bool]]:
    """Per item, the best candidate's probability and whether it is right, each item scored by a scorer that never saw
    it: a threshold calibrated on in-sample scores would trust the scorer more than held-out items will."""
    out: list[tuple[float, bool]] = [(0.0, False)] * len(outcomes)
    for k in range(folds):
        train = [o for o in outcomes if fold_of(o.id, folds, seed) != k]
        if not train:
            continue
        scorer = train_scorer(train, panel, models, l2=l2)
        for i, o in enumerate(outcomes):
            if fold_of(o.id, folds, seed) == k:
                best = scorer.score(o.answers).best
                out[i] = (best[1], best[0].answer == o.gold) if best else (0.0, False)
    return out


def threshold_for(best: Sequence[tuple[float, bool]], strong_right: Sequence[bool], target: float | None = None,
                  escalate_share: float | None = None) -> tuple[float, float, float]:
    """A threshold read off these items (escalating every item whose best answer scores below it), as
    (threshold, accuracy, share escalated):

    - by default, the knee: the threshold whose accuracy lies furthest above the straight line from "never escalate"
      to "always escalate", which is what mixing the two at random reaches for the same money;
    - with `target`, the one escalating least whose accuracy reaches it (else the most accurate);
    - with `escalate_share`, the one escalating the most items up to that share.

    Thresholds are every distinct probability in the data, not a fixed range, so they suit a grid where the best
    answer is usually wrong as well as one where it is usually right."""
    n = len(best)
    order = sorted(range(n), key=lambda i: best[i][0])
    # escalating the first j items of `order` (the least trusted): accuracy is strong on those, the panel's on the rest
    accepted_right = sum(ok for _p, ok in best)
    strong_so_far = 0
    options = [(0.0, accepted_right / n, 0.0)]
    for j, i in enumerate(order, start=1):
        accepted_right -= best[i][1]
        strong_so_far += strong_right[i]
        nxt = best[order[j]][0] if j < n else 1.0 + 1e-9
        if j < n and nxt == best[i][0]:
            continue  # a threshold cannot split items of one probability
        options.append((min(nxt, 1.0), (accepted_right + strong_so_far) / n, j / n))
    if escalate_share is not None:
        return max((o for o in options if o[2] <= escalate_share + 1e-12), key=lambda o: o[2])
    if target is None:
        slope = options[-1][1] - options[0][1]
        return max(options, key=lambda o: (o[1] - options[0][1] - slope * o[2], -o[2]))
    reaching = [o for o in options if o[1] >= target - 1e-12]
    if reaching:
        return min(reaching, key=lambda o: o[2])
    return max(options, key=lambda o: (o[1], -o[2]))
