"""One engine over every shape at one latency; prints one JSON line per shape (run by bench/run_all.py).

    python bench/engines.py baton|baton-records|baton-memory|langgraph|floor URL LATENCY_MS

Every engine makes the same HTTP calls with the same client (httpx + the aiohttp
transport, up to 1,024 connections), so the engines differ only in the engine.
"""

from __future__ import annotations

import asyncio
import json
import operator
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shapes import ALL, Shape, to_flow  # noqa: E402


def client() -> Any:
    """The HTTP path every engine uses: an `httpx.Request` handed to the aiohttp transport,
    as Baton's provider does (an `AsyncClient` on top adds 0.2 ms of CPU per call)."""
    import httpx
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    return AiohttpTransport(limits=limits)


async def call(http: Any, url: str, content: str) -> str:
    import httpx

    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 32, "temperature": 0},
                      ensure_ascii=False, separators=(",", ":")).encode()
    request = httpx.Request("POST", f"{url}/chat/completions", content=body, headers=HEADERS, extensions=TIMEOUT)
    r = await http.handle_async_request(request)
    try:
        await r.aread()
    finally:
        await r.aclose()
    return str(json.loads(r.content)["choices"][0]["message"]["content"])


MIN_MEASURED_S = 2.0
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
TIMEOUT = {"timeout": {"connect": 120.0, "read": 120.0, "write": 120.0, "pool": 120.0}}


# -- the no-engine floor ---------------------------------------------------------------


async def floor(shape: Shape, url: str, http: Any) -> None:
    if shape.loop_rounds:
        feedback = ""
        for _ in range(shape.loop_rounds):
            draft = await call(http, url, f"draft {feedback}")
            feedback = await call(http, url, f"verify {draft}")
            if "ACCEPT" in feedback:
                return
        return
    if shape.route:
        label = await call(http, url, "label q")
        await call(http, url, f"branch {label[:1]}")
        return
    futures: dict[str, asyncio.Task[str]] = {}

    async def node(name: str, deps: list[str]) -> str:
        seen = [await futures[d] for d in deps]
        return await call(http, url, f"work {name}\n" + "\n".join(seen))

    for name, deps in shape.nodes:
        futures[name] = asyncio.create_task(node(name, deps))
    await asyncio.gather(*futures.values())


# -- LangGraph -------------------------------------------------------------------------


def merge(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    return {**a, **b}


class State(TypedDict):
    outputs: Annotated[dict[str, str], merge]
    rounds: Annotated[int, operator.add]


def langgraph_app(shape: Shape, url: str, http: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    g: Any = StateGraph(State)

    def make(name: str, deps: list[str]) -> Any:
        async def fn(state: State) -> dict[str, Any]:
            seen = [state["outputs"].get(d, "") for d in deps]
            return {"outputs": {name: await call(http, url, f"work {name}\n" + "\n".join(seen))}}
        return fn

    if shape.loop_rounds:
        async def draft(state: State) -> dict[str, Any]:
            return {"outputs": {"draft": await call(http, url, f"draft {state['outputs'].get('check', '')}")}, "rounds": 1}

        async def check(state: State) -> dict[str, Any]:
            return {"outputs": {"check": await call(http, url, f"verify {state['outputs']['draft']}")}}

        g.add_node("draft", draft)
        g.add_node("check", check)
        g.add_edge(START, "draft")
        g.add_edge("draft", "check")
        g.add_conditional_edges("check", lambda s: END if "ACCEPT" in s["outputs"]["check"] or s["rounds"] >= shape.loop_rounds
                                else "draft")
        return g.compile()
    if shape.route:
        classifier, arms = shape.route
        g.add_node(classifier, make(classifier, []))
        for t in arms.values():
            g.add_node(t, make(t, []))
            g.add_edge(t, END)
        g.add_edge(START, classifier)
        g.add_conditional_edges(classifier, lambda s: arms.get(s["outputs"][classifier].strip()[:1], "a"), list(arms.values()))
        return g.compile()
    consumers: set[str] = set()
    for name, deps in shape.nodes:
        g.add_node(name, make(name, deps))
        consumers.update(deps)
    for name, deps in shape.nodes:
        if not deps:
            g.add_edge(START, name)
        elif len(deps) == 1:
            g.add_edge(deps[0], name)
        else:
            g.add_edge(deps, name)
        if name not in consumers:
            g.add_edge(name, END)
    return g.compile()


# -- Baton -----------------------------------------------------------------------------


def baton_runner(shape: Shape, url: str, record: bool, durable: bool = True) -> tuple[Any, Any]:
    from engine.loading import check_source
    from engine.pool import ModelSpec, Pool, ProviderSpec
    from engine.session import run_flow

    pool = Pool(providers={"loop": ProviderSpec(kind="openai", base_url=url, max_concurrency=1024)},
                models={"m": ModelSpec(provider="loop", id="m", input_price=0.1, output_price=0.2)}, max_concurrency=1024)
    result = check_source(to_flow(shape), pool, f"{shape.name}.flow")
    assert result.flow is not None, [d.message for d in result.diagnostics[:3]]
    flow = result.flow
    home = tempfile.mkdtemp(prefix="baton-bench-")
    budget = 1000.0

    from engine.providers.openai_compat import OpenAICompatProvider

    shared: dict[str, Any] = {}

    async def run() -> None:
        # one provider (one pooled HTTP client) for every run, as the other engines share one client
        if "loop" not in shared:
            shared["loop"] = OpenAICompatProvider("loop", pool.provider("loop"))
        await run_flow(flow, {"question": "q"}, pool=pool, home=home, cache=False, record=record, durable=durable,
                       budget_usd=budget, providers=shared)

    async def close() -> None:
        if "loop" in shared:
            await shared.pop("loop").aclose()

    return run, close


# -- measurement -----------------------------------------------------------------------


async def measure(engine: str, shape: Shape, url: str, latency_ms: float, repeats: int) -> dict[str, Any]:
    http = client()
    if engine == "langgraph":
        app = langgraph_app(shape, url, http)

        async def once() -> None:
            await app.ainvoke({"outputs": {}, "rounds": 0}, {"recursion_limit": 10_000})
    elif engine == "floor":
        async def once() -> None:
            await floor(shape, url, http)
    else:
        once, close_baton = baton_runner(shape, url, record=engine != "baton-memory", durable=engine == "baton")
    await once()  # warm-up
    walls: list[float] = []
    cpus: list[float] = []
    # At least `repeats` runs, and at least MIN_MEASURED_S of them: a 0 ms shape takes a few
    # milliseconds a run, and five of those are at the mercy of one noisy moment.
    while len(walls) < repeats or (sum(walls) < MIN_MEASURED_S and len(walls) < 500):
        c0, t0 = time.process_time(), time.perf_counter()
        await once()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    await http.aclose()
    if engine.startswith("baton"):
        await close_baton()
    wall = statistics.median(walls)
    return {"engine": engine, "shape": shape.name, "latency_ms": latency_ms, "wall_s": wall,
            "ideal_s": shape.depth * latency_ms / 1000, "cpu_ms_per_call": statistics.median(cpus) / shape.calls * 1000,
            "calls": shape.calls, "runs": len(walls)}


async def main() -> None:
    engine, url, latency_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    only = sys.argv[4] if len(sys.argv) > 4 else None
    for shape in ALL:
        if only is not None and shape.name != only:
            continue
        if latency_ms and shape.name.startswith("generated"):
            continue  # a 1,000-deep chain at 100 ms is 100 s a run; measured at 0 ms
        repeats = 3 if shape.calls >= 500 or latency_ms else 5
        row = await measure(engine, shape, url, latency_ms, repeats)
        row["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
