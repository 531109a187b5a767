"""The statistics of an evaluation: confidence intervals, paired tests, percentiles, the Pareto frontier."""

from __future__ import annotations

import math
from collections.abc import Sequence


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (well-behaved near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b items only A got right, c only B got right."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = float(sum(math.comb(n, i) for i in range(k + 1))) / float(2**n)
    return min(1.0, 2 * tail)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def pareto(points: Sequence[tuple[str, float, float]]) -> set[str]:
    """Names on the frontier of (cost, accuracy): no other point is cheaper-or-equal and at least as accurate, one strictly."""
    front = set()
    for name, cost, acc in points:
        dominated = any((c <= cost and a >= acc) and (c < cost or a > acc) for n2, c, a in points if n2 != name)
        if not dominated:
            front.add(name)
    return front
