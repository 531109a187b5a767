"""The provider boundary's conformance suite: every reply shape real providers send, over real HTTP on loopback.

Money is judged by what the server could have billed (its own ledger, `ChatServer.bills`,
at the pool's prices or its reported costs), never by Baton's books alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from engine.errors import BudgetExceeded, ProviderError, RunError
from engine.pool import ModelSpec, Pool, ProviderSpec
from engine.records.render import render_run
from engine.run.calls import RetryPolicy
from engine.run.trace import RunSummary
from engine.testing.chat_server import OMIT, ChatServer, Reply
from tests.helpers import flow_from, run

FAST = RetryPolicy(base=0.001, cap=0.01)
IN_PRICE, OUT_PRICE = 0.2, 2.0  # USD per million tokens: a call of 100 tokens out costs up to $0.0002


def priced_pool(url: str, timeout: float = 30.0, **aliases: ModelSpec) -> Pool:
    models = {name: ModelSpec(provider="loop", id=name, input_price=IN_PRICE, output_price=OUT_PRICE) for name in ("m", "backup", "judge")}
    return Pool(providers={"loop": ProviderSpec(kind="openai", base_url=url, max_concurrency=8, timeout=timeout)},
                models={**models, **aliases}, source="<loopback priced>")


def billed(server: ChatServer, pool: Pool) -> float:
    """What the server could have charged: its ledger at the pool's prices, or its own sane reported costs."""
    return sum(b.usd(pool.models[b.model].input_price, pool.models[b.model].output_price) for b in server.bills)


def chain(n: int, budget: str, max_tokens: int = 100, extra: str = "") -> str:
    lines = ["input q", f"budget {budget}", f'step s0 {{ model: m  task: "start {{q}}"  max_tokens: {max_tokens}  retries: 0 {extra}}}']
    lines += [f'step s{i} {{ model: m  sees: s{i - 1}  task: "go on"  max_tokens: {max_tokens}  retries: 0 {extra}}}' for i in range(1, n)]
    return "\n".join(lines)


def failed_summary(excinfo: pytest.ExceptionInfo[RunError]) -> RunSummary:
    summary = excinfo.value.summary
    assert isinstance(summary, RunSummary)
    return summary


# -- money -------------------------------------------------------------------------------------


def test_replies_without_usage_are_booked_at_their_worst_case_so_the_cap_holds(home: Path) -> None:
    """Before: a 10-step chain under a cap sent all 10 calls and booked $0 'computed'."""
    with ChatServer() as server:
        server.responder = lambda body: Reply(text="fine " * 20, usage=OMIT)
        pool = priced_pool(server.url)
        flow = flow_from(chain(10, "$0.001"), pool)
        with pytest.raises(BudgetExceeded) as info:
            run(flow, {"q": "x"}, pool, home)
        summary = failed_summary(info)
        assert server.count() < 10
        assert billed(server, pool) <= 0.001  # what the provider could charge stays under the cap
        assert summary.cost >= billed(server, pool)  # and Baton never books less than that
        assert summary.estimated_cost == pytest.approx(summary.cost)
        first = summary.steps["s0"].attempts[0]
        assert first.cost_source == "estimated" and "no usage" in first.cost_note
        assert "estimated" in str(info.value)
        assert "estimated" in render_run(summary)


def test_a_reasoning_reply_that_spent_max_tokens_is_a_failed_attempt_booked_as_reported(home: Path) -> None:
    """R1 / o-series: empty content, finish_reason length, usage.cost. Before: retried 9 times, booked $0."""
    with ChatServer() as server:
        server.script["m"] = [Reply(content=None, message={"reasoning": "Let me think... " * 30}, finish_reason="length",
                                    completion_tokens=100, cost=0.0004)]
        server.script["backup"] = [Reply(text="the answer")]
        pool = priced_pool(server.url)
        flow = flow_from('input q\nbudget $0.01\nstep a { model: m  fallback: backup  task: "{q}"  max_tokens: 100  retries: 3 }', pool)
        summary = run(flow, {"q": "x"}, pool, home, retry=FAST)
    attempts = summary.steps["a"].attempts
    assert [(a.alias, a.status, a.cause) for a in attempts] == [("m", "fault", "truncated"), ("backup", "ok", "")]  # not retried
    assert attempts[0].finish_reason == "length" and "max_tokens 100" in attempts[0].reason
    assert attempts[0].cost == pytest.approx(0.0004) and attempts[0].cost_source == "reported"
    assert summary.cost == pytest.approx(billed(server, pool))
    assert summary.output == "the answer"


@pytest.mark.parametrize("bad_cost", [-0.001, math.nan, "0.5", math.inf])
def test_a_false_reported_cost_is_ignored_and_the_call_computed(bad_cost: Any, home: Path) -> None:
    """Before: a reported cost of -0.001 or NaN was booked as it was, which disabled the cap."""
    with ChatServer() as server:
        server.responder = lambda body: Reply(text="ok", cost=bad_cost, completion_tokens=50)
        pool = priced_pool(server.url)
        flow = flow_from(chain(10, "$0.0005", max_tokens=50), pool)
        with pytest.raises(BudgetExceeded) as info:
            run(flow, {"q": "x"}, pool, home)
        summary = failed_summary(info)
        assert server.count() < 10
        true_cost = sum(b.usd(IN_PRICE, OUT_PRICE) for b in server.bills)
        assert true_cost <= 0.0005
        a = summary.steps["s0"].attempts[0]
        assert a.cost_source == "computed" and a.cost > 0 and "ignored" in a.cost_note
        assert summary.cost == pytest.approx(true_cost) and math.isfinite(summary.cost)


def test_more_completion_tokens_than_max_tokens_warns_and_stops_at_the_next_call(home: Path) -> None:
    """Reasoning tokens past max_tokens. Before: 4 calls cost 8 x the cap and the error said 'spent $0.000000'."""
    with ChatServer() as server:
        server.responder = lambda body: Reply(text="ok", completion_tokens=int(body["max_tokens"]) * 20)
        pool = priced_pool(server.url)
        flow = flow_from(chain(4, "$0.0015", max_tokens=50), pool)
        with pytest.raises(BudgetExceeded) as info:
            run(flow, {"q": "x"}, pool, home)
        summary = failed_summary(info)
        assert server.count() == 1  # the overrun is seen, and the next reservation accounts for it
        assert summary.cost == pytest.approx(billed(server, pool))  # booked exactly what the server billed
        assert len(summary.warnings) == 1 and "cap of $0.0015" in summary.warnings[0] and "max_tokens" in summary.warnings[0]
        message = str(info.value)
        assert "budget $0.0015" in message and f"booked ${summary.cost:.6f}" in message


def test_the_next_reservation_accounts_for_tokens_seen_past_max_tokens(home: Path) -> None:
    """A reply 3 x over max_tokens that stays under the cap: the next call is reserved at 3 x, refused, and the cap holds."""
    with ChatServer() as server:
        server.responder = lambda body: Reply(text="ok", completion_tokens=int(body["max_tokens"]) * 3)
        pool = priced_pool(server.url)
        with pytest.raises(BudgetExceeded):
            run(flow_from(chain(4, "$0.0005", max_tokens=50), pool), {"q": "x"}, pool, home)
        assert server.count() == 1
        assert billed(server, pool) <= 0.0005


def test_a_rejected_reply_past_max_tokens_also_raises_the_next_reservation(home: Path) -> None:
    """Reasoning models overrun max_tokens most often in replies that are rejected (no text): those count too."""
    with ChatServer() as server:
        server.script["m"] = [Reply(content=None, finish_reason="length", completion_tokens=150)]
        server.script["backup"] = [Reply(text="ok", completion_tokens=1)]
        pool = priced_pool(server.url)
        with pytest.raises(BudgetExceeded):
            run(flow_from(chain(4, "$0.0009", max_tokens=50, extra=" fallback: backup "), pool), {"q": "x"}, pool, home)
        assert billed(server, pool) <= 0.0009


# -- truth -------------------------------------------------------------------------------------


def test_an_error_inside_a_200_choice_is_a_retried_server_error_never_the_answer_and_never_cached(home: Path) -> None:
    """OpenRouter's mid-generation failure. Before: the partial text was the output (exit 0), cached, and served again."""
    partial = Reply(text="The answer is partly writ", finish_reason="error",
                    choice_error={"code": 502, "message": "upstream provider disconnected"})
    flow_text = 'input q\nstep a { model: m  task: "{q}"  retries: 1 }'
    with ChatServer() as server:
        server.script["m"] = [partial]
        pool = priced_pool(server.url)
        with pytest.raises(ProviderError) as info:
            run(flow_from(flow_text, pool), {"q": "x"}, pool, home, retry=FAST)
        attempts = failed_summary(info).steps["a"].attempts
        assert [(a.status, a.cause, a.finish_reason) for a in attempts] == [("fault", "server_error", "error")] * 2
        assert "upstream provider disconnected" in attempts[0].reason
        assert attempts[0].cost > 0  # a 200 with usage: the provider billed it
        server.script["m"] = [Reply(text="The whole answer.")]
        summary = run(flow_from(flow_text, pool), {"q": "x"}, pool, home)  # recovered: asked again, not served from cache
        assert summary.output == "The whole answer." and summary.cache_hits == 0
        assert server.count() == 3


def test_a_length_finish_with_text_is_kept_but_flagged_truncated_in_record_progress_and_cache(home: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    flow_text = 'input q\nstep label { model: m  task: "{q}"  max_tokens: 3 }'
    with ChatServer() as server:
        server.script["m"] = [Reply(text="code blah", finish_reason="length", completion_tokens=3)]
        pool = priced_pool(server.url)
        summary = run(flow_from(flow_text, pool), {"q": "x"}, pool, home, progress=lambda e, f: events.append((e, f)))
        again = run(flow_from(flow_text, pool), {"q": "x"}, pool, home)
    assert summary.output == "code blah"
    attempt = summary.steps["label"].attempts[0]
    assert attempt.truncated and attempt.finish_reason == "length"
    assert any(e == "attempt" and f["truncated"] for e, f in events)
    assert "TRUNCATED" in render_run(summary) and "finish length" in render_run(summary)
    hit = again.steps["label"].attempts[0]
    assert hit.status == "cache_hit" and hit.truncated


def test_progress_says_a_reply_was_truncated() -> None:
    import io

    from engine.cli.progress import ProgressPrinter

    out = io.StringIO()
    printer = ProgressPrinter(out, live=False)
    printer("attempt", {"step": "s", "alias": "m", "status": "ok", "cost": 0.0, "truncated": True})
    printer("attempt", {"step": "s", "alias": "m", "status": "cache_hit", "cost": 0.0, "truncated": True})
    assert "m reply truncated at max_tokens" in out.getvalue()
    assert "cache hit ($0), truncated at max_tokens" in out.getvalue()


def test_a_content_filter_finish_is_not_retried_and_moves_to_the_fallback(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(text="", finish_reason="content_filter")]
        server.script["backup"] = [Reply(text="filtered elsewhere? no: fine")]
        pool = priced_pool(server.url)
        summary = run(flow_from('input q\nstep a { model: m  fallback: backup  task: "{q}"  retries: 3 }', pool), {"q": "x"}, pool, home,
                      retry=FAST)
        assert server.count("m") == 1
    first = summary.steps["a"].attempts[0]
    assert (first.cause, first.finish_reason) == ("content_filter", "content_filter")


def test_a_refusal_is_recorded_as_a_refusal(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(content=None, message={"refusal": "I can't help with that."})]
        pool = priced_pool(server.url)
        with pytest.raises(ProviderError) as info:
            run(flow_from('input q\nstep a { model: m  task: "{q}"  retries: 2 }', pool), {"q": "x"}, pool, home, retry=FAST)
        assert server.count("m") == 1
    attempt = failed_summary(info).steps["a"].attempts[0]
    assert attempt.cause == "refusal" and "I can't help with that." in attempt.reason


@pytest.mark.parametrize("content, expected", [
    ([{"type": "reasoning", "text": "first I think"}, {"type": "text", "text": "the "}, {"type": "text", "text": "answer"}], "the answer"),
    ([{"type": "text", "text": "answer"}, {"type": "image_url", "image_url": {"url": "data:,"}}], "answer"),
    ("plain answer", "plain answer"),
])
def test_only_text_parts_are_the_answer(content: Any, expected: str, home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(content=content, message={"reasoning": "hidden chain of thought", "reasoning_content": "more"})]
        pool = priced_pool(server.url)
        summary = run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "x"}, pool, home)
    assert summary.output == expected


def test_a_reasoning_only_reply_is_an_empty_reply_and_is_charged(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(content=None, message={"reasoning": "all thought, no answer"}, completion_tokens=40)]
        pool = priced_pool(server.url)
        with pytest.raises(ProviderError) as info:
            run(flow_from('input q\nstep a { model: m  task: "{q}"  retries: 1 }', pool), {"q": "x"}, pool, home, retry=FAST)
        summary = failed_summary(info)
        assert [a.cause for a in summary.steps["a"].attempts] == ["empty_reply", "empty_reply"]
        assert summary.cost == pytest.approx(billed(server, pool)) and summary.cost > 0


@pytest.mark.parametrize("reply, cause", [
    (Reply(text="fine", usage="lots of tokens"), None),
    (Reply(text="fine", usage={"prompt_tokens": "12", "completion_tokens": 3}), None),
    (Reply(text="fine", usage={"prompt_tokens": 12, "completion_tokens": -3}), None),
    (Reply(text="fine", usage=[1, 2]), None),
    (Reply(content=[{"type": "text", "text": 42}]), "bad_response"),
    (Reply(content={"text": "an object"}), "bad_response"),
    (Reply(raw=b'{"choices": [{"message": "not an object"}]}'), "bad_response"),
    (Reply(raw=b'{"choices": [{"message": {"content": "x"}, "finish_reason": 7}], "usage": {"prompt_tokens": 1e400}}'), None),
])
def test_malformed_replies_are_classified_never_a_traceback(reply: Reply, cause: str | None, home: Path) -> None:
    """Before: a usage string, non-numeric counts or a numeric part `text` crashed the run, and the record lost calls."""
    with ChatServer() as server:
        server.script["m"] = [reply]
        pool = priced_pool(server.url)
        flow = flow_from('input q\nbudget $1\nstep a { model: m  task: "{q}"  retries: 1 }', pool)
        if cause is None:  # the answer is fine; the usage could not be read, so the call is booked at its worst case
            summary = run(flow, {"q": "x"}, pool, home, retry=FAST)
            attempt = summary.steps["a"].attempts[0]
            assert attempt.status == "ok" and attempt.cost_source == "estimated" and attempt.cost > 0
            assert summary.estimated_cost == pytest.approx(summary.cost)
        else:
            with pytest.raises(ProviderError) as info:
                run(flow, {"q": "x"}, pool, home, retry=FAST)
            summary = failed_summary(info)
            assert [a.cause for a in summary.steps["a"].attempts] == [cause, cause]
        assert summary.calls == server.count()  # every call sent is in the record
        assert summary.cost >= billed(server, pool)


def test_a_redirect_is_recorded_as_a_redirect_not_as_not_json(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(status=302, headers={"Location": "https://login.example.test/sso"}, text="")]
        pool = priced_pool(server.url)
        with pytest.raises(ProviderError) as info:
            run(flow_from('input q\nstep a { model: m  task: "{q}"  retries: 2 }', pool), {"q": "x"}, pool, home, retry=FAST)
        assert server.count("m") == 1  # a wrong base_url does not get better by asking again
    attempt = failed_summary(info).steps["a"].attempts[0]
    assert attempt.cause == "redirect" and "HTTP 302 redirect to https://login.example.test/sso" in attempt.reason
    assert attempt.cost_source == "not_billed" and attempt.cost == 0


def test_the_provider_timeout_is_a_ceiling_over_a_body_that_trickles_in(home: Path) -> None:
    """Before: a 3 s provider timeout let a reply that trickled in for 10 s through."""
    with ChatServer() as server:
        server.script["m"] = [Reply(text="slow " * 40, trickle=0.3)]  # ten pieces, 3 s in all, never 0.3 s of silence
        pool = priced_pool(server.url, timeout=1.0)
        with pytest.raises(ProviderError) as info:
            run(flow_from('input q\nstep a { model: m  task: "{q}"  retries: 0 }', pool), {"q": "x"}, pool, home)
    attempt = failed_summary(info).steps["a"].attempts[0]
    assert attempt.cause == "timeout" and attempt.latency_ms < 2000
    assert "no complete reply within 1s" in attempt.reason
    assert attempt.cost_source == "estimated"  # it was sent: the provider may have billed it


def test_a_body_cut_short_after_a_200_is_booked_as_possibly_billed(home: Path) -> None:
    with ChatServer() as server:
        server.script["m"] = [Reply(text="cut in half " * 10, truncate=True)]
        pool = priced_pool(server.url)
        with pytest.raises(ProviderError) as info:
            run(flow_from('input q\nstep a { model: m  task: "{q}"  retries: 0 }', pool), {"q": "x"}, pool, home)
    attempt = failed_summary(info).steps["a"].attempts[0]
    assert attempt.cause == "connect" and "cut short" in attempt.reason and attempt.cost_source == "estimated"


def test_a_nan_cost_never_reaches_the_record(home: Path) -> None:
    """Before: NaN was booked, written to summary.json as null, and the record could not be read back."""
    with ChatServer() as server:
        server.script["m"] = [Reply(text="ok", cost=math.nan)]
        pool = priced_pool(server.url)
        summary = run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "x"}, pool, home)
    stored = RunSummary.model_validate_json((home / "runs" / summary.run_id / "summary.json").read_text())
    assert math.isfinite(stored.cost) and stored.cost == pytest.approx(billed(server, pool)) and stored.cost > 0
    assert stored.steps["a"].attempts[0].cost_source == "computed"


# -- the money property, against providers that omit, inflate or falsify usage -----------------


class LedgerProvider:
    """Replies go through the real reply reader, with usage as a misbehaving provider sends it; `billed` is the truth."""

    name = "ledger"
    enforces_grammar = False

    def __init__(self, seed: int, mode: str, inflate: int, in_price: float, out_price: float) -> None:
        import random

        self.rng = random.Random(seed)
        self.mode, self.inflate = mode, inflate
        self.in_price, self.out_price = in_price, out_price
        self.billed = 0.0
        self.tokens = 0
        self.calls = 0

    async def complete(self, request: Any) -> Any:
        import asyncio

        from engine.providers.reply import read_chat_completion

        self.calls += 1
        await asyncio.sleep(self.rng.uniform(0, 0.002))
        prompt = sum(len(m["content"]) for m in request.messages) // 4 + 1
        out = self.rng.randint(1, request.max_tokens) * (self.inflate if self.mode == "inflate" else 1)
        self.billed += (prompt * self.in_price + out * self.out_price) / 1_000_000
        self.tokens += prompt + out
        usage: Any = {"prompt_tokens": prompt, "completion_tokens": out}
        if self.mode == "omit":
            usage = None
        elif self.mode == "garbage":
            usage = self.rng.choice(["n/a", {"prompt_tokens": "many"}, [prompt, out], {"prompt_tokens": prompt, "completion_tokens": -1}])
        elif self.mode == "false_cost":
            usage["cost"] = self.rng.choice([-0.001, math.nan, math.inf, "0.1", 0.0])
            if usage["cost"] == 0.0:  # a cost of 0 is sane and taken as reported: the provider says it was free
                self.billed -= (prompt * self.in_price + out * self.out_price) / 1_000_000
        body = {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], **({"usage": usage} if usage is not None else {})}
        return read_chat_completion(json.dumps(body).encode(), self.name, str, request.max_tokens)

    async def aclose(self) -> None:
        return None


def _money_property(width: int, max_tokens: int, in_price: float, out_price: float, cap_kind: str, cap: float, concurrency: int,
                    seed: int, mode: str, inflate: int, home: Path) -> None:
    import asyncio

    from engine.session import run_flow

    pool = Pool(providers={"r": ProviderSpec(kind="scripted", max_concurrency=concurrency)},
                models={"m": ModelSpec(provider="r", id="m", input_price=in_price, output_price=out_price)}, max_concurrency=concurrency)
    budget = {"usd": f"${cap:.4f}", "tokens": f"tokens {max(1, int(cap * 100_000))}"}[cap_kind]
    lines = ["input q", f"budget {budget}"]
    lines += [f'step s{i} {{ model: m  task: "part {i} of {{q}}"  max_tokens: {max_tokens}  retries: 0 }}' for i in range(width)]
    lines.append(f'step join {{ model: m  sees: {", ".join(f"s{i}" for i in range(width))}  task: "join"  max_tokens: 5 }}')
    flow = flow_from("\n".join(lines), pool)
    provider = LedgerProvider(seed, mode, inflate, in_price, out_price)
    try:
        summary = asyncio.run(run_flow(flow, {"q": "question"}, pool=pool, providers={"*": provider}, cache=False, home=home,
                                       durable=False, record=False))
    except BudgetExceeded as err:
        summary = err.summary
    b = flow.budget
    assert summary.cost >= provider.billed - 1e-12  # Baton never books less than the provider could charge
    assert summary.calls == provider.calls
    # honest sizes: the cap holds outright. Inflated replies: only calls already in flight when the first
    # overrun was seen can pass it, each by at most its own overrun; later reservations account for it.
    slack_usd = concurrency * (inflate - 1) * max_tokens * out_price / 1_000_000 if mode == "inflate" else 0.0
    slack_tokens = concurrency * (inflate - 1) * max_tokens if mode == "inflate" else 0
    if b.usd is not None:
        assert provider.billed <= b.usd + slack_usd + 1e-9
    if b.tokens is not None:
        assert provider.tokens <= b.tokens + slack_tokens


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 16), max_tokens=st.integers(1, 1500), in_price=st.floats(0.01, 50), out_price=st.floats(0.01, 80),
    cap_kind=st.sampled_from(["usd", "tokens"]), cap=st.floats(0.0001, 0.3), concurrency=st.integers(1, 16),
    seed=st.integers(0, 10_000), mode=st.sampled_from(["omit", "garbage", "false_cost", "inflate"]), inflate=st.integers(2, 10),
)
def test_spend_stays_within_the_cap_when_providers_omit_inflate_or_falsify_usage(
        width: int, max_tokens: int, in_price: float, out_price: float, cap_kind: str, cap: float, concurrency: int, seed: int,
        mode: str, inflate: int, tmp_path: Path) -> None:
    _money_property(width, max_tokens, in_price, out_price, cap_kind, cap, concurrency, seed, mode, inflate, tmp_path)


def test_cached_input_is_billed_at_its_own_price_and_bounds_stay_upper_bounds(tmp_path: Path) -> None:
    """`cached_input_price` (and `cache_write_price`): a reply whose prompt was mostly read from the provider's cache is
    computed at the cached price (it was booked at the full input price), while reservations and the worst case price
    every prompt token at the dearest input price, so they stay bounds."""
    spec = ModelSpec(provider="up", id="m", input_price=10.0, output_price=20.0, cached_input_price=1.0, cache_write_price=12.5)
    assert spec.cost(1000, 10, cached_tokens=800) == pytest.approx((200 * 10 + 800 * 1 + 10 * 20) / 1e6)
    assert spec.cost(1000, 10, cache_write_tokens=1000) == pytest.approx((1000 * 12.5 + 10 * 20) / 1e6)
    assert spec.worst_cost(1000, 10) == pytest.approx((1000 * 12.5 + 10 * 20) / 1e6)
    assert spec.worst_cost(1000, 10) >= max(spec.cost(1000, 10, 800), spec.cost(1000, 10, 0, 1000), spec.cost(1000, 10))
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 800}}
    with ChatServer(responder=lambda body: Reply(text="cached answer", usage=usage)) as server:
        pool = Pool(providers={"up": ProviderSpec(kind="openai", base_url=server.url)}, models={"m": spec}, source="<cached>")
        summary = run(flow_from('input q\nbudget $1\nstep a { model: m  task: "{q}" }', pool), {"q": "x"}, pool, tmp_path)
    attempt = summary.steps["a"].attempts[0]
    assert (attempt.cached_tokens, attempt.cost_source) == (800, "computed")
    assert attempt.cost == pytest.approx(0.003) and summary.cost == pytest.approx(0.003)
