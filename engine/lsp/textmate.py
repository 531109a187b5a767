"""The TextMate grammar editors highlight `.flow` files with, generated from `grammar/flow.lark`.

The grammar file is the one definition of the syntax, so the highlighting grammar is derived
from it rather than written beside it: keywords are the grammar's word terminals, and
property keys, numbers, amounts, durations, regexes and comments use the grammar's own
regular expressions (Python's and Oniguruma's syntax agree on them). Strings are begin/end
rules (a triple-quoted string spans lines) with the template syntax of
`engine.checks.templates` inside. `tests/test_editors.py` checks that the committed file
(`editors/vscode/syntaxes/flow.tmLanguage.json`) is this output, and tokenizes every
reference flow with vscode-textmate.

    python -m engine.lsp.textmate > editors/vscode/syntaxes/flow.tmLanguage.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from lark.lexer import PatternStr

from engine.checks.properties import RESERVED_NAMES
from engine.syntax.parser import lark_parser

SCOPE = "source.flow"
PLACEHOLDER = r"\{[A-Za-z_][A-Za-z0-9_]*\}"
LITERAL_BRACES = r"\{\{|\}\}"
DEFINERS = ("step", "fuse", "verify", "route", "loop", "input", "flow")


def _terminals() -> dict[str, Any]:
    return {t.name: t.pattern for t in lark_parser().terminals}


def textmate_grammar() -> dict[str, Any]:
    terms = _terminals()
    keywords = sorted(p.value for p in terms.values() if isinstance(p, PatternStr) and p.value.isalpha())
    inside_strings = [
        {"name": "constant.character.escape.flow", "match": LITERAL_BRACES},
        {"name": "variable.parameter.template.flow", "match": PLACEHOLDER},
    ]
    patterns: list[dict[str, Any]] = [
        {"name": "comment.line.number-sign.flow", "match": terms["COMMENT"].value},
        {"name": "string.quoted.triple.flow", "begin": '"""', "end": '"""', "patterns": inside_strings},
        {"name": "string.quoted.double.flow", "begin": '"', "end": '"|$',
         "patterns": [{"name": "constant.character.escape.flow", "match": r"\\."}, *inside_strings]},
        {"name": "string.regexp.flow", "match": terms["REGEX"].value},
        {"match": rf"\b({'|'.join(DEFINERS)})\s+([A-Za-z_][A-Za-z0-9_]*)",
         "captures": {"1": {"name": "keyword.control.flow"}, "2": {"name": "entity.name.function.flow"}}},
        # keys as YAML's are scoped (GitHub's and most themes colour `entity.name.tag`; `variable.other` is left plain)
        {"name": "entity.name.tag.property.flow", "match": terms["KEY"].value.replace("[ \t]*:", "(?=[ \t]*:)")},
        {"name": "keyword.control.flow", "match": rf"\b({'|'.join(keywords)})\b"},
        {"name": "keyword.other.flow", "match": rf"\b({'|'.join(sorted(RESERVED_NAMES | {'x'}))})\b"},
        {"name": "constant.numeric.money.flow", "match": terms["MONEY"].value},
        {"name": "constant.numeric.duration.flow", "match": r"\b" + terms["DURATION"].value},
        {"name": "constant.numeric.flow", "match": r"\b" + terms["NUMBER"].value},
        {"name": "keyword.operator.arrow.flow", "match": terms["ARROW"].value},
        {"name": "punctuation.separator.flow", "match": terms["COMMA"].value},
        {"name": "punctuation.section.block.flow", "match": r"[{}]"},
        # what is left of the names: aliases, steps a property names, route targets (a constant, which themes colour)
        {"name": "variable.other.constant.name.flow", "match": rf"\b{terms['NAME'].value}\b"},
    ]
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "flow",  # the language id: Shiki's `lang: "flow"`, GitHub's linguist name
        "displayName": "Baton flow",
        "scopeName": SCOPE,
        "fileTypes": ["flow"],
        "comment": "Generated from grammar/flow.lark by `python -m engine.lsp.textmate`; do not edit by hand.",
        "patterns": patterns,
    }


def main() -> None:
    sys.stdout.write(json.dumps(textmate_grammar(), indent=2) + "\n")


if __name__ == "__main__":
    main()
