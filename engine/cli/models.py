"""`baton models [--check]`: the pool, with prices; `--check` calls each endpoint once."""

from __future__ import annotations

import argparse
import asyncio
import time

from engine.cli.common import add_pool_argument, pool_error, pool_for
from engine.errors import PoolError
from engine.pool import Pool


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_pool_argument(p)
    p.add_argument("--check", action="store_true", help="send one tiny request to each model and report")


async def _check(pool: Pool) -> list[tuple[str, str]]:
    from engine.api import ProviderSet
    from engine.run.protocol import ChatRequest, ProviderFault

    providers = ProviderSet(pool)
    out = []
    try:
        for alias, spec in pool.models.items():
            t0 = time.perf_counter()
            try:
                provider = providers.for_alias(alias)
                resp = await provider.complete(ChatRequest(model_id=spec.id, messages=({"role": "user", "content": "Say OK."},),
                                                           max_tokens=4, timeout=60, alias=alias))
                out.append((alias, f"reachable ({(time.perf_counter() - t0) * 1000:.0f} ms, {resp.input_tokens}+{resp.output_tokens} tokens)"))
            except ProviderFault as fault:
                out.append((alias, f"UNREACHABLE: {fault.kind}: {fault}"))
    finally:
        await providers.aclose()
    return out


def run(args: argparse.Namespace) -> int:
    try:
        pool = pool_for(args, None)
    except PoolError as err:
        return pool_error(err)
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
        print(f"{alias}: {status}")
    return 0 if all(s.startswith("reachable") for _, s in results) else 1
