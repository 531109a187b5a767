"""Spending caps that hold under concurrency: reserve the worst case before a call, settle after.

A call is sent only if everything already spent, plus everything reserved by calls in
flight, plus this call's worst case fits under every cap. The worst case uses an upper
bound on prompt tokens (UTF-8 bytes: a byte-level BPE token covers at least one byte)
plus `max_tokens` at the alias's prices, so with computed costs spending can never pass
the cap. All of this runs on the event loop's thread, so no lock is needed.

An account kept in a database across a network (a key's allowance on PostgreSQL) is reserved
and settled with `reserve_async` / `settle_async`: its statements are awaited, so the event
loop serves other requests while one waits on the database. Everything else takes the plain
calls, which cost no await.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import BudgetExceeded, InputError
from engine.model import Budget
from engine.numbers import finite

#: Per-message allowance for chat-template tokens (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 16


def usd_cap(value: object, what: str = "budget_usd") -> float | None:
    """A spending cap as given to the API: None, or a finite number >= 0; anything else is an `InputError`.

    `min(nan, cap)` is nan and every comparison with nan is false: a NaN cap let every call through.
    """
    if value is None:
        return None
    try:
        return finite(value, what, low=0)
    except ValueError as err:
        raise InputError(str(err)) from None


def prompt_token_bound(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> int:
    """An upper bound on the prompt's tokens for byte-level BPE tokenizers: every byte of text a token, tool calls
    and the tools offered counted as the JSON they are sent as."""
    total = 0
    for m in messages:
        content = m.get("content")
        total += len(content.encode("utf-8")) if isinstance(content, str) else 0
        if m.get("tool_calls"):
            total += len(json.dumps(m["tool_calls"], ensure_ascii=False).encode("utf-8"))
        total += MESSAGE_OVERHEAD_TOKENS
    return total + (len(json.dumps(list(tools), ensure_ascii=False).encode("utf-8")) if tools else 0)


@dataclass
class Reservation:
    step: str
    usd: float
    tokens: int
    settled: bool = False
    parent: Reservation | None = None  # the same call's reservation against a shared account
    #: A reservation held in a shared ledger (an API key's, across processes): its id there, and the day it counts on.
    ref: str | None = None
    day: str | None = None


class BudgetGuard:
    """Tracks spend and reservations against a `Budget`; refuses calls that could break it."""

    def __init__(self, budget: Budget, spent_usd: float = 0.0, spent_tokens: int = 0, spent_calls: int = 0,
                 estimated_usd: float = 0.0, parent: BudgetGuard | None = None, label: str = "budget",
                 owner: str | None = None) -> None:
        """`parent` is an account other runs share (an API key's allowance): each call reserves against both.
        `label` names the cap in messages; `owner` whose allowance it is (an API key's name): runs under it
        get a response cache and reservation scale-ups of their own, never another tenant's."""
        self.budget = budget
        self.parent = parent
        self.label = label
        self.owner: str | None = owner if owner is not None else (parent.owner if parent is not None else None)
        self.spent_usd = spent_usd
        self.estimated_usd = estimated_usd  # the part of spent_usd booked at worst case (usage missing or unreadable)
        self.spent_tokens = spent_tokens
        self.spent_calls = spent_calls
        self.reserved_usd = 0.0
        self.reserved_tokens = 0
        self.reserved_calls = 0

    def reserve(self, step: str, usd: float, tokens: int) -> Reservation:
        self._check(step, usd, tokens)
        parent = self.parent.reserve(step, usd, tokens) if self.parent is not None else None
        self._hold(usd, tokens, 1)
        return Reservation(step, usd, tokens, parent=parent)

    def _check(self, step: str, usd: float, tokens: int) -> None:
        """Whether this guard's own caps take the call, with what is spent and held: else `BudgetExceeded`."""
        b = self.budget
        if b.usd is not None and self.spent_usd + self.reserved_usd + usd > b.usd + 1e-12:
            raise BudgetExceeded(
                f"{self.label} ${b.usd:g} would be exceeded: step `{step}` needs up to ${usd:.6f}; "
                f"booked ${self.spent_usd:.6f}{self._estimated_words()}, ${self.reserved_usd:.6f} reserved by calls in flight",
                step=step, cap="usd", limit=b.usd, spent=self.spent_usd, budget=self.label,
            )
        if b.tokens is not None and self.spent_tokens + self.reserved_tokens + tokens > b.tokens:
            raise BudgetExceeded(
                f"{self._whose()}token cap {b.tokens} would be exceeded: step `{step}` needs up to {tokens} tokens; "
                f"used {self.spent_tokens}, {self.reserved_tokens} reserved by calls in flight",
                step=step, cap="tokens", limit=float(b.tokens), spent=float(self.spent_tokens), budget=self.label,
            )
        if b.calls is not None and self.spent_calls + self.reserved_calls + 1 > b.calls:
            raise BudgetExceeded(
                f"{self._whose()}call cap {b.calls} reached: step `{step}` was refused after {self.spent_calls} calls",
                step=step, cap="calls", limit=float(b.calls), spent=float(self.spent_calls), budget=self.label,
            )

    @property
    def waits(self) -> bool:
        """Whether reserving or settling here waits on a database across a network (an account's, up the chain)."""
        return self.parent is not None and self.parent.waits

    async def reserve_async(self, step: str, usd: float, tokens: int) -> Reservation:
        """`reserve`, awaiting the accounts up the chain that wait on a database. This guard's share is held before the
        wait and given back if the account refuses (or the caller is cancelled), so no other call slips in meanwhile."""
        if not self.waits or self.parent is None:
            return self.reserve(step, usd, tokens)
        self._check(step, usd, tokens)
        self._hold(usd, tokens, 1)
        try:
            parent = await self.parent.reserve_async(step, usd, tokens)
        except BaseException:
            self._hold(-usd, -tokens, -1)
            raise
        return Reservation(step, usd, tokens, parent=parent)

    def _hold(self, usd: float, tokens: int, calls: int) -> None:
        self.reserved_usd += usd
        self.reserved_tokens += tokens
        self.reserved_calls += calls

    @property
    def caps_usd(self) -> bool:
        """Whether a dollar cap applies: this guard's, or an account's it reserves against."""
        return self.budget.usd is not None or (self.parent is not None and self.parent.caps_usd)

    def _whose(self) -> str:
        """Whose token or call cap refused a call, when it is not the run's own (the dollar message says it anyway)."""
        return "" if self.label == "budget" else f"{self.label}: "

    def _estimated_words(self) -> str:
        return f" (${self.estimated_usd:.6f} of it estimated: replies without readable usage)" if self.estimated_usd > 0 else ""

    def settle(self, r: Reservation, usd: float, tokens: int, called: bool = True, estimated: bool = False) -> str | None:
        """Replace a reservation by what the call really used (nothing if it was never sent).

        Returns a warning when this booking takes the spend past a cap: a provider that
        returns more than `max_tokens` (reasoning tokens) or reports a cost above the pool's
        prices can do that; the next reservation then fails, so the run stops there.
        """
        if r.settled:
            return None
        r.settled = True
        if r.parent is not None and self.parent is not None:
            self.parent.settle(r.parent, usd, tokens, called, estimated)
        return self._book(r, usd, tokens, called, estimated)

    async def settle_async(self, r: Reservation, usd: float, tokens: int, called: bool = True, estimated: bool = False) -> str | None:
        """`settle`, awaiting the accounts up the chain that wait on a database (see `reserve_async`)."""
        if not self.waits or self.parent is None:
            return self.settle(r, usd, tokens, called, estimated)
        if r.settled:
            return None
        r.settled = True
        warning = self._book(r, usd, tokens, called, estimated)
        if r.parent is not None:
            await self.parent.settle_async(r.parent, usd, tokens, called, estimated)
        return warning

    def _book(self, r: Reservation, usd: float, tokens: int, called: bool, estimated: bool) -> str | None:
        """This guard's own part of settling: the reservation released, the spend booked, a warning past a cap."""
        self.reserved_usd -= r.usd
        self.reserved_tokens -= r.tokens
        self.reserved_calls -= 1
        if not called:
            return None
        was_within = self._within()
        self.spent_usd += usd
        self.spent_tokens += tokens
        self.spent_calls += 1
        if estimated:
            self.estimated_usd += usd
        if was_within and not self._within():
            b = self.budget
            what = (f"${self.spent_usd:.6f} booked against a cap of ${b.usd:g}" if b.usd is not None and self.spent_usd > b.usd + 1e-12
                    else f"{self.spent_tokens} tokens used against a cap of {b.tokens}")
            return (f"step `{r.step}`: {what}{self._estimated_words()}: a reply cost more than its reservation "
                    f"(more tokens than max_tokens, or a reported cost above the pool's prices); no further call is sent")
        return None

    def _within(self) -> bool:
        b = self.budget
        return ((b.usd is None or self.spent_usd <= b.usd + 1e-12)
                and (b.tokens is None or self.spent_tokens <= b.tokens))
