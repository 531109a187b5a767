"""Which HTTP stack for `baton serve`: aiohttp.web against Starlette + uvicorn, on the same trivial JSON endpoint.

    python bench/serve_stack.py [--seconds 5] [--concurrency 64]

Each server runs in its own process (one worker, as `baton serve` does) and answers a
POST with a small chat.completion-shaped JSON body; an aiohttp client on the same machine
sends requests at fixed concurrency. Prints requests per second, median and p99 latency,
and the server's CPU seconds per 1,000 requests. The figures are for choosing a stack,
not a claim about Baton: the engine's own work per request is the same on either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

BODY = {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}

AIOHTTP_APP = """
import json, sys
from aiohttp import web
BODY = json.dumps(%r).encode()
async def handle(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_post("/v1/chat/completions", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

STARLETTE_APP = """
import json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
BODY = json.dumps(%r).encode()
async def handle(request):
    await request.body()
    return Response(BODY, media_type="application/json")
app = Starlette(routes=[Route("/v1/chat/completions", handle, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, seconds: float, concurrency: int) -> list[float]:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as client:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with client.post(url, data=payload, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - t0)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def measure(name: str, source: str, seconds: float, concurrency: int) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", source % BODY, str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        asyncio.run(load(port, 1.0, concurrency))  # warm up
        cpu0 = cpu_seconds(proc.pid)
        latencies = asyncio.run(load(port, seconds, concurrency))
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    latencies.sort()
    return {"stack": name, "rps": len(latencies) / seconds, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "cpu_ms_per_req": cpu / len(latencies) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    rows = [measure("aiohttp.web", AIOHTTP_APP, args.seconds, args.concurrency),
            measure("starlette+uvicorn", STARLETTE_APP, args.seconds, args.concurrency)]
    print(f"{'stack':<20} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/req':>18}")
    for r in rows:
        print(f"{r['stack']:<20} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['cpu_ms_per_req']:>18.3f}")


if __name__ == "__main__":
    main()
