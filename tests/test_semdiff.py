"""`baton diff`: semantic diffs of flow pairs (snapshots), exit codes, JSON, and use from git (textconv, difftool)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.loading import check_source
from engine.pool import load_pool
from engine.semdiff import diff_flows, flow_diff_json, render_flow_diff, word_diff
from tests.conftest import ROOT, WORKFLOWS

POOL = load_pool(WORKFLOWS / "models.toml")


def checked(text: str, name: str) -> tuple[object, object]:
    result = check_source(text, POOL, name)
    assert result.flow is not None, result.diagnostics
    return result.flow, result.worst


def semantic(old_text: str, new_text: str, old: str = "old.flow", new: str = "new.flow") -> str:
    (a, wa), (b, wb) = checked(old_text, old), checked(new_text, new)
    return render_flow_diff(diff_flows(a, b, wa, wb), old, new)  # type: ignore[arg-type]


def ref(name: str) -> str:
    return (WORKFLOWS / name).read_text()


CONDUCTOR = ref("conductor.flow")
EDITED = (CONDUCTOR.replace("step algorithm {", "step design {").replace("sees: algorithm", "sees: design, question")
          .replace("Implement the algorithm", "Implement carefully the algorithm").replace("model: cheap then strong", "model: strong")
          .replace("budget $0.40", "budget $0.50"))

PLANNER_V1 = '''version 1
flow planned "Written by a planner"

input question

step answer {
  model: fast
  task: "Answer the question: {question}"
  max_tokens: 400
}
'''

PLANNER_V2 = '''version 1
flow planned "Written by a planner, repaired once"

input question

loop refine max 2 {
  step answer {
    model: fast
    sees: question, feedback
    task: "Answer the question. If there is feedback, fix the answer."
    max_tokens: 400
  }
  verify check {
    model: strong
    sees: question, answer
    task: "Reply ACCEPT if the answer is right, else REVISE and why."
    accept: /^ACCEPT/
  }
}
'''


PLANNED = Path(__file__).parent / "planner_outputs"


@pytest.mark.parametrize("pair", ["edited_conductor", "layout_only", "route_label_to_rules", "fuse_panel_to_self", "planner_rounds",
                                  "two_planners_one_task", "returns_changed"])
def test_semantic_diffs(pair: str, snapshot) -> None:  # type: ignore[no-untyped-def]
    old, new = {
        "edited_conductor": (CONDUCTOR, EDITED),
        "layout_only": (ref("hello.flow"), ref("hello.flow").replace("step answer {", "step   answer{").replace("  model:", "    model:")
                        + "\n# a comment at the end\n"),
        "route_label_to_rules": (ref("route_label.flow"), ref("route_rules.flow")),
        "fuse_panel_to_self": (ref("fuse_panel.flow"), ref("fuse_self.flow")),
        "planner_rounds": (PLANNER_V1, PLANNER_V2),
        # what the two embedded planners really wrote for the same task (`baton plan ... --planner smol|local`)
        "two_planners_one_task": ((PLANNED / "sky_smol.flow").read_text(), (PLANNED / "sky_local.flow").read_text()),
        # a typed step's fields: a value added to an enumeration, a field added
        "returns_changed": (ref("triage.flow"), ref("triage.flow").replace('"high" "low"', '"high" "medium" "low"')
                            .replace("needs_human boolean", "needs_human boolean, confidence number")
                            .replace('"low" -> routine', '"medium", "low" -> routine')),
    }[pair]
    assert semantic(old, new) == snapshot


def test_a_rename_is_one_change_not_a_change_in_every_reader() -> None:
    text = semantic(CONDUCTOR, CONDUCTOR.replace("step algorithm {", "step design {").replace("sees: algorithm", "sees: design"))
    assert "renamed from algorithm" in text and "VISIBILITY" not in text and "edges" not in text


def test_visibility_changes_come_first_and_are_marked() -> None:
    (a, wa), (b, wb) = checked(CONDUCTOR, "a"), checked(EDITED, "b")
    d = diff_flows(a, b, wa, wb)  # type: ignore[arg-type]
    assert d.changed[0].visibility and d.changed[0].changes[0][0] == "sees"
    data = flow_diff_json(d)
    assert data["equal"] is False and data["changed"][0]["visibility"] is True
    assert data["worst_case"]["before"]["calls"] == wa.calls  # type: ignore[attr-defined]
    task = next(c for ch in data["changed"] for c in ch["changes"] if c["field"] == "task")
    assert task["word_diff"].startswith("Implement {+carefully+} the algorithm")


def test_word_diff() -> None:
    assert word_diff("a b c d", "a x c d e") == "a [-b-] {+x+} c d {+e+}"


def baton(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "BATON_POOL"} | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=full)


def test_exit_codes_and_json(tmp_path: Path) -> None:
    shutil.copy(WORKFLOWS / "models.toml", tmp_path / "models.toml")
    (tmp_path / "old.flow").write_text(CONDUCTOR)
    (tmp_path / "new.flow").write_text(EDITED)
    (tmp_path / "same.flow").write_text(CONDUCTOR.replace("  max_tokens: 1500", "  max_tokens:   1500"))
    (tmp_path / "bad.flow").write_text(CONDUCTOR.replace("model: coder", "model: codr"))
    different = baton("diff", "old.flow", "new.flow", cwd=tmp_path)
    assert different.returncode == 1 and "[VISIBILITY]" in different.stdout
    same = baton("diff", "old.flow", "same.flow", cwd=tmp_path)
    assert same.returncode == 0 and "no change in meaning" in same.stdout
    as_json = baton("diff", "old.flow", "new.flow", "--json", cwd=tmp_path)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["changed"][0]["name"] == "code"
    bad = baton("diff", "old.flow", "bad.flow", cwd=tmp_path)
    assert bad.returncode == 2 and "E202" in bad.stderr and "does not check" in bad.stderr and "Traceback" not in bad.stderr
    assert baton("diff", "old.flow", cwd=tmp_path).returncode == 2
    missing = baton("diff", "old.flow", "nope.flow", cwd=tmp_path)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_an_old_copy_without_a_pool_beside_it_is_checked_against_the_new_files_pool(tmp_path: Path) -> None:
    """`git show HEAD~1:flows/x.flow > ../old.flow; baton diff ../old.flow flows/x.flow`: the old copy's folder has no pool."""
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(WORKFLOWS / "models.toml", flows / "models.toml")
    (flows / "x.flow").write_text(EDITED)
    (tmp_path / "old.flow").write_text(CONDUCTOR)  # its aliases are in the pool beside x.flow, not in the built-in one
    result = baton("diff", "old.flow", "flows/x.flow", cwd=tmp_path)
    assert result.returncode == 1 and "[VISIBILITY]" in result.stdout
    assert "both checked against the pool" in result.stderr and "flows/models.toml" in result.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_textconv_hides_layout_and_difftool_runs_the_semantic_diff(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(WORKFLOWS / "models.toml", repo / "models.toml")
    (repo / "plan.flow").write_text(CONDUCTOR)
    exe = f"{sys.executable} -m engine.cli.main"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60, env={**os.environ, **env})

    git("init", "-q")
    (repo / ".gitattributes").write_text("*.flow diff=baton\n")
    git("config", "diff.baton.textconv", f"{exe} diff --textconv")
    git("config", "difftool.baton.cmd", f'{exe} diff "$LOCAL" "$REMOTE"')
    git("add", ".")
    git("commit", "-qm", "plan")
    (repo / "plan.flow").write_text(CONDUCTOR.replace("  max_tokens: 1500", "  max_tokens:    1500"))  # layout only
    assert git("diff", "--stat").stdout.strip() == "" or "plan.flow" not in git("diff").stdout.split("@@")[-1]
    assert "max_tokens" not in git("diff").stdout
    (repo / "plan.flow").write_text(EDITED)
    shown = git("diff")
    assert "step design {" in shown.stdout  # the textconv'd line diff
    tool = git("difftool", "-y", "--tool=baton", "plan.flow")
    assert "[VISIBILITY]" in tool.stdout and "renamed from algorithm" in tool.stdout, tool.stderr
