"""Question embeddings from any OpenAI-compatible `/v1/embeddings` endpoint (a provider, or llama.cpp's server
over the embedded model), as a router's features instead of hashed n-grams.

Imported only when a router uses embeddings: validating a flow reads the router file and
never calls out. The key, when the endpoint needs one, is read from the environment
variable the router file names; the file never holds it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from engine.router.model import RouterError, Vector

BATCH = 64


def embed(texts: Sequence[str], features: dict[str, Any], timeout: float = 60.0) -> list[Vector]:
    import httpx

    url = str(features["base_url"]).rstrip("/") + "/embeddings"
    headers = {}
    key_env = features.get("api_key_env")
    if key_env:
        key = os.environ.get(str(key_env), "")
        if not key:
            raise RouterError(f"the router's embeddings endpoint needs ${key_env}, which is not set")
        headers["Authorization"] = f"Bearer {key}"
    out: list[Vector] = []
    with httpx.Client(timeout=timeout) as client:
        for start in range(0, len(texts), BATCH):
            batch = list(texts[start:start + BATCH])
            try:
                reply = client.post(url, json={"model": features.get("model", ""), "input": batch}, headers=headers)
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
                norm = math.sqrt(sum(x * x for x in v)) or 1.0
                out.append({i: x / norm for i, x in enumerate(v) if x})
    return out
