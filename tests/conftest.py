"""Shared fixtures: a real chat-completions server on loopback, pools pointing at it, a run home."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.pool import ModelSpec, Pool, ProviderSpec, load_pool
from engine.testing.chat_server import ChatServer
from engine.testing.postgres import PostgresServer, postgres_bin

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    with ChatServer() as server:
        yield server


def loopback_pool(url: str, prices_from: Path | None = WORKFLOWS / "models.toml", **provider_opts: object) -> Pool:
    """Every alias of the reference pool, served by the loopback server under model id = alias."""
    aliases: dict[str, ModelSpec] = {}
    base = load_pool(prices_from) if prices_from else None
    names = list(base.models) if base else ["local"]
    for alias in names:
        spec = base.models[alias] if base else ModelSpec(provider="loop", id=alias)
        aliases[alias] = ModelSpec(provider="loop", id=alias, input_price=spec.input_price, output_price=spec.output_price)
    opts = {"max_concurrency": 256, "timeout": 30.0, **provider_opts}
    return Pool(providers={"loop": ProviderSpec(kind="openai", base_url=url, **opts)}, models=aliases, max_concurrency=1024,
                source="<loopback>")


@pytest.fixture
def loop_pool(chat_server: ChatServer) -> Pool:
    return loopback_pool(chat_server.url)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "baton-home"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL (Debian's) for the session's tests, on loopback, in a temporary data directory."""
    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run installs it")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


_databases = itertools.count(1)


def new_database(server: PostgresServer) -> str:
    """A fresh, empty database on the test server: its URL."""
    import psycopg

    name = f"t{os.getpid()}_{next(_databases)}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def new_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes fresh ledgers of one backend (each test runs once per backend): a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        files = itertools.count(1)
        return lambda: str(tmp_path / f"ledger{next(files)}.sqlite")
    server: PostgresServer = request.getfixturevalue("postgres")
    return lambda: new_database(server)
