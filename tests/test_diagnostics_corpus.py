"""The invalid corpus: one file per diagnostic code, exact output snapshotted, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.diagnostics import CODES, render_all
from engine.loading import check_file
from engine.pool import default_pool

CORPUS = Path(__file__).parent / "invalid"
FILES = sorted(CORPUS.glob("*.flow"))


def test_every_code_has_a_corpus_file() -> None:
    covered = {f.name.split("_")[0] for f in FILES}
    planner_codes = {c for c in CODES if c == "E311" or c.startswith("E5")}  # tested in tests/test_planner.py
    assert set(CODES) - covered == planner_codes


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_corpus_file_reports_its_code(path: Path, snapshot, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(CORPUS.parent.parent)
    code = path.name.split("_")[0]
    result, text = check_file(os.path.relpath(path, CORPUS.parent.parent), default_pool())
    assert code in {d.code for d in result.diagnostics}
    rendered = render_all(result.diagnostics, text, colour=False)
    assert rendered == snapshot
    if code.startswith("E"):
        assert result.flow is None


@pytest.mark.parametrize("path", [p for p in FILES if p.name.startswith("E")][:6], ids=lambda p: p.stem)
def test_cli_exits_1_without_traceback(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "validate", str(path)], capture_output=True, text=True,
                          env={"BATON_POOL": "", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"error[{path.name.split('_')[0]}]" in proc.stderr
    assert "^" in proc.stderr or "E106" in path.name
