"""`baton serve` in a browser's world: who may send it requests, from where, in what form.

A server on loopback without keys is reachable by every web page the user opens: a page
cannot read a cross-origin reply, but it can *send* a POST that needs no preflight
(`Content-Type: text/plain`), and a page on a rebound DNS name (`rebind.evil.example`
pointing at 127.0.0.1) is same-origin with the server and can read everything. A browser
also resends Basic credentials it cached for the run pages. So, before anything else:

- **Host** must name the address the server listens on: a loopback name or address when it
  listens on loopback, that address when it listens on one, any IP address when it listens on
  all of them; other names only when the operator allows them (`--allow-host NAME`). This
  stops DNS rebinding.
- **Origin**, when a browser sends one, must be the server's own or one the operator allows
  (`--allow-origin URL`); allowed origins get proper CORS answers (preflight included), any
  other is refused with 403 before authentication.
- **POST bodies** must be `application/json`: the content types a page can send without a
  preflight (`text/plain`, forms) are refused with 415.

Basic credentials are accepted on the page routes only (`engine.serve.keys.find_key`), so a
browser's cached login never authorises an API call. Every refusal is OpenAI's error shape.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from engine.serve.mapping import RequestError
from engine.serve.wire import error_response

CORS: web.RequestKey[dict[str, str]] = web.RequestKey("baton_cors", dict)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, OpenAI-Organization, OpenAI-Project, X-Stainless-Lang, X-Stainless-Package-Version, " \
               "X-Stainless-OS, X-Stainless-Arch, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Retry-Count, " \
               "X-Api-Key, Anthropic-Version, Anthropic-Beta, Anthropic-Dangerous-Direct-Browser-Access"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def host_name(header: str) -> str:
    """The name in a `Host` header, without its port, lower-cased (`[::1]:8080` is `::1`)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def normal_origin(url: str) -> str:
    """`scheme://host[:port]` of an origin as browsers send it (no path, no trailing slash), lower-cased."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an origin like http://localhost:3000")
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class BrowserPolicy:
    """What the server accepts from browsers; `bound` is the address it listens on."""

    bound: str = "127.0.0.1"
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allowed_origins: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def build(cls, bound: str, hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> BrowserPolicy:
        return cls(bound, frozenset(h.strip().lower() for h in hosts), frozenset(normal_origin(o) for o in origins))

    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False  # HTTP/1.1 requires Host; every real client sends one
        name = host_name(header)
        if name in self.allowed_hosts:
            return True
        bound = _ip(self.bound)
        if self.bound == "localhost" or (bound is not None and bound.is_loopback):
            address = _ip(name)
            return name in LOOPBACK_NAMES or (address is not None and address.is_loopback)
        if bound is not None and bound.is_unspecified:  # every interface: any address, never a name nobody allowed
            return _ip(name) is not None or name in LOOPBACK_NAMES
        return name == self.bound.lower() or _ip(name) == bound

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The server's own origin (as the request's Host names it), or one the operator allows."""
        try:
            normal = normal_origin(origin)
        except ValueError:
            return False  # `null` (a sandboxed frame, a file:// page) or garbage
        return normal in self.allowed_origins or urlsplit(normal).netloc == host.strip().lower()


def _cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS, "Access-Control-Expose-Headers": "x-baton-run-id, x-baton-warning",
            "Access-Control-Max-Age": "600"}


def _refuse(request: web.Request, message: str, status: int, code: str) -> web.Response:
    return error_response(RequestError(message, status, code=code), request.path)


def middleware(policy: BrowserPolicy) -> Any:
    """The aiohttp middleware that applies `policy` before authentication and every handler."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not policy.host_allowed(host):
            return _refuse(request, f"this server does not answer to the host name {host_name(host)!r}: it listens on {policy.bound}; "
                           "its operator can allow a name with --allow-host", 421, "host_not_allowed")
        origin = request.headers.get("Origin")
        cors: dict[str, str] = {}
        if origin is not None:
            if not policy.origin_allowed(origin, host):
                return _refuse(request, f"requests from the web origin {origin!r} are refused: a page may only call this server from "
                               "its own origin, or from one its operator allows with --allow-origin", 403, "origin_not_allowed")
            if normal_origin(origin) in policy.allowed_origins:
                cors = _cors(origin)
        if request.method == "OPTIONS":
            return web.Response(status=204 if cors else 403, headers=cors)
        request[CORS] = cors  # added as the response is prepared, streamed ones included (`add_cors`)
        if request.method == "POST" and request.content_type != "application/json":
            return _refuse(request, f"the body must be JSON sent as `Content-Type: application/json`, not {request.content_type!r}", 415,
                           "unsupported_media_type")
        response: web.StreamResponse = await handler(request)
        return response

    return guard


async def add_cors(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: an allowed origin's CORS headers on every response to it, errors and streams included."""
    response.headers.update(request.get(CORS) or {})
