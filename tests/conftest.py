"""Shared fixtures: a real chat-completions server on loopback, pools pointing at it, a run home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.pool import ModelSpec, Pool, ProviderSpec, load_pool
from engine.testing.chat_server import ChatServer

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
