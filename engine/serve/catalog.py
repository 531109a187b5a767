"""The flows a server offers: every `.flow` in a folder, checked against the pool, re-read when changed.

A flow is asked for as `flow/<file stem>` (`workflows/layered.flow` is `flow/layered`).
At start every flow must check: a server that would answer some names with errors is
refused with the same diagnostics as `baton validate`. When reloading, a flow that stops
checking keeps serving its last good version, and its diagnostics are logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.checks.cost import WorstCase
from engine.diagnostics import render_all
from engine.errors import BatonError
from engine.loading import check_file
from engine.model import Flow
from engine.pool import Pool

FLOW_PREFIX = "flow/"


class CatalogError(BatonError):
    """Flows that do not check: the server does not start."""


@dataclass(frozen=True)
class Offered:
    """One flow the server offers, as last checked."""

    model: str  # the name clients put in `model`
    path: Path
    flow: Flow
    worst: WorstCase
    mtime_ns: int


@dataclass
class Catalog:
    folder: Path | None
    pool: Pool
    flows: dict[str, Offered] = field(default_factory=dict)
    #: per file, the diagnostics of its last failed check (a reload that kept the last good version)
    stale: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path | None, pool: Pool) -> Catalog:
        """Every flow in `folder`, checked; `CatalogError` with every file's diagnostics if any fails."""
        catalog = cls(Path(folder) if folder is not None else None, pool)
        problems = []
        for path in catalog._files():
            offered, report = catalog._check(path)
            if offered is None:
                problems.append(report)
            else:
                catalog.flows[offered.model] = offered
        if problems:
            raise CatalogError("\n".join(problems))
        return catalog

    def _files(self) -> list[Path]:
        if self.folder is None:
            return []
        if not self.folder.is_dir():
            raise CatalogError(f"{self.folder}: no such folder of flows")
        return sorted(self.folder.glob("*.flow"))

    def _check(self, path: Path) -> tuple[Offered | None, str]:
        mtime = path.stat().st_mtime_ns
        result, text = check_file(path, self.pool)
        if result.flow is None or result.errors or result.worst is None:
            return None, render_all(result.diagnostics, text) or f"{path}: does not check"
        return Offered(FLOW_PREFIX + path.stem, path, result.flow, result.worst, mtime), ""

    def reload(self) -> list[str]:
        """Re-read changed, new and removed files; returns what to log (a failed flow keeps its last good version)."""
        notes = []
        seen = set()
        for path in self._files():
            model = FLOW_PREFIX + path.stem
            seen.add(model)
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                continue
            current = self.flows.get(model)
            if current is not None and current.mtime_ns == mtime:
                continue
            if current is None and self.stale.get(model) == str(mtime):
                continue  # still the same broken new file
            offered, report = self._check(path)
            if offered is not None:
                self.flows[model] = offered
                self.stale.pop(model, None)
                notes.append(f"{path}: reloaded as {model}")
            else:
                self.stale[model] = str(mtime)
                kept = "; keeps serving its last good version" if current is not None else "; not served"
                notes.append(f"{path}: does not check{kept}:\n{report}")
                if current is not None:  # do not check the same broken version again
                    self.flows[model] = Offered(current.model, current.path, current.flow, current.worst, mtime)
        for gone in set(self.flows) - seen:
            notes.append(f"{self.flows[gone].path}: removed; {gone} is no longer served")
            del self.flows[gone]
        return notes
