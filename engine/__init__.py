"""Baton: open, transparent orchestration of teams of language models.

The public API, imported lazily so that `baton validate` loads no runtime code:

    from engine import load_flow, run_flow, run_flow_sync, check_file
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BatonError",
    "BudgetExceeded",
    "CheckResult",
    "Flow",
    "FlowError",
    "InputError",
    "Pool",
    "PoolError",
    "ProviderError",
    "RunCancelled",
    "RunError",
    "RunSummary",
    "StepResult",
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
    "BatonError": "engine.errors", "BudgetExceeded": "engine.errors", "FlowError": "engine.errors",
    "InputError": "engine.errors", "PoolError": "engine.errors", "ProviderError": "engine.errors",
    "RunCancelled": "engine.errors", "RunError": "engine.errors", "VerificationFailed": "engine.errors",
    "CheckResult": "engine.checks", "Flow": "engine.model", "Pool": "engine.pool", "default_pool": "engine.pool",
    "discover_pool": "engine.pool", "load_pool": "engine.pool", "check_file": "engine.loading",
    "check_source": "engine.loading", "load_flow": "engine.loading", "RunSummary": "engine.run.trace",
    "StepResult": "engine.run.trace", "run_flow": "engine.api", "run_flow_sync": "engine.api",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
