"""The grammar's source text, `grammar/flow.lark`: the one definition of the syntax.

Shipped inside the package (`engine/grammar/flow.lark` in a wheel), or read from the
source tree; `engine.syntax.parser` compiles it, and the planner's grammar tools derive
their constrained-decoding grammars from it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def grammar_text() -> str:
    """The grammar source: shipped inside the package, or read from the source tree."""
    try:
        return (resources.files("engine") / "grammar" / "flow.lark").read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return (Path(__file__).resolve().parents[2] / "grammar" / "flow.lark").read_text(encoding="utf-8")
