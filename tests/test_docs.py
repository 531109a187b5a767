"""The docs describe what was built: their example flows validate, every diagnostic code is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.diagnostics import CODES
from engine.loading import check_source
from engine.pool import load_pool
from engine.syntax.fmt import format_source

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
POOL = load_pool(ROOT / "workflows" / "models.toml")


def flow_blocks() -> list[tuple[str, int, str]]:
    out = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        for m in re.finditer(r"```flow\n(.*?)```", text, re.S):
            out.append((path.name, text[: m.start()].count("\n") + 1, m.group(1)))
    return out


BLOCKS = flow_blocks()


def test_docs_have_flow_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("doc, line, text", BLOCKS, ids=[f"{d}:{line}" for d, line, _ in BLOCKS])
def test_doc_flow_example_is_valid(doc: str, line: int, text: str) -> None:
    if 'by router "gsm8k.router"' in text or 'scorer: "gsm8k.scorer"' in text:  # learned: as if beside the GSM8K files, on its pool
        result = check_source(text, load_pool(ROOT / "workflows" / "eval" / "models.toml"), str(ROOT / "workflows" / "eval" / "doc.flow"))
    else:
        result = check_source(text, POOL, f"{doc}:{line}")
    assert result.flow is not None, [f"{d.code} {d.message} at {d.span.line}" for d in result.diagnostics]
    assert not result.errors
    format_source(text)  # and it formats


def test_every_code_is_documented() -> None:
    text = (DOCS / "diagnostics.md").read_text()
    missing = [c for c in CODES if f"`{c}`" not in text]
    assert not missing


@pytest.mark.parametrize("name", ["language.md", "diagnostics.md", "models.md", "execution.md", "api.md"])
def test_doc_exists(name: str) -> None:
    assert (DOCS / name).read_text().strip()
