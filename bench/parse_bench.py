"""Parse + validate time of generated flows of 100, 1,000 and 10,000 steps (run by hand).

    python bench/parse_bench.py            # median of 7 runs per size, after a warm-up
    python bench/parse_bench.py 10000      # one size

Prints wall and CPU seconds per size and the per-step cost, to show the growth is linear.
Shared VMs lose a large, changing share of their time to steal (`top` shows `st`), which
stretches wall time but not the process's CPU time; CPU time is the figure to compare.
A fixed pure-Python workload timed in the same run (`calibration`) says how fast the
machine was at that moment: on this 2-core VM it takes 0.07-0.15 s, depending on the minute;
the 10,000-step figure divided by it (`x calibration`, about 9.5) is what stays put.

A second same-run baseline is the conventional way to read this language: Lark's own
LALR(1) parser over `grammar/flow.lark` with its standard lexer, building Lark's parse
tree and nothing else (no syntax model, no checks). `Lark / Baton` is how many times
longer that parse alone takes than Baton's whole parse + validate.
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


def calibration() -> float:
    """CPU seconds of a fixed loop of dict and list operations (1M iterations)."""
    t0 = time.process_time()
    d: dict[int, int] = {}
    out = []
    for i in range(1_000_000):
        d[i & 1023] = i
        out.append(i)
    return time.process_time() - t0


def lark_baseline(text: str, repeats: int = 3) -> float:
    """Median CPU seconds of Lark's own LALR parser building its parse tree (no checks)."""
    from lark import Lark

    from engine.syntax.terminals import grammar_text

    parser = Lark(grammar_text(), parser="lalr", lexer="basic", maybe_placeholders=True)
    cpus = []
    for _ in range(repeats):
        c0 = time.process_time()
        tree = parser.parse(text)
        cpus.append(time.process_time() - c0)
        del tree
    return statistics.median(cpus)


def measure(steps: int, repeats: int = 7) -> tuple[float, float, float, int]:
    text = layered_flow(steps)
    pool = default_pool()
    result = check_source(text, pool, "bench.flow")  # warm-up, and a sanity check
    assert result.flow is not None and not result.errors, result.diagnostics[:3]
    del result
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = check_source(text, pool, "bench.flow")
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        del result
    return statistics.median(walls), statistics.median(cpus), min(cpus), len(text)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 10000]
    before = statistics.median(calibration() for _ in range(5))
    print(f"calibration (1M-iteration loop): {before:.3f} s CPU")
    print(f"{'steps':>7} {'bytes':>10} {'wall s':>8} {'CPU s':>7} {'min CPU':>8} {'CPU us/step':>12} {'x calibration':>14}"
          f" {'Lark CPU s':>11} {'Lark / Baton':>13}")
    rows = []
    for n in sizes:
        wall, cpu, best, size = measure(n)
        lark = lark_baseline(layered_flow(n))
        rows.append((n, size, wall, cpu, best, lark))
    after = statistics.median(calibration() for _ in range(5))
    unit = (before + after) / 2
    for n, size, wall, cpu, best, lark in rows:
        print(f"{n:>7} {size:>10} {wall:>8.3f} {cpu:>7.3f} {best:>8.3f} {cpu / n * 1e6:>12.1f} {cpu / unit:>14.1f}"
              f" {lark:>11.3f} {lark / cpu:>13.2f}")
    print(f"calibration (1M-iteration loop): {after:.3f} s CPU")
    # CPU time in units of the calibration loop stays put while the machine's speed moves:
    # it is what to compare across runs and machines.
    print(f"on a machine where the calibration loop takes 0.05 s, 10,000 steps would take about "
          f"{0.05 * (rows[-1][3] / unit) * (10000 / rows[-1][0]):.2f} s CPU")


if __name__ == "__main__":
    main()
