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


#: Up to this many discordant items the tail is summed in exact integers; beyond, in log space (2**n no longer fits a
#: float from n = 1,024, which crashed a comparison at the end of a long evaluation).
EXACT_UP_TO = 1000


def mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b items only A got right, c only B got right. The binomial tail
    P(X <= min(b, c)) for X ~ Bin(b + c, 1/2), doubled; exact in integers for small counts, and summed in log space
    (log-sum-exp of log C(n, i) - n log 2, relative error about 1e-12) for any larger count."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    if n <= EXACT_UP_TO:
        tail = sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)  # int / int: correctly rounded, never overflows
    else:
        log_half = n * math.log(2.0)
        logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - log_half for i in range(k + 1)]
        top = max(logs)
        tail = math.exp(top) * math.fsum(math.exp(v - top) for v in logs)
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
