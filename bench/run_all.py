"""Baton against LangGraph and the no-engine floor, every shape, 100 ms and 0 ms latency (run by hand).

    pip install -r bench/requirements.txt
    python bench/run_all.py                 # everything: about 10 minutes on 2 cores
    python bench/run_all.py 100             # one latency
    BENCH_SHAPES=fan-out,route python bench/run_all.py   # only the shapes whose names contain these

Starts the loopback chat-completions server in its own process (its CPU is not counted),
runs each engine on each shape in its own process (imports and peak memory are per engine
and shape; the engines take turns shape by shape), and prints one table: wall time (median
after a warm-up, over at least 2 s of runs), ratio to the critical-path ideal, ratio to
LangGraph and to the floor in the same run, CPU per model call and its ratio to
LangGraph's, the number of runs measured, peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.shapes import ALL  # noqa: E402

ENGINES = ["floor", "baton-memory", "baton-records", "baton", "langgraph"]


def start_server(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "engine.testing.chat_server", str(latency_ms / 1000)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def run_engine(engine: str, url: str, latency_ms: float, shape: str) -> list[dict[str, float | str]]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "engines.py"), engine, url, str(latency_ms), shape], cwd=ROOT,
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return []
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    latencies = [float(a) for a in sys.argv[1:]] or [100.0, 0.0]
    print(f"{'latency':>7} {'shape':<20} {'engine':<13} {'wall s':>8} {'x ideal':>8} {'x LangGraph':>11} {'x floor':>8} "
          f"{'CPU ms/call':>11} {'CPU x LG':>8} {'runs':>5} {'RSS MB':>7}")
    only = [w for w in os.environ.get("BENCH_SHAPES", "").split(",") if w]
    for latency in latencies:
        server, url = start_server(latency)
        try:
            for shape in ALL:
                if only and not any(w in shape.name for w in only):
                    continue
                if latency and shape.name.startswith("generated"):
                    continue  # a 1,000-deep chain at 100 ms is 100 s a run; measured at 0 ms
                # The engines take turns on each shape, so a slow minute of the machine hits one shape, not one engine.
                rows = {e: r for e in ENGINES for r in run_engine(e, url, latency, shape.name)}
                print_shape(latency, shape.name, rows)
        finally:
            server.terminate()


def print_shape(latency: float, shape: str, rows: dict[str, dict[str, float | str]]) -> None:
    lg = rows.get("langgraph")
    fl = rows.get("floor")
    for engine in ENGINES:
        r = rows.get(engine)
        if r is None:
            continue
        wall = float(r["wall_s"])
        ideal = float(r["ideal_s"])
        cpu = float(r["cpu_ms_per_call"])
        x_ideal = f"{wall / ideal:.2f}" if ideal else "-"
        x_lg = f"{wall / float(lg['wall_s']):.2f}" if lg else "-"
        x_fl = f"{wall / float(fl['wall_s']):.2f}" if fl else "-"
        cpu_lg = f"{cpu / float(lg['cpu_ms_per_call']):.2f}" if lg else "-"
        print(f"{latency:>7.0f} {shape:<20} {engine:<13} {wall:>8.3f} {x_ideal:>8} {x_lg:>11} {x_fl:>8} "
              f"{cpu:>11.2f} {cpu_lg:>8} {int(r.get('runs', 0)):>5} {float(r['max_rss_mb']):>7.0f}", flush=True)


if __name__ == "__main__":
    main()
