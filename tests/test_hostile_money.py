"""The hostile suite, money: what a hostile provider could bill is never more than what Baton booked, and a key's
admitted calls stop at its cap, whatever the client does (drops the stream at any chunk, many at once) and whatever the
provider sends (usage beyond range). Asserted on the provider's own ledger (`ChatServer.bills`), never on Baton's books alone.
The tests that book against a key's cap run once per ledger backend (SQLite, and a real PostgreSQL: `new_ledger`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.model import Budget
from engine.run.calls import RetryPolicy
from engine.run.reader import list_runs
from engine.session import Session
from engine.testing.chat_server import ChatServer, Reply
from engine.testing.hostile import stream_and_drop
from tests.helpers import flow_from
from tests.hostile_serve import IN_PRICE, OUT_PRICE, InProcessServer, hostile_pool, key_spec

TOKEN = "bk-hostile-test-key-0123456789"
LONG = "the sky is blue because air scatters blue light more than red light " * 2  # ~35 content chunks of 4 characters
MAX_TOKENS = 100


def billed(server: ChatServer) -> float:
    return sum(b.usd(IN_PRICE, OUT_PRICE) for b in server.bills)


def request_body() -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "why is the sky blue?"}], "max_tokens": MAX_TOKENS}


def test_a_client_that_drops_its_stream_is_charged_and_cannot_pass_its_keys_cap(tmp_path: Path, new_ledger: Callable[[], str]) -> None:
    """Finding 1: 12 requests dropped after the first content chunk were admitted at $0 each; the upstream billed them all."""
    cap = 0.002
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text=LONG, chunk_delay=0.15, cost=0.0002)]
        with InProcessServer(hostile_pool(upstream.url), tmp_path / "home", keys=key_spec("alice", TOKEN, daily_usd=cap),
                             ledger=new_ledger()) as served:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for _ in range(12):
                stream_and_drop(served.url, request_body(), after_events=2, headers=auth)  # the role chunk, then one of text
            served.settled()
            booked = served.booked("alice")
        sent = upstream.count()
        could_bill = sum(b.reported_cost for b in upstream.bills)
    assert sent < 12  # the cap stopped admitting calls
    assert could_bill <= booked + 1e-12  # nothing that left the machine is booked below what the provider could bill
    assert booked <= cap + 1e-12
    runs = list_runs(tmp_path / "home", limit=100)
    interrupted = [r for r in runs if r.status == "interrupted"]
    assert len(interrupted) == sent
    for run in interrupted:  # each record says a call was sent, and what it was booked at
        assert run.calls == 1 and run.cost > 0 and run.estimated_cost == run.cost
        (attempt,) = run.steps["call"].attempts
        assert attempt.cause == "interrupted" and attempt.cost_source == "estimated"


@pytest.mark.parametrize("path, body", [
    ("/v1/responses", {"model": "m", "input": "why is the sky blue?", "max_output_tokens": MAX_TOKENS}),
    ("/v1/messages", {"model": "m", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "why is the sky blue?"}]})])
def test_a_client_that_drops_a_responses_or_messages_stream_is_charged_and_cannot_pass_its_keys_cap(
        tmp_path: Path, path: str, body: dict[str, object], new_ledger: Callable[[], str]) -> None:
    """The new wire formats, as finding 1 for chat completions: dropped streams are booked, and the key's cap holds on
    what the upstream could bill."""
    cap = 0.002
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text=LONG, chunk_delay=0.15, cost=0.0002)]
        with InProcessServer(hostile_pool(upstream.url), tmp_path / "home", keys=key_spec("alice", TOKEN, daily_usd=cap),
                             ledger=new_ledger()) as served:
            for _ in range(12):  # the opening events, then one piece of text
                stream_and_drop(served.url, body, after_events=5, headers={"Authorization": f"Bearer {TOKEN}"}, path=path)
            served.settled()
            booked = served.booked("alice")
        sent = upstream.count()
        could_bill = sum(b.reported_cost for b in upstream.bills)
    assert 0 < sent < 12  # it spent, and the cap stopped admitting calls
    assert could_bill <= booked + 1e-12 and booked <= cap + 1e-12
    interrupted = [r for r in list_runs(tmp_path / "home", limit=100) if r.status == "interrupted"]
    assert len(interrupted) == sent and all(r.cost > 0 for r in interrupted)  # each call that left is on record, booked


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(after=st.integers(min_value=0, max_value=12), concurrency=st.integers(min_value=1, max_value=4))
def test_for_any_disconnect_point_and_concurrency_the_provider_never_bills_more_than_was_booked(
        tmp_path_factory: pytest.TempPathFactory, new_ledger: Callable[[], str], after: int, concurrency: int) -> None:
    cap = 0.0015
    home = tmp_path_factory.mktemp("drop")
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text=LONG, chunk_delay=0.01)]
        with InProcessServer(hostile_pool(upstream.url), home, keys=key_spec("bob", TOKEN, daily_usd=cap), ledger=new_ledger()) as served:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda _: stream_and_drop(served.url, request_body(), after, auth), range(concurrency * 2)))
            served.settled()
            booked = served.booked("bob")
        could_bill = billed(upstream)
    assert could_bill <= booked + 1e-12
    assert booked <= cap + 1e-12


def test_a_run_stopped_with_a_call_in_flight_counts_the_call_and_books_it(tmp_path: Path) -> None:
    """Finding 1 (the same root): a run cancelled (SIGINT, SIGTERM) mid-call recorded 0 calls at $0."""
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text="slow", delay=5)]
        pool = hostile_pool(upstream.url)

        async def go() -> None:
            async with Session(pool, home=tmp_path / "home", cache=False) as session:
                task = asyncio.ensure_future(session.run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "x"}))
                for _ in range(2000):  # until the call is in flight (bounded: a broken run must not hang the suite)
                    if upstream.count():
                        break
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(Exception, match="interrupted"):
                    await task

        asyncio.run(go())
    (run,) = list_runs(tmp_path / "home")
    assert run.status == "interrupted" and run.calls == 1 and run.cost > 0
    assert run.steps["a"].attempts[0].cause == "interrupted"
    assert "resume" not in (run.error or "") and "finished step" not in (run.error or "")  # none finished; the CLI says what to do


def test_a_cache_hit_that_fails_a_check_is_not_a_call(tmp_path: Path) -> None:
    """Finding 1: a rejected cache hit counted 2 calls for 1 request."""
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text="no digits here")]
        pool = hostile_pool(upstream.url)
        plain = flow_from('input q\nstep a { model: m  task: "{q}"  temperature: 0 }', pool)
        checked = flow_from('input q\nstep a { model: m  task: "{q}"  temperature: 0  expect: matches /[0-9]/  retries: 0 }', pool)

        async def go() -> object:
            async with Session(pool, home=tmp_path / "home") as session:
                await session.run(plain, {"q": "x"})
                try:
                    return await session.run(checked, {"q": "x"})
                except Exception as err:
                    return err

        failed = asyncio.run(go())
        assert upstream.count() == 1
    summary = failed.summary  # type: ignore[attr-defined]
    assert summary.calls == 0 and summary.cache_hits == 1


@pytest.mark.parametrize("cap", [math.nan, math.inf, -1.0, "1"])
def test_a_cap_that_is_not_a_finite_amount_is_an_input_error(cap: object, tmp_path: Path) -> None:
    """Finding 2: `min(nan, cap)` is nan and every comparison with it is false: a NaN cap let every call through."""
    with ChatServer() as upstream:
        pool = hostile_pool(upstream.url)

        async def go() -> None:
            async with Session(pool, home=tmp_path / "home") as session:
                with pytest.raises(InputError):
                    await session.run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "x"}, budget_usd=cap)  # type: ignore[arg-type]
                with pytest.raises(InputError):
                    await session.call("m", [{"role": "user", "content": "x"}], budget_usd=cap)  # type: ignore[arg-type]

        asyncio.run(go())
        assert upstream.count() == 0
    with pytest.raises(ValueError):
        Budget(usd=math.nan)


@pytest.mark.parametrize("value", ["nan", "inf", "-1.0"])
def test_a_keys_file_cap_that_is_not_a_finite_amount_is_refused(value: str, tmp_path: Path) -> None:
    """Finding 2: `daily_usd = nan` in a keys file was accepted and never capped (TOML has nan and inf)."""
    from engine.serve.keys import KeysError, load_keys

    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.alice]\nsha256 = "{"a" * 64}"\ndaily_usd = {value}\n')
    with pytest.raises(KeysError, match="`daily_usd` must be a finite number >= 0"):
        load_keys(keys)


def test_a_usage_count_beyond_float_range_is_unreadable_usage_not_a_crash(tmp_path: Path) -> None:
    """Finding 15: a token count of 1e400 written out crashed the run after the call was billed."""
    huge = "1" + "0" * 400
    raw = ('{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}], '
           f'"usage": {{"prompt_tokens": 5, "completion_tokens": {huge}}}}}').encode()
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(raw=raw, completion_tokens=3)]
        pool = hostile_pool(upstream.url)

        async def go() -> object:
            async with Session(pool, home=tmp_path / "home", retry=RetryPolicy(base=0.001)) as session:
                return await session.run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "x"})

        summary = asyncio.run(go())
    attempt = summary.steps["a"].attempts[0]  # type: ignore[attr-defined]
    assert attempt.cost_source == "estimated" and attempt.cost > 0  # booked at its worst case, not at a number out of range


def test_one_keys_overrun_does_not_shrink_another_keys_allowance(tmp_path: Path) -> None:
    """Finding 4: the reservation scale-up after an observed overrun was server-wide."""
    with ChatServer() as upstream:
        upstream.responder = lambda body: Reply(text="ok", cost=0.05 if body["messages"][-1]["content"] == "greedy" else None)
        keys = {**key_spec("greedy", TOKEN + "g", daily_usd=1.0), **key_spec("modest", TOKEN + "m", daily_usd=1.0)}
        with InProcessServer(hostile_pool(upstream.url), tmp_path / "home", keys=keys) as served:
            from engine.testing.hostile import post

            greedy = post(served.url, "/v1/chat/completions",
                          b'{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "greedy"}]}',
                          {"Authorization": f"Bearer {TOKEN}g"})
            assert greedy.status == 200
            observed = served.state.session._observed_by_owner
            assert observed["greedy"]["m"].price_overrun > 100  # the greedy key's reservations grew
            assert "m" not in observed.get("modest", {}) and "m" not in served.state.session.observed  # no one else's did


def test_a_dollar_cap_over_an_alias_without_prices_is_said_at_validate_and_refused_at_run(tmp_path: Path) -> None:
    """Finding 3: validate said ok, the run sent every call and booked $0 `unknown`; a key's caps meant nothing the same way."""
    from engine.loading import check_source
    from engine.pool import ModelSpec, Pool, ProviderSpec

    with ChatServer() as upstream:
        pool = Pool(providers={"up": ProviderSpec(kind="openai", base_url=upstream.url)},
                    models={"m": ModelSpec(provider="up", id="m")}, source="<unpriced>")
        source = 'input q\nbudget $0.01\nstep a { model: m  task: "{q}" }'
        checked = check_source(source, pool, "t.flow")
        assert [(d.code, d.severity) for d in checked.diagnostics] == [("W405", "warning")]
        assert "`m`" in checked.diagnostics[0].message

        async def go() -> object:
            async with Session(pool, home=tmp_path / "home") as session:
                try:
                    return await session.run(flow_from(source, pool), {"q": "x"})
                except Exception as err:
                    return err

        refused = asyncio.run(go())
        assert "no prices" in str(refused) and refused.summary.status == "budget_exhausted"  # type: ignore[attr-defined]
        with InProcessServer(pool, tmp_path / "serve", keys=key_spec("carol", TOKEN, daily_usd=1.0)) as served:
            from engine.testing.hostile import post

            capped = post(served.url, "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}',
                          {"Authorization": f"Bearer {TOKEN}"})
        assert capped.status == 402 and "no prices" in capped.json()["error"]["message"]
        assert upstream.count() == 0
        uncapped = check_source('input q\nstep a { model: m  task: "{q}" }', pool, "t.flow")
        assert uncapped.diagnostics == []  # no cap, nothing to bound


def test_an_evaluation_over_a_provider_that_omits_inflates_or_falsifies_usage_books_at_least_what_it_could_bill(tmp_path: Path) -> None:
    """The eval surface through the hostile provider: its report's cost is never below the provider's own ledger."""
    import random

    from engine.eval.dataset import load_dataset
    from engine.eval.runner import evaluate
    from engine.eval.scorers import make_scorer
    from engine.testing.chat_server import OMIT

    dataset = tmp_path / "d.jsonl"
    dataset.write_text("\n".join(f'{{"id": {i}, "question": "What is {i} + {i}?", "answer": "{2 * i}"}}' for i in range(24)))
    rng = random.Random(7)

    def lying(body: dict[str, object]) -> Reply:
        n = int(str(body["messages"][-1]["content"]).split()[2])  # type: ignore[index]
        text = f"The answer is {2 * n}."
        return rng.choice([Reply(text=text, usage=OMIT), Reply(text=text, cost=-1), Reply(text=text, usage={"prompt_tokens": "x"}),
                           Reply(text=text, completion_tokens=2000), Reply(text=text)])  # 2000: four times max_tokens

    with ChatServer(responder=lying) as upstream:
        pool = hostile_pool(upstream.url)
        flow = flow_from('input question\nstep a { model: m  task: "{question}"  max_tokens: 500 }', pool)
        report = asyncio.run(evaluate([("lying", flow)], load_dataset(dataset), pool, make_scorer("number"), home=tmp_path,
                                      concurrency=6))
        could_bill = billed(upstream)
    assert report.flows[0].n == 24 and report.flows[0].correct == 24
    assert could_bill <= report.flows[0].total_cost + 1e-12


@pytest.mark.parametrize("concurrency", [1, 16])
def test_an_evaluations_budget_holds_with_many_items_in_flight_and_the_judge_counted(tmp_path: Path, concurrency: int) -> None:
    """`baton eval --budget`: one account shared by every item and the judge, so items in flight together cannot
    overspend it (they used to be stopped only from starting once the spend so far reached the cap)."""
    from engine.eval.dataset import Item
    from engine.eval.runner import evaluate, evaluation_account
    from engine.eval.scorers import judge_through, make_scorer

    cap = 0.01
    with ChatServer(latency=0.02, responder=lambda body: Reply(text="CORRECT 42", completion_tokens=MAX_TOKENS)) as upstream:
        pool = hostile_pool(upstream.url)
        flow = flow_from(f'input question\nstep a {{ model: m  task: "{{question}}"  max_tokens: {MAX_TOKENS}  retries: 0 }}', pool)
        items = [Item(id=str(i), fields={"question": f"what is {i} times 6?"}, reference="42")
                 for i in range(200)]

        async def go():  # type: ignore[no-untyped-def]
            async with Session(pool, home=tmp_path, cache=False, durable=False) as session:
                account = evaluation_account(cap)
                scorer = make_scorer("judge:m", judge_through(session, "m", account=account))
                return await evaluate([("f", flow)], items, pool, scorer, budget_usd=cap, concurrency=concurrency, home=tmp_path,
                                      session=session, account=account)

        report = asyncio.run(go())
    assert report.stopped and report.flows[0].n < len(items)
    assert billed(upstream) <= cap + 1e-9, f"the upstream could bill ${billed(upstream):.6f} of a ${cap} evaluation budget"
    assert billed(upstream) > cap / 2  # it did spend: the cap, not something else, stopped it
