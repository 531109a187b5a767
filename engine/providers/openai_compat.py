"""OpenAI-compatible chat completions over HTTP: OpenRouter, OpenAI, vLLM, llama.cpp, Ollama, LiteLLM.

One pooled httpx transport per provider: aiohttp's (through `httpx-aiohttp`) when
available, since httpx's own connection pool costs 8-16 ms of CPU per call at high
fan-out and the aiohttp transport under 1 ms (docs/performance.md). Requests are
`httpx.Request`s handed to the transport directly: `AsyncClient` adds cookies, auth
flows, redirects and header merging that a JSON POST to one endpoint does not need, at
0.2 ms of CPU per call, a third of a call's cost at 0 ms latency.
Every failure is classified into a `ProviderFault` for the retry policy; the API key
is read from the environment at call time and scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import functools
import json
import os
import time
import urllib.request
from typing import Any

import httpx

from engine.pool import ProviderSpec
from engine.run.protocol import ChatRequest, ChatResponse, ProviderFault

RETRYABLE_STATUS = {408, 409, 429}


@functools.cache
def user_agent() -> str:
    """`baton/<version>`: read once, at the first request (not at import: it costs a few ms)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"baton/{version('baton')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        return "baton"


def _connection_problem(err: BaseException, url: httpx.URL) -> str:
    """A failed connection in plain words, from the OS error at its root where there is one.

    aiohttp's own message ("Cannot connect to host h:p ssl:default [Connect call failed
    ('h', p)]") hides the reason; the root `OSError` says it: connection refused, reset by
    peer, no route to host, name not known.
    """
    where = f"{url.host}:{url.port}" if url.port else url.host
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            # name-resolution errors have negative numbers that os.strerror does not know; their strerror does
            words = os.strerror(cause.errno) if cause.errno > 0 else (cause.strerror or "name not known")
            return f"connection to {where} failed: {words[:1].lower()}{words[1:]}"
        cause = cause.__cause__ or cause.__context__
    return f"connection failed: {type(err).__name__}: {err}"


def environment_proxy(url: httpx.URL) -> httpx.Proxy | None:
    """The proxy `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` name for `url`, unless `NO_PROXY`
    exempts its host. A loopback server (a local vLLM or llama.cpp) is never proxied: no
    proxy can reach this machine's loopback."""
    if url.host in ("localhost", "::1") or url.host.startswith("127."):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    scheme = proxy.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):  # the URL itself may hold credentials: not in the message
        raise ValueError(f"the environment's proxy for {url.scheme}:// is a {scheme}:// proxy; only http(s) proxies are supported")
    return httpx.Proxy(proxy)


def _transport(limits: httpx.Limits, proxy: httpx.Proxy | None) -> httpx.AsyncBaseTransport:
    """The aiohttp transport with the provider's connection limits (its default is 100
    connections: a provider allowed 500 concurrent calls would queue 400 for a socket)."""
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:  # pragma: no cover - a declared dependency; httpx's own transport still works
        return httpx.AsyncHTTPTransport(limits=limits, proxy=proxy)
    transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits, proxy=proxy)
    return transport


def _is_timeout(err: Exception) -> bool:
    """Whether a transport error really was a timeout, judged by the exception underneath it."""
    cause = err.__cause__ or err.__context__
    if cause is None:
        return True
    return isinstance(cause, TimeoutError) or "timeout" in type(cause).__name__.lower()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAICompatProvider:
    """Chat completions at `{base_url}/chat/completions`."""

    def __init__(self, name: str, spec: ProviderSpec) -> None:
        if not spec.base_url:
            raise ValueError(f"provider `{name}` has no base_url")
        self.name = name
        self.spec = spec
        self.base_url = spec.base_url.rstrip("/")
        self.url = httpx.URL(f"{self.base_url}/chat/completions")
        limits = httpx.Limits(max_connections=spec.max_concurrency, max_keepalive_connections=spec.max_concurrency)
        self.transport = _transport(limits, environment_proxy(self.url))
        self._header_cache: tuple[str | None, httpx.Headers] | None = None

    def _headers(self) -> httpx.Headers:
        """The request headers, rebuilt only when the key in the environment changes
        (`httpx.Request` copies a `Headers` as it is, and normalises a dict: 7 us a call)."""
        key = self._key()
        if self._header_cache is None or self._header_cache[0] != key:
            headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": user_agent(), **self.spec.headers}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._header_cache = (key, httpx.Headers(headers))
        return self._header_cache[1]

    def _key(self) -> str | None:
        return os.environ.get(self.spec.api_key_env) if self.spec.api_key_env else None

    def _scrub(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model_id, "messages": list(request.messages),
            "temperature": request.temperature, "max_tokens": request.max_tokens,
        }
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.seed is not None:
            body["seed"] = request.seed
        if request.reasoning is not None:
            body["reasoning_effort"] = request.reasoning
        if request.grammar and request.grammar_format == "gbnf":
            body["grammar"] = request.grammar  # llama.cpp's server
        elif request.grammar and request.grammar_format == "lark":
            body["guided_grammar"] = request.grammar  # vLLM (older name)
            body["structured_outputs"] = {"grammar": request.grammar}  # vLLM (newer name)
        return body

    async def complete(self, request: ChatRequest) -> ChatResponse:
        headers = self._headers()
        timeout = httpx.Timeout(min(request.timeout, self.spec.timeout))  # the provider's `timeout` is a ceiling over steps'
        body = json.dumps(self.payload(request), ensure_ascii=False, separators=(",", ":")).encode()
        http_request = httpx.Request("POST", self.url, content=body, headers=headers, extensions={"timeout": timeout.as_dict()})
        try:
            resp = await self.transport.handle_async_request(http_request)
            try:
                await resp.aread()
            finally:
                await resp.aclose()
        except httpx.TimeoutException as err:
            if not _is_timeout(err):  # httpx-aiohttp reports refused and dropped connections as ConnectTimeout
                raise ProviderFault("connect", self._scrub(f"{self.name}: {_connection_problem(err, http_request.url)}")) from None
            raise ProviderFault("timeout", f"{self.name}: timed out ({type(err).__name__})") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as err:
            raise ProviderFault("connect", self._scrub(f"{self.name}: {_connection_problem(err, http_request.url)}")) from None
        except httpx.HTTPError as err:
            raise ProviderFault("connect", self._scrub(f"{self.name}: {type(err).__name__}: {err}")) from None
        if resp.status_code >= 400:
            snippet = self._scrub(resp.text[:300])
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
            if resp.status_code == 429:
                raise ProviderFault("rate_limited", f"{self.name}: HTTP 429: {snippet}", resp.status_code, retry_after)
            if resp.status_code >= 500:
                raise ProviderFault("server_error", f"{self.name}: HTTP {resp.status_code}: {snippet}", resp.status_code, retry_after)
            if resp.status_code in RETRYABLE_STATUS:
                raise ProviderFault("rate_limited", f"{self.name}: HTTP {resp.status_code}: {snippet}", resp.status_code, retry_after)
            raise ProviderFault("client_error", f"{self.name}: HTTP {resp.status_code}: {snippet}", resp.status_code)
        return self.parse(resp.content)

    def parse(self, content: bytes) -> ChatResponse:
        """Read a chat-completions body; anything malformed is a retryable `bad_response`."""
        try:
            data = json.loads(content)
        except ValueError:
            raise ProviderFault("bad_response", f"{self.name}: reply is not JSON: {self._scrub(content[:120].decode('utf-8', 'replace'))!r}") from None
        if not isinstance(data, dict):
            raise ProviderFault("bad_response", f"{self.name}: reply is not a JSON object")
        if "error" in data and not data.get("choices"):
            raise ProviderFault("server_error", f"{self.name}: error in reply: {self._scrub(json.dumps(data['error'])[:300])}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ProviderFault("bad_response", f"{self.name}: reply has no choices")
        message = choices[0].get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        if isinstance(text, list):  # content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        if not isinstance(text, str) or not text.strip():
            raise ProviderFault("empty_reply", f"{self.name}: reply has an empty message")
        usage = data.get("usage") or {}
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        cost = usage.get("cost")
        return ChatResponse(
            text=text,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(prompt_details.get("cached_tokens") or 0) if isinstance(prompt_details, dict) else 0,
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0) if isinstance(completion_details, dict) else 0,
            reported_cost=float(cost) if isinstance(cost, (int, float)) else None,
            response_model=str(data.get("model") or ""),
            finish_reason=str(choices[0].get("finish_reason") or ""),
        )

    async def aclose(self) -> None:
        await self.transport.aclose()
