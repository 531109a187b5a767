"""What a node handler may use of the run it is part of (`engine.run.nodes`): the executor provides it.

A Protocol, so that the handlers depend on this list and not on the scheduler's class: the
import graph has no cycle, and what a handler can reach is written down in one place.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from engine.model import Flow
from engine.run.calls import Caller
from engine.run.store import RunRecord
from engine.run.streaming import TextStream
from engine.run.trace import RouteDecision, StepResult


class NodeContext(Protocol):
    """The run as a node handler sees it."""

    flow: Flow
    caller: Caller
    store: RunRecord
    inputs: dict[str, str]
    #: finished nodes, by name (a loop's members too, while the loop runs)
    results: dict[str, StepResult]
    futures: dict[str, asyncio.Future[StepResult]]
    decisions: dict[str, asyncio.Future[RouteDecision | None]]

    def emit(self, name: str, **fields: Any) -> None: ...

    def stream_for(self, name: str) -> TextStream | None: ...
