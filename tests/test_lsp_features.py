"""The language server's answers as plain data (`engine.lsp.features`), including on text that does not parse."""

from __future__ import annotations

import pytest

from engine.lsp import features
from engine.pool import load_pool
from tests.conftest import WORKFLOWS

POOL = load_pool(WORKFLOWS / "models.toml")

UNFINISHED = """version 1
flow unfinished "Being typed"

input question

step first {
  model: fast
  task: "Answer {question}"
}

step second {
  model: str
  sees: fi
"""


def test_completion_searches_for_block_openers_once_however_many_braces_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 16 of #25: completion searched again for an opener at every `}` (33 s on a 100 KB line, the server blocked)."""
    searches = 0
    opener = features._OPENER

    class Counting:
        def search(self, text: str, pos: int = 0) -> object:
            nonlocal searches
            searches += 1
            return opener.search(text, pos)

    monkeypatch.setattr(features, "_OPENER", Counting())
    line = "step a { model: fast  task: \"x\" " + "}" * 100_000
    a = features.analyse(line, POOL, "braces.flow")
    features.complete(a, 1, len(line) + 1)
    assert searches <= 3  # one per opener, plus the last that finds none


def test_completion_keeps_working_while_the_file_does_not_parse() -> None:
    a = features.analyse(UNFINISHED, POOL, "u.flow")
    assert a.index is None and a.check.diagnostics and a.check.diagnostics[0].code.startswith("E10")
    lines = UNFINISHED.split("\n")
    model_line = lines.index("  model: str") + 1
    assert "strong" in {c.label for c in features.complete(a, model_line, len("  model: ") + 1)}
    sees_line = lines.index("  sees: fi") + 1
    assert {"first", "question"} <= {c.label for c in features.complete(a, sees_line, len("  sees: ") + 1)}
    assert features.lens(a) is None and features.formatted(a, "u.flow") is None and features.outline(a) == []
    with pytest.raises(features.RenameRefused, match="does not parse"):
        features.rename(a, 6, 7, "other")


def test_hover_on_an_input_lists_where_it_is_used_and_rename_checks_the_new_name() -> None:
    text = (WORKFLOWS / "route_label.flow").read_text()
    a = features.analyse(text, POOL, "r.flow")
    lines = text.split("\n")
    line = lines.index("input question") + 1
    found = features.hover(a, line, len("input q"))
    assert found is not None and "input `question`" in found[0] and "used on lines" in found[0]
    with pytest.raises(features.RenameRefused, match="is not a name"):
        features.rename(a, line, len("input q"), "2fast")
    with pytest.raises(features.RenameRefused, match="reserved"):
        features.rename(a, line, len("input q"), "feedback")
    edits = features.rename(a, line, len("input q"), "query")
    assert len(edits) == 1 + text.count("{question}")


def test_folding_covers_blocks_and_triple_quoted_strings() -> None:
    text = (WORKFLOWS / "conductor.flow").read_text()
    a = features.analyse(text, POOL, "c.flow")
    lines = text.split("\n")
    folds = features.folding(a)
    assert (lines.index("step code {") + 1, lines.index("step code {") + 1 + 12) in folds
    triple = lines.index('  task: """') + 1
    assert any(first == triple and last > first for first, last in folds)
