"""Parse + validate time of generated flows of 100, 1,000 and 10,000 steps (run by hand).

    python bench/parse_bench.py            # median of 5 runs per size, after a warm-up

Prints seconds per size and the per-step cost, to show the growth is linear.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import layered_flow  # noqa: E402
from engine.loading import check_source  # noqa: E402
from engine.pool import default_pool  # noqa: E402


def measure(steps: int, repeats: int = 5) -> tuple[float, float, int]:
    text = layered_flow(steps)
    pool = default_pool()
    result = check_source(text, pool, "bench.flow")  # warm-up, and a sanity check
    assert result.flow is not None and not result.errors, result.diagnostics[:3]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        check_source(text, pool, "bench.flow")
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), len(text)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 10000]
    print(f"{'steps':>7} {'bytes':>10} {'median s':>9} {'min s':>7} {'us/step':>8}")
    for n in sizes:
        median, best, size = measure(n)
        print(f"{n:>7} {size:>10} {median:>9.3f} {best:>7.3f} {median / n * 1e6:>8.1f}")


if __name__ == "__main__":
    main()
