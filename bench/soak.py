"""Memory across 1,000 sequential runs in one process, and throughput of many small flows at once (run by hand).

    python bench/soak.py

Uses the loopback server at 0 ms in its own process; prints RSS after 100 and after
1,000 runs (with durable records and in memory), and runs per second for 500 three-step
flows started together through the Python API.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.loading import check_source  # noqa: E402
from engine.pool import ModelSpec, Pool, ProviderSpec  # noqa: E402
from engine.providers.openai_compat import OpenAICompatProvider  # noqa: E402
from engine.session import run_flow  # noqa: E402

FLOW = 'input q\nstep a { model: m  task: "{q}" }\nstep b { model: m  sees: a  task: "more" }\nstep c { model: m  sees: b  task: "end" }\n'


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(url: str) -> None:
    pool = Pool(providers={"loop": ProviderSpec(kind="openai", base_url=url, max_concurrency=1024)},
                models={"m": ModelSpec(provider="loop", id="m", input_price=0.1, output_price=0.2)}, max_concurrency=1024)
    flow = check_source(FLOW, pool).flow
    assert flow is not None
    shared = {"loop": OpenAICompatProvider("loop", pool.provider("loop"))}
    for record in (False, True):
        home = tempfile.mkdtemp()
        marks = {}
        for i in range(1, 1001):
            await run_flow(flow, {"q": f"question {i}"}, pool=pool, providers=shared, home=home, cache=False, record=record)
            if i in (100, 1000):
                gc.collect()
                marks[i] = rss_mb()
        print(f"sequential runs, records {'on disk' if record else 'in memory'}: RSS after 100 runs {marks[100]:.1f} MB, "
              f"after 1,000 runs {marks[1000]:.1f} MB (growth {marks[1000] - marks[100]:+.1f} MB)", flush=True)
    t0 = time.perf_counter()
    await asyncio.gather(*(run_flow(flow, {"q": f"q {i}"}, pool=pool, providers=shared, cache=False, record=False) for i in range(500)))
    wall = time.perf_counter() - t0
    print(f"500 three-step flows at once (1,500 calls): {wall:.2f}s, {500 / wall:.0f} runs/s, {1500 / wall:.0f} calls/s", flush=True)
    await shared["loop"].aclose()


if __name__ == "__main__":
    server = subprocess.Popen([sys.executable, "-m", "engine.testing.chat_server", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    try:
        asyncio.run(main(server.stdout.readline().strip()))
    finally:
        server.terminate()
