"""Small helpers for tests: write a flow, run it, normalise a summary for snapshots; npm packages for the JS tests."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.errors import FlowError
from engine.loading import check_source
from engine.model import Flow
from engine.pool import Pool
from engine.run.trace import RunSummary
from engine.session import run_flow


def flow_from(text: str, pool: Pool, name: str = "t.flow") -> Flow:
    result = check_source(text, pool, name)
    if result.flow is None:
        raise FlowError(result.diagnostics, text)
    return result.flow


def run(flow: Flow | str | Path, inputs: dict[str, str], pool: Pool, home: Path, **kw: Any) -> RunSummary:
    return asyncio.run(run_flow(flow, inputs, pool=pool, home=home, **kw))


def shape(summary: RunSummary) -> dict[str, Any]:
    """The deterministic part of a run summary (no ids, clocks or latencies)."""
    return {
        "status": summary.status,
        "output_step": summary.output_step,
        "calls": summary.calls,
        "cost": round(summary.cost, 8),
        "tokens": [summary.input_tokens, summary.output_tokens],
        "steps": {
            name: {
                "status": s.status, "model": s.model, "reason": s.reason,
                "attempts": [(a.role, a.alias, a.status, a.cause) for a in s.attempts],
                **({"decision": [s.decision.matched, s.decision.chosen, s.decision.skipped]} if s.decision else {}),
                **({"rounds": s.rounds} if s.rounds else {}),
            }
            for name, s in sorted(summary.steps.items())
        },
    }


def smart_reply(body: dict[str, Any]) -> str:
    """A responder that answers the reference flows the way a competent model would."""
    content = body["messages"][-1]["content"]
    task = content.rsplit("Your assigned subtask:", 1)[-1]
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema:  # a step that `returns:` fields: an object that fits its schema
        return json.dumps({name: _fitting(sub) for name, sub in schema.get("properties", {}).items()})
    if "Reply with the label only" in task:
        return "code"
    if "Reply easy, hard or hardest" in task:
        return "hardest"
    if "Reply ACCEPT" in task:
        return "ACCEPT: the draft is right"
    if "```python" in task:
        return "```python\nprint(sum(range(10)))\n```"
    if "ANSWER:" in task:
        return "Four.\nANSWER: 4"
    return f"[{body['model']}] {task.strip()[:60]}"


def write_grid_files(folder: Path, items: Sequence[Mapping[str, object]], tables: Mapping[str, Sequence[Mapping[str, object]]],
                     model_ids: Sequence[str]) -> None:
    """A recorded grid in the ZeroEval layout: `items.jsonl`, and each table as a CSV of `id` and a column per model id."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    for name, rows in tables.items():
        with open(folder / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", *model_ids])
            writer.writeheader()
            writer.writerows(rows)


def _fitting(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    return {"string": "databases", "number": 0.5, "integer": 3, "boolean": True, "array": [], "object": {}}.get(schema.get("type", ""))


def npm_packages(request: pytest.FixtureRequest, name: str, packages: tuple[str, ...]) -> Path:
    """A folder in pytest's cache with `packages` installed from the npm registry (once; kept across runs). Without node
    and npm the test is skipped, or fails under CI, whose machine must have them (.ci/run installs them)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("needs node and npm (apt-get install nodejs npm)")
        pytest.skip("needs node and npm")
    folder = Path(str(request.config.cache.mkdir(name)))  # type: ignore[union-attr]
    if not all((folder / "node_modules" / p.rsplit("@", 1)[0]).is_dir() for p in packages):
        (folder / "package.json").write_text(json.dumps({"name": name, "private": True, "type": "module"}))
        proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", *packages], cwd=folder,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    return folder
