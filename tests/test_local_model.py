"""The embedded model for real: llama.cpp's own OpenAI-compatible server, and the in-process provider.

These prove the HTTP provider against a server nobody here wrote. Marked `model`:
A bare `pytest` leaves them out (`pytest -m model` runs them); CI (`./dev test`) runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.pool import ModelSpec, Pool, ProviderSpec, default_pool, load_pool
from engine.run.store import read_step_journal
from tests.conftest import ROOT, WORKFLOWS
from tests.helpers import run

pytestmark = pytest.mark.model
INPUTS = {"question": "What is 2 + 2?"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    from engine.providers.local import model_path

    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model_path(), "--host", "127.0.0.1", "--port", str(port),
         "--chat_format", "gemma", "--n_ctx", "4096", "--model_alias", "local"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("llama.cpp server did not become ready in 120 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def llama_pool(url: str) -> Pool:
    """Every alias of the reference pool served by the llama.cpp server (short replies keep CPU time down)."""
    reference = load_pool(WORKFLOWS / "models.toml")
    models = {alias: ModelSpec(provider="llama", id="local", max_output_tokens=48, input_price=0, output_price=0)  # free: a budget holds
              for alias in reference.models}
    return Pool(providers={"llama": ProviderSpec(kind="openai", base_url=url, max_concurrency=2, timeout=300)}, models=models,
                source="<llama.cpp server>")


@pytest.mark.parametrize("name", ["hello", "fuse_panel", "route_label", "verify_loop"])
def test_reference_flow_against_llama_cpp_server(llama_server: str, name: str, home: Path) -> None:
    summary = run(WORKFLOWS / f"{name}.flow", INPUTS, llama_pool(llama_server), home, cache=False)
    assert summary.status == "ok"
    assert summary.output and summary.output.strip()
    ran = [s for s in summary.steps.values() if s.status == "ok" and s.kind != "route"]
    assert ran
    for step in ran:
        assert step.output.strip(), step.name
        assert step.input_tokens > 0 and step.output_tokens > 0, step.name
        assert all(a.model_id for a in step.attempts if a.status == "ok")
    run_dir = home / "runs" / summary.run_id
    recorded = json.loads((run_dir / "summary.json").read_text())
    assert recorded["status"] == "ok" and recorded["output"] == summary.output
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "attempt" for e in events) == summary.calls
    assert events[-1]["event"] == "run_finished"
    for step in ran:
        assert step.name in read_step_journal(run_dir)


def test_hello_in_process_with_zero_configuration(tmp_path: Path) -> None:
    """`baton run workflows/hello.flow` from another folder, no pool file, no keys: the built-in default pool.

    `--no-cache`, so the model really runs in the process; it must exit without a traceback
    (llama.cpp's objects freed at interpreter shutdown used to print one).
    """
    hello = tmp_path / "hello.flow"
    hello.write_text((WORKFLOWS / "hello.flow").read_text())
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"}
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "run", "--no-cache", str(hello), "--input", "question=Name a colour."],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "run " in proc.stderr and ": ok;" in proc.stderr
    assert "1 call, 0 cache hits" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_models_check_reports_the_local_model_reachable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"}
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "models", "--check"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "local: reachable" in proc.stdout and "smol: reachable" in proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_default_pool_is_the_two_embedded_models_smol_first() -> None:
    pool = default_pool()
    assert list(pool.models) == ["smol", "local"]  # the first alias is the default planner
    assert all(pool.provider(spec.provider).kind == "local" for spec in pool.models.values())
    assert str(ROOT)  # the default pool needs no file


def test_ask_end_to_end_on_the_local_model(tmp_path: Path) -> None:
    """`baton ask`: the embedded model plans under a grammar, the plan runs, the record shows plan, models and answer."""
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"}
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "ask", "Name a primary colour.", "--max-steps", "2",
                           "--home", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "--- plan ---" in proc.stderr and "plan attempt 1:" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.stdout.strip()
    run_dir = next((tmp_path / "runs").iterdir())
    record = json.loads((run_dir / "ask.json").read_text())
    plan = record["rounds"][0]["plan"]
    assert plan["ok"] and 'use "' in plan["flow"] and 'task: "Name a primary colour."' in plan["flow"]  # chosen (--style select)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["output"] == record["output"]
    assert all(s["model"] in ("local", "smol") for s in summary["steps"].values())  # the built-in pool's two embedded models


def test_local_completion_stops_at_the_first_paragraph_with_the_same_answer() -> None:
    """Generation ends at the first paragraph break, which is all the provider keeps: same answer, fewer tokens."""
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    from engine.providers.local import LocalProvider, _load, completion_prompt, first_paragraph
    from engine.run.protocol import ChatRequest

    messages = ({"role": "user", "content": "Name a colour of the sky."},)
    provider = LocalProvider("local", ProviderSpec(kind="local"))
    request = ChatRequest(model_id="gemma", messages=messages, max_tokens=300, seed=0)
    stopped = asyncio.run(provider.complete(request))
    llm = _load(provider.n_ctx, provider.threads)
    full = llm.create_completion(completion_prompt(messages, False), max_tokens=300, temperature=0.0, top_p=0.95, seed=0)
    full_text = full["choices"][0]["text"].strip()
    assert "\n\n" in full_text, "the model should run on past its first paragraph when not stopped"
    assert stopped.text == first_paragraph(full_text)
    assert stopped.output_tokens < full["usage"]["completion_tokens"]
    assert stopped.finish_reason == "stop"


def test_a_local_reply_does_not_depend_on_the_calls_before_it() -> None:
    """At temperature 0, a model that has served other calls answers as a freshly loaded one does.

    llama-cpp-python reuses the previous prompt's KV cache; with this model what it kept
    leaked into the next call ("Why is the sky blue?" got another answer after other calls,
    and chat prompts came out as garbage).
    """
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    from engine.providers.local import LocalProvider
    from engine.run.protocol import ChatRequest

    def ask(provider: LocalProvider, question: str, max_tokens: int = 40) -> str:
        request = ChatRequest(model_id="gemma", messages=({"role": "user", "content": question},), max_tokens=max_tokens)
        return asyncio.run(provider.complete(request)).text

    used = LocalProvider("local", ProviderSpec(kind="local"))
    ask(used, "Why is grass green?", max_tokens=100)
    fresh = LocalProvider("local", ProviderSpec(kind="local", options={"n_ctx": 2048}))  # another context: a second, new model
    assert ask(used, "Why is the sky blue?") == ask(fresh, "Why is the sky blue?")


def test_chat_mode_sends_the_same_prompt_as_the_chat_api() -> None:
    """`mode = "chat"` builds the chat template itself (so it can take stopping criteria): same reply as llama.cpp's chat API."""
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    from engine.providers.local import LocalProvider, _load
    from engine.run.protocol import ChatRequest

    messages = ({"role": "user", "content": "Name three colours."},)
    provider = LocalProvider("local", ProviderSpec(kind="local", options={"mode": "chat"}))
    ours = asyncio.run(provider.complete(ChatRequest(model_id="gemma", messages=messages, max_tokens=40, seed=0)))
    llm = _load(provider.n_ctx, provider.threads)
    theirs = llm.create_chat_completion(messages=list(messages), max_tokens=40, temperature=0.0, top_p=0.95, seed=0)
    assert ours.text == theirs["choices"][0]["message"]["content"]
    assert (ours.input_tokens, ours.output_tokens) == (theirs["usage"]["prompt_tokens"], theirs["usage"]["completion_tokens"])


@pytest.mark.parametrize("mode", ["completion", "chat"])
def test_cancelled_local_calls_stop_generating_and_queued_ones_never_start(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C or a step timeout cancels the awaiting task; the llama.cpp thread must stop too.

    Three calls that would each generate 300 tokens (a grammar forces the length): the first
    is cancelled once it is generating, the two queued behind the model's lock are cancelled
    before they start. `asyncio.run` returns only when the worker threads are done, so
    everything below is what the threads actually did.
    """
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    from engine.providers.local import LocalProvider, _load
    from engine.run.protocol import ChatRequest

    provider = LocalProvider("local", ProviderSpec(kind="local", options={"mode": mode}))
    llm = _load(provider.n_ctx, provider.threads)
    started: list[int] = []
    finished: list[int] = []
    real = llm.create_completion

    def counting(*args: object, **kwargs: object) -> object:
        started.append(1)
        out = real(*args, **kwargs)
        finished.append(out["usage"]["completion_tokens"])
        return out

    monkeypatch.setattr(llm, "create_completion", counting)
    request = ChatRequest(model_id="gemma", messages=({"role": "user", "content": "Count."},), max_tokens=400,
                          grammar='root ::= "x "{300}', grammar_format="gbnf")

    async def main() -> None:
        calls = [asyncio.create_task(provider.complete(request)) for _ in range(3)]
        while not started:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        for call in calls:
            call.cancel()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)

    asyncio.run(main())
    assert started == [1]  # the two queued calls never reached the model
    assert len(finished) == 1 and finished[0] < 100  # the grammar asks for 300 tokens: it stopped when cancelled
    follow_up = asyncio.run(provider.complete(ChatRequest(model_id="gemma", messages=({"role": "user", "content": "Say hi."},), max_tokens=8)))
    assert follow_up.output_tokens > 0  # the model is usable after an abandoned generation


@pytest.mark.parametrize("model_id, mode", [("gemma-3-270m-q4_k_m", "completion"), ("gemma-3-270m-q4_k_m", "chat"),
                                           ("smollm2-135m-instruct-q4_1", None)])
def test_a_streamed_local_reply_is_the_unstreamed_one_in_pieces(model_id: str, mode: str | None) -> None:
    """`stream` hands on the answer token by token; the pieces add up to what `complete` returns, usage included."""
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    from engine.providers.local import LocalProvider
    from engine.run.protocol import ChatRequest

    provider = LocalProvider("local", ProviderSpec(kind="local", options={"mode": mode} if mode else {}))
    request = ChatRequest(model_id=model_id, messages=({"role": "user", "content": "Why is the sky blue?"},), max_tokens=60, seed=0)
    whole = asyncio.run(provider.complete(request))
    pieces: list[str] = []
    streamed = asyncio.run(provider.stream(request, pieces.append))
    assert streamed.text == whole.text and "".join(pieces) == whole.text
    assert len(pieces) > 5
    assert (streamed.input_tokens, streamed.output_tokens) == (whole.input_tokens, whole.output_tokens)


def test_smollm2_is_served_through_the_chat_template_in_its_gguf() -> None:
    """The `smol` alias: the same prompt and reply as llama.cpp's chat API with the file's own template."""
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    from engine.providers.local import LocalProvider, _load
    from engine.providers.local_models import MODELS, SMOLLM2_ID
    from engine.run.protocol import ChatRequest

    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three colours."})
    provider = LocalProvider("local", ProviderSpec(kind="local"))
    ours = asyncio.run(provider.complete(ChatRequest(model_id=SMOLLM2_ID, messages=messages, max_tokens=40, seed=0)))
    llm = _load(provider.n_ctx, provider.threads, MODELS[SMOLLM2_ID])
    llm.reset()
    theirs = llm.create_chat_completion(messages=list(messages), max_tokens=40, temperature=0.0, top_p=0.95, seed=0)  # type: ignore[arg-type]
    assert ours.text == theirs["choices"][0]["message"]["content"]
    assert ours.input_tokens == theirs["usage"]["prompt_tokens"]
    assert ours.response_model == SMOLLM2_ID


def test_the_repetition_guard_cuts_a_real_loop_at_its_first_repeat() -> None:
    """SmolLM2 asked for a haiku loops on one line until max_tokens; the guard keeps the text up to the first repeat and stops there."""
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    from engine.providers.local import LocalProvider, _load, cut_repeats
    from engine.providers.local_models import MODELS, SMOLLM2_ID, chat_prompt
    from engine.run.protocol import ChatRequest

    messages = ({"role": "user", "content": "Write a haiku about autumn."},)
    model = MODELS[SMOLLM2_ID]
    llm = _load(4096, None, model)
    llm.reset()
    prompt, stop = chat_prompt(llm, model, messages)
    raw = llm.create_completion(prompt, max_tokens=200, temperature=0.0, top_p=0.95, seed=0, stop=stop)["choices"][0]["text"]
    lines = [line.strip() for line in raw.split("\n") if line.strip()]
    assert len(lines) > len(set(lines)) + 3, "the unguarded model should loop on a line"
    provider = LocalProvider("local", ProviderSpec(kind="local"))
    reply = asyncio.run(provider.complete(ChatRequest(model_id=SMOLLM2_ID, messages=messages, max_tokens=200, seed=0)))
    kept = [line.strip() for line in reply.text.split("\n") if line.strip()]
    assert kept and len(kept) == len(set(kept))  # no line twice
    assert reply.text == cut_repeats(raw) and raw.startswith(reply.text)
    assert reply.output_tokens < 100  # it stopped at the repeat instead of running to max_tokens
    pieces: list[str] = []
    streamed = asyncio.run(provider.stream(ChatRequest(model_id=SMOLLM2_ID, messages=messages, max_tokens=200, seed=0), pieces.append))
    assert streamed.text == reply.text == "".join(pieces)


def test_the_keyless_panel_runs_both_embedded_models_and_a_judge(tmp_path: Path) -> None:
    """workflows/fuse_local.flow with no pool file: Gemma and SmolLM2 answer, SmolLM2 judges; every call recorded."""
    pytest.importorskip("llama_cpp", reason="needs the `local` extra")
    flow = tmp_path / "fuse_local.flow"
    flow.write_text((WORKFLOWS / "fuse_local.flow").read_text())
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"}
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "run", "--no-cache", "--json", str(flow), "--input",
                           "question=What is the capital of France?", "--home", str(tmp_path / "home")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)["summary"]
    attempts = summary["steps"]["answer"]["attempts"]
    assert [(a["role"], a["alias"], a["status"]) for a in attempts] == [("panel[0]", "local", "ok"), ("panel[1]", "smol", "ok"),
                                                                        ("judge", "smol", "ok")]
    assert summary["output"] and summary["steps"]["answer"]["model"] == "smol"
