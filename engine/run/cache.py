"""A content-addressed response cache on disk.

The key is a SHA-256 of everything that determines a deterministic reply: provider
endpoint, model id, parameters and the exact messages. Only temperature-0 calls are
cached by default (a sampled reply is not a fact to reuse). A hit is recorded as a hit,
costs $0 and sends no request. Entries are single JSON files written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from engine.run.protocol import ChatRequest, ChatResponse


class CacheStore(Protocol):
    """Where cached replies are kept: files in the run home (`ResponseCache`), or a table replicas share
    (`engine.serve.shared_cache`). Keys come from `ResponseCache.key`, which holds the tenant's partition. A call
    awaits `fetch` and `keep`: a table across a network is asked without holding up the event loop."""

    def get(self, key: str) -> ChatResponse | None: ...

    def put(self, key: str, response: ChatResponse) -> None: ...

    async def fetch(self, key: str) -> ChatResponse | None: ...

    async def keep(self, key: str, response: ChatResponse) -> None: ...


def encode_response(response: ChatResponse) -> str:
    return json.dumps(asdict(response), ensure_ascii=False)


def decode_response(text: str) -> ChatResponse | None:
    """A stored reply, or None for one that no longer reads (written by another version, cut short)."""
    try:
        return ChatResponse(**json.loads(text))
    except (ValueError, TypeError):
        return None


class ResponseCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(endpoint: str, request: ChatRequest, partition: str = "") -> str:
        """`partition` keeps tenants apart (an API key's name in `baton serve`): one tenant's cached reply is never
        served to another, at $0, as an oracle for "someone asked exactly this"."""
        material = {
            "endpoint": endpoint, "model": request.model_id, "messages": list(request.messages),
            "temperature": request.temperature, "max_tokens": request.max_tokens, "top_p": request.top_p,
            "seed": request.seed, "reasoning": request.reasoning,
        }
        if partition:  # only when set, so that the keys of a single user's calls stay as they were
            material["partition"] = partition
        if request.response_format is not None:  # only when set, as grammars
            material["response_format"] = dict(request.response_format)
        if request.grammar:  # only when set, so that the keys of unconstrained calls stay as they were
            material["grammar"] = [request.grammar_format, request.grammar]
        return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatResponse | None:
        try:
            return decode_response(self._path(key).read_text(encoding="utf-8"))
        except OSError:
            return None

    def put(self, key: str, response: ChatResponse) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(encode_response(response))
        os.replace(tmp, path)

    async def fetch(self, key: str) -> ChatResponse | None:
        return self.get(key)  # a local file: read inline

    async def keep(self, key: str, response: ChatResponse) -> None:
        self.put(key, response)

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        if not self.root.exists():
            return 0
        count = sum(1 for _ in self.root.rglob("*.json"))
        shutil.rmtree(self.root)
        return count

    def stats(self) -> tuple[int, int]:
        """(entries, bytes)."""
        if not self.root.exists():
            return 0, 0
        files = list(self.root.rglob("*.json"))
        return len(files), sum(f.stat().st_size for f in files)
