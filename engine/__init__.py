"""Baton: open, transparent orchestration of teams of language models.

The public API, imported lazily so that `baton validate` loads no runtime code:

    from engine import Session, load_flow, run_flow, run_flow_sync, check_file

Type checkers see every name through the `TYPE_CHECKING` block below; at run time each
is imported from its module on first use (`_WHERE`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.api import run_flow, run_flow_sync
    from engine.checks import CheckResult
    from engine.errors import (
        BatonError,
        BudgetExceeded,
        FlowError,
        HomeError,
        InputError,
        PoolError,
        ProviderError,
        RouteError,
        RunCancelled,
        RunError,
        UnknownRun,
        VerificationFailed,
    )
    from engine.loading import check_file, check_source, load_flow
    from engine.model import Flow
    from engine.pool import Pool, default_pool, discover_pool, load_pool
    from engine.providers.scripted import ScriptedProvider
    from engine.run.calls import RetryPolicy
    from engine.run.protocol import ChatRequest, ChatResponse, Provider, ProviderFault
    from engine.run.trace import Attempt, RouteDecision, RunSummary, StepResult
    from engine.session import CallResult, Session, SyncSession

__all__ = [
    "Attempt",
    "BatonError",
    "BudgetExceeded",
    "CallResult",
    "ChatRequest",
    "ChatResponse",
    "CheckResult",
    "Flow",
    "FlowError",
    "HomeError",
    "InputError",
    "Pool",
    "PoolError",
    "Provider",
    "ProviderError",
    "ProviderFault",
    "RetryPolicy",
    "RouteDecision",
    "RouteError",
    "RunCancelled",
    "RunError",
    "RunSummary",
    "ScriptedProvider",
    "Session",
    "StepResult",
    "SyncSession",
    "UnknownRun",
    "VerificationFailed",
    "check_file",
    "check_source",
    "default_pool",
    "discover_pool",
    "load_flow",
    "load_pool",
    "run_flow",
    "run_flow_sync",
]

_WHERE = {
    **dict.fromkeys(["BatonError", "BudgetExceeded", "FlowError", "HomeError", "InputError", "PoolError", "ProviderError",
                     "RouteError", "RunCancelled", "RunError", "UnknownRun", "VerificationFailed"], "engine.errors"),
    "CheckResult": "engine.checks", "Flow": "engine.model",
    **dict.fromkeys(["Pool", "default_pool", "discover_pool", "load_pool"], "engine.pool"),
    **dict.fromkeys(["check_file", "check_source", "load_flow"], "engine.loading"),
    **dict.fromkeys(["Attempt", "RouteDecision", "RunSummary", "StepResult"], "engine.run.trace"),
    **dict.fromkeys(["ChatRequest", "ChatResponse", "Provider", "ProviderFault"], "engine.run.protocol"),
    "RetryPolicy": "engine.run.calls", "ScriptedProvider": "engine.providers.scripted",
    **dict.fromkeys(["CallResult", "Session", "SyncSession"], "engine.session"),
    "run_flow": "engine.api", "run_flow_sync": "engine.api",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
