"""`baton graph`, `baton validate`, `baton fmt` as a user runs them: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.graph import build_graph, to_dot, to_json, to_mermaid
from engine.loading import load_flow
from tests.conftest import ROOT, WORKFLOWS

FLOWS = sorted(WORKFLOWS.glob("*.flow"))


def baton(*args: str, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"} | {"NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env, input=stdin)


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_graph_renders_in_all_formats(path: Path, snapshot) -> None:  # type: ignore[no-untyped-def]
    flow, _pool = load_flow(path)
    g = build_graph(flow)
    assert all(d["kind"] for _n, d in g.nodes(data=True))
    mermaid, dot, js = to_mermaid(flow), to_dot(flow), to_json(flow)
    assert mermaid.startswith("flowchart TD")
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    data = json.loads(js)
    assert {n["id"] for n in data["nodes"]} == set(g.nodes)
    assert (mermaid, dot, data) == snapshot


def test_cli_graph_formats() -> None:
    for fmt in ("mermaid", "dot", "json"):
        proc = baton("graph", "workflows/layered.flow", "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert "specialist" in proc.stdout


def test_validate_all_reference_flows_prints_worst_case() -> None:
    proc = baton("validate", *[str(p.relative_to(ROOT)) for p in FLOWS])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(FLOWS)
    assert all(": ok: " in line and "worst case" in line and "calls" in line and "$" in line for line in lines)


def test_validate_reads_a_flow_from_standard_input() -> None:
    """`baton validate -`, for a flow piped from a planner or an editor, as `baton fmt -` already reads one."""
    good = baton("validate", "-", stdin=(ROOT / "workflows" / "hello.flow").read_text())
    assert good.returncode == 0 and good.stdout.startswith("<stdin>: ok: 1 node;")
    bad = baton("validate", "-", stdin='input q\nstep a { model: lcoal  task: "{q}" }\n')
    assert bad.returncode == 1 and "<stdin>:2:17: error[E202]: unknown model `lcoal`" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (("eval", "workflows/hello.flow", "--dataset", "x.jsonl", "--concurrency", "0"), "--concurrency: must be at least 1, got 0"),
    (("eval", "workflows/hello.flow", "--dataset", "x.jsonl", "--limit", "0"), "--limit: must be at least 1, got 0"),
    (("runs", "--limit", "-1"), "--limit: must be at least 1, got -1"),
    (("plan", "x", "--repairs", "-1"), "--repairs: must be at least 0, got -1"),
    (("runs", "--limit", "ten"), "--limit: expected a whole number, got 'ten'"),
])
def test_counts_out_of_range_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    """`--concurrency 0` used to wait forever, `--limit 0` ran an item, `--repairs -1` planned nothing."""
    proc = baton(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_validate_json_report() -> None:
    proc = baton("validate", "--json", "tests/invalid/E203_unknown_property.flow", "workflows/solo.flow")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["valid"] is False and report["error_count"] == 1 and report["warning_count"] == 0
    d = report["diagnostics"][0]
    assert (d["code"], d["severity"], d["range"]["start"]) == ("E203", "error", {"line": 4, "column": 3})
    solo = report["files"][1]
    assert solo["valid"] is True and solo["worst_case"]["calls"] == 3


def test_validate_strict_turns_warnings_into_failure() -> None:
    assert baton("validate", "tests/invalid/W404_unused_input.flow").returncode == 0
    assert baton("validate", "--strict", "tests/invalid/W404_unused_input.flow").returncode == 1


def test_usage_errors_exit_2() -> None:
    assert baton("validate").returncode == 2
    assert baton("nonsense").returncode == 2
    proc = baton("validate", "workflows/solo.flow", "--pool", "/nonexistent/pool.toml")
    assert proc.returncode == 2 and "cannot read pool file" in proc.stderr and "Traceback" not in proc.stderr


def test_fmt_check_on_reference_flows_and_rewrite(tmp_path: Path) -> None:
    proc = baton("fmt", "--check", *[str(p.relative_to(ROOT)) for p in FLOWS])
    assert proc.returncode == 0, proc.stderr
    messy = tmp_path / "m.flow"
    messy.write_text('input q step a { model: local task: "{q}" }')
    assert baton("fmt", "--check", str(messy)).returncode == 1
    assert baton("fmt", str(messy)).returncode == 0
    assert messy.read_text() == 'input q\n\nstep a {\n  model: local\n  task: "{q}"\n}\n'
    assert baton("fmt", "--check", str(messy)).returncode == 0


def test_run_with_bad_inputs_is_a_clear_usage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[1, 2")
    proc = baton("run", "workflows/hello.flow", "--inputs", str(tmp_path / "bad.json"))
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    proc = baton("run", "workflows/hello.flow", "--input", "nope=1", "--home", str(tmp_path))
    assert proc.returncode == 2 and "missing input: question" in proc.stderr and "unknown input: nope" in proc.stderr
    proc = baton("run", "tests/invalid/E202_unknown_model.flow", "--home", str(tmp_path))
    assert proc.returncode == 2 and "error[E202]" in proc.stderr
    proc = baton("run", "workflows/hello.flow", "-i", "question=a", "-i", "question=b", "--home", str(tmp_path))
    assert proc.returncode == 2 and "--input question is given twice" in proc.stderr
    proc = baton("run", "workflows/hello.flow", "--resume", "20261128-000000-000000", "--home", str(tmp_path))
    assert proc.returncode == 2 and "not both" in proc.stderr  # the file would have been ignored
    proc = baton("run", "--resume", "20261128-000000-000000", "-i", "question=a", "--home", str(tmp_path))
    assert proc.returncode == 2 and "uses the inputs the run recorded" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_show_and_runs_on_a_recorded_run(tmp_path: Path) -> None:
    from engine.pool import load_pool
    from engine.providers.scripted import ScriptedProvider
    from engine.session import run_flow_sync

    summary = run_flow_sync(WORKFLOWS / "route_label.flow", {"question": "write code"}, pool=load_pool(WORKFLOWS / "models.toml"),
                            providers={"*": ScriptedProvider(script={"triage": "code"})}, home=tmp_path)
    runs = baton("runs", "--home", str(tmp_path))
    assert summary.run_id in runs.stdout and "route_label" in runs.stdout
    show = baton("show", summary.run_id[:17], "--home", str(tmp_path))
    assert show.returncode == 0, show.stderr
    text = show.stdout
    assert "route solved: ok  model coder" in text
    assert 'decision: label \'code\', label "code" (exact) -> solve_code; skipped: solve_math, solve_other' in text
    assert "step solve_math: skipped" in text
    assert baton("show", "nope", "--home", str(tmp_path)).returncode == 2
    # a summary cut short (a run killed while writing it): listed and shown from the journal, not hidden, no traceback
    (tmp_path / "runs" / summary.run_id / "summary.json").write_text('{"run_id": "20')
    runs = baton("runs", "--home", str(tmp_path))
    assert summary.run_id in runs.stdout
    show = baton("show", summary.run_id, "--home", str(tmp_path))
    assert show.returncode == 0 and "Traceback" not in show.stderr
    assert "summary.json cannot be read (not valid JSON)" in show.stdout and "route solved: ok  model coder" in show.stdout


def test_models_check_names_a_missing_key_without_sending_and_checks_all_at_once(tmp_path: Path) -> None:
    from engine.testing.chat_server import ChatServer

    with ChatServer() as server:
        pool = tmp_path / "models.toml"
        pool.write_text(f'[providers.open]\nkind = "openai"\nbase_url = "{server.url}"\n\n'
                        f'[providers.keyed]\nkind = "openai"\nbase_url = "{server.url}"\napi_key_env = "BATON_TEST_KEY_NOT_SET"\n\n'
                        '[models.a]\nprovider = "open"\nid = "a"\n\n[models.b]\nprovider = "keyed"\nid = "b"\n')
        proc = baton("models", "--check", "--pool", str(pool))
        assert proc.returncode == 1, proc.stderr
        assert "a: reachable" in proc.stdout
        assert "b: NO KEY: $BATON_TEST_KEY_NOT_SET is not set (nothing sent)" in proc.stdout
        assert server.count("b") == 0 and server.count("a") == 1
