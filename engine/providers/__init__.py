"""Model providers: one module per kind, all implementing `engine.run.protocol.Provider`.

To add a provider kind: write a class with `complete()` and `aclose()` (an HTTP API can be
`OpenAICompatProvider` with its own path, auth, payload and reader, as `anthropic` is), and
map its `kind` in `make_provider` below.
"""

from __future__ import annotations

from engine.pool import ProviderSpec
from engine.run.protocol import Provider
from engine.run.secrets import Secrets


def make_provider(name: str, spec: ProviderSpec, secrets: Secrets | None = None) -> Provider:
    """A provider instance for a pool entry; imports only the kind it needs. `secrets` are scrubbed from its messages."""
    if spec.kind == "openai":
        from engine.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(name, spec, secrets)
    if spec.kind == "anthropic":
        from engine.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name, spec, secrets)
    if spec.kind == "local":
        from engine.providers.local import LocalProvider

        return LocalProvider(name, spec)
    if spec.kind == "replay":
        from engine.providers.replay import ReplayProvider

        return ReplayProvider(name, spec)
    if spec.kind == "scripted":
        from engine.providers.scripted import ScriptedProvider

        return ScriptedProvider(name=name)
    raise ValueError(f"provider `{name}`: kind `{spec.kind}` is not available")
