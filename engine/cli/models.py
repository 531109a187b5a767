"""`baton models [--check]`: the pool, with prices; `--check` calls each endpoint once."""

from __future__ import annotations

import argparse
import asyncio
import time

from engine.cli.common import add_pool_argument, for_stream, pool_for
from engine.cli.exits import EXIT_FAILED, EXIT_OK
from engine.pool import Pool


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_pool_argument(p)
    p.add_argument("--check", action="store_true", help="send one tiny request to each model and report")


async def _check(pool: Pool) -> list[tuple[str, str]]:
    from engine.errors import RunError
    from engine.model import Params
    from engine.session import Session
    from engine.wiring import unset_key_variable

    async def one(session: Session, alias: str) -> tuple[str, str]:
        spec = pool.models[alias]
        variable = unset_key_variable(pool.provider(spec.provider))
        if variable:
            return alias, f"NO KEY: ${variable} is not set (nothing sent)"
        t0 = time.perf_counter()
        try:  # one attempt: a check reports what the endpoint does now, not after backoff
            result = await session.call(alias, [{"role": "user", "content": "Say OK."}], params=Params(max_tokens=4), retries=0,
                                        timeout=60, cache=False, step="check")
        except RunError as err:
            return alias, f"UNREACHABLE: {err}"
        return alias, f"reachable ({(time.perf_counter() - t0) * 1000:.0f} ms, {result.input_tokens}+{result.output_tokens} tokens)"

    async with Session(pool, cache=False) as session:  # all at once: unreachable endpoints took a timeout each, one after another
        return list(await asyncio.gather(*(one(session, alias) for alias in pool.models)))


def run(args: argparse.Namespace) -> int:
    pool = pool_for(args, None)  # a broken pool: cli.main says so
    print(f"pool: {pool.source}")
    rows = [("ALIAS", "PROVIDER", "MODEL", "IN $/1M", "OUT $/1M", "DESCRIPTION")]
    for alias, spec in pool.models.items():
        rows.append((alias, spec.provider, spec.id, f"{spec.input_price:g}", f"{spec.output_price:g}", spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=False)) + "  " + r[5])
    if not args.check:
        return 0
    results = asyncio.run(_check(pool))
    for alias, status in results:
        print(for_stream(f"{alias}: {status}"))  # an error quotes the provider
    return EXIT_OK if all(s.startswith("reachable") for _, s in results) else EXIT_FAILED
