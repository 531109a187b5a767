"""Baton's exceptions, split by who is at fault.

    BatonError
    ├── FlowError            what the user (or a planner) wrote wrong; carries diagnostics with spans
    ├── PoolError            a model pool file that is missing, malformed or inconsistent
    ├── InputError           flow inputs that are missing, unknown, unreadable or too large
    ├── HomeError            the run home (`--home`, $BATON_HOME) cannot be created or used
    ├── UnknownRun           no run has that id (or a prefix matches several)
    ├── RouterError          a router file that cannot be used (engine.router.model), shown by validate as E312
    ├── TraceExportError     spans a collector refused or could not receive (engine.tracing.otel)
    └── RunError             what went wrong while running a valid flow
        ├── ProviderError        a model endpoint failed (after retries and fallbacks)
        ├── BudgetExceeded       a cost, token or call cap refused a call
        ├── VerificationFailed   an `expect` check or a verifier loop failed for good
        ├── RouteError           no route arm matched and there was no `else`
        └── RunCancelled         the run was interrupted

Messages never contain secrets: providers redact API keys before raising.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.diagnostics import Diagnostic
    from engine.run.trace import CallResult, RunStatus, RunSummary


class BatonError(Exception):
    """Base of every error Baton raises on purpose."""


class FlowError(BatonError):
    """A flow that does not parse or check; `diagnostics` holds every problem found."""

    def __init__(self, diagnostics: list[Diagnostic], source: str = "") -> None:
        self.diagnostics = diagnostics
        self.source = source
        first = diagnostics[0] if diagnostics else None
        summary = f"{first.file}:{first.span.line}:{first.span.column}: {first.message}" if first else "invalid flow"
        more = f" (and {len(diagnostics) - 1} more)" if len(diagnostics) > 1 else ""
        super().__init__(summary + more)


class PoolError(BatonError):
    """The model pool cannot be loaded or is inconsistent."""


class InputError(BatonError):
    """Flow inputs are missing, unknown or unreadable."""


class HomeError(BatonError):
    """The folder that holds runs and the cache cannot be created or written (it is a file, or not writable)."""


class UnknownRun(BatonError, LookupError):
    """No recorded run has this id; a prefix that matches several runs lists them in `matches`."""

    def __init__(self, run_id: str, matches: list[str] | None = None) -> None:
        self.run_id = run_id
        self.matches = matches or []
        if not run_id:
            message = "no run id given (see `baton runs`)"
        elif self.matches:
            shown = ", ".join(self.matches[:10]) + (f" and {len(self.matches) - 10} more" if len(self.matches) > 10 else "")
            message = f"run id {run_id!r} is ambiguous: it matches {shown}"
        else:
            message = f"no run {run_id!r} (see `baton runs`)"
        super().__init__(message)


class RunError(BatonError):
    """Something failed while running a flow; completed step outputs are kept.

    `step` names the node that failed; when the run ends, the session adds `where` (the node's
    `file:line:col` in the flow, so a reader can go to the line) and `summary` (what the run did).
    A failed `Session.call` adds `call` instead: its attempts, and what they cost.
    """

    def __init__(self, message: str, step: str | None = None) -> None:
        self.step = step
        self.where: str | None = None
        self.summary: RunSummary | None = None
        self.call: CallResult | None = None
        super().__init__(message)


class ProviderError(RunError):
    """A model call failed for good (retries and fallbacks exhausted, or not retryable)."""

    def __init__(self, message: str, step: str | None = None, status: int | None = None, retryable: bool = False) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message, step)


class BudgetExceeded(RunError):
    """A call was refused because it could break a cap; names the cap, the spend, and whose budget it was (`budget`:
    the run's own, or an account shared by many runs: an API key's allowance, an evaluation's budget)."""

    def __init__(self, message: str, step: str | None = None, cap: str = "", limit: float = 0.0, spent: float = 0.0,
                 budget: str = "budget") -> None:
        self.cap = cap
        self.limit = limit
        self.spent = spent
        self.budget = budget
        super().__init__(message, step)


class VerificationFailed(RunError):
    """An `expect` check failed on every model of the chain, or a loop ran out with `exhausted: fail`."""


class RouteError(RunError):
    """No arm of a route matched its label and the route has no `else`."""


class RunCancelled(RunError):
    """The run was interrupted (Ctrl-C or cancellation); completed outputs are kept."""


def run_status(error: BaseException | None) -> RunStatus:
    """A finished run's status from the error that stopped it (None: it finished): which error means which status
    is this hierarchy's to say, for flows and pass-through calls alike."""
    if error is None:
        return "ok"
    if isinstance(error, BudgetExceeded):
        return "budget_exhausted"
    return "interrupted" if isinstance(error, RunCancelled) else "failed"
