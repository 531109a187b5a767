"""Baton: open, transparent orchestration of teams of language models.

The public API for applications, one list (`__all__`), each name taken from the module that
defines it on first use, so that importing `engine` (as every command does) loads nothing:
`baton validate` never loads runtime, provider or network code.

    from engine import Session, load_flow, run_flow, run_flow_sync, check_file

Type checkers see every name through the `TYPE_CHECKING` block below. Every other name lives in
its module (`engine.run.trace`, `engine.serve.server`, ...): import it from there; the
command line does (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from engine.run.trace import Attempt, CallResult, RouteDecision, RunSummary, StepResult
    from engine.session import Session, SyncSession, run_flow, run_flow_sync

#: Public name -> the module that defines it.
_WHERE: dict[str, str] = {
    "Attempt": "engine.run.trace",
    "BatonError": "engine.errors",
    "BudgetExceeded": "engine.errors",
    "CallResult": "engine.run.trace",
    "ChatRequest": "engine.run.protocol",
    "ChatResponse": "engine.run.protocol",
    "CheckResult": "engine.checks",
    "Flow": "engine.model",
    "FlowError": "engine.errors",
    "HomeError": "engine.errors",
    "InputError": "engine.errors",
    "Pool": "engine.pool",
    "PoolError": "engine.errors",
    "Provider": "engine.run.protocol",
    "ProviderError": "engine.errors",
    "ProviderFault": "engine.run.protocol",
    "RetryPolicy": "engine.run.calls",
    "RouteDecision": "engine.run.trace",
    "RouteError": "engine.errors",
    "RunCancelled": "engine.errors",
    "RunError": "engine.errors",
    "RunSummary": "engine.run.trace",
    "ScriptedProvider": "engine.providers.scripted",
    "Session": "engine.session",
    "StepResult": "engine.run.trace",
    "SyncSession": "engine.session",
    "UnknownRun": "engine.errors",
    "VerificationFailed": "engine.errors",
    "check_file": "engine.loading",
    "check_source": "engine.loading",
    "default_pool": "engine.pool",
    "discover_pool": "engine.pool",
    "load_flow": "engine.loading",
    "load_pool": "engine.pool",
    "run_flow": "engine.session",
    "run_flow_sync": "engine.session",
}

__all__ = ['Attempt', 'BatonError', 'BudgetExceeded', 'CallResult', 'ChatRequest', 'ChatResponse', 'CheckResult', 'Flow', 'FlowError', 'HomeError', 'InputError', 'Pool', 'PoolError', 'Provider', 'ProviderError', 'ProviderFault', 'RetryPolicy', 'RouteDecision', 'RouteError', 'RunCancelled', 'RunError', 'RunSummary', 'ScriptedProvider', 'Session', 'StepResult', 'SyncSession', 'UnknownRun', 'VerificationFailed', 'check_file', 'check_source', 'default_pool', 'discover_pool', 'load_flow', 'load_pool', 'run_flow', 'run_flow_sync']


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
