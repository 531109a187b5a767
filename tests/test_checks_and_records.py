"""What testing the boundary found in the checker and the run records: each case failed before its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ProviderError
from engine.loading import check_source
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import ROOT, loopback_pool
from tests.helpers import flow_from, run
from tests.test_boundary import FAST
from tests.test_crash_resume import only_run, start, wait_for, write_setup


def baton(*args: str, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"} | {"NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=90,
                          env=env, input=stdin)


def errors(text: str) -> list[tuple[str, str, str | None]]:
    with ChatServer() as server:
        result = check_source(text, loopback_pool(server.url), "t.flow")
    return [(d.code, d.message, d.hint) for d in result.errors]


# -- the checker -------------------------------------------------------------------------------

ROUTE = """
input q
step triage { model: fast  sees: q  task: "label" }
route r by triage { "a" -> left  else -> right }
step left { model: fast  sees: q  task: "left" }
step right { model: fast  sees: q, left  task: "right" }
"""


def test_a_route_branch_that_sees_its_sibling_branch_is_an_error() -> None:
    """Before: it validated, and the run failed whenever the route chose `right` (`left` never ran)."""
    found = errors(ROUTE + "output r\n")
    assert [(c, m) for c, m, _h in found] == [("E304", "`right` sees `left`, but both are branches of route `r`: only one of them runs")]


def test_output_naming_a_route_branch_is_an_error_that_suggests_the_route() -> None:
    """Before: it validated, and the run failed when the other branch ran."""
    found = errors(ROUTE.replace(", left", "") + "output left\n")
    assert found == [("E304", "output `left` is a branch of route `r`: the run fails whenever the route picks another branch",
                      "write `output r`: it holds the output of whichever branch ran")]
    assert errors(ROUTE.replace(", left", "") + "output r\n") == []


def test_judge_task_and_system_are_rendered_with_the_same_visibility_as_the_task(home: Path) -> None:
    """Before: the judge was sent a literal `{style}`, and so was a `system` text."""
    text = """
input q
input style
fuse f {
  panel: fast, cheap
  judge: strong
  system: "Write in a {style} style."
  judge_task: "Pick the answer that is most {style}."
  task: "Answer {q}"
}
"""
    with ChatServer() as server:
        pool = loopback_pool(server.url)
        run(flow_from(text, pool), {"q": "why?", "style": "terse"}, pool, home)
        judge = next(r for r in server.requests if r["model"] == "strong")
        panel = next(r for r in server.requests if r["model"] == "fast")
    assert "Pick the answer that is most terse." in judge["messages"][-1]["content"]
    assert judge["messages"][0] == {"role": "system", "content": "Write in a terse style."}
    assert panel["messages"][0] == {"role": "system", "content": "Write in a terse style."}
    assert "{style}" not in json.dumps(server.requests)


def test_a_system_placeholder_is_checked_like_a_task_placeholder() -> None:
    found = errors('input q\nstep a { model: fast  system: "Be {tone}."  task: "{q}" }\n')
    assert [c for c, _m, _h in found] == ["E201"] and "`{tone}` names nothing" in found[0][1]
    seen = errors('input q\nstep a { model: fast  task: "{q}" }\nstep b { model: fast  system: "About {a}."  task: "x" }\n')
    assert [(c, m) for c, m, _h in seen] == [("E302", "`b` cannot see `a`")]


# -- totals across attempts --------------------------------------------------------------------

TWO = 'input q\nstep a { model: fast  task: "{q}" }\nstep b { model: cheap  sees: a  task: "next"  retries: 1 }\noutput b\n'


def test_a_resumed_run_totals_cover_every_attempt_and_a_no_op_resume_keeps_them(home: Path) -> None:
    """Before: after --resume the calls, tokens and duration counted only the last attempt; a no-op resume zeroed them."""
    with ChatServer() as server:
        server.script["cheap"] = [Reply(status=500), Reply(status=500), Reply(text="done")]
        pool = loopback_pool(server.url)
        flow = flow_from(TWO, pool)
        with pytest.raises(ProviderError) as info:
            run(flow, {"q": "x"}, pool, home, retry=FAST)
        first = info.value.summary
        assert first.calls == 3
        second = run(None, {}, pool, home, resume=first.run_id)  # type: ignore[arg-type]
        third = run(None, {}, pool, home, resume=first.run_id)  # type: ignore[arg-type]
        assert server.count() == 4
    assert second.calls == 4 and third.calls == 4
    assert second.input_tokens > first.input_tokens and third.input_tokens == second.input_tokens
    assert third.cost == pytest.approx(second.cost) and second.cost > first.cost
    assert second.duration_s >= first.duration_s and third.duration_s >= second.duration_s
    assert third.attempts_of_run == 3


# -- signals and dead processes ----------------------------------------------------------------


def test_a_run_whose_process_was_killed_is_shown_as_gone_not_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with ChatServer(latency=1.0) as server:
        flow, pool = write_setup(tmp_path, server.url)
        proc = start(flow, pool, home)
        wait_for(lambda: server.count("cheap") == 1)
        live = baton("runs", "--home", str(home))
        twice = baton("run", "--resume", only_run(home).name, "--home", str(home))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    run_id = only_run(home).name
    assert " running " in live.stdout  # in flight: its process holds the lock on the run's folder
    assert twice.returncode != 0 and f"run {run_id} is being run by another process right now" in twice.stderr, twice.stderr
    listed = baton("runs", "--home", str(home))
    shown = baton("show", run_id, "--home", str(home))
    assert " interrupted " in listed.stdout and " running " not in listed.stdout
    assert "interrupted" in shown.stdout.splitlines()[0] and "process is gone" in shown.stdout


# -- show, homes, stdin, resume ----------------------------------------------------------------


def test_show_output_prints_only_that_output_and_ids_are_checked(home: Path) -> None:
    with ChatServer() as server:
        pool = loopback_pool(server.url)
        ids = [run(flow_from(TWO, pool), {"q": "x"}, pool, home).run_id for _ in range(2)]
    out = baton("show", ids[0], "--home", str(home), "--output", "a")
    assert out.returncode == 0 and out.stdout == "[fast] answered: x\n"
    common = os.path.commonprefix(ids)
    ambiguous = baton("show", common, "--home", str(home))
    assert ambiguous.returncode == 2 and "is ambiguous: it matches" in ambiguous.stderr and ids[0] in ambiguous.stderr
    empty = baton("show", "", "--home", str(home))
    assert empty.returncode == 2 and "no run id given" in empty.stderr and empty.stdout == ""
    unknown = baton("run", "--resume", "nope", "--home", str(home))
    assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr


def test_a_home_that_is_a_file_or_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "home.txt"
    not_a_folder.write_text("x")
    flow = tmp_path / "hello.flow"
    flow.write_text('input q\nstep a { model: fast  task: "{q}" }')
    with ChatServer() as server:
        pool = tmp_path / "pool.toml"
        pool.write_text(f'[providers.loop]\nbase_url = "{server.url}"\n[models.fast]\nprovider = "loop"\nid = "fast"\n')
        for args in (("runs",), ("show", "x"), ("run", "--resume", "x"), ("run", str(flow), "--pool", str(pool), "--input", "q=1")):
            proc = baton(*args, "--home", str(not_a_folder))
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
            assert "is a file, not a folder" in proc.stderr, (args, proc.stderr)
        nested = baton("run", str(flow), "--pool", str(pool), "--input", "q=1", "--home", str(not_a_folder / "sub"))
        assert server.count() == 0
    assert nested.returncode == 2 and "cannot create a run folder" in nested.stderr, nested.stderr
    resume = baton("run", "--resume", "x", "--home", str(not_a_folder / "sub"))
    assert resume.returncode == 2 and "no run 'x'" in resume.stderr


def test_baton_run_reads_a_flow_from_standard_input(tmp_path: Path) -> None:
    with ChatServer() as server:
        pool = tmp_path / "pool.toml"
        pool.write_text(f'[providers.loop]\nbase_url = "{server.url}"\n[models.fast]\nprovider = "loop"\nid = "fast"\n')
        ok = baton("run", "-", "--pool", str(pool), "--input", "q=hi", "--home", str(tmp_path / "h"),
                   stdin='input q\nstep a { model: fast  task: "{q}" }\n')
        bad = baton("run", "-", "--pool", str(pool), "--input", "q=hi", "--home", str(tmp_path / "h"),
                    stdin='input q\nstep a { model: fsat  task: "{q}" }\n')
    assert ok.returncode == 0 and ok.stdout == "[fast] answered: hi\n", ok.stderr
    assert bad.returncode == 2 and "<stdin>:2:17: error[E202]" in bad.stderr


def test_a_resume_without_its_pool_names_the_missing_alias_and_the_recorded_pool(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with ChatServer() as server:
        server.script["fast"] = [Reply(status=500)]
        pool = tmp_path / "team.toml"  # not models.toml: a resume from elsewhere cannot discover it
        pool.write_text(f'[providers.loop]\nbase_url = "{server.url}"\n[models.fast]\nprovider = "loop"\nid = "fast"\n')
        flow = tmp_path / "f.flow"
        flow.write_text('input q\nstep a { model: fast  task: "{q}"  retries: 0 }')
        failed = baton("run", str(flow), "--pool", str(pool), "--input", "q=1", "--home", str(home))
        assert failed.returncode == 1
        resumed = baton("run", "--resume", only_run(home).name, "--home", str(home))
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "unknown model `fast`" in resumed.stderr and f"recorded with the pool {pool}" in resumed.stderr


def test_totals_survive_a_resume_that_was_itself_killed(tmp_path: Path) -> None:
    """A failed attempt, then a resume killed mid-call, then a resume that finishes: the first attempt's calls still count."""
    home = tmp_path / "home"
    with ChatServer() as server:
        server.script["cheap"] = [Reply(status=500)] * 3 + [Reply(text="slow", delay=5.0), Reply(text="ok")]
        flow, pool = write_setup(tmp_path, server.url)
        first = start(flow, pool, home)
        assert first.wait(30) == 1
        run_id = only_run(home).name
        assert json.loads((home / "runs" / run_id / "summary.json").read_text())["calls"] == 5  # a, c, and b three times
        killed = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "run", "--resume", run_id, "--pool", str(pool),
                                   "--home", str(home), "--no-cache"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: server.count("cheap") == 4)
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        last = baton("run", "--resume", run_id, "--pool", str(pool), "--home", str(home), "--no-cache")
        assert last.returncode == 0, last.stderr
        assert server.count() == 8
    summary = json.loads((home / "runs" / run_id / "summary.json").read_text())
    # 5 + 2 finished by the last attempt; the killed attempt's one call, in flight at the kill, is in no record
    assert summary["calls"] == 7 and summary["attempts_of_run"] == 3
