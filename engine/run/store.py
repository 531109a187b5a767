"""Writing a run's folder: `.baton/runs/<run-id>/`, written so that a crash loses nothing finished.

Layout: `flow.flow` (the flow as run), `inputs.json`, `pool.json` (no secrets: only the
names of key variables), `events.jsonl` (one JSON event per line, via structlog),
`steps.jsonl` (a `Journal`: a line with the flow and inputs that resume reads, then one
line per finished step, fsynced before any step that depends on it starts) and
`summary.json` (rewritten at the end). The process running the run holds the lock on its
folder (`engine.run.home.hold_run_lock`). Events are buffered and written with each batch of
the journal and at the end: an event log may lose its last lines in a crash, a finished step
may not. `engine.run.reader` reads it all back.

A file is created only when there is something to put in it: a server's pass-through call
(no steps to resume, no events) records its folder, `inputs.json`, `summary.json` and two
links to snapshots (`engine.run.snapshots`), where it used to create nine files.

What the executor needs of a record is the small `RunRecord` protocol; `RunStore` keeps
it on disk, `MemoryStore` keeps nothing (an evaluation's items, whose record is the
evaluation's own journal).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol, TextIO

import structlog

from engine.run.home import STEP_JOURNAL, RunHome, hold_run_lock, new_run_id
from engine.run.journal import Journal
from engine.run.reader import SETUP_KEY, read_step_journal
from engine.run.snapshots import Snapshots, sync_folder, write_file
from engine.run.trace import RunSummary, StepResult

__all__ = ["MemoryStore", "RunRecord", "RunStore", "read_step_journal"]  # read_step_journal: where tests have always found it


class RunRecord(Protocol):
    """Where a run's record goes: what the executor and the session call, and nothing more."""

    run_id: str
    keeps_events: bool

    def event(self, name: str, **fields: Any) -> None: ...

    def write_setup(self, flow_source: str, inputs: dict[str, str], pool_json: dict[str, Any] | str) -> None: ...

    async def commit_step(self, result: StepResult) -> None: ...

    def write_summary(self, summary: RunSummary, final: bool = True) -> None: ...

    def close(self) -> None: ...


def _atomic_write(path: Path, text: str, durable: bool) -> None:
    """Replace `path` whole: written beside it, then renamed over it. The temporary name is fixed, because a run's
    folder has one writer (the process that holds its lock)."""
    tmp = f"{path.parent}/.{path.name}.tmp"
    write_file(tmp, text, durable=durable)
    os.replace(tmp, path)


class _JsonLinesLogger:
    """A structlog logger that hands rendered lines to the run's store."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def msg(self, message: str) -> None:
        self.store.write(message + "\n")

    info = warning = error = debug = msg


#: One encoder for every event line: `json.dumps` with options builds a new encoder per call
#: (3 us of the ~20 us an event costs, and a call writes three events).
_EVENT_ENCODER = json.JSONEncoder(ensure_ascii=False, default=repr)


def _render_event(_logger: Any, _method: str, event: Any) -> str:
    """structlog's last processor: the event as one JSON line (what `JSONRenderer` does, cheaper)."""
    return _EVENT_ENCODER.encode(event)


class RunStore:
    """One run's folder, open for writing. `durable=False` skips fsync (benchmarks, throwaway runs)."""

    keeps_events = True

    def __init__(self, run_dir: Path, durable: bool = True, *, new: bool = False, snapshots: Snapshots | None = None) -> None:
        """`new`: the folder was just made by this process (`create`); `snapshots`: where texts many runs share are kept."""
        self.run_id = run_dir.name
        self.dir = run_dir
        self.durable = durable
        self.snapshots = snapshots
        self._unsynced_folders = False
        #: Whether a summary is on disk: a resumed run's folder has one already (the next is written atomically).
        self._summary_written = not new and (run_dir / "summary.json").exists()
        self._lock = hold_run_lock(self.dir, self.run_id, new)  # released by close(), or by the OS when the process dies
        self._events: TextIO | None = None  # opened with the first event
        self.journal = Journal(self.dir / STEP_JOURNAL, durable, before_write=self._flush_events, before_fsync=self._sync_setup)
        self.log: Any = structlog.wrap_logger(
            _JsonLinesLogger(self),
            processors=[structlog.processors.TimeStamper(fmt="iso", utc=True), _render_event],
            context_class=dict,
        ).bind(run_id=self.run_id)

    @classmethod
    def create(cls, home: RunHome, durable: bool = True, run_id: str | None = None) -> RunStore:
        return cls(home.new_run(run_id), durable, new=True, snapshots=home.snapshots)

    @classmethod
    def open(cls, home: RunHome, run_id: str, durable: bool = True) -> RunStore:
        """A recorded run, to resume; `UnknownRun` if there is none, `HomeError` if another process runs it."""
        return cls(home.find_run(run_id), durable, snapshots=home.snapshots)

    def event(self, name: str, **fields: Any) -> None:
        self.log.info(name, **fields)

    def write(self, line: str) -> None:
        """An event's line, into the (buffered) event log: opened by the first event, as many calls have none."""
        if self._events is None:
            self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
        self._events.write(line)

    def _flush_events(self) -> None:
        if self._events is not None:
            self._events.flush()

    def write_setup(self, flow_source: str, inputs: dict[str, str], pool_json: dict[str, Any] | str, resumable: bool = True) -> None:
        """The flow, inputs and pool (its snapshot, or the snapshot as JSON text: a session writes the
        same pool for every run); as files to read, and, when `resumable`, as the journal's first line, which
        resume reads. The line goes out with the first batch of finished steps (until a step has finished there
        is nothing to resume), so the three files need no fsync of their own. A pass-through call has no steps
        to resume (`resumable=False`): it keeps no journal."""
        # Written in place, not through a temporary file: the run's folder is new.
        folder = str(self.dir)
        pool_text = pool_json if isinstance(pool_json, str) else json.dumps(pool_json, ensure_ascii=False, indent=2)
        for name, text in (("flow.flow", flow_source), ("pool.json", pool_text)):
            if self.snapshots is not None:
                self.snapshots.place(text, f"{folder}/{name}", self.durable)
            else:
                write_file(f"{folder}/{name}", text)
        # without a journal line to hold them, the inputs are fsynced themselves (when durable)
        write_file(f"{folder}/inputs.json", json.dumps(inputs, ensure_ascii=False, indent=2), durable=self.durable and not resumable)
        if resumable:
            self.journal.queue(json.dumps({SETUP_KEY: {"flow": flow_source, "inputs": inputs}}, ensure_ascii=False))
        self._unsynced_folders = self.durable

    def _sync_setup(self) -> None:
        """Once per new run, with its first batch: the run's folder and its parent.

        A file's own fsync does not make its directory entry durable; without the folders'
        fsync a power cut could lose the whole run folder, journal included.
        """
        if not self._unsynced_folders:
            return
        for path in (self.dir, self.dir.parent):
            sync_folder(path)
        self._unsynced_folders = False

    async def commit_step(self, result: StepResult) -> None:
        """Record a finished step; returns once it is on disk (fsynced when durable), so dependents may start."""
        await self.journal.append(result.model_dump_json())

    def write_summary(self, summary: RunSummary, final: bool = True) -> None:
        """The run's summary; the first one (status `running`) is not fsynced, the final one is."""
        path = self.dir / "summary.json"
        text = summary.model_dump_json(indent=2)
        if not final and not self._summary_written:
            write_file(path, text)  # a new run's first summary: nothing to replace atomically
        else:
            _atomic_write(path, text, self.durable and final)
            if final and self._unsynced_folders:  # a run with no journal (no step finished): its folder's names, now
                self._sync_setup()
        self._summary_written = True

    def close(self) -> None:
        """Write what is queued, then make the event log durable and close the files and the lock."""
        self.journal.close()  # lines queued (or a run that ended before any step finished: its setup line)
        if self._events is not None:
            self._events.flush()
            if self.durable:
                os.fsync(self._events.fileno())
            self._events.close()
            self._events = None
        if self._lock is not None:
            os.close(self._lock)  # releases the lock: readers now see the run as finished, or gone
            self._lock = None


class MemoryStore:
    """A run record kept in memory only: for evaluations of thousands of items, where the
    per-item record lives in the evaluation's own results journal instead."""

    keeps_events = False

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or new_run_id()

    def event(self, name: str, **fields: Any) -> None:
        return None

    def write_setup(self, flow_source: str, inputs: dict[str, str], pool_json: dict[str, Any] | str) -> None:
        return None

    async def commit_step(self, result: StepResult) -> None:
        return None

    def write_summary(self, summary: RunSummary, final: bool = True) -> None:
        return None

    def close(self) -> None:
        return None
