"""How often the embedded model writes a valid plan, with and without grammar constraints (run by hand).

    python bench/planner_bench.py gbnf off

Prints, per mode, the first-attempt and within-bound (3 repairs) validity rates over ten
varied tasks, the mean time per plan, and the dead steps of the plans taken (W401: steps
whose output nobody sees, which a run pays for and throws away).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.planner.limits import PlanLimits  # noqa: E402
from engine.planner.plan import plan  # noqa: E402
from engine.pool import default_pool  # noqa: E402
from engine.providers.local import LocalProvider  # noqa: E402

TASKS = [
    "Explain why the sky is blue.",
    "Write a Python function that reverses a string, then review it.",
    "What is 17 * 23? Check the arithmetic.",
    "Summarise the causes of the French Revolution in three bullet points.",
    "Translate 'good morning' into French and Spanish.",
    "Plan a three-day trip to Rome.",
    "Find the bug in: def add(a, b): return a - b",
    "Give two arguments for and against remote work, then a verdict.",
    "Name the planets of the solar system in order.",
    "Draft a polite email declining a meeting.",
]


async def main(modes: list[str]) -> None:
    pool = default_pool()
    provider = LocalProvider("local", pool.provider("local"))
    for mode in modes:
        first = within = dead = 0
        times = []
        for task in TASKS:
            t0 = time.perf_counter()
            result = await plan(task, pool, "local", provider, limits=PlanLimits(max_steps=3), constrain=mode,  # type: ignore[arg-type]
                                repairs=3, max_tokens=300)
            times.append(time.perf_counter() - t0)
            first += bool(result.attempts and result.attempts[0].valid)
            within += result.ok
            unseen = sum(d.get("code") == "W401" for d in result.attempts[-1].diagnostics) if result.ok else 0
            dead += unseen
            print(f"{mode}: {task[:40]:<40} ok={result.ok} attempts={len(result.attempts)} dead steps={unseen} {times[-1]:.1f}s",
                  flush=True)
        print(f"{mode}: first attempt {first}/{len(TASKS)}, within 3 repairs {within}/{len(TASKS)}, "
              f"mean {statistics.mean(times):.1f}s per plan, {dead} dead steps in the plans taken", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["gbnf", "off"]))
