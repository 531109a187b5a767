"""The hostile suite, `baton serve` and secrets: a server that lets no one in from a web page or a rebound DNS name,
answers hostile bodies with 4xx in OpenAI's shape, keeps tenants' caches apart, and never lets any prefix (8+
characters) of a secret into a response, a file of the run home or the cache."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from engine.errors import PoolError, ProviderError
from engine.pool import ModelSpec, Pool, ProviderSpec
from engine.providers.sse import ChunkAssembler
from engine.run.reader import list_runs
from engine.run.secrets import Secrets
from engine.serve.guard import BrowserPolicy
from engine.session import Session
from engine.testing.chat_server import ChatServer, Reply
from engine.testing.hostile import get, hostile_bodies, post, raw_request
from engine.tracing.spans import run_spans
from tests.helpers import flow_from
from tests.hostile_serve import InProcessServer, hostile_pool, key_spec

SECRET = "sk-test-SECRET-0123456789abcdefXYZ"
VARIABLE = "BATON_HOSTILE_TEST_KEY"
TOKEN = "bk-hostile-serve-key-abcdefghij"
CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


def prefixes_in(texts: list[str], secret: str = SECRET, shortest: int = 8) -> list[str]:
    return [secret[:n] for n in range(shortest, len(secret) + 1) if any(secret[:n] in t for t in texts)]


def everything_under(folder: Path) -> list[str]:
    return [p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()]


# -- secrets ------------------------------------------------------------------------------------------------


def test_a_key_echoed_in_a_malformed_streamed_chunk_reaches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 5: the SSE reader kept the first 120 characters of a bad line before scrubbing it."""
    monkeypatch.setenv(VARIABLE, SECRET)
    bad = "x" * 110 + f" invalid api key {SECRET} in a line that is not JSON"  # the key straddles the 120th character
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text="a reply of several chunks", stream_bad_line=bad)]
        with InProcessServer(hostile_pool(upstream.url, VARIABLE), tmp_path / "home") as served:
            answer = post(served.url, "/v1/chat/completions", b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}')
            served.settled()
    assert answer.status == 502
    texts = [answer.body.decode(), *everything_under(tmp_path / "home")]
    assert "not JSON" in answer.body.decode()  # the fault is reported, only without the key
    (run,) = list_runs(tmp_path / "home")
    spans = run_spans(run, lambda _name: True, hostile_pool(upstream.url, VARIABLE), content=True)  # the OTel tree, content included
    texts.append(repr(spans))
    assert prefixes_in(texts) == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_key_a_model_writes_into_a_tool_calls_arguments_reaches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                           stream: bool) -> None:
    """Tool calls pass through to the client: their arguments are provider text, scrubbed like any other."""
    monkeypatch.setenv(VARIABLE, SECRET)
    call = {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": json.dumps({"note": f"my key is {SECRET}"})}}
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "send", "parameters": {"type": "object"}}}]}
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(message={"tool_calls": [call]}, finish_reason="tool_calls")]
        with InProcessServer(hostile_pool(upstream.url, VARIABLE), tmp_path / "home") as served:
            answer = post(served.url, "/v1/chat/completions", json.dumps(body).encode())
            served.settled()
    assert answer.status == 200 and b"send" in answer.body and b"my key is" in answer.body  # the call came back, key masked
    assert prefixes_in([answer.body.decode(), *everything_under(tmp_path / "home")]) == []


def test_a_providers_truncated_echo_of_a_key_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 10: `Incorrect API key provided: sk-test-SECRE...` was not scrubbed: only whole keys were matched."""
    monkeypatch.setenv(VARIABLE, SECRET)
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(status=401, text=f"Incorrect API key provided: {SECRET[:13]}...")]
        pool = hostile_pool(upstream.url, VARIABLE)

        async def go() -> None:
            async with Session(pool, home=tmp_path / "home", cache=False) as session:
                with pytest.raises(ProviderError) as caught:
                    await session.run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "x"})
                assert prefixes_in([str(caught.value)]) == []

        asyncio.run(go())
    assert prefixes_in(everything_under(tmp_path / "home")) == []
    assert Secrets([SECRET]).scrub(f"a {SECRET[:9]}. b {SECRET[:7]}") == f"a ***. b {SECRET[:7]}"  # 8+ characters only


def test_a_prefix_split_across_stream_chunks_is_held_back_not_half_masked() -> None:
    from engine.run.streaming import TextStream

    sent: list[str] = []
    stream = TextStream(sent.append, Secrets([SECRET]))
    for piece in ("before ", SECRET[:10], SECRET[10:20], SECRET[20:], " after"):
        stream.feed(piece)
    stream.finish(Secrets([SECRET]).scrub("before " + SECRET + " after"))
    assert "".join(sent) == "before *** after"


def test_credentials_in_a_base_url_are_refused(tmp_path: Path) -> None:
    """Finding 8: `http://user:pass@host/v1` was stored in every run's pool.json and crashed a run with a key set."""
    from engine.pool import load_pool

    pool = tmp_path / "models.toml"
    pool.write_text('[providers.p]\nkind = "openai"\nbase_url = "http://user:hunter2-password@127.0.0.1:9/v1"\n'
                    '[models.m]\nprovider = "p"\nid = "m"\n')
    with pytest.raises(PoolError, match="credentials") as caught:
        load_pool(pool)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("where", ["key", "header"])
def test_a_non_ascii_key_or_header_is_a_pool_error_not_a_traceback(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 13: a pasted zero-width space in a key, or `X-Title = "Bâton"`, crashed every run."""
    if where == "header":
        with pytest.raises(ValueError, match="outside ASCII"):
            ProviderSpec(kind="openai", base_url="http://127.0.0.1:9/v1", headers={"X-Title": "Bâton"})
        return
    monkeypatch.setenv(VARIABLE, SECRET + "\u200b")
    with ChatServer() as upstream:
        pool = hostile_pool(upstream.url, VARIABLE)

        async def go() -> None:
            async with Session(pool, home=tmp_path / "home") as session:
                with pytest.raises(PoolError, match=f"\\${VARIABLE} contains a character outside ASCII"):
                    await session.run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "x"})

        asyncio.run(go())
        assert upstream.count() == 0


# -- serve in a browser's world -------------------------------------------------------------------------------


@pytest.fixture()
def keyless(tmp_path: Path) -> object:
    with ChatServer() as upstream, InProcessServer(hostile_pool(upstream.url), tmp_path / "home") as served:
        yield upstream, served


def test_a_foreign_web_page_cannot_spend_through_a_keyless_server(keyless: tuple[ChatServer, InProcessServer]) -> None:
    """Finding 6: any web page could POST (text/plain needs no preflight) and spend the pool's provider keys."""
    upstream, served = keyless
    foreign = post(served.url, "/v1/chat/completions", CHAT, {"Origin": "http://evil.example"}, content_type="text/plain")
    assert foreign.status == 403 and foreign.json()["error"]["code"] == "origin_not_allowed"
    as_json = post(served.url, "/v1/chat/completions", CHAT, {"Origin": "http://evil.example"})
    assert as_json.status == 403
    plain = post(served.url, "/v1/chat/completions", CHAT, content_type="text/plain")  # no Origin: still not JSON
    assert plain.status == 415
    form = post(served.url, "/v1/chat/completions", b"model=m", content_type="application/x-www-form-urlencoded")
    assert form.status == 415
    null_origin = post(served.url, "/v1/chat/completions", CHAT, {"Origin": "null"})  # a sandboxed frame, a file:// page
    assert null_origin.status == 403
    assert upstream.count() == 0
    own = post(served.url, "/v1/chat/completions", CHAT, {"Origin": served.url})  # the server's own pages may call it
    assert own.status == 200 and upstream.count() == 1


def test_a_rebound_host_name_reads_nothing(keyless: tuple[ChatServer, InProcessServer]) -> None:
    """Finding 6: `/runs` answered `Host: rebind.evil.example` (DNS rebinding reads every run)."""
    _upstream, served = keyless
    for path in ("/runs", "/v1/models", "/health"):
        answer = get(served.url, path, {"Host": "rebind.evil.example"})
        assert answer.status == 421, path
        assert answer.json()["error"]["code"] == "host_not_allowed"
    assert get(served.url, "/runs", {"Host": f"localhost:{served.url.rsplit(':', 1)[1]}"}).status == 200
    reply = raw_request(served.url, b"GET /runs HTTP/1.0\r\n\r\n")  # no Host at all
    assert reply.startswith(b"HTTP/1.1 421") or reply.startswith(b"HTTP/1.0 421")


def test_an_allowed_origin_gets_cors_and_others_get_nothing(tmp_path: Path) -> None:
    with ChatServer() as upstream:
        policy = BrowserPolicy.build("127.0.0.1", origins=["http://localhost:3000"])
        with InProcessServer(hostile_pool(upstream.url), tmp_path / "home", policy=policy) as served:
            import httpx

            preflight = httpx.options(served.url + "/v1/chat/completions", headers={
                "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
            call = post(served.url, "/v1/chat/completions", CHAT, {"Origin": "http://localhost:3000"})
            assert call.status == 200 and call.headers["access-control-allow-origin"] == "http://localhost:3000"
            streamed = post(served.url, "/v1/chat/completions", CHAT.replace(b'"m",', b'"m", "stream": true,'),
                            {"Origin": "http://localhost:3000"})
            assert streamed.status == 200 and streamed.headers["access-control-allow-origin"] == "http://localhost:3000"
            other = httpx.options(served.url + "/v1/chat/completions", headers={"Origin": "http://localhost:4000"})
            assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


def test_basic_credentials_a_browser_cached_open_the_pages_but_never_the_api(tmp_path: Path) -> None:
    """Finding 6: Basic credentials cached from the run pages were accepted on /v1/*."""
    basic = {"Authorization": "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()}
    with ChatServer() as upstream, InProcessServer(hostile_pool(upstream.url), tmp_path / "home",
                                                   keys=key_spec("alice", TOKEN)) as served:
        assert get(served.url, "/runs", basic).status == 200
        assert post(served.url, "/v1/chat/completions", CHAT, basic).status == 401
        assert get(served.url, "/v1/models", basic).status == 401
        assert post(served.url, "/v1/chat/completions", CHAT, {"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert upstream.count() == 1


def test_one_keys_cached_reply_is_never_served_to_another_key(tmp_path: Path) -> None:
    """Finding 9: with --cache, another key's identical request was answered from the first key's cache at $0."""
    keys = {**key_spec("alice", TOKEN + "a"), **key_spec("bob", TOKEN + "b")}
    body = b'{"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "the same question"}]}'
    with ChatServer() as upstream, InProcessServer(hostile_pool(upstream.url), tmp_path / "home", keys=keys, cache=True) as served:
        for who in ("a", "a", "b"):
            assert post(served.url, "/v1/chat/completions", body, {"Authorization": f"Bearer {TOKEN}{who}"}).status == 200
        assert upstream.count() == 2  # alice's second request was a hit; bob's went upstream


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/messages"])
@pytest.mark.parametrize("name,body", list(hostile_bodies("m")), ids=[n for n, _ in hostile_bodies("m")])
def test_hostile_bodies_get_an_api_shaped_4xx_never_a_500(keyless: tuple[ChatServer, InProcessServer], name: str, body: bytes,
                                                         path: str) -> None:
    """Finding 12: a body nested 100,000 deep, and `"stream_options": "yes"`, were answered 500 in plain text. Every wire
    format answers them with a 4xx in its own shape (Anthropic's `{"type": "error", ...}` on /v1/messages)."""
    upstream, served = keyless
    answer = post(served.url, path, body)
    assert 400 <= answer.status < 500, (name, answer.status, answer.body[:200])
    assert answer.json()["error"]["message"]
    assert (answer.json().get("type") == "error") == (path == "/v1/messages")
    assert upstream.count() == 0


@pytest.mark.parametrize("path, body", [
    ("/v1/responses", b'{"model": "m", "input": "hi"}'),
    ("/v1/messages", b'{"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}')])
def test_a_foreign_web_page_cannot_spend_through_the_new_wire_formats(keyless: tuple[ChatServer, InProcessServer], path: str,
                                                                     body: bytes) -> None:
    upstream, served = keyless
    foreign = post(served.url, path, body, {"Origin": "https://evil.example"})
    assert foreign.status == 403 and "origin" in foreign.json()["error"]["message"]
    assert post(served.url, path, body, content_type="text/plain").status == 415
    assert upstream.count() == 0


def test_a_pass_through_call_is_on_record_while_it_is_in_flight(keyless: tuple[ChatServer, InProcessServer]) -> None:
    """Finding 18: a pass-through alias call had no record until it ended."""
    import threading
    import time

    upstream, served = keyless
    upstream.script["m"] = [Reply(text="late", delay=1.5)]
    worker = threading.Thread(target=post, args=(served.url, "/v1/chat/completions", CHAT))
    worker.start()
    deadline = time.time() + 10
    seen: list[str] = []
    while time.time() < deadline and not seen:
        seen = [r.status for r in list_runs(served.home)] if (served.home / "runs").exists() else []
        time.sleep(0.05)
    worker.join()
    assert seen == ["running"]
    assert [r.status for r in list_runs(served.home)] == ["ok"]


# -- what a provider streams ----------------------------------------------------------------------------------


def test_the_sse_reader_searches_each_byte_once_however_the_body_is_cut() -> None:
    """Finding 14: a long line fed in small pieces was searched from its start at every piece (quadratic)."""
    texts: list[str] = []
    reader = ChunkAssembler(texts.append)
    line = b'data: {"choices": [{"index": 0, "delta": {"content": "' + b"y" * 200_000 + b'"}}]}\n\n'
    for i in range(0, len(line), 1000):
        reader.feed(line[i:i + 1000])
        assert reader._scanned == len(reader._buffer)  # what was searched is not searched again
    assert texts == ["y" * 200_000]


def test_a_reply_past_the_size_cap_is_a_fault_booked_at_its_worst_case(tmp_path: Path) -> None:
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text="small", stream_huge_delta=3 * 1024 * 1024)]
        pool = hostile_pool(upstream.url, max_reply_mb=1)

        async def go() -> object:
            async with Session(pool, home=tmp_path / "home", cache=False) as session:
                try:
                    return await session.run(flow_from('input q\nstep a { model: m  task: "{q}"  retries: 0 }', pool), {"q": "x"},
                                             on_text=lambda _t: None)
                except ProviderError as err:
                    return err.summary

        summary = asyncio.run(go())
    attempt = summary.steps["a"].attempts[0]  # type: ignore[attr-defined]
    assert attempt.cause == "bad_response" and "larger than 1 MB" in attempt.reason
    assert attempt.cost_source == "estimated" and attempt.cost > 0


def test_an_upstream_that_refuses_stream_options_is_asked_again_without_them(tmp_path: Path) -> None:
    """Finding 17: older Azure and vLLM reject `stream_options`: every streamed request failed with 502."""
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text="streamed all the same", refuse_stream_options=True)]
        pool = hostile_pool(upstream.url)
        pieces: list[str] = []

        async def go() -> object:
            async with Session(pool, home=tmp_path / "home", cache=False) as session:
                first = await session.run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "x"}, on_text=pieces.append)
                await session.run(flow_from('input q\nstep a { model: m  task: "{q}" }', pool), {"q": "y"}, on_text=pieces.append)
                return first

        summary = asyncio.run(go())
        assert ["stream_options" in r for r in upstream.requests] == [True, False, False]  # asked once, then never again
    assert summary.output == "streamed all the same"  # type: ignore[attr-defined]
    assert summary.steps["a"].attempts[0].cost_source == "estimated"  # type: ignore[attr-defined]  # no usage in such a stream


def test_nothing_the_suite_did_wrote_a_secret_to_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, SECRET)
    with ChatServer() as upstream:
        upstream.script["m"] = [Reply(text=f"echo {SECRET[:12]} and {SECRET}")]
        pool = Pool(providers={"up": ProviderSpec(kind="openai", base_url=upstream.url, api_key_env=VARIABLE)},
                    models={"m": ModelSpec(provider="up", id="m", input_price=1, output_price=1)}, source="<t>")

        async def go() -> object:
            async with Session(pool, home=tmp_path / "home") as session:
                return await session.run(flow_from('input q\nstep a { model: m  task: "{q}"  temperature: 0 }', pool), {"q": "x"})

        summary = asyncio.run(go())
    assert prefixes_in([json.dumps(summary.model_dump()), *everything_under(tmp_path / "home")]) == []  # type: ignore[attr-defined]
