"""Crashes: `baton run` as a real subprocess, killed with SIGKILL mid-run or interrupted with SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.run.store import read_step_journal
from engine.testing.chat_server import ChatServer
from tests.conftest import ROOT

FLOW = """
input q
step a { model: fast  task: "first {q}" }
step b { model: cheap  sees: a  task: "left" }
step c { model: coder  sees: a  task: "right" }
step d { model: strong  sees: b, c  task: "join" }
"""


def write_setup(tmp: Path, url: str) -> tuple[Path, Path]:
    flow = tmp / "crash.flow"
    flow.write_text(FLOW)
    pool = tmp / "pool.toml"
    models = "\n".join(f'[models.{a}]\nprovider = "loop"\nid = "{a}"\ninput_price = 1.0\noutput_price = 2.0\n'
                       for a in ("fast", "cheap", "coder", "strong"))
    pool.write_text(f'[providers.loop]\nkind = "openai"\nbase_url = "{url}"\n\n{models}')
    return flow, pool


def start(flow: Path, pool: Path, home: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli.main", "run", str(flow), "--pool", str(pool), "--home", str(home),
                             "--input", "q=x", "--no-cache", *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={k: v for k, v in os.environ.items() if k != "BATON_POOL"},
                            # a shell running CI in the background starts children with SIGINT ignored; a user's
                            # terminal does not, so restore the default for the Ctrl-C test
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def only_run(home: Path) -> Path:
    runs = list((home / "runs").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_sigkill_mid_run_then_resume_sends_no_finished_step_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with ChatServer(latency=1.0) as server:
        flow, pool = write_setup(tmp_path, server.url)
        proc = start(flow, pool, home)
        wait_for(lambda: server.count("cheap") == 1 and server.count("coder") == 1)  # a is done, b and c in flight
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        run_dir = only_run(home)
        assert "a" in read_step_journal(run_dir)
        assert "d" not in read_step_journal(run_dir)
        before = {m: server.count(m) for m in ("fast", "cheap", "coder", "strong")}
        assert before == {"fast": 1, "cheap": 1, "coder": 1, "strong": 0}

        resumed = subprocess.run([sys.executable, "-m", "engine.cli.main", "run", "--resume", run_dir.name, "--pool", str(pool),
                                  "--home", str(home), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert resumed.returncode == 0, resumed.stderr
        assert "(resumed: not called again)" in resumed.stderr
        after = {m: server.count(m) for m in ("fast", "cheap", "coder", "strong")}
        assert after == {"fast": 1, "cheap": 2, "coder": 2, "strong": 1}  # a never again; b, c re-sent (in flight at the kill)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["attempts_of_run"] == 2
        events = [json.loads(x)["event"] for x in (run_dir / "events.jsonl").read_text().splitlines()]
        assert events.count("run_started") == 1 and events.count("run_resumed") == 1


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_sigint_stops_cleanly_keeps_finished_steps_and_exits_130(signum: int, code: int, tmp_path: Path) -> None:
    """SIGTERM (`kill`, a supervisor, a container stop) is handled as Ctrl-C; before, it died silently with 143, `running` for ever."""
    home = tmp_path / "home"
    with ChatServer(latency=1.0) as server:
        flow, pool = write_setup(tmp_path, server.url)
        proc = start(flow, pool, home)
        wait_for(lambda: server.count("cheap") == 1)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == code, err
        assert "Traceback" not in err
        assert "resume with: baton run --resume" in err
        run_dir = only_run(home)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        assert "a" in read_step_journal(run_dir)


def test_sigkill_mid_evaluation_then_resume_sends_no_finished_item_again(tmp_path: Path) -> None:
    """An evaluation's results are a journal like a run's steps. Before, they were buffered and never fsynced: a kill lost them."""
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("\n".join(json.dumps({"question": f"item-{i:02d}", "answer": "x"}) for i in range(40)))
    flow = tmp_path / "e.flow"
    flow.write_text('input question\nstep a { model: fast  task: "{question}" }\n')
    home = tmp_path / "home"
    with ChatServer(latency=0.3) as server:
        pool = tmp_path / "pool.toml"
        pool.write_text(f'[providers.loop]\nkind = "openai"\nbase_url = "{server.url}"\n[models.fast]\nprovider = "loop"\nid = "fast"\n')
        command = [sys.executable, "-m", "engine.cli.main", "eval", str(flow), "--dataset", str(dataset), "--scorer", "contains",
                   "--pool", str(pool), "--home", str(home), "--concurrency", "4"]
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={k: v for k, v in os.environ.items() if k != "BATON_POOL"})
        wait_for(lambda: server.count() >= 12)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        answered = server.count() - 4  # every request sent, less at most the 4 in flight at the kill
        (eval_dir,) = list((home / "evals").iterdir())
        recorded = [json.loads(line)["item"] for line in (eval_dir / "results.jsonl").read_text().splitlines()]
        assert len(recorded) >= answered - 4  # finished work was on disk (a reply or two may still be on its way to the journal)
        from engine.eval.dataset import load_dataset

        question = {it.id: it.fields["question"] for it in load_dataset(dataset)}

        def sent(item: str) -> int:
            return sum(json.loads(body)["messages"][-1]["content"] == question[item] for body in server.bodies())

        before = {item: sent(item) for item in recorded}
        assert all(n == 1 for n in before.values())
        resumed = subprocess.run([*command, "--resume", eval_dir.name, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        after = {item: sent(item) for item in recorded}
        assert after == before  # no finished item was sent again
        report = json.loads(resumed.stdout)
        assert report["flows"][0]["n"] == 40
