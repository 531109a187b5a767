"""Baton's traces in a real Arize Phoenix, checked by hand (results in docs/tracing.md).

Starts Phoenix (from its own virtualenv: it is large and pins its own dependencies), gives it
the pool's prices the way docs/tracing.md tells a Phoenix user to (so its cost column is
Baton's), runs a route flow and a fuse flow against the loopback chat server with live export
and `--otel-content`, then asks Phoenix's GraphQL API what it stored and checks it:

- every model-call span has its prompt, its reply and its tokens;
- every run's root span has the question and the answer (the trace list's input and output);
- Phoenix's cost of each call is the cost Baton booked.

With `--shots DIR` it also screenshots the trace list and a trace in headless Chromium.

    python3 -m venv /tmp/phx && /tmp/phx/bin/pip install arize-phoenix
    .venv/bin/python -m bench.phoenix_check --phoenix /tmp/phx/bin/phoenix --shots docs/img
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from engine.errors import RunError
from engine.pool import Pool
from engine.run.trace import RunSummary
from engine.session import Session
from engine.testing.chat_server import ChatServer, Reply
from engine.tracing.otel import OtelObserver, otlp_exporter
from tests.conftest import WORKFLOWS, loopback_pool

QUESTIONS = {"route_label.flow": "Which sorting algorithm is stable, merge sort or quicksort?",
             "fuse_panel.flow": "How many prime numbers are there below 30?"}

#: Phoenix's GraphQL mutation for a model price, as its Settings > Models page sends it.
CREATE_MODEL = """mutation($input: CreateModelMutationInput!) { createModel(input: $input) { model { id name } } }"""

SPANS = """query { projects { edges { node { id name spans(first: 200) { edges { node {
  id name spanKind parentId tokenCountPrompt tokenCountCompletion attributes
  input { value } output { value } costSummary { total { cost } }
  trace { traceId } } } } } } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def phoenix_prices(pool: Pool) -> list[dict[str, Any]]:
    """One Phoenix model per pool model with prices: its id matched exactly, its input and output prices per million
    tokens. Phoenix prices spans itself, from `llm.model_name` and its own table; a user-defined model comes first."""
    out = []
    for alias, spec in pool.models.items():
        if spec.input_price is None or spec.output_price is None:
            continue
        out.append({"name": f"baton {alias}", "namePattern": f"^{spec.id}$",
                    "costs": [{"tokenType": "input", "costPerMillionTokens": spec.input_price, "kind": "PROMPT"},
                              {"tokenType": "output", "costPerMillionTokens": spec.output_price, "kind": "COMPLETION"}]})
    return out


def reply(body: dict[str, Any]) -> Reply:
    """Plausible replies: a label for the triage step, answers otherwise, which the judge merges."""
    task = str(body["messages"][-1]["content"])
    if "Reply with the label only" in task:
        return Reply(text="code")
    if body["model"] == "gemini":
        return Reply(status=503, text="upstream overloaded")  # a panel member that fails: its spans show the error
    return Reply(text=f"[{body['model']}] Merge sort is stable; quicksort is not." if "sort" in task else
                 f"[{body['model']}] There are 10 primes below 30: 2, 3, 5, 7, 11, 13, 17, 19, 23, 29.")


async def run_flows(pool: Pool, home: Path, endpoint: str) -> list[RunSummary]:
    observer = OtelObserver(otlp_exporter(endpoint), content=True)
    summaries = []
    async with Session(pool, home=home, cache=False, observers=[observer]) as session:
        for flow, question in QUESTIONS.items():
            try:
                summaries.append(await session.run(WORKFLOWS / flow, {"question": question}))
            except RunError as err:
                assert err.summary is not None
                summaries.append(err.summary)
    observer.close()
    return summaries


def check(spans: list[dict[str, Any]], summaries: list[RunSummary]) -> list[str]:
    """What Phoenix shows that it should not, as sentences (none when all is well)."""
    problems = []
    for summary in summaries:
        roots = [s for s in spans if json.loads(s["attributes"]).get("baton", {}).get("run", {}).get("id") == summary.run_id]
        if len(roots) != 1:
            problems.append(f"run {summary.run_id}: {len(roots)} root spans in Phoenix")
            continue
        root = roots[0]
        trace = [s for s in spans if s["trace"]["traceId"] == root["trace"]["traceId"]]
        if not (root["input"] and QUESTIONS[Path(summary.flow_file).name] in root["input"]["value"]):
            problems.append(f"{summary.flow}: the trace list's input is {root['input']}")
        if not (root["output"] and root["output"]["value"] == summary.output):
            problems.append(f"{summary.flow}: the trace list's output is {root['output']}")
        calls = [s for s in trace if s["spanKind"] == "llm"]
        attempts = [a for step in summary.steps.values() for a in step.attempts]
        if len(calls) != len(attempts):
            problems.append(f"{summary.flow}: {len(calls)} LLM spans for {len(attempts)} calls")
        for call in calls:
            text = json.dumps(call["input"]) + json.dumps(call["output"])
            answered = call["tokenCountCompletion"]
            if answered and (not call["input"] or not call["output"] or "smollm" in text):
                problems.append(f"{summary.flow}: {call['name']} shows input {call['input']} and output {call['output']}")
            booked = json.loads(call["attributes"])["baton"]["cost"]["usd"]
            shown = (call["costSummary"] or {}).get("total", {}).get("cost") or 0.0
            if abs(shown - booked) > 1e-9:
                problems.append(f"{summary.flow}: {call['name']} costs ${shown} in Phoenix, ${booked} in Baton")
    return problems


def screenshots(url: str, project: str, trace_id: str, call: str, fuse_trace: str, folder: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,950", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    try:
        trace = f"{url}/projects/{project}/traces/{trace_id}"
        for page, name in ((f"{url}/projects/{project}/traces", "phoenix-traces.png"), (trace, "phoenix-trace.png"),
                           (f"{trace}?selectedSpanNodeId={call}", "phoenix-call.png"),
                           (f"{url}/projects/{project}/traces/{fuse_trace}", "phoenix-fuse.png")):
            driver.get(page)
            time.sleep(6)  # a single-page app: its data arrives after the page
            driver.save_screenshot(str(folder / name))
            print(f"wrote {folder / name}")
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phoenix", required=True, help="the `phoenix` command of a virtualenv with arize-phoenix")
    parser.add_argument("--shots", type=Path, help="write screenshots of Phoenix's pages here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="baton-phoenix-"))
    port, grpc = free_port(), free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(work / "phoenix"), "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc),
           "PHOENIX_HOST": "127.0.0.1"}
    log = (work / "phoenix.log").open("w")
    phoenix = subprocess.Popen([args.phoenix, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            print(f"Phoenix did not start; its log: {work / 'phoenix.log'}", file=sys.stderr)
            return 1
        with ChatServer(responder=reply, latency=0.05) as server:
            pool = loopback_pool(server.url)
            for model in phoenix_prices(pool):
                answer = httpx.post(f"{url}/graphql", json={"query": CREATE_MODEL, "variables": {"input": model}}, timeout=30).json()
                assert "errors" not in answer, answer
            time.sleep(8)  # Phoenix reads its models every 5 s, and prices a span with the models it knew when it came
            summaries = asyncio.run(run_flows(pool, work / "home", f"{url}/v1/traces"))
        time.sleep(8)  # Phoenix writes spans and computes their costs in batches, every few seconds
        data = httpx.post(f"{url}/graphql", json={"query": SPANS}, timeout=30).json()
        projects = [e["node"] for e in data["data"]["projects"]["edges"]]
        spans = [e["node"] for p in projects for e in p["spans"]["edges"]]
        problems = check(spans, summaries)
        for summary in summaries:
            print(f"{summary.flow}: {summary.status}, {summary.calls} calls, ${summary.cost:.6f} booked")
        print(f"Phoenix holds {len(spans)} spans in {len(projects)} project(s)")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        if args.shots is not None:
            project = next(p for p in projects if p["spans"]["edges"])
            route_root = next(s for s in spans if s["parentId"] is None and "route_label" in s["name"])
            call = next(s for s in spans if s["trace"]["traceId"] == route_root["trace"]["traceId"] and s["name"] == "chat coder")
            fuse_root = next(s for s in spans if s["parentId"] is None and "fuse_panel" in s["name"])
            screenshots(url, project["id"], route_root["trace"]["traceId"], call["id"], fuse_root["trace"]["traceId"], args.shots)
        return 1 if problems else 0
    finally:
        phoenix.terminate()
        phoenix.wait(30)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
