"""Streaming a run's answer as it is produced: over real SSE from the loopback server.

The texts handed on must add up to the recorded answer, secrets must not get through
even split across chunks, and a reply that fails after its text began is never retried
into a second answer.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from engine.errors import ProviderError
from engine.pool import ModelSpec, Pool, ProviderSpec
from engine.run.calls import RetryPolicy
from engine.run.reader import load_run
from engine.session import Session
from engine.testing.chat_server import OMIT, ChatServer, Reply
from tests.helpers import flow_from

FAST = RetryPolicy(base=0.001, cap=0.01)
LONG = "The sky is blue because air scatters short wavelengths of sunlight more than long ones."


def pool_for(url: str, key_env: str | None = None) -> Pool:
    models = {name: ModelSpec(provider="loop", id=name, input_price=0.2, output_price=2.0) for name in ("m", "n", "judge")}
    return Pool(providers={"loop": ProviderSpec(kind="openai", base_url=url, max_concurrency=8, api_key_env=key_env)},
                models=models, source="<loopback>")


def stream_run(pool: Pool, source: str, home: Path, inputs: dict[str, str] | None = None) -> tuple[list[str], object]:
    pieces: list[str] = []

    async def go() -> object:
        async with Session(pool, home=home, retry=FAST, cache=False) as session:
            try:
                return await session.run(flow_from(source, pool), inputs or {"q": "why?"}, on_text=pieces.append)
            except Exception as err:  # the test looks at it
                return err

    return pieces, asyncio.run(go())


SOLO = 'input q\nstep answer { model: m  task: "{q}"  retries: 2 }'


def test_a_step_streams_its_reply_in_pieces_that_add_up_to_the_recorded_answer(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(text=LONG, chunk_delay=0.001)]
        pieces, summary = stream_run(pool_for(server.url), SOLO, home)
        assert server.requests[0]["stream"] is True and server.requests[0]["stream_options"] == {"include_usage": True}
    assert len(pieces) > 5  # token by token, not one piece at the end
    assert "".join(pieces) == LONG == summary.output  # type: ignore[attr-defined]
    attempt = summary.steps["answer"].attempts[0]  # type: ignore[attr-defined]
    assert attempt.cost_source == "computed" and attempt.output_tokens > 0  # usage from the last chunk
    assert attempt.cost == pytest.approx(server.bills[0].usd(0.2, 2.0))  # booked as the server's own ledger says


def test_a_stream_without_usage_is_booked_at_its_worst_case(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(text=LONG, usage=OMIT)]
        pieces, summary = stream_run(pool_for(server.url), SOLO, home)
        could_bill = sum(b.usd(0.2, 2.0) for b in server.bills)
    assert "".join(pieces) == LONG
    assert could_bill > 0 and summary.cost >= could_bill  # type: ignore[attr-defined]  # the books cover what the server could charge
    assert summary.steps["answer"].attempts[0].cost_source == "estimated"  # type: ignore[attr-defined]
    assert summary.estimated_cost > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", ["break", "error_event"])
def test_a_reply_that_fails_after_its_first_token_is_not_retried_and_the_run_fails(home: Path, fault: str) -> None:
    with ChatServer() as server:
        broken = Reply(text=LONG, stream_break_after=3) if fault == "break" else Reply(text=LONG, stream_error_after=3)
        server.script["m"] = [broken, Reply(text="a second, different answer")]
        pieces, err = stream_run(pool_for(server.url), SOLO, home)
        assert server.count("m") == 1  # not retried into a second answer
    assert isinstance(err, ProviderError)
    assert "after its reply began streaming" in str(err)
    assert LONG.startswith("".join(pieces)) and pieces  # only text of the one reply was sent
    summary = load_run(err.summary.run_id, home)  # type: ignore[union-attr]
    assert summary.status == "failed"
    assert summary.steps["answer"].attempts[0].status == "fault"


def test_a_reply_that_fails_before_its_first_token_is_retried(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(text=LONG, stream_break_after=0), Reply(text="second try")]
        pieces, summary = stream_run(pool_for(server.url), SOLO, home)
        assert server.count("m") == 2
    assert "".join(pieces) == "second try" == summary.output  # type: ignore[attr-defined]


def test_a_key_split_across_chunks_never_reaches_the_reader(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("LOOP_KEY", key)
    with ChatServer() as server:
        server.script["m"] = [Reply(text=f"debug: Authorization: Bearer {key} end of reply")]
        pieces, summary = stream_run(pool_for(server.url, "LOOP_KEY"), SOLO, home)
    joined = "".join(pieces)
    assert key not in joined and not any(key[:8] in p for p in pieces)
    assert joined == summary.output == "debug: Authorization: Bearer *** end of reply"  # type: ignore[attr-defined]


def test_a_server_that_ignores_stream_still_answers_whole(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(text=LONG, ignore_stream=True)]
        pieces, summary = stream_run(pool_for(server.url), SOLO, home)
    assert pieces == [LONG] and summary.output == LONG  # type: ignore[attr-defined]


def test_a_fuse_streams_its_judge_and_a_loop_sends_its_answer_once_accepted(home: Path) -> None:
    fuse = 'input q\nfuse best { panel: m, n  judge: judge  task: "{q}" }'
    loop = ('input q\nloop refine max 3 {\n  step draft { model: m  sees: q, feedback  task: "{q}" }\n'
            '  verify check { model: judge  sees: draft  task: "ok?"  accept: /ACCEPT/ }\n}')
    with ChatServer() as server:
        server.script["m"] = [Reply(text="draft one")]
        server.script["n"] = [Reply(text="draft two")]
        server.script["judge"] = [Reply(text=LONG)]
        pieces, summary = stream_run(pool_for(server.url), fuse, home)
        assert len(pieces) > 5 and "".join(pieces) == LONG == summary.output  # type: ignore[attr-defined]
        server.script["m"] = [Reply(text="first draft"), Reply(text="better draft")]
        server.script["judge"] = [Reply(text="REVISE: no"), Reply(text="ACCEPT")]
        pieces, summary = stream_run(pool_for(server.url), loop, home)
    assert pieces == ["better draft"] == [summary.output]  # type: ignore[attr-defined]  # the rejected draft was never sent


def test_a_route_streams_the_branch_it_chose(home: Path) -> None:
    route = ('input q\nstep kind { model: m  sees: q  task: "label" }\n'
             'route pick by kind { "code" -> coder  else -> writer }\n'
             'step coder { model: n  sees: q  task: "code it" }\nstep writer { model: judge  sees: q  task: "write it" }\n'
             'output pick')
    with ChatServer() as server:
        server.script["m"] = [Reply(text="code")]
        server.script["n"] = [Reply(text=LONG)]
        pieces, summary = stream_run(pool_for(server.url), route, home)
    assert len(pieces) > 5 and "".join(pieces) == LONG == summary.output  # type: ignore[attr-defined]


def test_streamed_and_unstreamed_runs_record_the_same_answer(home: Path) -> None:
    os.environ.pop("LOOP_KEY", None)
    with ChatServer() as server:
        server.responder = lambda body: Reply(text=f"answer to {body['messages'][-1]['content'][-20:]}")
        pool = pool_for(server.url)

        async def plain() -> str:
            async with Session(pool, home=home, cache=False) as session:
                return (await session.run(flow_from(SOLO, pool), {"q": "why?"})).output or ""

        unstreamed = asyncio.run(plain())
        pieces, summary = stream_run(pool, SOLO, home)
    assert "".join(pieces) == unstreamed == summary.output  # type: ignore[attr-defined]
