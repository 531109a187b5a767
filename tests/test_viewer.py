"""The run viewer's pages as HTML: what each node says, escaping, the prompts as sent, the layout, `baton view`."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.records.explain import call_causes, critical_path, load_recorded_run
from engine.records.layout import layout
from engine.records.run_page import render_run_page
from engine.run.prompt import recorded_messages
from tests.conftest import ROOT
from tests.viewer_runs import KEY, KEY_VARIABLE, XSS, record_run


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    yield


def page(kind: str, home: Path) -> tuple[str, str]:
    summary, _provider = record_run(kind, home)
    return summary.run_id, render_run_page(load_recorded_run(summary.run_id, home))


def node(html_text: str, step: str) -> str:
    start = html_text.index('<g class="node')
    at = html_text.index(f'data-step="{step}"', start)
    begin = html_text.rindex('<g class="node', 0, at)
    ends = [i for i in (html_text.find('<g class="node', at), html_text.find("</svg>", at)) if i >= 0]
    return html_text[begin: min(ends)]


def test_a_route_run_shows_the_decision_the_skipped_branches_and_the_critical_path(tmp_path: Path, keyed: None) -> None:
    _run_id, text = page("route", tmp_path)
    assert 'data-status="ok" data-model="fast"' in node(text, "triage")
    for skipped in ("solve_math", "solve_other"):
        assert 'data-status="skipped"' in node(text, skipped)
    solved = node(text, "solved")
    assert "\u2192 solve_code" in solved and "skipped: solve_math," in solved and "solve_other" in solved and "critical" in solved
    assert "critical" in node(text, "triage") and "critical" not in node(text, "solve_math")
    assert 'class="edge branch skipped' in text  # the arms not taken are drawn as such
    assert "decision: label &#x27;code&#x27;" in text


def test_a_fuse_node_shows_every_panel_member_the_failed_one_and_the_judge(tmp_path: Path, keyed: None) -> None:
    _run_id, text = page("fuse", tmp_path)
    box = node(text, "answer")
    for role, ok, label in (("panel[0]", "1", "panel[0] gpt"), ("panel[1]", "1", "panel[1] claude"),
                           ("panel[2]", "0", "\u2717 server_error"), ("judge", "1", "judge gpt")):
        member = box[box.index(f'<g class="member" data-role="{role}"'):]
        member = member[: member.index("</g>")]
        assert f'data-ok="{ok}"' in member and label in member, role
    assert "retry after server_error" in text and "HTTP 503 upstream overloaded" in text
    assert "panel answer 2 of 3 (model claude)" in text  # what the judge was shown, block by block


def test_a_loop_shows_each_round_and_its_verdict(tmp_path: Path, keyed: None) -> None:
    _run_id, text = page("loop", tmp_path)
    box = node(text, "refine")
    assert "loop: draft \u21c4 check" in box
    assert "round 1 \u2717 REVISE: show the" in box and "round 3 \u2713 ACCEPT" in box
    for role in ("r1 draft", "r2 check", "r3 draft"):
        assert f"<b>{role}</b> prompt" in text
    assert "feedback from the verifier on the previous round" in text  # round 2's draft saw round 1's verdict


def test_a_failed_run_says_where_and_why_and_what_never_ran(tmp_path: Path, keyed: None) -> None:
    _run_id, text = page("failed", tmp_path)
    assert 'data-status="failed"' in node(text, "code") and 'data-status="not_run"' in node(text, "review")
    assert 'class="badge failed"' in text and "expect matches /```python/ failed" in html.unescape(text)
    assert 'data-first="code"' in text  # the page opens on the step that failed


def test_model_text_is_escaped_everywhere_and_keys_never_appear(tmp_path: Path, keyed: None) -> None:
    for kind in ("route", "failed"):
        _run_id, text = page(kind, tmp_path / kind)
        assert XSS not in text and "<script>window" not in text and "<img" not in text and "</textarea>" not in text
        assert html.escape(XSS, quote=True) in text
        assert KEY not in text and KEY[:12] not in text
        assert text.count("<script>") == 1  # the page's own, allowed by its content security policy's hash
        assert "script-src 'sha256-" in text


def test_the_recorded_prompts_rebuild_the_messages_that_were_sent(tmp_path: Path, keyed: None) -> None:
    for kind in ("route", "fuse", "loop"):
        summary, provider = record_run(kind, tmp_path / kind)
        sent = {tuple(tuple(sorted(m.items())) for m in r.messages) for r in provider.requests}
        rebuilt = {tuple(tuple(sorted(m.items())) for m in recorded_messages(p)) for s in summary.steps.values() for p in s.prompts}
        assert sent <= rebuilt, kind  # every request a model got is one the record can show exactly


def test_call_causes_and_the_critical_path(tmp_path: Path, keyed: None) -> None:
    summary, _ = record_run("fuse", tmp_path)
    causes = call_causes(summary.steps["answer"])
    assert causes.count("first call") == 4 and causes.count("retry after server_error") == 2
    summary, _ = record_run("route", tmp_path / "route")
    assert critical_path(load_recorded_run(summary.run_id, tmp_path / "route")) == ["triage", "solve_code", "solved"]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 24), st.floats(0.05, 0.5), st.integers(0, 10_000))
def test_layout_places_boxes_apart_and_every_edge_downwards(n: int, p: float, seed: int) -> None:
    g = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    dag = nx.DiGraph([(u, v) for u, v in g.edges if u < v])
    dag.add_nodes_from(range(n))
    dag = nx.relabel_nodes(dag, {i: f"n{i}" for i in range(n)})
    placed = layout(dag, lambda name: 40 + 16 * (int(name[1:]) % 3))
    boxes = list(placed.boxes.values())
    for i, a in enumerate(boxes):
        assert a.x >= 0 and a.x + a.w <= placed.width and a.y + a.h <= placed.height
        for b in boxes[i + 1:]:
            assert a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y, "boxes overlap"
    for (u, v), course in placed.routes.items():
        assert course[0] == placed.boxes[u].bottom or course[0] in placed.trunks[u], "an edge leaves from its node or its lane"
        assert course[-1] == placed.boxes[v].top and course[0][1] <= course[-1][1], "an edge goes up"
    for u, trunk in placed.trunks.items():
        assert trunk[0] == placed.boxes[u].bottom
        assert all(y1 <= y2 for (_, y1), (_, y2) in zip(trunk, trunk[1:], strict=False)), "a lane goes up"
        for x, y in trunk[1:]:  # a lane passes beside the boxes of the layers it skips
            assert not any(b.x < x < b.x + b.w and b.y < y < b.y + b.h for b in boxes)


def baton(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"} | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=90, env=env)


def test_baton_view_writes_a_run_page_and_a_filtered_run_list(tmp_path: Path, keyed: None) -> None:
    home = tmp_path / "home"
    route, _ = record_run("route", home)
    failed, _ = record_run("failed", home)
    proc = baton("view", route.run_id, "--home", str(home), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / f"{route.run_id}.html"
    assert proc.stdout.strip() == f"{route.run_id}.html" and 'data-step="solved"' in written.read_text()
    proc = baton("view", "--home", str(home), "--status", "failed", "-o", "list.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listing = (tmp_path / "list.html").read_text()
    assert f'href="{failed.run_id}.html"' in listing and route.run_id not in listing and "status failed" in listing
    linked = tmp_path / f"{failed.run_id}.html"  # every link of the list leads to a page written beside it
    assert linked.is_file() and failed.run_id in linked.read_text()
    assert all('<meta name="viewport" content="width=device-width, initial-scale=1">' in p.read_text()  # laid out for a phone
               for p in (tmp_path / "list.html", linked, written))
    proc = baton("view", "nope", "--home", str(home), cwd=tmp_path)
    assert proc.returncode == 2 and "no run 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = baton("view", route.run_id, "--home", str(home), "-o", str(tmp_path / "no" / "such" / "dir.html"), cwd=tmp_path)
    assert proc.returncode == 1 and "cannot write" in proc.stderr
