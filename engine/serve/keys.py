"""Bearer keys for `baton serve`, their spend caps, and the ledger that survives a restart.

The keys file (TOML) stores only SHA-256 hashes: a leaked file lets nobody in.

    [keys.alice]
    sha256 = "9f86d0..."
    daily_usd = 5.0      # optional: cap per UTC day
    total_usd = 100.0    # optional: cap over the key's life

`baton serve --new-key NAME --keys FILE` appends a key and prints it once. A key's
allowance is a chain of budget guards (the run's own, then the key's day, then its
total): every call reserves its worst case against each before it is sent and settles
after, so concurrent requests on one key never spend past its caps. What each call
cost is written to the SQLite ledger as it settles (WAL: a killed server loses nothing
that was booked), and at start each key's guards begin from the ledger's figures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as token_source
import sqlite3
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BatonError
from engine.model import Budget
from engine.numbers import finite
from engine.run.budget import BudgetGuard, Reservation

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


def add_key(path: str | Path, name: str, daily_usd: float | None = None, total_usd: float | None = None) -> str:
    """Append a new key to the keys file (created if need be) and return it: the only time it is shown."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise KeysError(f"key name {name!r}: use letters, digits, - and _")
    target = Path(path)
    if target.exists() and any(k.name == name for k in load_keys(target).values()):
        raise KeysError(f"{path}: there is already a key named `{name}`")
    token = KEY_PREFIX + token_source.token_urlsafe(32)
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


class Ledger:
    """Spend per key and day, and which key started which run; one SQLite file."""

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL: a killed process loses no committed row; FULL also survives a power cut (an fsync a commit)
        self.db.execute("PRAGMA synchronous=" + ("FULL" if fsync else "NORMAL"))
        self.db.execute("CREATE TABLE IF NOT EXISTS spend (key TEXT, day TEXT, usd REAL NOT NULL DEFAULT 0, calls INTEGER NOT NULL "
                        "DEFAULT 0, PRIMARY KEY (key, day))")
        self.db.execute("CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, key TEXT, model TEXT, created REAL)")

    def book(self, key: str, day: str, usd: float) -> None:
        self.db.execute("INSERT INTO spend (key, day, usd, calls) VALUES (?, ?, ?, 1) "
                        "ON CONFLICT (key, day) DO UPDATE SET usd = usd + excluded.usd, calls = calls + 1", (key, day, usd))

    def spent(self, key: str, day: str) -> tuple[float, float]:
        """(that day's spend, all-time spend) of a key."""
        row = self.db.execute("SELECT COALESCE(SUM(CASE WHEN day = ? THEN usd END), 0), COALESCE(SUM(usd), 0) FROM spend WHERE key = ?",
                              (day, key)).fetchone()
        return float(row[0]), float(row[1])

    def own(self, run_id: str, key: str, model: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)", (run_id, key, model, time.time()))

    def owned(self, key: str) -> set[str]:
        """The ids of the runs a key started."""
        return {str(row[0]) for row in self.db.execute("SELECT run_id FROM runs WHERE key = ?", (key,))}

    def owner(self, run_id: str) -> str | None:
        row = self.db.execute("SELECT key FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return str(row[0]) if row else None

    def close(self) -> None:
        self.db.close()


class BookedGuard(BudgetGuard):
    """A key's allowance for one day: each settled call is also written to the ledger."""

    def __init__(self, budget: Budget, spent_usd: float, parent: BudgetGuard | None, label: str, ledger: Ledger, key: str,
                 day: str) -> None:
        super().__init__(budget, spent_usd=spent_usd, parent=parent, label=label, owner=key)
        self.ledger, self.key, self.day = ledger, key, day

    def settle(self, r: Reservation, usd: float, tokens: int, called: bool = True, estimated: bool = False) -> str | None:
        first = not r.settled
        warning = super().settle(r, usd, tokens, called, estimated)
        if first and called:
            self.ledger.book(self.key, self.day, usd)
        return warning


class Accounts:
    """One allowance per key, shared by all of its requests in this process."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._total: dict[str, BudgetGuard] = {}
        self._daily: dict[str, BookedGuard] = {}

    def account(self, key: KeySpec) -> BudgetGuard:
        day = utc_day()
        daily = self._daily.get(key.name)
        if daily is None or daily.day != day:
            today, total = self.ledger.spent(key.name, day)
            parent = self._total.get(key.name)
            if parent is None:
                parent = self._total[key.name] = BudgetGuard(Budget(usd=key.total_usd), spent_usd=total,
                                                             label=f"API key `{key.name}`'s total allowance", owner=key.name)
            daily = self._daily[key.name] = BookedGuard(Budget(usd=key.daily_usd), today, parent,
                                                        f"API key `{key.name}`'s daily allowance", self.ledger, key.name, day)
        return daily
