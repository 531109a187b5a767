"""Where a Baton run's CPU goes, shape by shape: a pyinstrument call tree (run by hand).

    pip install -r bench/requirements.txt
    python bench/profile_run.py "fan-out 1>500>1"                 # records in memory, 0 ms, 20 runs
    python bench/profile_run.py route --mode durable --runs 200
    python bench/profile_run.py "layers 5x10" --mode records --html /tmp/layers.html

The loopback server runs in its own process (its CPU is not in the profile), the run is
warmed up once, then `--runs` runs are profiled together, so fixed per-run costs and
per-call costs show in proportion. Shapes are the benchmark's (`bench/shapes.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engines import baton_runner  # noqa: E402
from bench.shapes import ALL  # noqa: E402

MODES = {"memory": (False, False), "records": (True, False), "durable": (True, True)}


async def profile(shape_name: str, mode: str, runs: int, latency_ms: float, html: str | None) -> None:
    from pyinstrument import Profiler

    shape = next((s for s in ALL if s.name == shape_name), None)
    if shape is None:
        sys.exit(f"no shape {shape_name!r}; shapes: {', '.join(s.name for s in ALL)}")
    server = subprocess.Popen([sys.executable, "-m", "engine.testing.chat_server", str(latency_ms / 1000)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        record, durable = MODES[mode]
        once, close = baton_runner(shape, url, record=record, durable=durable)
        await once()  # warm-up: imports, connections, the flow's dependency map
        profiler = Profiler(async_mode="enabled", interval=0.0005)
        profiler.start()
        for _ in range(runs):
            await once()
        profiler.stop()
        await close()
    finally:
        server.terminate()
    if html:
        Path(html).write_text(profiler.output_html(), encoding="utf-8")
        print(f"wrote {html}")
    else:
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", help="a shape name from bench/shapes.py, e.g. 'route' or 'fan-out 1>50>1'")
    parser.add_argument("--mode", choices=sorted(MODES), default="memory", help="where the run record goes")
    parser.add_argument("--runs", type=int, default=20, help="runs profiled together (after one warm-up)")
    parser.add_argument("--latency", type=float, default=0.0, help="the server's latency in ms")
    parser.add_argument("--html", help="write pyinstrument's HTML report here instead of printing the tree")
    args = parser.parse_args()
    asyncio.run(profile(args.shape, args.mode, args.runs, args.latency, args.html))


if __name__ == "__main__":
    main()
