"""Baton: open, transparent orchestration of teams of language models.

The short list of the public API, for applications (`engine.api` has every name the
command line uses too), imported lazily so that `baton validate` loads no runtime code:

    from engine import Session, load_flow, run_flow, run_flow_sync, check_file

Type checkers see every name through the `TYPE_CHECKING` block below; at run time each
is taken from `engine.api` on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.api import (
        Attempt,
        BatonError,
        BudgetExceeded,
        CallResult,
        ChatRequest,
        ChatResponse,
        CheckResult,
        Flow,
        FlowError,
        HomeError,
        InputError,
        Pool,
        PoolError,
        Provider,
        ProviderError,
        ProviderFault,
        RetryPolicy,
        RouteDecision,
        RouteError,
        RunCancelled,
        RunError,
        RunSummary,
        ScriptedProvider,
        Session,
        StepResult,
        SyncSession,
        UnknownRun,
        VerificationFailed,
        check_file,
        check_source,
        default_pool,
        discover_pool,
        load_flow,
        load_pool,
        run_flow,
        run_flow_sync,
    )

__all__ = ["Attempt", "BatonError", "BudgetExceeded", "CallResult", "ChatRequest", "ChatResponse", "CheckResult", "Flow", "FlowError", "HomeError", "InputError", "Pool", "PoolError", "Provider", "ProviderError", "ProviderFault", "RetryPolicy", "RouteDecision", "RouteError", "RunCancelled", "RunError", "RunSummary", "ScriptedProvider", "Session", "StepResult", "SyncSession", "UnknownRun", "VerificationFailed", "check_file", "check_source", "default_pool", "discover_pool", "load_flow", "load_pool", "run_flow", "run_flow_sync"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("engine.api"), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
