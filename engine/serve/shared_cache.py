"""The response cache of replicas on several machines (`--cache` with a PostgreSQL ledger): one table all of them read.

On one machine the workers share the run home, and with it the cache's files. Keys are
`ResponseCache.key`'s, which hold the tenant's partition (an API key's name), so one key's
cached reply is never served to another here either.
"""

from __future__ import annotations

from engine.run.cache import decode_response, encode_response
from engine.run.protocol import ChatResponse
from engine.serve.ledger import Ledger


class LedgerCache:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def get(self, key: str) -> ChatResponse | None:
        text = self.ledger.cached(key)
        return decode_response(text) if text is not None else None

    def put(self, key: str, response: ChatResponse) -> None:
        self.ledger.cache(key, encode_response(response))

    async def fetch(self, key: str) -> ChatResponse | None:
        text = await self.ledger.cached_async(key)
        return decode_response(text) if text is not None else None

    async def keep(self, key: str, response: ChatResponse) -> None:
        await self.ledger.cache_async(key, encode_response(response))
