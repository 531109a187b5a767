"""`engine.Session`: one engine for many runs. Counted by the loopback server, never by Baton's own books."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import BudgetExceeded, PoolError, ProviderError
from engine.pool import ModelSpec, Pool, ProviderSpec
from engine.run.calls import RetryPolicy
from engine.session import Session, SyncSession
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import ROOT
from tests.helpers import flow_from

FAST = RetryPolicy(base=0.001, cap=0.01)


def pool_file(tmp_path: Path, url: str, body: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(f'[providers.loop]\nkind = "openai"\nbase_url = "{url}"\nmax_concurrency = 64\n{body}')
    return path


def test_alias_and_pool_limits_hold_across_an_evaluation_at_concurrency_32(tmp_path: Path) -> None:
    """Before: each item's run had limits of its own, and 32 requests were in flight at once against a limit of 4."""
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": "x"}) for i in range(100)))
    flow = tmp_path / "two.flow"
    flow.write_text('input question\nstep a { model: limited  task: "{question}" }\nstep b { model: free  task: "also {question}" }\n'
                    'step c { model: free  sees: a, b  task: "join" }\n')
    with ChatServer() as server:
        server.responder = lambda body: Reply(text="x", delay=0.05 if body["model"] == "limited" else 0.01)
        pool = pool_file(tmp_path, server.url, '[models.limited]\nprovider = "loop"\nid = "limited"\nmax_concurrency = 4\n'
                         '[models.free]\nprovider = "loop"\nid = "free"\n')
        pool.write_text("max_concurrency = 6\n" + pool.read_text())  # the pool's global cap, a top-level key
        proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "eval", str(flow), "--dataset", str(dataset), "--scorer",
                               "contains", "--pool", str(pool), "--home", str(tmp_path / "h"), "--concurrency", "32", "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={k: v for k, v in os.environ.items() if k != "BATON_POOL"})
        assert proc.returncode == 0, proc.stderr
        assert server.count() == 300
        assert server.max_in_flight_by_model["limited"] == 4  # reached, never passed
        assert 5 <= server.max_in_flight <= 6  # the pool's cap, across both aliases


def test_fifty_sequential_runs_through_one_session_reuse_the_providers_connections(tmp_path: Path) -> None:
    """Before: every run opened connections of its own (a TLS handshake per run against a real provider)."""
    with ChatServer(latency=0.01) as server:
        pool = Pool(providers={"loop": ProviderSpec(kind="openai", base_url=server.url, max_concurrency=3)},
                    models={"m": ModelSpec(provider="loop", id="m")}, source="<loopback>")
        flow = flow_from('input q\nstep a { model: m  task: "{q} a" }\nstep b { model: m  task: "{q} b" }\n'
                         'step c { model: m  task: "{q} c" }\nstep d { model: m  sees: a, b, c  task: "join" }\n', pool)

        async def fifty() -> None:
            async with Session(pool, home=tmp_path, cache=False) as session:
                for i in range(50):
                    await session.run(flow, {"q": str(i)}, record=False)

        asyncio.run(fifty())
        assert server.count() == 200
        assert 1 <= len(server.connections) <= 3  # the provider's limit


def test_a_judge_scored_eval_retries_a_429_on_the_judge_and_counts_its_cost(tmp_path: Path) -> None:
    """Before: the judge's requests had no retries (a 429 failed the item), and its cost was in no total."""
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"ref{i}"}) for i in range(4)))
    with ChatServer() as server:
        server.script["grader"] = [Reply(status=429, headers={"Retry-After": "0"}), Reply(text="CORRECT", cost=0.01)]
        flow = tmp_path / "f.flow"
        flow.write_text('input question\nstep a { model: fast  task: "{question}" }\n')
        pool = pool_file(tmp_path, server.url, '[models.fast]\nprovider = "loop"\nid = "fast"\n'
                         '[models.grader]\nprovider = "loop"\nid = "grader"\n')
        proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "eval", str(flow), "--dataset", str(dataset), "--scorer",
                               "judge:grader", "--pool", str(pool), "--home", str(tmp_path / "h"), "--json", "--concurrency", "1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert server.count("grader") == 5  # four verdicts, one of them after a 429
    report = json.loads(proc.stdout)
    assert report["flows"][0]["correct"] == 4 and report["flows"][0]["failures"] == 0
    assert report["scoring_cost"] == pytest.approx(0.04)
    assert "$0.0400 spent" in proc.stderr  # the evaluation's spend includes the judge


def test_call_goes_through_retries_fallbacks_budget_and_cache(tmp_path: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(status=503), Reply(status=503), Reply(status=503)]
        server.script["backup"] = [Reply(text="from the fallback", completion_tokens=10)]
        pool = Pool(providers={"loop": ProviderSpec(kind="openai", base_url=server.url)},
                    models={"m": ModelSpec(provider="loop", id="m"),
                            "backup": ModelSpec(provider="loop", id="backup", input_price=1, output_price=1000)}, source="<loopback>")

        async def calls() -> None:
            async with Session(pool, home=tmp_path, retry=FAST) as session:
                result = await session.call("m", [{"role": "user", "content": "hi"}], fallbacks=["backup"], retries=1)
                assert (result.text, result.alias) == ("from the fallback", "backup")
                assert [(a.alias, a.status) for a in result.attempts] == [("m", "fault"), ("m", "fault"), ("backup", "ok")]
                assert result.cost > 0
                again = await session.call("backup", [{"role": "user", "content": "hi"}])  # temperature 0: from the cache
                assert again.attempts[0].status == "cache_hit"
                with pytest.raises(BudgetExceeded):
                    await session.call("backup", [{"role": "user", "content": "new"}], budget_usd=0.000001)
                with pytest.raises(PoolError, match="no model alias `nope`"):
                    await session.call("nope", [{"role": "user", "content": "x"}])

        asyncio.run(calls())
        assert server.count("m") == 2 and server.count("backup") == 1


def test_sync_session_keeps_one_loop_for_its_connections(tmp_path: Path) -> None:
    with ChatServer() as server:
        pool = Pool(providers={"loop": ProviderSpec(kind="openai", base_url=server.url, max_concurrency=2)},
                    models={"m": ModelSpec(provider="loop", id="m")}, source="<loopback>")
        flow = flow_from('input q\nstep a { model: m  task: "{q}" }', pool)
        with SyncSession(pool, home=tmp_path, cache=False) as session:
            outputs = [session.run(flow, {"q": str(i)}, record=False).output for i in range(5)]
            with pytest.raises(ProviderError):
                server.script["m"] = [Reply(status=400)]
                session.call("m", [{"role": "user", "content": "x"}])
        assert outputs == [f"[m] answered: {i}" for i in range(5)]
        assert len(server.connections) <= 2


def test_a_missing_api_key_is_found_before_a_run_folder_exists_and_is_not_offered_a_resume(tmp_path: Path) -> None:
    with ChatServer() as server:
        pool = tmp_path / "models.toml"
        pool.write_text(f'[providers.keyed]\nkind = "openai"\nbase_url = "{server.url}"\napi_key_env = "BATON_SURELY_UNSET_KEY_2"\n'
                        '[models.m]\nprovider = "keyed"\nid = "m"\n')
        flow = tmp_path / "f.flow"
        flow.write_text('input q\nstep a { model: m  task: "{q}" }\n')
        proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "run", str(flow), "--pool", str(pool), "--input", "q=x",
                               "--home", str(tmp_path / "h")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if k not in ("BATON_POOL", "BATON_SURELY_UNSET_KEY_2")})
        assert server.count() == 0
    assert proc.returncode == 2 and "needs an API key in $BATON_SURELY_UNSET_KEY_2" in proc.stderr  # a pool problem: usage, not a failed run
    assert "--resume" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "h" / "runs").exists()


def test_a_flow_checked_against_another_pool_is_a_pool_error_not_a_traceback(tmp_path: Path) -> None:
    other = Pool(providers={"loop": ProviderSpec(kind="openai", base_url="http://127.0.0.1:9/v1")},
                 models={"elsewhere": ModelSpec(provider="loop", id="x")}, source="<other>")
    flow = flow_from('input q\nstep a { model: elsewhere  task: "{q}" }', other)
    mine = Pool(providers=other.providers, models={"m": ModelSpec(provider="loop", id="m")}, source="<mine>")

    async def go() -> None:
        async with Session(mine, home=tmp_path) as session:
            await session.run(flow, {"q": "x"})

    with pytest.raises(PoolError, match="has no model alias `elsewhere`"):
        asyncio.run(go())
    assert not (tmp_path / "runs").exists()


def test_a_judge_that_fails_for_good_still_counts_what_its_calls_cost(tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(json.dumps({"question": "q0", "answer": "ref"}))
    with ChatServer() as server:
        server.script["grader"] = [Reply(text="CORR", finish_reason="error", choice_error={"message": "upstream died"}, cost=0.01)]
        flow = tmp_path / "f.flow"
        flow.write_text('input question\nstep a { model: fast  task: "{question}" }\n')
        pool = pool_file(tmp_path, server.url, '[models.fast]\nprovider = "loop"\nid = "fast"\n'
                         '[models.grader]\nprovider = "loop"\nid = "grader"\n')
        proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "eval", str(flow), "--dataset", str(dataset), "--scorer",
                               "judge:grader", "--pool", str(pool), "--home", str(tmp_path / "h"), "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert server.count("grader") == 3  # the first try and two retries, each billed
    report = json.loads(proc.stdout)
    assert report["flows"][0]["failures"] == 1 and report["scoring_cost"] == pytest.approx(0.03)
