"""Bearer keys for `baton serve`, their spend caps, and the ledger that survives a restart.

The keys file (TOML) stores only SHA-256 hashes: a leaked file lets nobody in.

    [keys.alice]
    sha256 = "9f86d0..."
    daily_usd = 5.0      # optional: cap per UTC day
    total_usd = 100.0    # optional: cap over the key's life

`baton serve --new-key NAME --keys FILE` appends a key and prints it once. A key's
allowance (`KeyAllowance`) reserves every call's worst case in the shared ledger
(`engine.serve.ledger`) before it is sent and settles it after, so concurrent requests on
one key, in any number of processes, never spend past its caps; a killed server loses
nothing that was booked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets as token_source
import time
import tomllib
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import BatonError, BudgetExceeded
from engine.model import Budget
from engine.numbers import finite
from engine.run.budget import BudgetGuard, Reservation
from engine.serve.ledger import Ledger, Refusal

T = TypeVar("T")

KEY_PREFIX = "bk-"


class KeysError(BatonError):
    """A keys file that cannot be read."""


@dataclass(frozen=True)
class KeySpec:
    name: str
    sha256: str
    daily_usd: float | None = None
    total_usd: float | None = None


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_keys(path: str | Path) -> dict[str, KeySpec]:
    """The keys file, by hash."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise KeysError(f"{path}: cannot read the keys file: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise KeysError(f"{path}: not valid TOML: {err}") from None
    keys: dict[str, KeySpec] = {}
    for name, entry in (data.get("keys") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64:
            raise KeysError(f"{path}: key `{name}` needs `sha256`, the hex SHA-256 of the key")
        caps = {}
        for cap in ("daily_usd", "total_usd"):
            value = entry.get(cap)
            try:  # TOML has nan and inf: a NaN cap never caps
                caps[cap] = finite(value, f"`{cap}`", low=0) if value is not None else None
            except ValueError as err:
                raise KeysError(f"{path}: key `{name}`: {err}") from None
        keys[entry["sha256"].lower()] = KeySpec(name, entry["sha256"].lower(), **caps)
    return keys


def _check_name(name: str) -> None:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise KeysError(f"key name {name!r}: use letters, digits, - and _")


def new_token() -> str:
    return KEY_PREFIX + token_source.token_urlsafe(32)


def add_stored_key(ledger: Ledger, name: str, daily_usd: float | None = None, total_usd: float | None = None) -> str:
    """Store a new key's hash in the shared ledger (every replica reads it) and return the key: the only time it is shown."""
    _check_name(name)
    token = new_token()
    if not ledger.add_key(name, hash_key(token), daily_usd, total_usd):
        raise KeysError(f"the ledger already holds a key named `{name}`")
    return token


def stored_keys(ledger: Ledger) -> dict[str, KeySpec]:
    """The keys stored in the shared ledger, by hash."""
    return {sha: KeySpec(name, sha, daily, total) for name, sha, daily, total in ledger.stored_keys()}


def add_key(path: str | Path, name: str, daily_usd: float | None = None, total_usd: float | None = None) -> str:
    """Append a new key to the keys file (created if need be) and return it: the only time it is shown."""
    _check_name(name)
    target = Path(path)
    if target.exists() and any(k.name == name for k in load_keys(target).values()):
        raise KeysError(f"{path}: there is already a key named `{name}`")
    token = new_token()
    lines = [f"\n[keys.{name}]", f'sha256 = "{hash_key(token)}"']
    lines += [f"daily_usd = {daily_usd!r}"] if daily_usd is not None else []
    lines += [f"total_usd = {total_usd!r}"] if total_usd is not None else []
    with target.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    target.chmod(0o600)
    return token


def bearer_token(authorization: str | None, allow_basic: bool = True) -> str | None:
    """The key an `Authorization` header presents: `Bearer KEY` (the API's way), or `Basic` with the key as the
    password (a browser's way, for the run pages: it asks for it once and sends it with every request); None without one.

    `allow_basic=False` for the API: a browser resends cached Basic credentials with any request to the server,
    one a foreign page made included, so they must never authorise a call that spends."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic" and allow_basic:
        try:
            _user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or None
    return None


def find_key(keys: dict[str, KeySpec], authorization: str | None, allow_basic: bool = True) -> KeySpec | None:
    """The key a request's `Authorization` header presents (`bearer_token`), compared in constant time."""
    token = bearer_token(authorization, allow_basic)
    if token is None:
        return None
    digest = hash_key(token)
    for known, spec in keys.items():
        if hmac.compare_digest(known, digest):
            return spec
    return None


def utc_day(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now if now is not None else time.time()))


class KeyAllowance(BudgetGuard):
    """A key's allowance, both caps, reserved and settled in the shared ledger: every process serving the key sees
    every other's calls in flight, so together they never spend past a cap. The in-process counters say only what
    this process did (messages, tests)."""

    def __init__(self, key: KeySpec, ledger: Ledger) -> None:
        cap = key.daily_usd if key.daily_usd is not None else key.total_usd
        super().__init__(Budget(usd=cap), label=f"API key `{key.name}`'s allowance", owner=key.name)
        self.key, self.ledger = key, ledger
        self._statements: set[asyncio.Task[Any]] = set()

    @property
    def capped(self) -> bool:
        return self.key.daily_usd is not None or self.key.total_usd is not None  # an uncapped key only books what it spent

    @property
    def waits(self) -> bool:
        return self.ledger.remote

    def reserve(self, step: str, usd: float, tokens: int) -> Reservation:
        day = utc_day()
        got = self.ledger.reserve(self.key.name, day, usd, self.key.daily_usd, self.key.total_usd) if self.capped else None
        return self._reserved(step, usd, tokens, day, got)

    async def reserve_async(self, step: str, usd: float, tokens: int) -> Reservation:
        """`reserve`, awaiting the ledger. Its statement is not interrupted: a caller cancelled meanwhile (its client went
        away) does not leave the reservation held until it expires, it is released as soon as the statement returns."""
        if not self.waits or not self.capped:
            return self.reserve(step, usd, tokens)
        day = utc_day()
        pending = self._unstoppable(self.ledger.reserve_async(self.key.name, day, usd, self.key.daily_usd, self.key.total_usd))
        try:
            got = await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(lambda done: self._release_unused(done, day))
            raise
        return self._reserved(step, usd, tokens, day, got)

    def _unstoppable(self, statement: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A statement run to its end whoever stops waiting for it (held here: the loop keeps only weak references)."""
        task = asyncio.ensure_future(statement)
        self._statements.add(task)
        task.add_done_callback(self._statements.discard)
        return task

    def _release_unused(self, done: asyncio.Task[str | Refusal], day: str) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        held = done.result()
        if not isinstance(held, Refusal):
            self._unstoppable(self.ledger.settle_async(held, self.key.name, day, None))

    def _reserved(self, step: str, usd: float, tokens: int, day: str, got: str | Refusal | None) -> Reservation:
        if isinstance(got, Refusal):
            label = f"API key `{self.key.name}`'s {got.cap} allowance"
            raise BudgetExceeded(f"{label} ${got.limit:g} would be exceeded: step `{step}` needs up to ${usd:.6f}; booked "
                                 f"${got.booked:.6f}, ${got.held:.6f} reserved by calls in flight (in every process serving "
                                 "this key)", step=step, cap="usd", limit=got.limit, spent=got.booked, budget=label)
        self._hold(usd, tokens, 1)
        return Reservation(step, usd, tokens, ref=got, day=day)

    def settle(self, r: Reservation, usd: float, tokens: int, called: bool = True, estimated: bool = False) -> str | None:
        if r.settled:
            return None
        r.settled = True
        self.ledger.settle(r.ref, self.key.name, r.day or utc_day(), usd if called else None)
        return self._book(r, usd, tokens, called, estimated)

    async def settle_async(self, r: Reservation, usd: float, tokens: int, called: bool = True, estimated: bool = False) -> str | None:
        """`settle`, awaiting the ledger; the statement finishes even if the caller is cancelled meanwhile."""
        if not self.waits:
            return self.settle(r, usd, tokens, called, estimated)
        if r.settled:
            return None
        r.settled = True
        self._book(r, usd, tokens, called, estimated)
        await asyncio.shield(self._unstoppable(self.ledger.settle_async(r.ref, self.key.name, r.day or utc_day(), usd if called else None)))
        return None

    def _book(self, r: Reservation, usd: float, tokens: int, called: bool, estimated: bool) -> str | None:
        """Only what this process did (the caps are the ledger's): no warning of its own."""
        self.reserved_usd -= r.usd
        self.reserved_tokens -= r.tokens
        self.reserved_calls -= 1
        if called:
            self.spent_usd += usd
            self.spent_tokens += tokens
            self.spent_calls += 1
            if estimated:
                self.estimated_usd += usd
        return None


class Accounts:
    """One allowance per key for this process; the caps themselves are kept in the shared ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._allowances: dict[str, KeyAllowance] = {}

    def account(self, key: KeySpec) -> BudgetGuard:
        allowance = self._allowances.get(key.name)
        if allowance is None or allowance.key != key:  # a reloaded keys file may change a key's caps
            allowance = self._allowances[key.name] = KeyAllowance(key, self.ledger)
        return allowance
