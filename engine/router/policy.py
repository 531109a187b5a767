"""How a router's predictions become a choice of model, and how its threshold is calibrated.

Two rules, as the language offers them:

- `threshold: T`: the cheapest candidate whose predicted accuracy reaches T; when none does,
  the one predicted best (RouteLLM's threshold routing, generalised to several models);
- `tradeoff: L`: the candidate with the best predicted accuracy minus L times its cost
  relative to the dearest candidate (quality per dollar at a chosen exchange rate).

Calibration (`--strong-share S`, RouteLLM's way) picks the threshold at which a share S of
a reference set goes to the strongest candidate; `--target-accuracy A` picks the lowest
threshold whose predicted accuracy on the reference set reaches A.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    alias: str
    why: str


def choose(predicted: Mapping[str, float], costs: Mapping[str, float], candidates: Sequence[str],
           threshold: float | None = None, tradeoff: float | None = None) -> Choice:
    by_cost = sorted(candidates, key=lambda a: (costs[a], a))
    if tradeoff is not None:
        top = max(costs[a] for a in candidates) or 1.0
        best = max(by_cost, key=lambda a: predicted[a] - tradeoff * costs[a] / top)
        return Choice(best, f"best predicted accuracy less {tradeoff:g} x relative cost: `{best}` (p={predicted[best]:.3f})")
    t = 0.9 if threshold is None else threshold
    for alias in by_cost:
        if predicted[alias] >= t:
            return Choice(alias, f"cheapest with predicted accuracy >= {t:g}: `{alias}` (p={predicted[alias]:.3f})")
    best = max(by_cost, key=lambda a: predicted[a])
    return Choice(best, f"none predicted >= {t:g}; the best predicted: `{best}` (p={predicted[best]:.3f})")


def strongest(accuracy: Mapping[str, float], candidates: Sequence[str]) -> str:
    return max(candidates, key=lambda a: (accuracy[a], a))


#: Thresholds are calibrated on this grid: step / STEPS for step in 0..STEPS.
STEPS = 1000


def _last_step_reached(p: float) -> int:
    """The largest step s with p >= s / STEPS (-1 when none): where `p >= threshold` stops holding."""
    s = min(STEPS, max(-1, int(p * STEPS)))
    while s < STEPS and (s + 1) / STEPS <= p:
        s += 1
    while s >= 0 and s / STEPS > p:
        s -= 1
    return s


def strong_share_curve(predictions: Sequence[Mapping[str, float]], costs: Mapping[str, float], candidates: Sequence[str],
                       strong: str) -> list[float]:
    """The share of `predictions` that threshold routing sends to `strong`, at each threshold step / STEPS.

    A prediction's choice changes only where one of its candidates' predicted accuracies stops reaching the
    threshold, so each prediction is decided once per interval between those steps (at most one more interval
    than candidates), not once per step: the same shares as deciding at every step, 200 times faster."""
    diff = [0] * (STEPS + 2)
    for p in predictions:
        cuts = sorted({_last_step_reached(p[a]) for a in candidates})
        start = 0
        for end in [*cuts, STEPS]:  # the interval [start, end] has one choice
            if end >= start:
                if choose(p, costs, candidates, threshold=start / STEPS).alias == strong:
                    diff[start] += 1
                    diff[end + 1] -= 1
                start = end + 1
    shares, running, n = [], 0, max(1, len(predictions))
    for step in range(STEPS + 1):
        running += diff[step]
        shares.append(running / n)
    return shares


def calibrate_strong_share(predictions: Sequence[Mapping[str, float]], costs: Mapping[str, float], candidates: Sequence[str],
                           strong: str, share: float) -> float:
    """The threshold that sends `share` of the reference set to `strong` (as near as the set allows; the lowest such)."""
    best_t, best_gap = 0.5, 2.0
    for step, sent in enumerate(strong_share_curve(predictions, costs, candidates, strong)):
        if abs(sent - share) < best_gap - 1e-12:
            best_t, best_gap = step / STEPS, abs(sent - share)
    return best_t


def calibrate_accuracy(predictions: Sequence[Mapping[str, float]], costs: Mapping[str, float], candidates: Sequence[str],
                       target: float) -> float:
    """The lowest threshold whose choices' mean predicted accuracy on the reference set reaches `target`."""
    for step in range(0, 1001):
        t = step / 1000
        picks = [p[choose(p, costs, candidates, threshold=t).alias] for p in predictions]
        if picks and sum(picks) / len(picks) >= target:
            return t
    return 1.0
