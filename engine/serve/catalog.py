"""The flows a server offers: every `.flow` in a folder, checked against the pool, re-read when changed.

A flow is asked for as `flow/<file stem>` (`workflows/layered.flow` is `flow/layered`).
At start every flow must check: a server that would answer some names with errors is
refused with the same diagnostics as `baton validate`. When reloading, a flow that stops
checking keeps serving its last good version, and its diagnostics are logged. A flow is
re-checked when its file changes or when a sub-flow it uses (`use "patterns/critique.flow"`,
at any depth) does: its caller holds a copy of the sub-flow as checked.
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
    #: the sub-flow files it uses, at any depth, with their modification times when it was checked
    uses: tuple[tuple[str, int | None], ...] = ()

    def changed(self, mtime_ns: int) -> bool:
        """Whether its file, or a sub-flow file it uses, differs from what was checked (a file gone counts)."""
        return mtime_ns != self.mtime_ns or any(_mtime(Path(path)) != seen for path, seen in self.uses)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _stamped(paths: list[str]) -> tuple[tuple[str, int | None], ...]:
    return tuple((path, _mtime(Path(path))) for path in paths)


def used_files(flow: Flow) -> list[str]:
    """The sub-flow files a flow uses, its sub-flows' own included, each once."""
    found: dict[str, None] = {}
    for use in flow.uses():
        found[use.path] = None
        found.update(dict.fromkeys(used_files(use.flow)))
    return list(found)


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
        return Offered(FLOW_PREFIX + path.stem, path, result.flow, result.worst, mtime, _stamped(used_files(result.flow))), ""

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
            if current is not None and not current.changed(mtime):
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
                    uses = _stamped([used for used, _ in current.uses])
                    self.flows[model] = Offered(current.model, current.path, current.flow, current.worst, mtime, uses)
        for gone in set(self.flows) - seen:
            notes.append(f"{self.flows[gone].path}: removed; {gone} is no longer served")
            del self.flows[gone]
        return notes
