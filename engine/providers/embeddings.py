"""Question embeddings from the `/embeddings` endpoint of a pool alias's provider (any OpenAI-compatible one, or
llama.cpp's server over the embedded model), as a router's features instead of hashed n-grams.

A router file names only the alias (`features.alias`); the pool says where it is served and
which environment variable holds its key, so a file a flow ships cannot send questions or keys
anywhere the operator did not configure. Network code, so it lives with the providers: a run gets
its embedder from the session (`Caller.embedder`), and validating a flow never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.pool import Pool
from engine.router.model import Embedder, RouterError, Vector
from engine.run.secrets import read_key

BATCH = 64


def endpoint_embedder(base_url: str, model: str, key: str | None, timeout: float = 60.0) -> Embedder:
    """An embedder over `{base_url}/embeddings` with `model`; `key` is sent as a bearer token, never shown."""

    def embed(texts: Sequence[str]) -> list[Vector]:
        return _embed(texts, base_url, model, key, timeout)

    return embed


def _embed(texts: Sequence[str], base_url: str, model: str, key: str | None, timeout: float) -> list[Vector]:
    import httpx

    url = base_url.rstrip("/") + "/embeddings"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    out: list[Vector] = []
    with httpx.Client(timeout=timeout) as client:
        for start in range(0, len(texts), BATCH):
            batch = list(texts[start:start + BATCH])
            try:
                reply = client.post(url, json={"model": model, "input": batch}, headers=headers)
            except httpx.HTTPError as err:
                raise RouterError(f"embeddings endpoint {url}: {type(err).__name__}") from None
            if reply.status_code != 200:
                raise RouterError(f"embeddings endpoint {url}: HTTP {reply.status_code}")
            try:
                rows = sorted(reply.json()["data"], key=lambda d: d["index"])
                vectors = [[float(x) for x in row["embedding"]] for row in rows]
            except (ValueError, KeyError, TypeError):
                raise RouterError(f"embeddings endpoint {url}: the reply is not an OpenAI embeddings list") from None
            if len(vectors) != len(batch):
                raise RouterError(f"embeddings endpoint {url}: {len(vectors)} embeddings for {len(batch)} texts")
            for v in vectors:
                if not all(math.isfinite(x) for x in v):
                    raise RouterError(f"embeddings endpoint {url}: an embedding holds a number that is not finite")
                norm = math.sqrt(sum(x * x for x in v)) or 1.0
                out.append({i: x / norm for i, x in enumerate(v) if x})
    return out


def pool_embedder(pool: Pool, alias: str) -> Embedder:
    """The `/embeddings` endpoint of `alias`'s provider, asked for `alias`'s model id, with the provider's key."""
    spec = pool.models.get(alias)
    if spec is None:
        raise RouterError(f"the router embeds questions with the pool alias `{alias}`, which this pool does not have")
    provider = pool.provider(spec.provider)
    if provider.kind != "openai" or not provider.base_url:
        raise RouterError(f"the router embeds questions with `{alias}`, whose provider is not an OpenAI-compatible endpoint")
    return endpoint_embedder(provider.base_url, spec.id, read_key(provider))
