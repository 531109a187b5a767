"""The hostile suite, messages: what the command line and the checker say when things go wrong is said once, by the
right part, and true (findings 19 and 20 of #25)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import PoolError
from engine.loading import check_source
from engine.pool import ModelSpec, Pool, ProviderSpec, default_pool
from engine.session import Session
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import ROOT
from tests.helpers import flow_from


def baton(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=60)


def test_a_subcommands_usage_error_shows_that_subcommands_usage() -> None:
    proc = baton("run", "--bogus")
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: baton run ") and "{run}" not in proc.stderr
    assert "unrecognized arguments: --bogus" in proc.stderr


def codes(source: str) -> list[str]:
    return [d.code for d in check_source(source, default_pool(), "t.flow").diagnostics]


def test_an_empty_task_does_not_validate() -> None:
    assert codes('step a { model: smol  task: "" }') == ["E209"]
    assert codes('step a { model: smol  task: "   " }') == ["E209"]


def test_a_step_refused_for_its_name_is_not_also_a_flow_with_no_steps() -> None:
    assert "E309" not in codes('input a\nstep a { model: smol  task: "{a}" }')
    assert codes("input a\n") == ["E309", "W404"]


def test_the_resume_pool_error_says_each_problem_once(tmp_path: Path) -> None:
    with ChatServer() as upstream:
        upstream.script["m1"] = [Reply(status=400, text="no")]
        pool = Pool(providers={"p": ProviderSpec(kind="openai", base_url=upstream.url)},
                    models={"m1": ModelSpec(provider="p", id="m1", input_price=1, output_price=1)}, source="<first>")
        source = 'input q\n' + "".join(f'step s{i} {{ model: m1  task: "{{q}}" }}\n' for i in range(5))

        async def go() -> str:
            async with Session(pool, home=tmp_path) as session:
                try:
                    await session.run(flow_from(source, pool), {"q": "x"})
                except Exception as err:
                    return err.summary.run_id  # type: ignore[attr-defined,no-any-return]
            raise AssertionError("the run should fail")

        run_id = asyncio.run(go())
    other = Pool(providers={}, models={"m2": ModelSpec(provider="openai", id="x")}, source="<second>")

    async def resume() -> None:
        async with Session(other, home=tmp_path) as session:
            await session.resume(run_id)

    with pytest.raises(PoolError) as caught:
        asyncio.run(resume())
    assert str(caught.value).count("unknown model `m1`") == 1


def test_sigterm_during_a_call_says_what_was_kept_and_how_to_resume_once(tmp_path: Path) -> None:
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text="late", delay=20)]
        (tmp_path / "models.toml").write_text(f'[providers.p]\nkind = "openai"\nbase_url = "{upstream.url}"\n'
                                              '[models.m]\nprovider = "p"\nid = "m"\ninput_price = 1\noutput_price = 1\n')
        (tmp_path / "f.flow").write_text('input q\nstep a { model: m  task: "{q}" }\n')
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "run", "f.flow", "--input", "q=x", "--home", "h"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={k: v for k, v in os.environ.items() if k != "BATON_POOL"})
        deadline = time.time() + 30
        while upstream.count() == 0 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.count("--resume") == 1, err
    assert "no step finished" in err and "finished steps are kept" not in err
    assert "1 call" in err  # the call that was in flight is counted, and charged
