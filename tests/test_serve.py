"""`baton serve` through the official OpenAI SDK: a real server process on loopback, the loopback chat server upstream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from engine.run.reader import load_run
from engine.serve.keys import add_key
from engine.serve.ledger import SqliteLedger
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import WORKFLOWS
from tests.helpers import smart_reply
from tests.serve_harness import BatonServer, write_pool

FLOWS = sorted(p.stem for p in WORKFLOWS.glob("*.flow"))
QUESTION = "Write def total(xs) that sums a list; what is 2 + 2?"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ChatServer]:
    with ChatServer(responder=lambda body: Reply(text=smart_reply(body), chunk_delay=0.0005)) as server:
        yield server


@pytest.fixture(scope="module")
def served(upstream: ChatServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatonServer]:
    root = tmp_path_factory.mktemp("serve")
    pool = write_pool(upstream.url, root / "pool.toml")
    with BatonServer("--flows", str(WORKFLOWS), "--pool", str(pool), home=root / "home") as server:
        yield server


def served_url(server: BatonServer) -> str:
    return server.url.removesuffix("/v1")


def client(server: BatonServer, key: str = "unused", **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("flow", FLOWS)
def test_every_reference_flow_is_served_and_streams_the_same_answer(served: BatonServer, flow: str) -> None:
    c = client(served)
    raw = c.chat.completions.with_raw_response.create(model=f"flow/{flow}", messages=[{"role": "user", "content": QUESTION}])
    reply = raw.parse()
    run_id = raw.headers["x-baton-run-id"]
    baton = reply.model_extra["baton"]  # type: ignore[index]
    assert baton["run_id"] == run_id and reply.id == f"chatcmpl-{run_id}"
    record = load_run(run_id, served.home)
    assert record.status == "ok" and reply.choices[0].message.content == record.output
    assert reply.model == f"flow/{flow}"  # the model asked for; the alias whose text is the answer is baton.model
    assert baton["model"] == record.steps[record.output_step].model
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (record.input_tokens, record.output_tokens)
    assert reply.usage.model_extra["cost"] == pytest.approx(record.cost)  # type: ignore[index]
    assert {s["step"] for s in baton["steps"]} == set(record.steps)

    pieces, final = [], None
    for chunk in c.chat.completions.create(model=f"flow/{flow}", messages=[{"role": "user", "content": QUESTION}], stream=True,
                                           stream_options={"include_usage": True}):
        assert chunk.model == f"flow/{flow}"  # the same in every chunk
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        else:
            final = chunk
    assert "".join(pieces) == reply.choices[0].message.content
    assert final is not None and final.usage is not None
    streamed = load_run(final.model_extra["baton"]["run_id"], served.home)  # type: ignore[index]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (streamed.input_tokens, streamed.output_tokens)


def test_an_unchecked_answer_streams_token_by_token(served: BatonServer) -> None:
    chunks = [ch for ch in client(served).chat.completions.create(model="fast", stream=True,
                                                                  messages=[{"role": "user", "content": QUESTION * 3}])]
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(texts) > 5


async def _async_calls(server: BatonServer) -> list[str]:
    c = openai.AsyncOpenAI(base_url=server.url, api_key="unused")
    try:
        replies = await asyncio.gather(*(c.chat.completions.create(model="flow/fuse_panel", messages=[{"role": "user", "content": f"q{i}"}])
                                         for i in range(8)))
        return [r.model_extra["baton"]["run_id"] for r in replies]  # type: ignore[index]
    finally:
        await c.close()


def test_the_async_client_gets_one_run_per_request(served: BatonServer) -> None:
    run_ids = asyncio.run(_async_calls(served))
    assert len(set(run_ids)) == 8
    assert all(load_run(r, served.home).status == "ok" for r in run_ids)


def test_models_lists_flows_with_worst_case_and_aliases(served: BatonServer) -> None:
    models = {m.id: m.model_extra["baton"] for m in client(served).models.list()}  # type: ignore[index]
    assert {f"flow/{f}" for f in FLOWS} <= set(models) and "fast" in models
    assert models["flow/layered"]["kind"] == "flow" and models["flow/layered"]["worst_case"]["usd"] > 0
    assert models["fast"]["kind"] == "alias" and models["fast"]["model_id"] == "fast"
    missing = httpx.post(f"{served.url}/embeddings", json={"input": "x"})  # an endpoint this server lacks: an OpenAI-shaped 404
    assert missing.status_code == 404 and "is not an endpoint" in missing.json()["error"]["message"]
    assert httpx.get(f"{served.url}/chat/completions").json()["error"]["code"] == "method_not_allowed"
    health = httpx.get(served_url(served) + "/health").json()
    assert health["status"] == "ok" and health["flows"] == len(FLOWS)


def test_an_alias_is_a_pass_through_call_with_a_run_record(served: BatonServer, upstream: ChatServer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    reply = client(served).chat.completions.create(model="fast", messages=messages, temperature=0.3, max_tokens=50)  # type: ignore[arg-type]
    sent = upstream.requests[-1]
    assert sent["messages"] == messages and sent["temperature"] == 0.3 and sent["max_tokens"] == 50
    run = load_run(reply.model_extra["baton"]["run_id"], served.home)  # type: ignore[index]
    assert run.status == "ok" and run.flow == "alias:fast" and run.output == reply.choices[0].message.content
    shown = subprocess.run([sys.executable, "-m", "engine.cli.main", "show", run.run_id, "--home", str(served.home)],
                           capture_output=True, text=True)
    assert shown.returncode == 0 and "fast" in shown.stdout


def test_run_summary_endpoint_is_baton_show_json(served: BatonServer) -> None:
    reply = client(served).chat.completions.create(model="flow/solo", messages=[{"role": "user", "content": "x"}])
    run_id = reply.model_extra["baton"]["run_id"]  # type: ignore[index]
    got = httpx.get(f"{served.url}/runs/{run_id}").json()
    shown = subprocess.run([sys.executable, "-m", "engine.cli.main", "show", run_id, "--json", "--home", str(served.home)],
                           capture_output=True, text=True, check=True)
    assert got == json.loads(shown.stdout)
    assert httpx.get(f"{served.url}/runs/{run_id[:10]}").status_code == 404  # ids are exact here


def test_request_parameters_and_system_text_reach_steps_that_do_not_set_them(served: BatonServer, upstream: ChatServer) -> None:
    before = len(upstream.requests)
    client(served).chat.completions.create(model="flow/solo", temperature=0.7, seed=11, max_tokens=77,
                                           messages=[{"role": "system", "content": "Answer like a {pirate}."},
                                                     {"role": "user", "content": "hello"}])
    sent = upstream.requests[before:]
    assert sent and all(r["temperature"] == 0.7 and r["seed"] == 11 for r in sent)
    assert all(r["max_tokens"] == 800 for r in sent)  # solo.flow sets its own max_tokens: the flow's wins
    assert sent[0]["messages"][0] == {"role": "system", "content": "Answer like a {pirate}."}  # braces stay text


def test_errors_are_what_the_sdk_expects(served: BatonServer, upstream: ChatServer) -> None:
    c = client(served, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="flow/nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="cannot take tools: its output `answer` is a fuse"):
        c.chat.completions.create(model="flow/fuse_panel", messages=[{"role": "user", "content": "x"}],
                                  tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(openai.BadRequestError, match="no input `nope`"):
        c.chat.completions.create(model="flow/solo", messages=[{"role": "user", "content": "x"}], extra_body={"baton": {"inputs": {"nope": "1"}}})
    with pytest.raises(openai.BadRequestError, match="last user message"):
        c.chat.completions.create(model="flow/solo", messages=[{"role": "system", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="n` must be 1"):
        c.chat.completions.create(model="flow/solo", messages=[{"role": "user", "content": "x"}], n=2)
    before = httpx.get(served_url(served) + "/health").json()
    with pytest.raises(openai.APIStatusError) as info:  # the SDK's default retries: a 402 with x-should-retry: false is not retried
        client(served).chat.completions.create(model="flow/solo", messages=[{"role": "user", "content": "x"}],
                                               extra_body={"baton": {"max_cost_usd": 1e-9}})
    assert info.value.status_code == 402 and info.value.response.headers["x-should-retry"] == "false"
    assert httpx.get(served_url(served) + "/health").json()["requests"] == before["requests"] + 1
    run = load_run(info.value.response.headers["x-baton-run-id"], served.home)
    assert run.status == "budget_exhausted"
    with pytest.raises(openai.APIStatusError) as info:  # streamed, refused before its first event: the same JSON error
        client(served, max_retries=0).chat.completions.create(model="flow/solo", messages=[{"role": "user", "content": "x"}],
                                                              stream=True, extra_body={"baton": {"max_cost_usd": 1e-9}})
    assert info.value.status_code == 402 and info.value.response.headers["x-should-retry"] == "false"
    assert load_run(info.value.response.headers["x-baton-run-id"], served.home).status == "budget_exhausted"


def test_an_upstream_failure_mid_stream_is_an_sdk_error_and_recorded(served: BatonServer, upstream: ChatServer) -> None:
    upstream.script["fast"] = [Reply(text="a long answer that breaks off " * 5, stream_break_after=4), Reply(text="never sent")]
    try:
        stream = client(served, max_retries=0).chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}], stream=True)
        got = ""
        with pytest.raises(openai.APIError, match="after its reply began streaming"):
            for chunk in stream:
                got += chunk.choices[0].delta.content or "" if chunk.choices else ""
        assert got and "never sent" not in got
    finally:
        upstream.script.pop("fast")
    run_id = stream.response.headers["x-baton-run-id"]
    run = load_run(run_id, served.home)
    assert run.status == "failed" and "after its reply began streaming" in (run.error or "")


# -- keys, budgets, isolation ----------------------------------------------------------------


@pytest.fixture
def keyed(upstream: ChatServer, tmp_path: Path) -> Iterator[tuple[BatonServer, dict[str, str]]]:
    keys_file = tmp_path / "keys.toml"
    tokens = {"alice": add_key(keys_file, "alice", total_usd=0.02), "bob": add_key(keys_file, "bob")}
    pool = write_pool(upstream.url, tmp_path / "pool.toml", prices={"strong": (100.0, 100.0), "fast": (100.0, 100.0)})
    with BatonServer("--flows", str(WORKFLOWS), "--pool", str(pool), "--keys", str(keys_file), "--fsync", home=tmp_path / "home") as server:
        yield server, tokens


def test_a_bad_key_is_refused_and_a_key_sees_only_its_own_runs(keyed: tuple[BatonServer, dict[str, str]], upstream: ChatServer) -> None:
    server, tokens = keyed
    with pytest.raises(openai.AuthenticationError):
        client(server, "bk-wrong", max_retries=0).chat.completions.create(model="flow/solo", messages=[{"role": "user", "content": "x"}])
    reply = client(server, tokens["bob"]).chat.completions.create(model="cheap", messages=[{"role": "user", "content": "x"}])
    run_id = reply.model_extra["baton"]["run_id"]  # type: ignore[index]
    own = httpx.get(f"{server.url}/runs/{run_id}", headers={"Authorization": f"Bearer {tokens['bob']}"})
    other = httpx.get(f"{server.url}/runs/{run_id}", headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert own.status_code == 200 and other.status_code == 404
    # a client that pastes its key into a message, or into a named input: it reaches neither the model nor a record
    c = client(server, tokens["bob"])
    c.chat.completions.create(model="cheap", messages=[{"role": "user", "content": f"my key is {tokens['bob']}"}])
    c.chat.completions.create(model="flow/hello", messages=[{"role": "user", "content": "x"}],
                              extra_body={"baton": {"inputs": {"question": f"key {tokens['bob']}"}}})
    assert tokens["bob"] not in "".join(p.read_text(errors="replace") for p in server.home.rglob("*") if p.is_file() and p.suffix != ".sqlite")
    assert not any(tokens["bob"] in b for b in upstream.bodies())


def test_concurrent_requests_on_one_key_never_spend_past_its_cap(keyed: tuple[BatonServer, dict[str, str]], upstream: ChatServer) -> None:
    server, tokens = keyed
    before = len(upstream.bills)

    async def hammer() -> list[int]:
        c = openai.AsyncOpenAI(base_url=server.url, api_key=tokens["alice"], max_retries=0)

        async def one(i: int) -> int:
            try:
                await c.chat.completions.create(model="fast", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=4)
                return 200
            except openai.APIStatusError as err:
                return err.status_code

        try:
            return await asyncio.gather(*(one(i) for i in range(60)))
        finally:
            await c.close()

    statuses = asyncio.run(hammer())
    spent = sum(b.usd(100.0, 100.0) for b in upstream.bills[before:] if b.model == "fast")
    assert 200 in statuses and 402 in statuses and set(statuses) <= {200, 402}
    assert spent <= 0.02 + 1e-12
    ledger = SqliteLedger(server.home / "serve-ledger.sqlite")
    try:
        assert ledger.spent("alice", time.strftime("%Y-%m-%d", time.gmtime()))[1] == pytest.approx(spent)
    finally:
        ledger.close()


def test_without_keys_only_loopback_is_allowed(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "serve", "--host", "0.0.0.0", "--port", "0", "--home", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "without keys" in proc.stderr and "Traceback" not in proc.stderr


def test_a_broken_flow_stops_the_server_with_validate_diagnostics(tmp_path: Path) -> None:
    (tmp_path / "bad.flow").write_text("step a { model: nosuch  task: \"x\" }\n")
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "serve", "--flows", str(tmp_path), "--port", "0", "--home", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "bad.flow:1:" in proc.stderr and "error[" in proc.stderr and "Traceback" not in proc.stderr


def test_reload_keeps_the_last_good_version_of_a_flow_that_breaks(upstream: ChatServer, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    good = 'flow f\ninput q\nstep a { model: fast  task: "good {q}" }\n'
    (flows / "f.flow").write_text(good)
    pool = write_pool(upstream.url, tmp_path / "pool.toml")
    with BatonServer("--flows", str(flows), "--pool", str(pool), "--reload", home=tmp_path / "home") as server:
        c = client(server)
        (flows / "f.flow").write_text(good.replace("good", "better"))
        time.sleep(2.5)
        assert "better" in str(c.chat.completions.create(model="flow/f", messages=[{"role": "user", "content": "x"}]).choices[0].message.content)
        (flows / "f.flow").write_text("step a { model: nosuch }\n")
        time.sleep(2.5)
        reply = c.chat.completions.create(model="flow/f", messages=[{"role": "user", "content": "x"}])
        assert "better" in str(reply.choices[0].message.content)
    assert any("keeps serving its last good version" in line for line in server.log), "".join(server.log)


@pytest.mark.model
def test_the_local_model_streams_token_by_token_through_serve(tmp_path: Path) -> None:
    """The embedded model behind the endpoint: the streamed answer is the unstreamed one, sent in many pieces."""
    with BatonServer("--flows", str(WORKFLOWS), home=tmp_path / "home") as server:
        c = client(server)
        messages = [{"role": "user", "content": "Why is the sky blue?"}]
        whole = c.chat.completions.create(model="flow/hello", messages=messages, max_tokens=48)  # type: ignore[arg-type]
        chunks = list(c.chat.completions.create(model="flow/hello", messages=messages, max_tokens=48, stream=True,  # type: ignore[arg-type]
                                                stream_options={"include_usage": True}))
    pieces = [ch.choices[0].delta.content or "" for ch in chunks if ch.choices]
    text = whole.choices[0].message.content
    assert text and "".join(pieces) == text
    assert chunks[-1].usage is not None and whole.usage is not None  # the same text costs the same tokens, streamed or not
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)
    assert sum(1 for p in pieces if p) > 5
    assert whole.model == "flow/hello" and whole.model_extra["baton"]["model"] == "smol" and whole.usage is not None and whole.usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["gemini", "flow/fuse_self"])
def test_a_client_that_goes_away_mid_stream_cancels_its_run_and_the_record_says_so(served: BatonServer, upstream: ChatServer,
                                                                                     model: str) -> None:
    slow = Reply(text="a slow answer " * 40, chunk_delay=0.05)
    upstream.script["gemini"] = [slow]
    upstream.script["strong"] = [Reply(text="a panel answer")] * 4 + [slow]  # the panel answers at once; the judge is slow
    try:
        with httpx.stream("POST", f"{served.url}/chat/completions", timeout=30,
                          json={"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}) as resp:
            run_id = resp.headers["x-baton-run-id"]
            for line in resp.iter_lines():
                if '"content":"a sl' in line or '"content":"a s' in line:
                    break  # the first token: then hang up
        deadline = time.time() + 10
        status = ""
        while time.time() < deadline:
            try:
                status = load_run(run_id, served.home).status
            except Exception:  # not written yet
                status = ""
            if status and status != "running":
                break
            time.sleep(0.1)
        assert status == "interrupted"
    finally:
        upstream.script.pop("gemini")
        upstream.script.pop("strong")


def test_run_pages_ask_a_browser_for_a_key_and_show_each_key_only_its_own_runs(keyed: tuple[BatonServer, dict[str, str]]) -> None:
    server, tokens = keyed
    base = served_url(server)
    asked = httpx.get(f"{base}/runs")
    assert asked.status_code == 401 and asked.headers["WWW-Authenticate"].startswith("Basic ")  # a browser shows its sign-in box
    assert asked.headers["content-type"].startswith("text/html")
    reply = client(server, tokens["bob"]).chat.completions.create(model="flow/hello", messages=[{"role": "user", "content": "x"}])
    run_id = reply.model_extra["baton"]["run_id"]  # type: ignore[index]
    bob, alice = httpx.BasicAuth("anyone", tokens["bob"]), httpx.BasicAuth("anyone", tokens["alice"])
    listing = httpx.get(f"{base}/runs", auth=bob)
    assert listing.status_code == 200 and f'href="/runs/{run_id}"' in listing.text and "<select name=\"flow\">" in listing.text
    assert run_id not in httpx.get(f"{base}/runs", auth=alice).text
    page = httpx.get(f"{base}/runs/{run_id}", auth=bob)
    assert page.status_code == 200 and 'data-step="answer"' in page.text and page.headers["Cache-Control"] == "no-store"
    assert tokens["bob"] not in page.text and tokens["bob"] not in listing.text
    assert httpx.get(f"{base}/runs/{run_id}", auth=alice).status_code == 404  # another key's run is no run at all
    assert httpx.get(f"{base}/runs/{run_id}", headers={"Authorization": f"Bearer {tokens['bob']}"}).status_code == 200
    assert httpx.get(f"{base}/runs/{run_id[:10]}", auth=bob).status_code == 404  # the exact id, no prefixes
    assert httpx.get(f"{base}/runs?status=failed", auth=bob).text.count('class="run"') == 0
    reply = client(server, tokens["bob"]).chat.completions.create(model="cheap", messages=[{"role": "user", "content": "hello there"}])
    call_page = httpx.get(f"{base}/runs/{reply.model_extra['baton']['run_id']}", auth=bob).text  # type: ignore[index]
    assert 'data-step="call"' in call_page and "hello there" in call_page and "does not check" not in call_page
