"""OpenAI-compatible chat completions over HTTP: OpenRouter, OpenAI, vLLM, llama.cpp, Ollama, LiteLLM.

One pooled httpx transport per provider: aiohttp's (through `httpx-aiohttp`) when
available, since httpx's own connection pool costs 8-16 ms of CPU per call at high
fan-out and the aiohttp transport under 1 ms (docs/performance.md). Requests are
`httpx.Request`s handed to the transport directly: `AsyncClient` adds cookies, auth
flows, redirects and header merging that a JSON POST to one endpoint does not need, at
0.2 ms of CPU per call, a third of a call's cost at 0 ms latency.
Every failure is classified into a `ProviderFault` for the retry policy; the API key
is read from the environment at call time and every secret of the pool is scrubbed
from every message and reply (`engine.run.secrets`).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import os
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import httpx

from engine.errors import PoolError
from engine.pool import ProviderSpec
from engine.providers.reply import quote, read_chat_completion, usage_fields
from engine.providers.sse import ChunkAssembler
from engine.run.protocol import ChatRequest, ChatResponse, ProviderFault
from engine.run.secrets import Secrets, read_key, secret_header

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
    """Chat completions at `{base_url}/chat/completions`.

    Another HTTP API (Anthropic's Messages) is this class with its own `PATH`, `auth`, `payload`,
    `read` and `assembler`: the transport, limits, timeouts, size cap, fault classification and
    scrubbing stay one piece of code, and every reply is judged by `engine.providers.reply`.
    """

    enforces_grammar = False  # a grammar is sent only when asked for (the planner's); servers differ in what they honour
    PATH = "chat/completions"
    #: Whether streamed calls ask for usage with `stream_options` (an OpenAI-compatible server's way).
    STREAM_OPTIONS = True

    def __init__(self, name: str, spec: ProviderSpec, secrets: Secrets | None = None) -> None:
        if not spec.base_url:
            raise ValueError(f"provider `{name}` has no base_url")
        self.name = name
        self.spec = spec
        self.base_url = spec.base_url.rstrip("/")
        self.url = httpx.URL(f"{self.base_url}/{self.PATH}")
        limits = httpx.Limits(max_connections=spec.max_concurrency, max_keepalive_connections=spec.max_concurrency)
        self.transport = _transport(limits, environment_proxy(self.url))
        self._header_cache: tuple[str | None, httpx.Headers] | None = None
        self._secrets = secrets
        self.max_reply_bytes = int(spec.max_reply_mb * 1024 * 1024)
        #: Set once the server refused `stream_options` (older Azure, vLLM): later streamed calls go without it.
        self.stream_options_refused = False

    def _headers(self) -> httpx.Headers:
        """The request headers, rebuilt only when the key in the environment changes
        (`httpx.Request` copies a `Headers` as it is, and normalises a dict: 7 us a call)."""
        try:
            key = read_key(self.spec)
        except PoolError as err:  # the key changed under a running process; preflight checks it before a run
            raise ProviderFault("client_error", f"{self.name}: {err}") from None
        if self._header_cache is None or self._header_cache[0] != key:
            headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": user_agent(), **self.spec.headers}
            if key:
                headers.update(self.auth(key))
            self._header_cache = (key, httpx.Headers(headers))
        return self._header_cache[1]

    def _scrub(self, text: str) -> str:
        """Hide every secret of the pool (and at least this provider's own key and headers)."""
        secrets = self._secrets
        if secrets is None:
            key = read_key(self.spec)
            secrets = Secrets([*([key] if key else []), *(v for k, v in self.spec.headers.items() if secret_header(k))])
        return secrets.scrub(text)

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def read(self, body: bytes, max_tokens: int) -> ChatResponse:
        """A 2xx reply body as a reply, or the fault it amounts to."""
        return read_chat_completion(body, self.name, self._scrub, max_tokens)

    def assembler(self, on_text: Callable[[str], None]) -> ChunkAssembler:
        """What reads a streamed reply: its `completion()` is the body `read` takes."""
        return ChunkAssembler(on_text, self._scrub)

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
        if request.response_format is not None:
            body["response_format"] = dict(request.response_format)
        if request.tools is not None:
            body["tools"] = list(request.tools.tools)
            if request.tools.choice is not None:
                body["tool_choice"] = request.tools.choice
        if request.grammar and request.grammar_format == "gbnf":
            body["grammar"] = request.grammar  # llama.cpp's server
        elif request.grammar and request.grammar_format == "lark":
            body["guided_grammar"] = request.grammar  # vLLM (older name)
            body["structured_outputs"] = {"grammar": request.grammar}  # vLLM (newer name)
        return body

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self._call(request, None)

    async def stream(self, request: ChatRequest, on_text: Callable[[str], None]) -> ChatResponse:
        """The same call with `stream: true`: the answer's text goes to `on_text` as it arrives (SSE).

        A server that ignores `stream` and answers with one JSON body is read as `complete` reads it.
        """
        return await self._call(request, self.assembler(on_text))

    async def _call(self, request: ChatRequest, chunks: ChunkAssembler | None) -> ChatResponse:
        try:
            return await self._send(request, chunks, with_stream_options=chunks is not None and self.STREAM_OPTIONS
                                    and not self.stream_options_refused)
        except ProviderFault as fault:
            if chunks is None or self.stream_options_refused or not fault.refused_stream_options:
                raise
            # the same request without `stream_options` (no usage in the stream: the call is booked at its worst case)
            self.stream_options_refused = True
            return await self._send(request, chunks, with_stream_options=False)

    async def _send(self, request: ChatRequest, chunks: ChunkAssembler | None, with_stream_options: bool) -> ChatResponse:
        headers = self._headers()
        ceiling = min(request.timeout, self.spec.timeout)  # the provider's `timeout` is a ceiling over steps'
        payload = self.payload(request)
        if chunks is not None:
            payload["stream"] = True
            if with_stream_options:
                payload["stream_options"] = {"include_usage": True}
            headers = httpx.Headers({**headers, "Accept": "text/event-stream"})
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        http_request = httpx.Request("POST", self.url, content=body, headers=headers,
                                     extensions={"timeout": httpx.Timeout(ceiling).as_dict()})
        status: list[int] = []  # set once the status line is in: a body lost after a 2xx may have been billed
        events: ChunkAssembler | None = None  # set when the reply really is an event stream
        try:
            # httpx's timeouts are per read: a body that trickles in a byte at a time never trips them. This is a
            # ceiling over the whole call, body included.
            async with asyncio.timeout(ceiling):
                resp = await self.transport.handle_async_request(http_request)
                status.append(resp.status_code)
                try:
                    if resp.status_code < 300 and resp.headers.get("content-type", "").startswith("text/event-stream"):
                        events = chunks
                    reply_body = await self._read_body(resp, events)
                    if events is not None:
                        events.close()
                finally:
                    await resp.aclose()
        except TimeoutError:
            raise ProviderFault("timeout", f"{self.name}: no complete reply within {ceiling:g}s") from None
        except httpx.TimeoutException as err:
            if not _is_timeout(err):  # httpx-aiohttp reports refused and dropped connections as ConnectTimeout
                raise self._connection_fault(err, http_request, status) from None
            raise ProviderFault("timeout", f"{self.name}: timed out ({type(err).__name__})") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as err:
            raise self._connection_fault(err, http_request, status) from None
        except httpx.HTTPError as err:
            raise ProviderFault("connect", self._scrub(f"{self.name}: {type(err).__name__}: {err}")) from None
        if reply_body is None:
            too_big = ChatResponse(text="", usage_source="unreadable", usage_note="the reply was larger than max_reply_mb")
            raise ProviderFault("bad_response", f"{self.name}: the reply is larger than {self.spec.max_reply_mb:g} MB (the provider's "
                                                f"max_reply_mb); it was not read", billed=too_big if resp.status_code < 300 else None)
        if resp.status_code >= 300:
            raise self._status_fault(resp, reply_body)
        if events is not None:
            return self._streamed_reply(events, request.max_tokens)
        return self.read(reply_body, request.max_tokens)

    async def _read_body(self, resp: httpx.Response, events: ChunkAssembler | None) -> bytes | None:
        """The body, or each piece to `events`; None once it passes `max_reply_bytes` (the rest is not read)."""
        size = 0
        pieces: list[bytes] = []
        async for piece in (resp.aiter_raw() if events is not None else resp.aiter_bytes()):
            size += len(piece)
            if size > self.max_reply_bytes:
                return None
            if events is not None:
                events.feed(piece)
            else:
                pieces.append(piece)
        return b"".join(pieces)

    def _streamed_reply(self, chunks: ChunkAssembler, max_tokens: int) -> ChatResponse:
        """A finished event stream judged as a whole reply; a stream that broke off or sent garbage is a fault."""
        if chunks.unreadable or not (chunks.done or chunks.finish_reason or chunks.error or chunks.choice_error):
            usage = usage_fields(chunks.usage, chunks.model)
            billed = ChatResponse(text="", **usage)
            if chunks.unreadable:
                words = quote(chunks.unreadable[0], self._scrub, 120)
                raise ProviderFault("bad_response", f"{self.name}: a streamed chunk is not JSON: {words!r}", billed=billed)
            raise ProviderFault("connect", f"{self.name}: the stream ended before the reply finished (no finish_reason, "
                                           f"no [DONE], after {chunks.events} events)", billed=billed)
        return self.read(chunks.completion(), max_tokens)  # errors, finish reasons, usage

    def _connection_fault(self, err: Exception, http_request: httpx.Request, status: list[int]) -> ProviderFault:
        words = self._scrub(f"{self.name}: {_connection_problem(err, http_request.url)}")
        if status and 200 <= status[0] < 300:
            lost = ChatResponse(text="", usage_source="missing", usage_note="the connection broke while the reply was read")
            return ProviderFault("connect", f"{words} (after HTTP {status[0]}: the reply was cut short)", billed=lost)
        return ProviderFault("connect", words)

    def _status_fault(self, resp: httpx.Response, body: bytes) -> ProviderFault:
        """HTTP 3xx, 4xx and 5xx, classified; the body is quoted scrubbed, then cut."""
        code = resp.status_code
        text = body.decode(resp.encoding or "utf-8", "replace")
        if code < 400:  # chat completions are never redirected on purpose: a wrong base_url, or a login page
            where = resp.headers.get("location", "")
            return ProviderFault("redirect", f"{self.name}: HTTP {code} redirect" + (f" to {quote(where, self._scrub, 200)}" if where else "")
                                 + "; check the provider's base_url", code)
        snippet = quote(text, self._scrub)
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        if code == 429 or code in RETRYABLE_STATUS:
            return ProviderFault("rate_limited", f"{self.name}: HTTP {code}: {snippet}", code, retry_after)
        if code >= 500:
            return ProviderFault("server_error", f"{self.name}: HTTP {code}: {snippet}", code, retry_after)
        fault = ProviderFault("client_error", f"{self.name}: HTTP {code}: {snippet}", code)
        fault.refused_stream_options = code in (400, 422) and "stream_options" in text
        return fault

    async def aclose(self) -> None:
        await self.transport.aclose()
