"""`baton serve` against calling the upstream directly and against the LiteLLM proxy (run by hand).

    pip install -r bench/requirements.txt          # litellm[proxy], bench-only
    python bench/serve_bench.py [--latency 0 0.1] [--seconds 10] [--concurrency 64] [--sequential 300]

One loopback upstream (engine.testing.chat_server, its own process) at a fixed latency;
three ways to reach it, each its own process on this machine, measured in one run:

- direct:        the upstream itself;
- baton serve:   the pool alias `fast` (a pass-through call) and `flow/one` (a one-step flow),
                 with a bearer key with a daily cap (hashed, checked per request, each call's
                 worst case reserved in the ledger and settled there) and a run record written
                 per request; once more with `--fsync` (every record and ledger entry fsynced);
                 with `--workers 2` (one port, one SQLite ledger); and as two replicas on one
                 PostgreSQL (`--db`; separate run homes; the client alternates between them, as a
                 load balancer would), when PostgreSQL is installed;
- litellm proxy: `litellm --config` with the same upstream as model `fast` and a master key
                 (no database: it keeps no spend ledger and no per-request record).

For each: median and p99 latency of sequential requests (added latency = minus the direct
figure), requests per second at saturation (`--concurrency` clients for `--seconds`), and
the proxy process's CPU milliseconds per request at saturation. The client is aiohttp in
this process. The machine is shared and noisy: compare figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
BODY = {"model": "fast", "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def wait_for(url: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1].split("/")[0])), 0.2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_upstream(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "engine.testing.chat_server", str(latency)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    return proc, url


def start_baton(upstream: str, tmp: Path, fsync: bool = False, workers: int = 1, db: str | None = None,
                name: str = "default") -> tuple[subprocess.Popen[str], str, str]:
    tmp = tmp / name
    tmp.mkdir()
    flows = tmp / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "one.flow").write_text('flow one\ninput question\nstep answer { model: fast  task: "{question}"  max_tokens: 16 }\n')
    (flows / "models.toml").write_text(f'max_concurrency = 1024\n[providers.loop]\nkind = "openai"\nbase_url = "{upstream}"\n'
                                       'max_concurrency = 512\n[models.fast]\nprovider = "loop"\nid = "fast"\n'
                                       'input_price = 0.15\noutput_price = 0.6\n')
    sys.path.insert(0, str(ROOT))
    from engine.serve.keys import add_key

    token = add_key(tmp / "keys.toml", "bench", daily_usd=1e6)  # a cap: every call reserves in the ledger, as capped keys do
    if db is not None:  # replicas share one key: the second is given the first's keys file
        first = tmp.parent / "replica0" / "keys.toml"
        if name != "replica0":
            (tmp / "keys.toml").write_text(first.read_text())
            token = (tmp.parent / "replica0" / "token").read_text()
        (tmp / "token").write_text(token)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "serve", "--flows", str(flows), "--port", str(port),
                             "--home", str(tmp / "home"), "--keys", str(tmp / "keys.toml"), *(["--fsync"] if fsync else []),
                             "--workers", str(workers), *(["--db", db] if db else [])],
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    wait_for(url)
    return proc, url, token


LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()


def start_litellm(upstream: str, tmp: Path) -> tuple[subprocess.Popen[str], str] | None:
    exe = Path(sys.executable).with_name("litellm")
    if not exe.exists():
        return None
    config = tmp / "litellm.yaml"
    config.write_text(f"model_list:\n  - model_name: fast\n    litellm_params:\n      model: openai/fast\n      api_base: {upstream}\n"
                      "      api_key: none\nlitellm_settings:\n  telemetry: false\n  drop_params: true\n")
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY}
    proc = subprocess.Popen([str(exe), "--config", str(config), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    wait_for(url, 180)
    time.sleep(2.0)
    return proc, url


async def sequential(url: str, model: str, n: int, token: str) -> list[float]:
    body = json.dumps({**BODY, "model": model})
    out = []
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            t0 = time.perf_counter()
            async with http.post(f"{url}/chat/completions", data=body, headers={"Content-Type": "application/json",
                                                                                "Authorization": f"Bearer {token}"}) as resp:
                await resp.read()
                assert resp.status == 200, await resp.text()
            out.append(time.perf_counter() - t0)
    return out


async def saturate(urls: list[str], model: str, seconds: float, concurrency: int, token: str) -> int:
    """`concurrency` clients for `seconds`, client i sending to urls[i % len(urls)] (a load balancer over replicas)."""
    body = json.dumps({**BODY, "model": model})
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def worker(url: str) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with http.post(f"{url}/chat/completions", data=body, headers={"Content-Type": "application/json",
                                                                                    "Authorization": f"Bearer {token}"}) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
        await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
    return done


def measure(name: str, url: str | list[str], model: str, pid: int | list[int], args: argparse.Namespace,
            token: str = "none") -> dict[str, float | str]:
    urls, pids = (url if isinstance(url, list) else [url]), (pid if isinstance(pid, list) else [pid])
    asyncio.run(sequential(urls[0], model, 20, token))  # warm up
    lat = sorted(asyncio.run(sequential(urls[0], model, args.sequential, token)))
    cpu0 = sum(cpu_seconds(p) for p in pids)
    n = asyncio.run(saturate(urls, model, args.seconds, args.concurrency, token))
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    print(f"  measured {name}: {n / args.seconds:.0f} req/s", file=sys.stderr, flush=True)
    return {"name": name, "p50": statistics.median(lat) * 1000, "p99": lat[int(len(lat) * 0.99) - 1] * 1000,
            "rps": n / args.seconds, "cpu_ms": cpu / max(n, 1) * 1000}


def start_replicas(upstream: str, tmp: Path, procs: list[subprocess.Popen[str]]) -> tuple[list[str], list[int], str] | None:
    """Two `baton serve` processes on one PostgreSQL (a cluster started for the run), or None without PostgreSQL."""
    sys.path.insert(0, str(ROOT))
    from engine.testing.postgres import PostgresServer, postgres_bin

    if postgres_bin() is None:
        return None
    server = PostgresServer().start()
    atexit.register(server.stop)
    urls, pids, token = [], [], ""
    for i in range(2):
        proc, url, token = start_baton(upstream, tmp, db=server.url, name=f"replica{i}")
        procs.append(proc)
        urls.append(url)
        pids.append(proc.pid)
    return urls, pids, token


def _median_row(measured: list[dict[str, float | str]]) -> dict[str, float | str]:
    """One row's figures over rounds: the median of each, and every round's requests a second."""
    row: dict[str, float | str] = {"name": measured[0]["name"]}
    for field in ("p50", "p99", "rps", "cpu_ms"):
        row[field] = statistics.median(float(m[field]) for m in measured)
    row["each"] = ", ".join(f"{float(m['rps']):.0f}" for m in measured)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1, help="measure every row this many times, the rows taking turns "
                        "(the machine drifts: a row's median over rounds compares better than one pass)")
    args = parser.parse_args()
    for latency in args.latency:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            upstream, up_url = start_upstream(latency)
            procs = [upstream]
            try:
                baton, baton_url, token = start_baton(up_url, tmp)
                procs.append(baton)
                durable, durable_url, durable_token = start_baton(up_url, tmp, fsync=True, name="fsync")
                procs.append(durable)
                workers, workers_url, workers_token = start_baton(up_url, tmp, workers=2, name="workers")
                procs.append(workers)
                litellm = start_litellm(up_url, tmp)
                targets: list[tuple[str, str | list[str], str, int | list[int], str]] = [
                    ("direct", up_url, "fast", upstream.pid, "none"),
                    ("baton serve (alias)", baton_url, "fast", baton.pid, token),
                    ("baton serve (flow/one)", baton_url, "flow/one", baton.pid, token),
                    ("  the same, --fsync", durable_url, "flow/one", durable.pid, durable_token),
                    ("  --workers 2 (alias)", workers_url, "fast", workers.pid, workers_token),
                    ("  --workers 2 (flow/one)", workers_url, "flow/one", workers.pid, workers_token)]
                replicas = start_replicas(up_url, tmp, procs)
                if replicas is not None:
                    urls, pids, replica_token = replicas
                    targets.append(("  2 replicas, PostgreSQL", urls, "fast", pids, replica_token))
                if litellm is not None:
                    procs.append(litellm[0])
                    targets.append(("litellm proxy", litellm[1], "fast", litellm[0].pid, LITELLM_KEY))
                rounds = [[measure(*target[:4], args, target[4]) for target in targets] for _ in range(args.rounds)]
                rows = [_median_row([r[i] for r in rounds]) for i in range(len(targets))]
            finally:
                for p in procs:
                    p.send_signal(signal.SIGINT)
                for p in procs:
                    try:
                        p.wait(20)
                    except subprocess.TimeoutExpired:
                        p.kill()
            base = rows[0]
            print(f"\nupstream latency {latency * 1000:.0f} ms; {args.sequential} sequential requests, then {args.concurrency} "
                  f"clients for {args.seconds:g} s" + (f"; the median of {args.rounds} rounds (req/s of each in brackets)"
                                                       if args.rounds > 1 else ""))
            print(f"{'':<24} {'p50 ms':>8} {'+p50':>7} {'p99 ms':>8} {'+p99':>7} {'req/s':>7} {'CPU ms/req':>11}")
            for r in rows:
                extra = "" if r is base else f"{float(r['p50']) - float(base['p50']):>+7.2f}"
                extra99 = "" if r is base else f"{float(r['p99']) - float(base['p99']):>+7.2f}"
                print(f"{r['name']:<24} {float(r['p50']):>8.2f} {extra:>7} {float(r['p99']):>8.2f} {extra99:>7} {float(r['rps']):>7.0f} "
                      f"{float(r['cpu_ms']):>11.3f}" + (f"  [{r['each']}]" if args.rounds > 1 else ""))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
