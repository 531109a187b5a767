"""Reading run folders back: the one reader that `show`, `runs` and `--resume` use.

A run's record is its `summary.json` (rewritten at the end, atomically), its step journal
(a setup line with the flow and inputs, then one line per finished step) and its lock.
Each reader here copes with a run that was killed at any moment: a summary cut short or
missing, a torn last journal line, a summary that still says `running` although no
process holds the run's lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.loading import check_source
from engine.model import Flow
from engine.pool import Pool
from engine.run.home import STEP_JOURNAL, RunHome, run_is_live
from engine.run.journal import read_lines
from engine.run.trace import RunSummary, StepResult

#: The journal's first line holds the run's setup (the flow and its inputs), not a step.
SETUP_KEY = "baton_run_setup"
SETUP_PREFIX = '{"' + SETUP_KEY + '"'


def read_summary(run_dir: Path) -> RunSummary | None:
    """A run folder's summary as written, or None when it is missing or cut short."""
    try:
        return RunSummary.model_validate_json((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_step_journal(run_dir: Path) -> dict[str, StepResult]:
    """The steps recorded in a run's `steps.jsonl`, the last record of each name winning; a torn line is skipped."""
    out: dict[str, StepResult] = {}
    for line in read_lines(run_dir / STEP_JOURNAL):
        if line.startswith(SETUP_PREFIX):
            continue
        try:
            result = StepResult.model_validate_json(line)
        except ValueError:
            continue
        out[result.name] = result
    return out


def completed_steps(run_dir: Path) -> dict[str, StepResult]:
    """What a resume keeps: the steps the journal holds as finished."""
    return {name: r for name, r in read_step_journal(run_dir).items() if r.status == "ok"}


def read_setup(run_dir: Path) -> tuple[str, dict[str, str]]:
    """The flow source and inputs a run recorded: from the journal's first line, else from its files."""
    record: dict[str, Any] | None = None
    lines = read_lines(run_dir / STEP_JOURNAL)
    if lines and lines[0].startswith(SETUP_PREFIX):
        try:
            record = json.loads(lines[0]).get(SETUP_KEY)
        except (ValueError, AttributeError):
            record = None
    if record is not None:
        return str(record["flow"]), {str(k): str(v) for k, v in record["inputs"].items()}
    inputs = json.loads((run_dir / "inputs.json").read_text(encoding="utf-8"))
    return (run_dir / "flow.flow").read_text(encoding="utf-8"), {str(k): str(v) for k, v in inputs.items()}


def recheck_flow(source: str, pool: Pool, flow_file: str) -> tuple[Flow | None, str]:
    """A recorded flow checked again (to resume it, draw it, trace it): (the flow, "") or (None, its errors, each said once)."""
    result = check_source(source, pool, flow_file or "flow.flow")
    if result.flow is not None:
        return result.flow, ""
    return None, "; ".join(dict.fromkeys(d.message for d in result.diagnostics if d.severity == "error"))


def read_run(run_dir: Path) -> RunSummary:
    """A run as a person should see it: its summary (or a stand-in that says why there is none), the steps
    its journal holds, and `interrupted` for a run marked `running` whose process is gone."""
    summary = read_summary(run_dir)
    if summary is None:
        reason = "missing" if not (run_dir / "summary.json").exists() else "not valid JSON"
        summary = RunSummary(run_id=run_dir.name, flow="?", error=f"summary.json cannot be read ({reason}); the steps shown are from the journal")
    if summary.status == "running" and not run_is_live(run_dir):
        # killed (SIGKILL, a power cut) before it could record how it ended: no process holds its lock
        summary.status = "interrupted"
        summary.error = (summary.error + "; " if summary.error else "") + (
            "the run's process is gone: it was killed before it finished")  # the command line says how to resume
    for name, step in read_step_journal(run_dir).items():
        summary.steps.setdefault(name, step)
    return summary


def load_run(run_id: str, home: str | Path | None = None) -> RunSummary:
    """A run's record by id or unique prefix; `UnknownRun` when none (or several) match."""
    return read_run(RunHome(home).find_run(run_id))


def list_runs(home: str | Path | None = None, limit: int = 20) -> list[RunSummary]:
    """The newest runs, at most `limit`."""
    out = []
    for folder in RunHome(home).run_folders():
        out.append(read_run(folder))
        if len(out) >= limit:
            break
    return out
