"""What a node handler may use of the run it is part of (`engine.run.nodes`): the executor provides it.

A Protocol, so that the handlers depend on this list and not on the scheduler's class: the
import graph has no cycle, and what a handler can reach is written down in one place. It is
read-only: a handler fills in its own node's result and returns what else it finished; only
the scheduler resolves futures, records results and commits them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from engine.model import Flow
from engine.run.calls import Caller
from engine.run.streaming import TextStream
from engine.run.trace import StepResult


class NodeContext(Protocol):
    """The run as a node handler sees it."""

    @property
    def flow(self) -> Flow: ...

    @property
    def caller(self) -> Caller: ...

    @property
    def inputs(self) -> Mapping[str, str]: ...

    @property
    def results(self) -> Mapping[str, StepResult]:
        """Finished nodes, by name: what a node sees is among them once the scheduler starts it."""

    def emit(self, name: str, **fields: Any) -> None: ...

    def stream_for(self, name: str) -> TextStream | None: ...
