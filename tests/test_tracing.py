"""OpenTelemetry export against a real OTLP/HTTP receiver on loopback (protobuf decoded with opentelemetry-proto).

Runs go through the real HTTP provider against the loopback chat server, so the calls, their
timings and their faults are real. Live spans (an `OtelObserver` on the session) and spans
exported afterwards from the record (`baton trace export`) must be the same tree.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.proto")

from engine.errors import RunError  # noqa: E402
from engine.run.trace import RunSummary  # noqa: E402
from engine.session import Session  # noqa: E402
from engine.testing.chat_server import ChatServer, Reply  # noqa: E402
from engine.tracing.otel import OtelObserver, otlp_exporter  # noqa: E402
from tests.conftest import ROOT, WORKFLOWS, loopback_pool  # noqa: E402
from tests.otlp_receiver import OtlpReceiver, Span  # noqa: E402

QUESTION = "Which sorting algorithm is stable? (a private question 7f3a)"
CLIENT = 3  # SpanKind.CLIENT in the protobuf enum (INTERNAL is 1)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer(latency=0.03) as s:
        s.script["fast"] = [Reply(text="code")]
        s.script["gemini"] = [Reply(status=503, text="upstream overloaded")]
        yield s


async def _no_sleep(_seconds: float) -> None:
    return None


def traced_run(server: ChatServer, receiver: OtlpReceiver, home: Path, flow: str, content: bool = False,
               timeout: float | None = None) -> tuple[RunSummary, list[Span]]:
    observer = OtelObserver(otlp_exporter(receiver.url, timeout=timeout), content=content)

    async def go() -> RunSummary:
        async with Session(loopback_pool(server.url), home=home, cache=False, observers=[observer], sleep=_no_sleep) as session:
            try:
                return await session.run(WORKFLOWS / flow, {"question": QUESTION})
            except RunError as err:
                assert err.summary is not None
                return err.summary

    summary = asyncio.run(go())
    observer.close()
    exported = any(s.attributes.get("baton.run.id") == summary.run_id for s in receiver.spans)
    return summary, spans_of(receiver, summary.run_id) if exported else []  # a collector that refused everything has none


def spans_of(receiver: OtlpReceiver, run_id: str) -> list[Span]:
    roots = [s for s in receiver.spans if s.attributes.get("baton.run.id") == run_id]
    assert len(roots) == 1, [s.name for s in receiver.spans]
    return [s for s in receiver.spans if s.trace_id == roots[0].trace_id]


def tree(spans: list[Span]) -> dict[str, Any]:
    by_id = {s.span_id: s for s in spans}
    root = next(s for s in spans if not s.parent_id)
    children: dict[str, list[Span]] = {}
    for s in spans:
        if s.parent_id:
            assert s.parent_id in by_id, f"{s.name} has a parent that was not exported"
            children.setdefault(s.parent_id, []).append(s)
    return {"root": root, "children": children}


def assert_tokens_are_what_the_server_billed(spans: list[Span], server: ChatServer) -> None:
    """The call spans' tokens add up to the loopback server's own ledger of what it processed, not only to Baton's books."""
    calls = [s for s in spans if s.kind == CLIENT]
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in calls) == sum(b.prompt_tokens for b in server.bills)
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in calls) == sum(b.completion_tokens for b in server.bills)


def within(child: Span, parent: Span, slack_ns: int = 2_000_000) -> bool:
    return child.start_ns >= parent.start_ns - slack_ns and child.end_ns <= parent.end_ns + slack_ns


def baton(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {"NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=90, env=env)


def shape(spans: list[Span]) -> list[tuple[str, str, str, int, int]]:
    """Each span as (name, parent's name, attributes, start, end): what live and after-the-fact export must agree on."""
    by_id = {s.span_id: s for s in spans}
    return sorted((s.name, by_id[s.parent_id].name if s.parent_id else "", json.dumps(s.attributes, sort_keys=True), s.start_ns, s.end_ns)
                  for s in spans)


def test_a_route_run_is_a_workflow_span_with_a_span_per_node_and_a_client_span_per_call(
        server: ChatServer, receiver: OtlpReceiver, tmp_path: Path) -> None:
    summary, spans = traced_run(server, receiver, tmp_path / "home", "route_label.flow")
    assert summary.status == "ok"
    t = tree(spans)
    root: Span = t["root"]
    assert root.name == "invoke_workflow route_label" and root.service == "baton" and root.kind == 1
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["baton.run.status"] == "ok" and root.attributes["openinference.span.kind"] == "CHAIN"
    assert root.attributes["baton.cost.usd"] == pytest.approx(summary.cost, rel=1e-6)
    nodes = {s.name: s for s in t["children"][root.span_id]}
    assert set(nodes) == {"invoke_agent triage", "invoke_agent solve_code", "invoke_agent solved"}  # the skipped branches ran no span
    route = nodes["invoke_agent solved"].attributes
    assert route["baton.step.kind"] == "route" and route["baton.route.chosen"] == "solve_code"
    assert route["baton.route.skipped"] == ["solve_math", "solve_other"] and route["baton.route.label"] == "code"
    assert "label" in route["baton.step.reason"] and route["langfuse.observation.type"] == "agent"
    triage = nodes["invoke_agent triage"]
    assert triage.attributes["gen_ai.agent.name"] == "triage" and triage.attributes["openinference.span.kind"] == "AGENT"
    (call,) = t["children"][triage.span_id]
    attempt = summary.steps["triage"].attempts[0]
    assert call.name == "chat fast" and call.kind == CLIENT
    assert call.attributes["gen_ai.operation.name"] == "chat" and call.attributes["gen_ai.provider.name"] == "loop"
    assert call.attributes["gen_ai.request.model"] == "fast" and call.attributes["gen_ai.response.model"] == "fast"
    assert call.attributes["gen_ai.usage.input_tokens"] == attempt.input_tokens > 0
    assert call.attributes["gen_ai.usage.output_tokens"] == attempt.output_tokens
    assert call.attributes["baton.call.why"] == "first call" and call.attributes["baton.cache.hit"] is False
    assert call.attributes["openinference.span.kind"] == "LLM" and call.attributes["langfuse.observation.type"] == "generation"
    assert call.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    # timings: the record's, nested, and as long as the calls were (the server waits 30 ms a call)
    for parent_id, kids in t["children"].items():
        parent = next(s for s in spans if s.span_id == parent_id)
        assert all(within(k, parent) for k in kids), parent.name
    assert call.seconds == pytest.approx(attempt.latency_ms / 1000, abs=0.002) and call.seconds >= 0.03
    assert root.seconds == pytest.approx(summary.finished - summary.started, abs=0.002)
    assert nodes["invoke_agent triage"].end_ns <= nodes["invoke_agent solve_code"].start_ns + 2_000_000  # the branch waited for triage
    assert_tokens_are_what_the_server_billed(spans, server)


def test_a_fuse_run_shows_every_panel_member_its_failed_calls_and_the_judge(server: ChatServer, receiver: OtlpReceiver, tmp_path: Path) -> None:
    summary, spans = traced_run(server, receiver, tmp_path / "home", "fuse_panel.flow")
    assert summary.status == "ok"
    t = tree(spans)
    (node,) = t["children"][t["root"].span_id]
    assert node.name == "invoke_agent answer" and node.attributes["baton.step.kind"] == "fuse"
    calls = t["children"][node.span_id]
    assert len(calls) == len(summary.steps["answer"].attempts)
    by_role: dict[str, list[Span]] = {}
    for c in sorted(calls, key=lambda c: c.start_ns):
        by_role.setdefault(c.attributes["baton.call.role"], []).append(c)
    assert set(by_role) == {"panel[0]", "panel[1]", "panel[2]", "judge"}
    failed = by_role["panel[2]"]
    assert len(failed) == 3 and all(c.status_code == 2 and c.attributes["error.type"] == "server_error" for c in failed)  # ERROR
    assert [c.attributes["baton.call.why"] for c in failed] == ["first call", "retry after server_error", "retry after server_error"]
    assert all("gen_ai.response.model" not in c.attributes for c in failed)  # no model answered
    assert failed[0].attributes["langfuse.observation.level"] == "ERROR"
    (judge,) = by_role["judge"]
    assert judge.name == "chat gpt" and judge.status_code != 2
    assert judge.start_ns >= max(c.end_ns for role, cs in by_role.items() if role != "judge" for c in cs) - 2_000_000
    firsts = [by_role[r][0] for r in ("panel[0]", "panel[1]", "panel[2]")]
    assert max(c.start_ns for c in firsts) < min(c.end_ns for c in firsts)  # in parallel: all were in flight at once
    assert_tokens_are_what_the_server_billed(spans, server)  # the three refused calls billed nothing, on either side


def test_no_prompt_or_reply_text_is_exported_without_the_opt_in(server: ChatServer, receiver: OtlpReceiver, tmp_path: Path) -> None:
    _summary, spans = traced_run(server, receiver, tmp_path / "home", "route_label.flow")
    exported = json.dumps([s.attributes for s in spans])
    assert "7f3a" not in exported and "answered:" not in exported
    assert not any(k in a for a in (s.attributes for s in spans) for k in ("gen_ai.input.messages", "input.value", "output.value"))
    _summary, spans = traced_run(server, receiver, tmp_path / "home2", "route_label.flow", content=True)
    calls = [s for s in spans if s.name == "chat coder"]
    # the GenAI semantic conventions' message shape (text in `parts`), which Phoenix reads: with `content` it showed
    # the model name as the input, because the text was in a `content` field it does not look for
    sent = json.loads(calls[0].attributes["gen_ai.input.messages"])
    assert sent[-1]["role"] == "user" and sent[-1]["parts"][0]["type"] == "text" and "7f3a" in sent[-1]["parts"][0]["content"]
    (out,) = json.loads(calls[0].attributes["gen_ai.output.messages"])
    assert out["role"] == "assistant" and out["finish_reason"] == "stop" and "answered:" in out["parts"][0]["content"]
    # and the call's own input and output, which a span list shows (Phoenix made `{"model": ...}` the output)
    assert "7f3a" in calls[0].attributes["input.value"] and calls[0].attributes["output.value"] == out["parts"][0]["content"]
    (root,) = [s for s in spans if s.name.startswith("invoke_workflow")]
    assert root.attributes["output.value"] == _summary.output  # the trace list shows the run's question and answer
    assert root.attributes["input.value"] == QUESTION
    from engine.records.explain import load_recorded_run
    from engine.tracing.spans import run_spans

    recorded = load_recorded_run(_summary.run_id, tmp_path / "home2")  # exported afterwards: the question too
    exported = run_spans(recorded.summary, set(recorded.top_level()).__contains__, recorded.pool, True, recorded.inputs)
    assert exported.attributes["input.value"] == QUESTION and exported.attributes["output.value"] == _summary.output


def test_a_recorded_run_exported_afterwards_is_the_tree_that_was_sent_live(server: ChatServer, receiver: OtlpReceiver, tmp_path: Path) -> None:
    home = tmp_path / "home"
    for flow in ("route_label.flow", "fuse_panel.flow"):
        summary, live = traced_run(server, receiver, home, flow)
        with OtlpReceiver() as later:
            proc = baton("trace", "export", summary.run_id, "--otlp", later.url, "--home", str(home))
            assert proc.returncode == 0, proc.stderr
            assert f"exported {len(live)} spans of run {summary.run_id}" in proc.stdout
            replayed = spans_of(later, summary.run_id)
        assert shape(replayed) == shape(live)
    out = tmp_path / "spans.jsonl"
    proc = baton("trace", "export", summary.run_id, "--jsonl", str(out), "--home", str(home))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # OTLP/JSON, as collectors and backends import it: requests of resourceSpans, hex ids, integer enums, nanosecond strings
    spans = [s for line in lines for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert len(spans) == len(live) and {s["name"] for s in spans} == {s.name for s in live}
    assert all(re.fullmatch(r"[0-9a-f]{32}", s["traceId"]) and re.fullmatch(r"[0-9a-f]{16}", s["spanId"]) for s in spans)
    assert {s["kind"] for s in spans} <= {1, 3} and all(s["startTimeUnixNano"].isdigit() for s in spans)
    resource = {a["key"]: a["value"] for a in lines[0]["resourceSpans"][0]["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "baton"}
    children = [s for s in spans if s.get("parentSpanId")]
    assert children and {c["parentSpanId"] for c in children} <= {s["spanId"] for s in spans}


def test_export_failures_are_reported_not_swallowed(server: ChatServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with OtlpReceiver() as receiver:
        summary, _spans = traced_run(server, receiver, home, "route_label.flow")
    with OtlpReceiver(status=400) as refusing:
        proc = baton("trace", "export", summary.run_id, "--otlp", refusing.url, "--home", str(home))
    assert proc.returncode == 1 and "did not take the" in proc.stderr and "Traceback" not in proc.stderr
    proc = baton("trace", "export", "nope", "--jsonl", str(tmp_path / "x.jsonl"), "--home", str(home))
    assert proc.returncode == 2 and "no run 'nope'" in proc.stderr


def test_a_collector_that_is_down_never_fails_a_run(server: ChatServer, tmp_path: Path) -> None:
    """The live exporter drops what it cannot send; the run and its record are untouched."""
    with OtlpReceiver(status=503) as down:
        summary, spans = traced_run(server, down, tmp_path / "home", "route_label.flow", timeout=1.0)
    assert summary.status == "ok" and summary.output and spans == [] and down.requests >= 1


def test_baton_run_exports_live_when_the_environment_names_a_collector(server: ChatServer, receiver: OtlpReceiver, tmp_path: Path) -> None:
    from tests.serve_harness import write_pool

    pool = write_pool(server.url, tmp_path / "pool.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {"NO_COLOR": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "run", str(WORKFLOWS / "route_label.flow"), "--pool", str(pool),
                           "-i", f"question={QUESTION}", "--home", str(tmp_path / "home"), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=90, env=env)
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["summary"]["run_id"]
    names = {s.name for s in spans_of(receiver, run_id)}
    assert {"invoke_workflow route_label", "invoke_agent triage", "chat fast", "chat coder"} <= names
    proc = baton("run", str(WORKFLOWS / "route_label.flow"), "--pool", str(pool), "-i", "question=q", "--otel-content")
    assert proc.returncode == 2 and "--otel-content needs --otel" in proc.stderr


BLOCK_OTEL = """
import sys
class NoOtel:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, NoOtel())
from engine.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_extra_otel_is_a_clear_error_or_a_warning(server: ChatServer, tmp_path: Path) -> None:
    from tests.serve_harness import write_pool

    pool = write_pool(server.url, tmp_path / "pool.toml")
    args = ["run", str(WORKFLOWS / "hello.flow"), "--pool", str(pool), "-i", "question=q", "--home", str(tmp_path / "home")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {"NO_COLOR": "1"}

    def run(extra: list[str], more_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", BLOCK_OTEL, *args, *extra], cwd=ROOT, capture_output=True, text=True,
                              timeout=90, env=env | more_env)

    asked = run(["--otel"], {})
    assert asked.returncode == 2 and "pip install 'baton[otel]'" in asked.stderr and "Traceback" not in asked.stderr
    from_env = run([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert from_env.returncode == 0, from_env.stderr
    assert "warning: OTEL_EXPORTER_OTLP_ENDPOINT is set, but spans are not exported" in from_env.stderr
    proc = subprocess.run([sys.executable, "-c", BLOCK_OTEL, "trace", "export", "x", "--jsonl", "f"], cwd=ROOT, capture_output=True,
                          text=True, timeout=90, env=env)
    assert proc.returncode == 2 and "baton[otel]" in proc.stderr
