"""The run directory: `.baton/runs/<run-id>/`, written so that a crash loses nothing finished.

Layout: `flow.flow` (the flow as run), `inputs.json`, `pool.json` (no secrets: only the
names of key variables), `events.jsonl` (one JSON event per line, via structlog),
`steps/<name>.json` (each finished step, written atomically and fsynced before any step
that depends on it starts) and `summary.json` (rewritten at the end).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import structlog

from engine.run.trace import RunSummary, StepResult

DEFAULT_HOME = ".baton"


def baton_home(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("BATON_HOME") or DEFAULT_HOME)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _atomic_write(path: Path, text: str, durable: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


class _JsonLinesLogger:
    """A structlog logger that appends rendered lines to an open file."""

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def msg(self, message: str) -> None:
        self.fh.write(message + "\n")
        self.fh.flush()

    info = warning = error = debug = msg


class RunStore:
    """One run's directory. `durable=False` skips fsync (benchmarks, throwaway runs)."""

    def __init__(self, root: Path, run_id: str, durable: bool = True) -> None:
        self.run_id = run_id
        self.dir = root / "runs" / run_id
        self.durable = durable
        self._events: TextIO | None = None
        self._unsynced: list[str] = []
        self.log: Any = None

    @classmethod
    def create(cls, home: str | Path | None, durable: bool = True, run_id: str | None = None) -> RunStore:
        store = cls(baton_home(home), run_id or new_run_id(), durable)
        (store.dir / "steps").mkdir(parents=True, exist_ok=True)
        store._open_events()
        return store

    @classmethod
    def open(cls, home: str | Path | None, run_id: str, durable: bool = True) -> RunStore:
        store = cls(baton_home(home), run_id, durable)
        if not (store.dir / "summary.json").exists() and not (store.dir / "flow.flow").exists():
            raise FileNotFoundError(run_id)
        (store.dir / "steps").mkdir(parents=True, exist_ok=True)
        store._open_events()
        return store

    def _open_events(self) -> None:
        self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
        self.log = structlog.wrap_logger(
            _JsonLinesLogger(self._events),
            processors=[structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.JSONRenderer(ensure_ascii=False)],
            context_class=dict,
        ).bind(run_id=self.run_id)

    def event(self, name: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.info(name, **fields)

    def write_setup(self, flow_source: str, inputs: dict[str, str], pool_json: dict[str, Any]) -> None:
        """The flow, inputs and pool. Their fsync waits for the first finished step: until a step has
        finished there is nothing to resume, and most runs save three fsyncs."""
        _atomic_write(self.dir / "flow.flow", flow_source, False)
        _atomic_write(self.dir / "inputs.json", json.dumps(inputs, ensure_ascii=False, indent=2), False)
        _atomic_write(self.dir / "pool.json", json.dumps(pool_json, ensure_ascii=False, indent=2), False)
        self._unsynced = ["flow.flow", "inputs.json", "pool.json"] if self.durable else []

    def _sync_setup(self) -> None:
        for name in self._unsynced:
            fd = os.open(self.dir / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unsynced = []

    def write_step(self, result: StepResult) -> None:
        """Persist a finished step before anything that depends on it may start."""
        self._sync_setup()
        _atomic_write(self.dir / "steps" / f"{result.name}.json", result.model_dump_json(), self.durable)

    def write_summary(self, summary: RunSummary, final: bool = True) -> None:
        """The run's summary; the first one (status `running`) is not fsynced, the final one is."""
        _atomic_write(self.dir / "summary.json", summary.model_dump_json(indent=2), self.durable and final)

    def completed_steps(self) -> dict[str, StepResult]:
        out: dict[str, StepResult] = {}
        for path in sorted((self.dir / "steps").glob("*.json")):
            try:
                result = StepResult.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if result.status == "ok":
                out[result.name] = result
        return out

    def read_inputs(self) -> dict[str, str]:
        data = json.loads((self.dir / "inputs.json").read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()}

    def read_flow_source(self) -> str:
        return (self.dir / "flow.flow").read_text(encoding="utf-8")

    def read_summary(self) -> RunSummary | None:
        try:
            return RunSummary.model_validate_json((self.dir / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self._events is not None:
            if self.durable:
                self._events.flush()
                os.fsync(self._events.fileno())
            self._events.close()
            self._events = None


class MemoryStore(RunStore):
    """A run record kept in memory only: for evaluations of thousands of items, where the
    per-item record lives in the evaluation's own results file instead."""

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__(Path("."), run_id or new_run_id(), durable=False)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def event(self, name: str, **fields: Any) -> None:
        return None

    def write_setup(self, flow_source: str, inputs: dict[str, str], pool_json: dict[str, Any]) -> None:
        return None

    def write_step(self, result: StepResult) -> None:
        return None

    def write_summary(self, summary: RunSummary, final: bool = True) -> None:
        return None

    def close(self) -> None:
        return None
