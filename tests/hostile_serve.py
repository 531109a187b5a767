"""`baton serve` in this process, on loopback, for the hostile suite: the app as `baton serve` builds it, in a thread."""

from __future__ import annotations

import time
from pathlib import Path

from engine.pool import ModelSpec, Pool, ProviderSpec
from engine.serve.app import build_app, open_state
from engine.serve.catalog import Catalog
from engine.serve.guard import BrowserPolicy
from engine.serve.keys import KeySpec, hash_key
from engine.serve.ledgers import open_ledger
from engine.session import Session
from engine.testing.loopback import LoopbackApp

IN_PRICE, OUT_PRICE = 1.0, 2.0  # USD per million tokens


def hostile_pool(url: str, key_env: str | None = None, **extra: object) -> Pool:
    spec = ProviderSpec(kind="openai", base_url=url, max_concurrency=64, api_key_env=key_env, **extra)  # type: ignore[arg-type]
    models = {"m": ModelSpec(provider="up", id="m", input_price=IN_PRICE, output_price=OUT_PRICE)}
    return Pool(providers={"up": spec}, models=models, source="<hostile>")


class InProcessServer:
    """`url` is the server's base (no /v1); `ledger` its spend ledger; `home` its run home."""

    def __init__(self, pool: Pool, home: Path, keys: dict[str, KeySpec] | None = None, cache: bool = False,
                 policy: BrowserPolicy | None = None, flows: Path | None = None, ledger: str | None = None) -> None:
        """`ledger`: a SQLite file or a PostgreSQL URL (default: a file in `home`)."""
        self.home = home
        self.ledger_path: str | Path = ledger or home / "ledger.sqlite"
        session = Session(pool, home=home, cache=cache, durable=False)
        catalog = Catalog.load(flows, pool)
        self.state = open_state(session, catalog, keys, self.ledger_path)
        self.app = LoopbackApp(build_app(self.state, policy=policy), "baton-serve-test")
        self.url = ""

    def __enter__(self) -> InProcessServer:
        self.app.start()
        self.url = f"http://127.0.0.1:{self.app.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.stop()

    def booked(self, key: str) -> float:
        """What the server's ledger booked for `key` (all days)."""
        ledger = open_ledger(self.ledger_path)
        try:
            return ledger.spent(key, "")[1]
        finally:
            ledger.close()

    def settled(self, timeout: float = 20.0) -> None:
        """Wait until no run of the server is in flight (a cancelled run settles after its client is gone)."""
        from engine.run.reader import list_runs

        deadline = time.time() + timeout
        while time.time() < deadline:
            runs = list_runs(self.home, limit=10_000) if (self.home / "runs").exists() else []
            if all(r.status != "running" for r in runs):
                return
            time.sleep(0.05)
        raise TimeoutError("a run of the server was still running")


def key_spec(name: str, token: str, daily_usd: float | None = None) -> dict[str, KeySpec]:
    digest = hash_key(token)
    return {digest: KeySpec(name, digest, daily_usd=daily_usd)}
