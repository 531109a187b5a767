"""The pool's secrets: read and checked once, scrubbed from every text that leaves a call.

A secret is the value of a provider's API-key variable, or of a header whose name looks
secret (`Authorization`, `X-Api-Key`, `Cookie`, ...). A provider may echo any of them: in
an error body, or inside a 200 reply's text (a proxy's debug output). Each is replaced by
`***` in the whole text before it is cut, stored, printed, cached or shown to another
step; scrubbing the cut text would leave a key that straddles the cut in part.

Keys are checked before any call: a trailing newline (a pasted key) is stripped with a
warning, and any other control character is a `PoolError` naming the variable, never
the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from engine.errors import PoolError
from engine.pool import BUILTIN_PROVIDERS, Pool, ProviderSpec

SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "session", "signature")
#: Shorter values are not scrubbed: replacing every "ab" in a reply would destroy it and hide nothing.
MIN_SECRET_CHARS = 6
#: A secret's prefix this long or longer is masked too: a provider's truncated echo of a key still gives most of it away.
MIN_PREFIX_CHARS = 8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def secret_header(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_HEADER_WORDS)


def clean_key(variable: str, value: str) -> tuple[str, str | None]:
    """An API key as it will be sent, and a warning if it had to be trimmed; `PoolError` if it cannot be sent."""
    trimmed = value.strip()
    if _CONTROL.search(trimmed):
        raise PoolError(f"${variable} contains a control character; it cannot be sent in an HTTP header (the value is not shown)")
    if not trimmed.isascii():  # a pasted zero-width space, a typographic quote: httpx cannot put it in a header
        raise PoolError(f"${variable} contains a character outside ASCII (a pasted zero-width space or curly quote?); "
                        "it cannot be sent in an HTTP header (the value is not shown)")
    warning = None
    if trimmed != value:
        warning = f"${variable} has leading or trailing whitespace (a pasted newline?); it was stripped"
    return trimmed, warning


def read_key(spec: ProviderSpec) -> str | None:
    """The provider's API key from the environment, trimmed; None when it names no variable or it is unset."""
    if not spec.api_key_env:
        return None
    value = os.environ.get(spec.api_key_env)
    return clean_key(spec.api_key_env, value)[0] if value else None


def key_warnings(specs: Iterable[ProviderSpec]) -> list[str]:
    """Check every key the providers read: warnings for trimmed keys; `PoolError` for one that cannot be sent."""
    warnings = []
    for spec in specs:
        value = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        if spec.api_key_env and value:
            warning = clean_key(spec.api_key_env, value)[1]
            if warning and warning not in warnings:
                warnings.append(warning)
    return warnings


class Secrets:
    """Every secret value a pool can send; `scrub` hides them in a text."""

    def __init__(self, values: Iterable[str]) -> None:
        # longest first: a key that contains another key is hidden whole
        self.values = sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    @classmethod
    def of_pool(cls, pool: Pool) -> Secrets:
        return cls(_pool_values(pool))

    def refresh(self, pool: Pool) -> None:
        """Take in keys set since (a long-lived session reads the environment again for each run)."""
        self.values = Secrets([*self.values, *_pool_values(pool)]).values

    def scrub(self, text: str, open_end: bool = False) -> str:
        """`text` with every secret, and every prefix of 8+ characters of one, replaced by `***`.

        Prefixes count because providers echo keys cut short (`Incorrect API key provided: sk-test-SECRE...`).
        With `open_end`, a prefix that runs to the end of `text` is left for later: the text is still arriving
        (a stream), and the rest of the key may follow; the caller holds that tail back.
        """
        for value in self.values:
            if value in text:
                text = text.replace(value, "***")
        for value in self.values:
            if " " not in value and len(value) >= MIN_PREFIX_CHARS and value[:MIN_PREFIX_CHARS] in text:
                text = _mask_prefixes(text, value, open_end)
        return text

    def __bool__(self) -> bool:
        return bool(self.values)


def _mask_prefixes(text: str, value: str, open_end: bool) -> str:
    """Replace each run of `text` that is a prefix of `value` of `MIN_PREFIX_CHARS`+ characters by `***` (linear in `text`)."""
    out: list[str] = []
    start = 0
    head = value[:MIN_PREFIX_CHARS]
    while True:
        at = text.find(head, start)
        if at < 0:
            break
        end = at + MIN_PREFIX_CHARS
        while end < len(text) and end - at < len(value) and text[end] == value[end - at]:
            end += 1
        if open_end and end == len(text):
            break  # may be the start of the whole key, still arriving
        out += [text[start:at], "***"]
        start = end
    out.append(text[start:])
    return "".join(out)


def _pool_values(pool: Pool) -> list[str]:
    """Every key value in the environment that the pool (or a built-in provider) names, and its secret headers."""
    values: list[str] = []
    for spec in (*BUILTIN_PROVIDERS.values(), *pool.providers.values()):
        if spec.api_key_env and os.environ.get(spec.api_key_env):
            raw = os.environ[spec.api_key_env]
            values += [raw, raw.strip()]
        values += [v for k, v in spec.headers.items() if secret_header(k)]
        values += [v.split(" ", 1)[1] for k, v in spec.headers.items() if secret_header(k) and " " in v]  # "Bearer sk-..."
    return values
