"""Cold start of `baton validate` on a small flow, beside Python's own start-up (run by hand).

    python bench/startup_bench.py [RUNS]

Each command runs RUNS times (default 21) in a fresh process, interleaved so that the
machine's changing speed hits them alike; prints the median and quartiles of wall time.
`python -c pass` is the floor no command can go under; `import pydantic, BaseModel` is
what the typed flow model costs before Baton adds anything.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "workflows" / "hello.flow"


def commands() -> dict[str, list[str]]:
    baton = shutil.which("baton") or ""
    out = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import pydantic (BaseModel)": [sys.executable, "-c", "from pydantic import BaseModel"],
        "baton validate hello.flow": [baton, "validate", str(FLOW)] if baton else
        [sys.executable, "-m", "engine.cli.main", "validate", str(FLOW)],
    }
    return out


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    cmds = commands()
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, argv in cmds.items():
            t0 = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, cwd=ROOT)
            times[name].append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr.decode()[-500:]}")
    print(f"{'command':<30} {'median':>8} {'q1':>7} {'q3':>7}")
    for name, ts in times.items():
        q1, med, q3 = statistics.quantiles(ts, n=4)
        print(f"{name:<30} {med * 1000:>6.0f}ms {q1 * 1000:>5.0f}ms {q3 * 1000:>5.0f}ms")


if __name__ == "__main__":
    main()
