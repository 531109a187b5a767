"""Spending caps that hold under concurrency: reserve the worst case before a call, settle after.

A call is sent only if everything already spent, plus everything reserved by calls in
flight, plus this call's worst case fits under every cap. The worst case uses an upper
bound on prompt tokens (UTF-8 bytes: a byte-level BPE token covers at least one byte)
plus `max_tokens` at the alias's prices, so with computed costs spending can never pass
the cap. All of this runs on the event loop's thread, so no lock is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import BudgetExceeded
from engine.model import Budget

#: Per-message allowance for chat-template tokens (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 16


def prompt_token_bound(messages: tuple[dict[str, str], ...]) -> int:
    """An upper bound on the prompt's tokens for byte-level BPE tokenizers."""
    return sum(len(m.get("content", "").encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


@dataclass
class Reservation:
    step: str
    usd: float
    tokens: int
    settled: bool = False


class BudgetGuard:
    """Tracks spend and reservations against a `Budget`; refuses calls that could break it."""

    def __init__(self, budget: Budget, spent_usd: float = 0.0, spent_tokens: int = 0, spent_calls: int = 0) -> None:
        self.budget = budget
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        self.spent_calls = spent_calls
        self.reserved_usd = 0.0
        self.reserved_tokens = 0
        self.reserved_calls = 0

    def reserve(self, step: str, usd: float, tokens: int) -> Reservation:
        b = self.budget
        if b.usd is not None and self.spent_usd + self.reserved_usd + usd > b.usd + 1e-12:
            raise BudgetExceeded(
                f"budget ${b.usd:g} would be exceeded: step `{step}` needs up to ${usd:.6f}; "
                f"spent ${self.spent_usd:.6f}, ${self.reserved_usd:.6f} reserved by calls in flight",
                step=step, cap="usd", limit=b.usd, spent=self.spent_usd,
            )
        if b.tokens is not None and self.spent_tokens + self.reserved_tokens + tokens > b.tokens:
            raise BudgetExceeded(
                f"token cap {b.tokens} would be exceeded: step `{step}` needs up to {tokens} tokens; "
                f"used {self.spent_tokens}, {self.reserved_tokens} reserved by calls in flight",
                step=step, cap="tokens", limit=float(b.tokens), spent=float(self.spent_tokens),
            )
        if b.calls is not None and self.spent_calls + self.reserved_calls + 1 > b.calls:
            raise BudgetExceeded(
                f"call cap {b.calls} reached: step `{step}` was refused after {self.spent_calls} calls",
                step=step, cap="calls", limit=float(b.calls), spent=float(self.spent_calls),
            )
        self.reserved_usd += usd
        self.reserved_tokens += tokens
        self.reserved_calls += 1
        return Reservation(step, usd, tokens)

    def settle(self, r: Reservation, usd: float, tokens: int, called: bool = True) -> None:
        """Replace a reservation by what the call really used (nothing if it was never sent)."""
        if r.settled:
            return
        r.settled = True
        self.reserved_usd -= r.usd
        self.reserved_tokens -= r.tokens
        self.reserved_calls -= 1
        if called:
            self.spent_usd += usd
            self.spent_tokens += tokens
            self.spent_calls += 1
