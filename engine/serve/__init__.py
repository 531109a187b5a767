"""`baton serve`: flows and pool aliases behind one OpenAI-compatible endpoint.

Layered like the rest of the engine and imported only by `baton serve` (never by the dry
run): `catalog` (the flows a server offers, checked and re-read), `mapping` (a chat request
to a flow's inputs and back to a chat completion), `keys` (bearer keys and their spend
ledger), `app` (the aiohttp application). One `Session` serves every request.
"""
