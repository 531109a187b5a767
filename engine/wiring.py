"""What a run is wired from: provider instances by name, checked inputs, and the pool as recorded.

Kept apart from `Session` so that the evaluator, the planner and the CLI can share them
without holding a session; it sits in the top layer because it creates providers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from engine.errors import InputError, PoolError, RunError
from engine.model import HISTORY, Flow
from engine.pool import Pool, ProviderSpec
from engine.run.protocol import Provider, ProviderFault
from engine.run.secrets import Secrets, key_warnings, secret_header

MAX_INPUT_BYTES = 4 * 1024 * 1024


def check_inputs(flow: Flow, inputs: Mapping[str, str]) -> dict[str, str]:
    """Every declared input present (`history` may be left out: it is then empty), nothing undeclared, each a reasonable
    size of text."""
    if HISTORY in flow.inputs and HISTORY not in inputs:
        inputs = {**inputs, HISTORY: ""}
    missing = [n for n in flow.inputs if n not in inputs]
    unknown = [n for n in inputs if n not in flow.inputs]
    problems = []
    if missing:
        problems.append("missing input" + ("s" if len(missing) > 1 else "") + ": " + ", ".join(missing))
    if unknown:
        declared = ", ".join(flow.inputs) or "none"
        problems.append(f"unknown input{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} (the flow declares: {declared})")
    for name, value in inputs.items():
        if not isinstance(value, str):
            problems.append(f"input `{name}` must be text")
        elif len(value.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
            problems.append(f"input `{name}` is {len(value.encode('utf-8', 'surrogatepass'))} bytes; the limit is {MAX_INPUT_BYTES}")
        elif "\x00" in value:
            problems.append(f"input `{name}` contains NUL bytes; it looks binary")
    if problems:
        raise InputError("; ".join(problems))
    return dict(inputs)


def pool_snapshot(pool: Pool) -> dict[str, Any]:
    """The pool as recorded with a run: key *variable names* only, secret-looking headers masked."""
    data = pool.model_dump(mode="json")
    for spec in data.get("providers", {}).values():
        spec["headers"] = {k: ("***" if secret_header(k) else v) for k, v in spec.get("headers", {}).items()}
    data["source"] = pool.source
    return data


def unset_key_variable(spec: ProviderSpec) -> str | None:
    """The environment variable an HTTP provider reads its API key from, when it is not set."""
    if spec.over_http and spec.api_key_env and not os.environ.get(spec.api_key_env):
        return spec.api_key_env
    return None


class ProviderSet:
    """Provider instances by provider name, created on first use and closed together.

    `overrides` replace providers by name (`"*"` for all): tests and benchmarks hand in
    scripted or shared providers this way.
    """

    def __init__(self, pool: Pool, overrides: Mapping[str, Provider] | None = None) -> None:
        self.pool = pool
        self.overrides = dict(overrides or {})
        self.instances: dict[str, Provider] = {}
        self.secrets = Secrets.of_pool(pool)

    def for_alias(self, alias: str) -> Provider:
        return self.for_provider(self.pool.models[alias].provider)

    def for_provider(self, provider_name: str) -> Provider:
        if provider_name in self.overrides:
            return self.overrides[provider_name]
        if "*" in self.overrides:
            return self.overrides["*"]
        if provider_name not in self.instances:
            from engine.providers import make_provider

            try:
                self.instances[provider_name] = make_provider(provider_name, self.pool.provider(provider_name), self.secrets)
            except (ValueError, ImportError) as err:
                raise ProviderFault("client_error", str(err)) from None
        return self.instances[provider_name]

    def preflight(self, flow: Flow, pool: Pool | None = None) -> list[str]:
        """Fail before any call when a provider the flow needs cannot run here (a missing key or extra: `RunError`; a key
        that cannot be sent: `PoolError`); returns warnings (a key that was trimmed). `pool` has the flow's inline models."""
        return self.preflight_aliases(flow.aliases(), pool)

    def preflight_aliases(self, aliases: Iterable[str], pool: Pool | None = None) -> list[str]:
        pool = pool or self.pool
        used = list(aliases)
        warnings = key_warnings(pool.provider(pool.models[a].provider) for a in used)
        for alias in used:
            pname = pool.models[alias].provider
            if pname in self.overrides or "*" in self.overrides:
                continue
            spec = pool.provider(pname)
            variable = unset_key_variable(spec)
            if variable:
                raise PoolError(f"model `{alias}` needs an API key in ${variable} (provider `{pname}`), which is not set")
            if spec.kind == "local":
                from engine.providers.local import available
                from engine.run.protocol import ProviderFault

                try:
                    hint = available(pool.models[alias].id)
                except ProviderFault as err:
                    hint = str(err)
                if hint:
                    raise RunError(f"model `{alias}`: {hint}")
        return warnings

    async def aclose(self) -> None:
        for p in self.instances.values():
            await p.aclose()
        self.instances.clear()
