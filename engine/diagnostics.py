"""Diagnostics: what the dry run says about a flow, with stable codes and source positions.

Every problem the parser or the semantic checks find becomes a `Diagnostic`. They are
collected (never raised one at a time), sorted by position, and rendered as
`file:line:col: error[CODE]: message`, the source line, a caret, and a hint.
The code table below is the single source for `docs/diagnostics.md`.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from engine.syntax.ast import Span

Severity = Literal["error", "warning"]

#: code -> (severity, one-line summary). Codes are stable: never renumber, only add.
CODES: dict[str, tuple[Severity, str]] = {
    "E100": ("error", "syntax error: unexpected token"),
    "E101": ("error", "syntax error: unexpected end of file"),
    "E102": ("error", "invalid character"),
    "E103": ("error", "unterminated string or regex"),
    "E104": ("error", "invalid regular expression"),
    "E105": ("error", "invalid template"),
    "E106": ("error", "file cannot be read or decoded"),
    "E200": ("error", "duplicate name"),
    "E201": ("error", "unknown name"),
    "E202": ("error", "unknown model alias"),
    "E203": ("error", "unknown property"),
    "E204": ("error", "duplicate property or declaration"),
    "E205": ("error", "missing required property"),
    "E206": ("error", "unsupported language version"),
    "E207": ("error", "reserved name"),
    "E208": ("error", "wrong kind of value"),
    "E209": ("error", "value out of range"),
    "E300": ("error", "cycle in the flow"),
    "E301": ("error", "a step sees itself or a later step of its loop"),
    "E302": ("error", "template names something the step cannot see"),
    "E303": ("error", "invalid route target"),
    "E304": ("error", "route branch used outside its route"),
    "E305": ("error", "unbounded loop"),
    "E306": ("error", "fuse quorum larger than its panel"),
    "E307": ("error", "loop without a verifier"),
    "E308": ("error", "loop member seen from outside its loop"),
    "E309": ("error", "flow has no steps"),
    "E310": ("error", "route rule is not understood"),
    "E311": ("error", "flow exceeds a planner limit"),
    "E312": ("error", "router file cannot be used"),
    "E313": ("error", "router does not know a model"),
    "E314": ("error", "a step in a loop may not call the client's tools"),
    "E315": ("error", "scorer file cannot be used"),
    "E316": ("error", "scorer was trained for another panel"),
    "E317": ("error", "`returns` is not a declaration of fields"),
    "E318": ("error", "a template, a route or a check names a field a step does not return"),
    "E319": ("error", "a route or a check by a field names a value the field never takes, or a route misses one"),
    "E320": ("error", "the sub-flow a `use` names cannot be found or read"),
    "E321": ("error", "sub-flows use each other in a cycle, or nest too deep"),
    "E322": ("error", "the sub-flow a `use` names does not check"),
    "E323": ("error", "a `use` binds what its sub-flow does not take, or misses one of its inputs"),
    "E324": ("error", "a check compares a field with a value of another type"),
    "E501": ("error", "no Conductor plan found in the completion"),
    "E502": ("error", "Conductor lists of different lengths"),
    "E503": ("error", "Conductor model id not in the --map"),
    "E504": ("error", "Conductor access entry is not an earlier step"),
    "E505": ("error", "malformed Conductor list"),
    "W400": ("warning", "route without else"),
    "W401": ("warning", "dangling step: its output is never used"),
    "W402": ("warning", "unreachable route branch"),
    "W403": ("warning", "worst case exceeds the budget"),
    "W404": ("warning", "input never used"),
    "W405": ("warning", "dollar budget over models without prices"),
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a flow, pinned to a span of its source."""

    code: str
    message: str
    span: Span
    hint: str | None = None
    file: str = "<flow>"
    #: Other places the problem involves, each with what it is there: the first of a duplicate, a cycle's other steps.
    related: tuple[tuple[str, Span], ...] = ()

    @property
    def severity(self) -> Severity:
        return CODES[self.code][0]

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.span.line, self.span.column, self.code)

    def to_json(self) -> dict[str, object]:
        """The `--json` shape, close to `terraform validate -json`."""
        return {
            "severity": self.severity,
            "code": self.code,
            "summary": CODES[self.code][1],
            "message": self.message,
            "detail": self.hint,
            "file": self.file,
            "range": {
                "start": {"line": self.span.line, "column": self.span.column},
                "end": {"line": self.span.end_line, "column": self.span.end_column},
            },
            **({"related": [{"message": m, "range": {"start": {"line": r.line, "column": r.column},
                                                     "end": {"line": r.end_line, "column": r.end_column}}}
                            for m, r in self.related]} if self.related else {}),
        }


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean ..." hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def _use_colour(stream: object) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render(diag: Diagnostic, source: str, colour: bool | None = None) -> str:
    """`file:line:col: error[CODE]: message`, the source line, a caret, and the hint."""
    if colour is None:
        colour = _use_colour(sys.stderr)
    sev = diag.severity
    head = f"{diag.file}:{diag.span.line}:{diag.span.column}: {sev}[{diag.code}]: {diag.message}"
    if colour:
        tint = "\x1b[31m" if sev == "error" else "\x1b[33m"
        head = f"\x1b[1m{diag.file}:{diag.span.line}:{diag.span.column}:\x1b[0m {tint}{sev}[{diag.code}]\x1b[0m: {diag.message}"
    lines = source.splitlines()
    out = [head]
    if 1 <= diag.span.line <= len(lines):
        text = lines[diag.span.line - 1].replace("\t", " ")
        width = 1
        if diag.span.end_line == diag.span.line:
            width = max(1, diag.span.end_column - diag.span.column)
        width = min(width, max(1, len(text) - diag.span.column + 1))
        gutter = f"{diag.span.line:>4} | "
        out.append(gutter + text)
        out.append(" " * (len(gutter) - 2) + "| " + " " * (diag.span.column - 1) + "^" * width)
    if diag.hint:
        out.append(f"     = {diag.hint}")
    return "\n".join(out)


def render_all(diags: Iterable[Diagnostic], source: str, colour: bool | None = None) -> str:
    return "\n".join(render(d, source, colour) for d in sorted(diags, key=Diagnostic.sort_key))
