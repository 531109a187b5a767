"""Replicas on a PostgreSQL ledger across a network: the ledger's statements inline against awaited (run by hand).

    python bench/ledger_network_bench.py [--delay 0 0.001] [--rounds 2] [--seconds 8]

Two `baton serve` replicas on one PostgreSQL (Debian's binaries), a pass-through alias with a
capped key, the loopback upstream at 100 ms, 64 clients. Between the servers and PostgreSQL a
TCP proxy holds every chunk `--delay` seconds in each direction, which puts the database
"across a network" on one machine. Each configuration runs with `BATON_LEDGER_AWAIT=0`
(statements inline on the event loop) and `=1` (awaited on psycopg's asynchronous pool), taking
turns `--rounds` times so that the machine's drift falls on both. Prints requests a second,
median latency and the servers' CPU a request.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import serve_bench as sb  # noqa: E402  (this folder's benchmark helpers)


def start_proxy(target: int, delay: float) -> tuple[subprocess.Popen[str], int]:
    """`engine.testing.slow_link` in a process of its own (no CPU taken from this process's client)."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.testing.slow_link", str(target), str(delay)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=sb.ROOT)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, nargs="+", default=[0.0, 0.001])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    from engine.testing.postgres import PostgresServer, postgres_bin

    if postgres_bin() is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    measure_args = argparse.Namespace(seconds=args.seconds, concurrency=64, sequential=100)
    upstream, upstream_url = sb.start_upstream(0.1)
    pg = PostgresServer().start()
    rows: list[tuple[float, str, dict[str, float | str]]] = []
    try:
        for delay in args.delay:
            proxy, port = start_proxy(pg.port, delay)
            db = pg.url.replace(f":{pg.port}/", f":{port}/")
            try:
                for _ in range(args.rounds):
                    for mode in ("0", "1"):
                        os.environ["BATON_LEDGER_AWAIT"] = mode  # the replicas inherit it
                        tmp = Path(tempfile.mkdtemp())
                        started = [sb.start_baton(upstream_url, tmp, db=db, name=f"replica{i}") for i in range(2)]
                        try:
                            name = "awaited" if mode == "1" else "inline"
                            result = sb.measure(name, [s[1] for s in started], "fast", [s[0].pid for s in started], measure_args,
                                                started[-1][2])
                        finally:
                            for proc, _url, _token in started:
                                proc.terminate()
                                proc.wait(10)
                        rows.append((delay, name, result))
            finally:
                proxy.terminate()
    finally:
        upstream.terminate()
        pg.stop()
    print(f"\ntwo replicas on PostgreSQL, upstream 100 ms, 64 clients for {args.seconds:g} s")
    print(f"{'delay each way':>15} {'ledger':>8} {'req/s':>7} {'p50 ms':>8} {'CPU ms/req':>11}")
    for delay, name, r in rows:
        print(f"{delay * 1000:>12.1f} ms {name:>8} {r['rps']:>7.0f} {r['p50']:>8.2f} {r['cpu_ms']:>11.3f}")


if __name__ == "__main__":
    main()
