"""Several processes serving one endpoint: `baton serve --workers 2` on one SQLite ledger, and two replicas (separate run
homes, as on two machines) on one real PostgreSQL. A key's cap holds on the upstream's own ledger however requests are
spread; any replica shows any run; a replica killed mid-load does not take the endpoint down or hold its reservations.
Real processes on loopback (marked slow; CI runs them)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from engine.run.reader import load_run
from engine.serve.app import KEYS_REFRESH_S
from engine.serve.keys import add_key, utc_day
from engine.serve.ledger import SqliteLedger
from engine.serve.ledgers import open_ledger
from engine.testing.chat_server import ChatServer, Reply
from engine.testing.postgres import PostgresServer
from engine.testing.slow_link import SlowLink
from tests.conftest import new_database
from tests.serve_harness import BatonServer, write_pool

pytestmark = pytest.mark.slow
PRICES = {"coder": (50.0, 50.0)}  # USD per million tokens: each call costs about $0.001
TIMEOUT = aiohttp.ClientTimeout(total=30)  # no request of these tests waits longer than this


@dataclass
class Tally:
    ok: dict[str, tuple[str, str]] = field(default_factory=dict)  # marker -> (run id, the server's URL)
    refused: int = 0
    failed: list[str] = field(default_factory=list)  # anything else: a status, an error, a broken connection


async def load(urls: list[str], token: str, clients: int, seconds: float, tally: Tally, stop: asyncio.Event | None = None) -> None:
    """`clients` clients, each sending to one of `urls` in turn, one request at a time, until the time is up."""
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=TIMEOUT) as http:
        async def client(i: int) -> None:
            k = 0
            while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                k += 1
                url, marker = urls[(i + k) % len(urls)], f"m{i}x{k}"
                body = {"model": "coder", "max_tokens": 16, "messages": [{"role": "user", "content": f"please answer {marker}"}]}
                try:
                    async with http.post(f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
                        text = await resp.text()
                        if resp.status == 402:
                            tally.refused += 1
                        elif resp.status == 200 and marker in text:
                            tally.ok[marker] = (resp.headers["x-baton-run-id"], url)
                        else:
                            tally.failed.append(f"{url} {resp.status} {text[:120]}")
                except (TimeoutError, aiohttp.ClientError) as err:
                    tally.failed.append(f"{url} {type(err).__name__}")
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(client(i) for i in range(clients)))


def capped_spend(upstream: ChatServer) -> float:
    """What the upstream could bill for the capped alias: its own record of every reply it sent."""
    return sum(b.usd(*PRICES["coder"]) for b in upstream.bills if b.model == "coder")


def answering(body: dict[str, object]) -> Reply:
    messages = body["messages"]
    assert isinstance(messages, list)
    return Reply(text="answer: " + str(messages[-1]["content"])[-40:])


def test_two_workers_on_one_port_share_the_ledger_and_keep_the_cap(tmp_path: Path) -> None:
    cap = 0.05
    with ChatServer(latency=0.02, responder=answering) as upstream:
        token = add_key(tmp_path / "keys.toml", "small", total_usd=cap)
        pool = write_pool(upstream.url, tmp_path / "pool.toml", prices=PRICES)
        server = BatonServer("--pool", str(pool), "--keys", str(tmp_path / "keys.toml"), "--workers", "2", home=tmp_path / "home").start()
        try:
            tally = Tally()
            asyncio.run(load([server.url], token, 100, 4.0, tally))
        finally:
            server.stop()
        assert not tally.failed, tally.failed[:5]
        assert tally.refused and tally.ok, "the cap was never reached: the test did not test it"
        assert capped_spend(upstream) <= cap + 1e-9  # on the upstream's books, with two processes reserving at once
        ledger = SqliteLedger(tmp_path / "home" / "serve-ledger.sqlite")
        holders = {row[0].rsplit(":", 1)[0] for row in ledger.execute("SELECT holder FROM holders").fetchall()}
        assert ledger.spent("small", utc_day())[1] == pytest.approx(capped_spend(upstream))  # booked what was billed
        ledger.close()
        assert len(holders) == 2, holders  # both workers reserved (host:pid, one per process)
        for run_id, _url in list(tally.ok.values())[:50]:
            assert load_run(run_id, tmp_path / "home").status == "ok"  # both wrote into the one run home


def test_two_replicas_on_postgresql_keep_the_cap_and_show_each_others_runs(tmp_path: Path, postgres: PostgresServer) -> None:
    cap = 0.05
    db = new_database(postgres)
    with ChatServer(latency=0.02, responder=answering) as upstream:
        token = add_key(tmp_path / "keys.toml", "small", total_usd=cap)
        pool = write_pool(upstream.url, tmp_path / "pool.toml", prices=PRICES)
        # the first awaits the ledger (as across a network), the second asks it inline (as on one machine): one cap holds
        replicas = [BatonServer("--pool", str(pool), "--keys", str(tmp_path / "keys.toml"), "--db", db, home=tmp_path / f"home{i}",
                                env={"BATON_LEDGER_AWAIT": str(1 - i)}).start() for i in range(2)]
        try:
            tally = Tally()
            asyncio.run(load([r.url for r in replicas], token, 100, 4.0, tally))
            assert not tally.failed, tally.failed[:5]
            assert tally.refused and tally.ok
            assert capped_spend(upstream) <= cap + 1e-9
            asyncio.run(_each_shows_every_run(replicas, token, tally))
        finally:
            for r in replicas:
                r.stop()
    # from the command line of the first machine: its own runs and the second's, through the ledger
    import subprocess
    import sys

    from tests.conftest import ROOT

    other = next(run_id for run_id, made_on in tally.ok.values() if made_on == replicas[1].url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shown = subprocess.run([sys.executable, "-m", "engine.cli.main", "show", other, "--home", str(tmp_path / "home0"), "--db", db],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0 and other in shown.stdout and "alias:coder" in shown.stdout, shown.stderr
    alone = subprocess.run([sys.executable, "-m", "engine.cli.main", "show", other, "--home", str(tmp_path / "home0")],
                           capture_output=True, text=True, env={**env, "BATON_DB_URL": ""}, timeout=60)
    assert alone.returncode != 0  # without the ledger, the first machine has no such run
    listed = subprocess.run([sys.executable, "-m", "engine.cli.main", "runs", "--home", str(tmp_path / "home0"), "--db", db, "--limit",
                             "5000"], capture_output=True, text=True, env=env, timeout=60)
    assert other in listed.stdout


async def _each_shows_every_run(replicas: list[BatonServer], token: str, tally: Tally) -> None:
    bearer = {"Authorization": f"Bearer {token}"}
    basic = {"Authorization": "Basic " + base64.b64encode(f"me:{token}".encode()).decode()}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        for marker, (run_id, made_on) in list(tally.ok.items())[:40]:
            for replica in replicas:
                async with http.get(f"{replica.url}/runs/{run_id}", headers=bearer) as resp:
                    assert resp.status == 200, (replica.url, made_on, run_id)
                    summary = await resp.json()
                assert summary["status"] == "ok" and marker in summary["output"]
        other = next(run_id for run_id, made_on in tally.ok.values() if made_on == replicas[1].url)
        async with http.get(replicas[0].url.removesuffix("/v1") + "/runs?status=ok", headers=basic) as resp:
            assert resp.status == 200 and other in await resp.text()  # the list on one replica holds the other's runs
        async with http.get(replicas[0].url.removesuffix("/v1") + f"/runs/{other}", headers=basic) as resp:
            assert resp.status == 200 and other in await resp.text()  # and its page draws it


def test_a_replica_killed_mid_load_leaves_the_other_serving_and_its_reservations_reclaimed(tmp_path: Path,
                                                                                           postgres: PostgresServer) -> None:
    db = new_database(postgres)
    with ChatServer(latency=0.3, responder=answering) as upstream:  # slow replies: calls are in flight at the kill
        token = add_key(tmp_path / "keys.toml", "small", total_usd=100.0)  # a cap, so every call reserves in the ledger
        pool = write_pool(upstream.url, tmp_path / "pool.toml", prices=PRICES)
        env = {"BATON_LEDGER_STALE_S": "2"}
        doomed, survivor = (BatonServer("--pool", str(pool), "--keys", str(tmp_path / "keys.toml"), "--db", db, home=tmp_path / f"h{i}",
                                        env=env).start() for i in range(2))
        try:
            tally = Tally()

            async def kill_midway() -> None:
                task = asyncio.ensure_future(load([doomed.url, survivor.url], token, 40, 6.5, tally))
                await asyncio.sleep(3.0)
                doomed.kill()  # SIGKILL: no reservation settled, nothing closed
                ok_at_kill = sum(1 for _r, url in tally.ok.values() if url == survivor.url)
                await task
                assert sum(1 for _r, url in tally.ok.values() if url == survivor.url) > ok_at_kill + 20  # it kept serving

            asyncio.run(kill_midway())
            assert all(doomed.url in f for f in tally.failed), tally.failed[:5]  # only the dead replica's requests failed
            ledger = open_ledger(db)
            ledger.stale_s = 2.0  # as the replicas were told (BATON_LEDGER_STALE_S)
            try:
                time.sleep(2.5)  # the dead replica's heartbeat is stale now
                probe = ledger.reserve("small", utc_day(), 0.001, None, 100.0)  # any transaction on the key reclaims
                assert isinstance(probe, str)
                assert ledger.held("small") == pytest.approx(0.001)  # only the probe: the dead one holds nothing
                ledger.settle(probe, "small", utc_day(), None)
            finally:
                ledger.close()
            done_before = [(run_id, url) for run_id, url in tally.ok.values() if url == doomed.url]
            assert done_before
            for run_id, _url in done_before[:20]:  # nothing the dead replica finished is lost: its record is on disk
                assert load_run(run_id, tmp_path / "h0").status == "ok"
        finally:
            survivor.stop()


def test_keys_stored_in_the_shared_ledger_are_honoured_by_every_replica(tmp_path: Path, postgres: PostgresServer) -> None:
    """`--db URL --new-key NAME` stores only the key's hash in the database; replicas require keys from then on, and a key
    added while they run is honoured by all of them within seconds, without a restart."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    db = new_database(postgres)

    def new_key(name: str) -> str:
        made = subprocess.run([sys.executable, "-m", "engine.cli.main", "serve", "--db", db, "--new-key", name, "--daily-usd", "1"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert made.returncode == 0 and "shared ledger" in made.stderr, made.stderr
        return made.stdout.strip()

    first = new_key("alice")
    import psycopg

    with psycopg.connect(db) as conn:
        assert first not in json.dumps(conn.execute("SELECT * FROM keys").fetchall())  # only its hash is stored
    with ChatServer(responder=answering) as upstream:
        pool = write_pool(upstream.url, tmp_path / "pool.toml", prices=PRICES)
        replicas = [BatonServer("--pool", str(pool), "--db", db, home=tmp_path / f"home{i}").start() for i in range(2)]
        try:
            async def ask(url: str, token: str | None) -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                body = {"model": "coder", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
                async with aiohttp.ClientSession(timeout=TIMEOUT) as http, \
                        http.post(f"{url}/chat/completions", json=body, headers=headers) as resp:
                    return resp.status

            for replica in replicas:
                assert asyncio.run(ask(replica.url, None)) == 401 and asyncio.run(ask(replica.url, first)) == 200
            second = new_key("bob")  # while they run
            assert "already holds" in subprocess.run(
                [sys.executable, "-m", "engine.cli.main", "serve", "--db", db, "--new-key", "bob"], capture_output=True, text=True,
                timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}).stderr
            deadline = time.monotonic() + 3 * KEYS_REFRESH_S  # each replica reads the ledger's keys every KEYS_REFRESH_S
            while [asyncio.run(ask(r.url, second)) for r in replicas] != [200, 200] and time.monotonic() < deadline:
                time.sleep(0.5)
            assert [asyncio.run(ask(r.url, second)) for r in replicas] == [200, 200]
        finally:
            for r in replicas:
                r.stop()


def test_with_cache_replicas_share_one_response_cache_and_keys_never_share_hits(tmp_path: Path, postgres: PostgresServer) -> None:
    db = new_database(postgres)
    with ChatServer(responder=answering) as upstream:
        tokens = {name: add_key(tmp_path / "keys.toml", name, daily_usd=1.0) for name in ("alice", "bob")}
        pool = write_pool(upstream.url, tmp_path / "pool.toml", prices=PRICES)
        replicas = [BatonServer("--pool", str(pool), "--keys", str(tmp_path / "keys.toml"), "--db", db, "--cache",
                                home=tmp_path / f"home{i}", env={"BATON_LEDGER_AWAIT": str(1 - i)}).start()  # awaited, inline
                    for i in range(2)]
        try:
            async def ask(url: str, token: str) -> str:
                body = {"model": "coder", "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": "same question"}]}
                headers = {"Authorization": f"Bearer {token}"}
                async with aiohttp.ClientSession(timeout=TIMEOUT) as http, \
                        http.post(f"{url}/chat/completions", json=body, headers=headers) as resp:
                    assert resp.status == 200
                    return str((await resp.json())["choices"][0]["message"]["content"])

            first = asyncio.run(ask(replicas[0].url, tokens["alice"]))
            assert upstream.count("coder") == 1
            assert asyncio.run(ask(replicas[1].url, tokens["alice"])) == first and upstream.count("coder") == 1  # a hit, elsewhere
            asyncio.run(ask(replicas[1].url, tokens["bob"]))
            assert upstream.count("coder") == 2  # another key asked it again: its own call, never alice's reply
        finally:
            for r in replicas:
                r.stop()


def test_a_flow_answered_by_a_replica_that_awaits_the_ledger_is_shown_by_the_other_at_once(tmp_path: Path,
                                                                                           postgres: PostgresServer) -> None:
    """A flow's record goes to the shared ledger as a task when the ledger is awaited (measured: the first replica's is
    20 ms away each way); the answer waits for it, so the other replica finds the run the moment the client has its
    answer, streamed or not. Without that wait the other replica answered 404."""
    db = new_database(postgres)
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "one.flow").write_text('flow one\ninput question\nstep answer { model: coder  task: "{question}"  max_tokens: 16 }\n')
    token = add_key(tmp_path / "keys.toml", "k", daily_usd=1.0)
    with ChatServer(responder=answering) as upstream, SlowLink(postgres.port, 0.02) as far:
        pool = write_pool(upstream.url, tmp_path / "pool.toml", prices=PRICES)
        replicas = [BatonServer("--flows", str(flows), "--pool", str(pool), "--keys", str(tmp_path / "keys.toml"), "--db",
                                db.replace(f":{postgres.port}/", f":{far.port}/") if i == 0 else db, home=tmp_path / f"home{i}").start()
                    for i in range(2)]
        try:
            async def ask_then_look(stream: bool, n: int) -> None:
                bearer = {"Authorization": f"Bearer {token}"}
                body = {"model": "flow/one", "stream": stream, "messages": [{"role": "user", "content": f"question {n}"}]}
                async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                    async with http.post(f"{replicas[0].url}/chat/completions", json=body, headers=bearer) as resp:
                        assert resp.status == 200, await resp.text()
                        run_id = resp.headers["x-baton-run-id"]
                        await resp.read()
                    async with http.get(f"{replicas[1].url}/runs/{run_id}", headers=bearer) as resp:
                        assert resp.status == 200, (n, await resp.text())
                        assert (await resp.json())["status"] == "ok"

            for n in range(5):
                asyncio.run(ask_then_look(stream=n % 2 == 1, n=n))
        finally:
            for r in replicas:
                r.stop()
