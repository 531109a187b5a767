"""A router's embedder from the pool: the operator's pool decides the URL and the key, never the router file."""

from __future__ import annotations

from engine.pool import Pool
from engine.router.model import Embedder, RouterError
from engine.run.secrets import read_key


def pool_embedder(pool: Pool, alias: str) -> Embedder:
    """The `/embeddings` endpoint of `alias`'s provider, asked for `alias`'s model id, with the provider's key."""
    from engine.router.embed import endpoint_embedder

    spec = pool.models.get(alias)
    if spec is None:
        raise RouterError(f"the router embeds questions with the pool alias `{alias}`, which this pool does not have")
    provider = pool.provider(spec.provider)
    if provider.kind != "openai" or not provider.base_url:
        raise RouterError(f"the router embeds questions with `{alias}`, whose provider is not an OpenAI-compatible endpoint")
    return endpoint_embedder(provider.base_url, spec.id, read_key(provider))
