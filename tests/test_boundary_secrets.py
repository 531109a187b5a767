"""Keys and terminals at the provider boundary: no secret survives in any text, no provider controls the terminal.

For secrets, every file of the run home, the cache and all output is scanned for every
prefix of the key longer than 6 characters: a key cut in half still leaks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.errors import PoolError
from engine.pool import ModelSpec, Pool, ProviderSpec, load_pool
from engine.testing.chat_server import ChatServer, Reply
from tests.conftest import ROOT
from tests.helpers import flow_from

KEY = "zq9-SECRET-4f7e1d2c9b8a6e5d"
HEADER_SECRET = "hx7-HEADER-93bd0c11aa"


def leaked_prefixes(texts: list[str], secret: str) -> list[str]:
    return [secret[:n] for n in range(7, len(secret) + 1) if any(secret[:n] in t for t in texts)]


def everything_written(home: Path, *outputs: str) -> list[str]:
    return [*outputs, *(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file())]


def write_pool(tmp_path: Path, url: str, header: str = HEADER_SECRET) -> Path:
    pool_file = tmp_path / "pool.toml"
    pool_file.write_text(
        f'[providers.loop]\nkind = "openai"\nbase_url = "{url}"\napi_key_env = "BATON_TEST_KEY"\ntimeout = 5\n'
        f'headers = {{ "X-Api-Key" = {json.dumps(header)} }}\n'
        '[models.fast]\nprovider = "loop"\nid = "fast"\ninput_price = 1\noutput_price = 1\n'
        '[models.other]\nprovider = "loop"\nid = "other"\n')
    return pool_file


def write_flow(tmp_path: Path, text: str = 'input q\nstep a { model: fast  task: "{q}" }') -> Path:
    flow = tmp_path / "k.flow"
    flow.write_text(text)
    return flow


def run_one_step(tmp_path: Path, url: str, key: str = KEY) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`baton run` of a one-step flow on the loopback pool, with the key in the environment."""
    home = tmp_path / "home"
    proc = baton(["run", str(write_flow(tmp_path)), "--pool", str(write_pool(tmp_path, url)), "--home", str(home), "--input", "q=hi"],
                 {"BATON_TEST_KEY": key})
    return home, proc


def baton(args: list[str], env_extra: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BATON_POOL"} | {"NO_COLOR": "1"} | env_extra
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=90,
                          env=env, input=stdin)


def test_a_key_echoed_across_the_cut_of_an_error_body_never_leaks_in_part(tmp_path: Path) -> None:
    """Before: the body was cut at 300 characters and then scrubbed, so a key straddling the cut leaked its first half."""
    home = tmp_path / "home"
    with ChatServer() as server:
        # the key starts at character 290 of the body, so the old cut at 300 fell inside it
        server.script["fast"] = [Reply(status=400, text="x" * 244 + f" Authorization: Bearer {KEY} rejected")]
        pool = write_pool(tmp_path, server.url)
        flow = write_flow(tmp_path, 'input q\nstep a { model: fast  task: "{q}" }')
        proc = baton(["run", str(flow), "--pool", str(pool), "--home", str(home), "--input", "q=hi", "--json"], {"BATON_TEST_KEY": KEY})
        assert proc.returncode == 1, proc.stderr
        assert server.request_headers[0]["Authorization"] == f"Bearer {KEY}"
    texts = everything_written(home, proc.stdout, proc.stderr)
    assert leaked_prefixes(texts, KEY) == []
    assert "Authorization: Bearer ***" in next(home.rglob("summary.json")).read_text()


def test_a_key_echoed_in_a_200_reply_is_not_stored_cached_or_shown_to_other_steps(tmp_path: Path) -> None:
    """Before: a key inside a reply's text was the step's output, cached, and put in the next step's prompt."""
    home = tmp_path / "home"
    with ChatServer() as server:
        server.script["fast"] = [Reply(text=f"debug: headers were Authorization: Bearer {KEY}; X-Api-Key: {HEADER_SECRET}")]
        pool = write_pool(tmp_path, server.url)
        flow = write_flow(tmp_path, 'input q\nstep a { model: fast  task: "{q}" }\nstep b { model: other  sees: a  task: "summarise" }\noutput b')
        proc = baton(["run", str(flow), "--pool", str(pool), "--home", str(home), "--input", "q=hi"], {"BATON_TEST_KEY": KEY})
        assert proc.returncode == 0, proc.stderr
        second_prompt = json.dumps(server.requests[1])
        show = baton(["show", "--home", str(home), proc.stderr.split("run ")[-1].split(":")[0]], {})
    assert "debug: headers were Authorization: Bearer ***" in second_prompt
    for secret in (KEY, HEADER_SECRET):
        assert leaked_prefixes([second_prompt], secret) == []
        assert leaked_prefixes(everything_written(home, proc.stdout, proc.stderr, show.stdout), secret) == []
    assert list((home / "cache").rglob("*.json"))  # the cache was written, and it holds no key


def test_a_pasted_key_with_a_trailing_newline_is_stripped_with_a_warning(tmp_path: Path) -> None:
    with ChatServer() as server:
        home, proc = run_one_step(tmp_path, server.url, KEY + "\n")
        assert proc.returncode == 0, proc.stderr
        assert server.request_headers[0]["Authorization"] == f"Bearer {KEY}"
    assert "warning: $BATON_TEST_KEY has leading or trailing whitespace" in proc.stderr
    summary = json.loads(next(home.rglob("summary.json")).read_text())
    assert summary["warnings"] and "BATON_TEST_KEY" in summary["warnings"][0]


def test_a_key_with_a_control_character_is_a_pool_error_before_any_call(tmp_path: Path) -> None:
    with ChatServer() as server:
        home, proc = run_one_step(tmp_path, server.url, "abc\rdef-123456")
        assert server.count() == 0
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "$BATON_TEST_KEY contains a control character" in proc.stderr and "abc" not in proc.stderr
    assert not (home / "runs").exists()  # found before a run folder exists


@pytest.mark.parametrize("header, expected", [
    ("Bearer abc\r\nX-Injected: 1", "header `X-Api-Key` has a control character"),
    ("line\nbreak", "header `X-Api-Key` has a control character"),
])
def test_a_pool_header_with_cr_or_lf_is_a_pool_error_that_does_not_show_the_value(tmp_path: Path, header: str, expected: str) -> None:
    pool = write_pool(tmp_path, "http://127.0.0.1:9/v1", header=header)
    with pytest.raises(PoolError) as info:
        load_pool(pool)
    assert expected in str(info.value) and "Injected" not in str(info.value) and "break" not in str(info.value)


@pytest.mark.parametrize("url", ["ftp://models.example/v1", "file:///etc/passwd", "127.0.0.1:8080/v1", "http://"])
def test_a_base_url_that_is_not_http_is_a_pool_error(tmp_path: Path, url: str) -> None:
    """Before: it passed the pool checks and failed at run time as retried connection faults."""
    pool_file = tmp_path / "pool.toml"
    pool_file.write_text(f'[providers.p]\nbase_url = "{url}"\n[models.m]\nprovider = "p"\nid = "m"\n')
    with pytest.raises(PoolError, match="not an http:// or https:// URL"):
        load_pool(pool_file)
    flow = write_flow(tmp_path, 'input q\nstep a { model: m  task: "{q}" }')
    proc = baton(["run", str(flow), "--pool", str(pool_file), "--home", str(tmp_path / "h"), "--input", "q=x"], {})
    assert proc.returncode == 2 and "not an http:// or https:// URL" in proc.stderr


# -- the terminal ------------------------------------------------------------------------------

HOSTILE = "\x1b]0;pwned\x07\x1b[2K\rstep a: ok by fast, $0.0000 (fake)\x00 \u202eevil"


def unsafe(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or c in "\x7f\u202e\u202d\u2066\u2067\u2068\u2069"]


def test_an_error_body_cannot_drive_the_terminal_through_progress_or_errors(tmp_path: Path) -> None:
    with ChatServer() as server:
        server.script["fast"] = [Reply(status=500, raw=HOSTILE.encode(), content_type="text/plain")]  # a proxy's plain-text page
        _home, proc = run_one_step(tmp_path, server.url)
    assert proc.returncode == 1
    assert unsafe(proc.stderr) == []
    assert "\\x1b]0;pwned\\x07" in proc.stderr and "\\u202eevil" in proc.stderr  # shown, as escapes


def test_show_escapes_control_and_bidi_characters_from_model_output(tmp_path: Path) -> None:
    with ChatServer() as server:
        server.script["fast"] = [Reply(text="answer " + HOSTILE)]
        home, proc = run_one_step(tmp_path, server.url)
        assert proc.returncode == 0, proc.stderr
    run_id = proc.stderr.split("run ")[-1].split(":")[0]
    show = baton(["show", run_id, "--home", str(home)], {})
    runs = baton(["runs", "--home", str(home)], {})
    assert show.returncode == 0 and unsafe(show.stdout) == [] and "\\u202eevil" in show.stdout and "\\x00" in show.stdout
    assert unsafe(runs.stdout) == []
    exact = subprocess.run([sys.executable, "-m", "engine.cli.main", "show", run_id, "--home", str(home), "--output", "a"], cwd=ROOT,
                           capture_output=True, timeout=60)  # into a pipe: the output exactly, nothing else
    assert exact.stdout == ("answer " + HOSTILE + "\n").encode()
    as_json: dict[str, Any] = json.loads(baton(["show", run_id, "--home", str(home), "--json"], {}).stdout)
    assert as_json["steps"]["a"]["output"] == "answer " + HOSTILE


def test_for_terminal_keeps_newlines_and_tabs_and_escapes_the_rest() -> None:
    from engine.terminal import for_terminal, one_line

    assert for_terminal("a\tb\nc\x1b[31m\u202ed\x85") == "a\tb\nc\\x1b[31m\\u202ed\\x85"
    assert one_line("a\nb") == "a\\nb"


def test_a_pool_key_pasted_into_an_input_reaches_no_prompt_and_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the upstream received the key in its prompt, and inputs.json, steps.jsonl and summary.json kept it."""
    import asyncio

    from engine.session import Session

    key = "sk-live-abcdef0123456789"
    monkeypatch.setenv("LOOP_KEY", key)
    with ChatServer() as server:
        pool = Pool(providers={"loop": ProviderSpec(kind="openai", base_url=server.url, api_key_env="LOOP_KEY")},
                    models={"m": ModelSpec(provider="loop", id="m")}, source="<t>")
        flow = flow_from('input q\nstep a { model: m  task: "{q}" }', pool)

        async def go() -> None:
            async with Session(pool, home=tmp_path, cache=False) as session:
                await session.run(flow, {"q": f"my key is {key}, ok"})
                await session.call("m", [{"role": "user", "content": f"again {key}"}])

        asyncio.run(go())
        assert not any(key in body for body in server.bodies())
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and key in p.read_text(errors="replace")]
