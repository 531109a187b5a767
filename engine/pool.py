"""The model pool: aliases that flows name, mapped to providers, model ids and prices.

A pool is a TOML file (schema below, documented in docs/models.md). Flows never name a
provider's model id directly; they name an alias, so the same flow runs on another pool.
Discovery is the same for every command: `--pool FILE`, else `$BATON_POOL`, else a
`models.toml` beside the flow file, else one in the current folder, else the built-in
default pool (the embedded local model).

Secrets never live here: a provider names the *environment variable* holding its key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import PoolError

ProviderKind = Literal["openai", "anthropic", "local", "scripted", "replay"]


class ProviderSpec(BaseModel):
    """An endpoint: how to reach it and how hard to push it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ProviderKind = "openai"
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, description="name of the environment variable holding the API key")
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(default=16, ge=1, le=4096)
    timeout: float = Field(default=120.0, gt=0, le=3600)
    #: The largest reply body read, streamed or not; a bigger one is a `bad_response` fault, booked as possibly billed.
    max_reply_mb: float = Field(default=16.0, gt=0, le=1024)
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @property
    def free(self) -> bool:
        """Whether its calls cost nothing whatever the pool says (the embedded model, scripts, replays): a dollar
        cap needs no prices for them. Known from the spec alone, so the dry run can tell without a provider."""
        return self.kind in ("local", "scripted", "replay")

    @property
    def passes_tools(self) -> bool:
        """Whether a client's tools can be offered through it: an OpenAI-compatible endpoint takes them as sent; the
        embedded models, scripts and replays do not call tools."""
        return self.over_http

    @property
    def over_http(self) -> bool:
        """Whether it is an HTTP API (an endpoint and, usually, a key in the environment)."""
        return self.kind in ("openai", "anthropic")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """Only http(s) is spoken: another scheme failed at run time as retried connection faults."""
        if value is None:
            return value
        if re.match(r"(?i)https?://[^/?#\s]*@", value):  # before quoting it: the URL holds a password
            raise ValueError("base_url has credentials in it (user:password@); they would be stored with every run's pool "
                             "and sent in the clear to any redirect: put the key in an environment variable named by api_key_env, "
                             "or in a header (the URL is not shown)")
        if not re.match(r"(?i)https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        if not value.isascii():
            raise ValueError(f"{value!r} has characters outside ASCII; write the host in its punycode (xn--) form")
        return value

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, value: dict[str, str]) -> dict[str, str]:
        """A header with CR/LF cannot be sent (and would split the request); say which, never its value."""
        for name, text in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", text):
                raise ValueError(f"header `{name}` has a control character (CR, LF, ...) in its value (the value is not shown)")
            if not text.isascii():
                raise ValueError(f"header `{name}` has a character outside ASCII in its value, which HTTP headers cannot carry "
                                 "as text (percent-encode it, or drop it; the value is not shown)")
        return value


class ModelSpec(BaseModel):
    """One alias of the pool. Prices are USD per one million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    id: str
    input_price: float = Field(default=0.0, ge=0, le=10_000)
    output_price: float = Field(default=0.0, ge=0, le=10_000)
    #: Input tokens the provider read from its prompt cache (OpenAI's `cached_tokens`, Anthropic's cache reads), when it
    #: bills them differently from other input (a tenth of it at Anthropic, half at OpenAI); default: `input_price`.
    cached_input_price: float | None = Field(default=None, ge=0, le=10_000)
    #: Input tokens written to the prompt cache, where a provider bills writing it (Anthropic: 1.25x input); default: `input_price`.
    cache_write_price: float | None = Field(default=None, ge=0, le=10_000)
    context: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1, le=4096)
    max_output_tokens: int | None = Field(default=None, ge=1, description="clamp every request's max_tokens to this")
    description: str = ""

    @property
    def priced(self) -> bool:
        """Whether the pool gives this alias prices: non-zero ones, or zeros written out (a free local server)."""
        return bool(self.input_price or self.output_price) or bool({"input_price", "output_price"} & self.model_fields_set)

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0) -> float:
        """USD for a call of this size at this alias's prices. `input_tokens` counts every prompt token; of them,
        `cached_tokens` were read from the provider's prompt cache and `cache_write_tokens` written to it."""
        cached = min(cached_tokens, input_tokens)
        written = min(cache_write_tokens, input_tokens - cached)
        plain = input_tokens - cached - written
        return (plain * self.input_price + cached * self._price(self.cached_input_price) + written * self._price(self.cache_write_price)
                + output_tokens * self.output_price) / 1_000_000

    def worst_cost(self, input_tokens: int, output_tokens: int) -> float:
        """An upper bound on a call of this size: every prompt token at the dearest input price (a cache write may cost
        more than plain input), for reservations and the worst case."""
        dearest = max(self.input_price, self._price(self.cached_input_price), self._price(self.cache_write_price))
        return (input_tokens * dearest + output_tokens * self.output_price) / 1_000_000

    def _price(self, price: float | None) -> float:
        return self.input_price if price is None else price


#: Providers every pool knows without declaring them.
BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec(kind="openai", base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY"),
    "openrouter": ProviderSpec(kind="openai", base_url="https://openrouter.ai/api/v1", api_key_env="OPENROUTER_API_KEY"),
    "anthropic": ProviderSpec(kind="anthropic", base_url="https://api.anthropic.com/v1", api_key_env="ANTHROPIC_API_KEY"),
    "local": ProviderSpec(kind="local", max_concurrency=1, timeout=600),
}

#: The embedded models' ids, as the `local` provider knows them (engine.providers.local_models).
LOCAL_MODEL_ID = "gemma-3-270m-q4_k_m"
SMOL_MODEL_ID = "smollm2-135m-instruct-q4_1"


class Pool(BaseModel):
    """Providers and model aliases, plus where they came from (for run records)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    max_concurrency: int = Field(default=64, ge=1, le=100_000)
    source: str = Field(default="<built-in default pool>", exclude=True)

    def provider(self, name: str) -> ProviderSpec:
        spec = self.providers.get(name) or BUILTIN_PROVIDERS.get(name)
        if spec is None:
            raise PoolError(f"{self.source}: unknown provider `{name}`")
        return spec

    def provider_known(self, name: str) -> bool:
        return name in self.providers or name in BUILTIN_PROVIDERS

    def with_models(self, extra: dict[str, ModelSpec]) -> Pool:
        """This pool with `extra` aliases added or replacing its own (inline `models {}` blocks)."""
        if not extra:
            return self
        return self.model_copy(update={"models": {**self.models, **extra}})

    def check(self) -> None:
        """Every alias names a known provider."""
        for alias, spec in self.models.items():
            if spec.provider not in self.providers and spec.provider not in BUILTIN_PROVIDERS:
                known = sorted(set(self.providers) | set(BUILTIN_PROVIDERS))
                raise PoolError(f"{self.source}: model `{alias}` names unknown provider `{spec.provider}` (known: {', '.join(known)})")


def default_pool() -> Pool:
    """The zero-configuration pool: the two embedded models, each loaded on first use.

    `smol` comes first, so it is the default planner of `baton plan` and `baton ask`: on
    bench/local_models.py it wrote as many valid plans as Gemma, with no dead steps, in
    0.6x the time, and it answered 8 of 12 factual questions to Gemma's 2 (docs/models.md).
    """
    local = ModelSpec(provider="local", id=LOCAL_MODEL_ID, context=8192,
                      description="Gemma 3 270M on the CPU, a base model prompted as text completion; no key needed; weak answers")
    smol = ModelSpec(provider="local", id=SMOL_MODEL_ID, context=8192,
                     description="SmolLM2 135M Instruct on the CPU, a chat model; no key needed; short, often wrong answers")
    return Pool(models={"smol": smol, "local": local}, source="<built-in default pool>")


def load_pool(path: str | Path) -> Pool:
    """Read and check a pool TOML file; every problem is a `PoolError` naming the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise PoolError(f"{p}: cannot read pool file: {err.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PoolError(f"{p}: pool file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise PoolError(f"{p}: not valid TOML: {err}") from None
    try:
        pool = Pool.model_validate({**data, "source": str(p)})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        raise PoolError(f"{p}: invalid pool: {problems}") from None
    pool.check()
    return _resolve_paths(pool, p.parent)


def _resolve_paths(pool: Pool, base: Path) -> Pool:
    """Relative `options.dataset` paths are relative to the pool file, not to the current folder."""
    providers = {}
    for name, spec in pool.providers.items():
        dataset = spec.options.get("dataset")
        if isinstance(dataset, str) and not Path(dataset).is_absolute():
            spec = spec.model_copy(update={"options": {**spec.options, "dataset": str((base / dataset).resolve())}})
        providers[name] = spec
    return pool.model_copy(update={"providers": providers})


def discover_pool(flow_path: str | Path | None = None, explicit: str | Path | None = None) -> Pool:
    """Find the pool by the documented order and load it."""
    if explicit:
        return load_pool(explicit)
    env = os.environ.get("BATON_POOL")
    if env:
        return load_pool(env)
    if flow_path is not None:
        beside = Path(flow_path).resolve().parent / "models.toml"
        if beside.is_file():
            return load_pool(beside)
    here = Path.cwd() / "models.toml"
    if here.is_file():
        return load_pool(here)
    return default_pool()
