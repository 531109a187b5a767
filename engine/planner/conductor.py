"""Importing a Sakana Conductor completion (`model_id`, `subtasks`, `access_list`) as a `.flow` file.

Tolerates what real completions contain (reasoning before the lists, `<think>` blocks,
code fences, smart quotes, `:` or `=`) and rejects, with positioned diagnostics, what
Conductor's own checks reject: lists of different lengths, a model id outside the map,
an access entry pointing at the same or a later step. Three empty lists mean "keep the
previous answer" and yield no flow.
"""

from __future__ import annotations

import ast as pyast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from engine.diagnostics import Diagnostic
from engine.syntax.ast import Span
from engine.syntax.literals import encode_string

LABELS = ("model_id", "subtasks", "access_list")
_SMART = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"}


@dataclass
class ConductorPlan:
    models: list[int] = field(default_factory=list)
    subtasks: list[str] = field(default_factory=list)
    access: list[Any] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.models and not self.subtasks and not self.access


def _blank_text(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def _blank(m: re.Match[str]) -> str:
    return _blank_text(m.group())


def _span_at(text: str, pos: int, length: int = 1) -> Span:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return Span(line, col, line, col + max(1, length), pos, pos + length)


def _balanced(text: str, start: int) -> int | None:
    """Index just past the `]` that closes the `[` at `start`, skipping strings."""
    depth = 0
    quote: str | None = None
    i = start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def parse_completion(text: str, filename: str = "<conductor>") -> tuple[ConductorPlan | None, list[Diagnostic]]:
    """The three lists of a completion, or diagnostics saying what is wrong and where."""
    # Blank out (rather than delete) thinking and fences, so positions stay those of the original text.
    clean = re.sub(r"<think>.*?</think>", _blank, text, flags=re.S | re.I)
    if re.search(r"</think>", clean, re.I):
        cut = list(re.finditer(r"</think>", clean, re.I))[-1].end()
        clean = _blank_text(clean[:cut]) + clean[cut:]
    for smart, plain in _SMART.items():
        clean = clean.replace(smart, plain)
    clean = re.sub(r"```[a-z]*", _blank, clean)
    found: dict[str, tuple[Any, int, str]] = {}
    diags: list[Diagnostic] = []
    for label in LABELS:
        matches = list(re.finditer(rf"\b{label}\s*[:=]\s*\[", clean))
        if not matches:
            continue
        m = matches[-1]  # the last one: reasoning often sketches lists before the final answer
        start = m.end() - 1
        end = _balanced(clean, start)
        if end is None:
            diags.append(Diagnostic("E505", f"`{label}` list is never closed", _span_at(clean, start), "expected a closing ]", filename))
            continue
        raw = clean[start:end]
        value: Any = None
        try:
            value = pyast.literal_eval(raw)
        except (ValueError, SyntaxError):
            try:
                value = json.loads(raw)
            except ValueError:
                diags.append(Diagnostic("E505", f"`{label}` is not a Python or JSON list", _span_at(clean, start, len(raw)),
                                        None, filename))
                continue
        if not isinstance(value, list):
            diags.append(Diagnostic("E505", f"`{label}` is not a list", _span_at(clean, start, len(raw)), None, filename))
            continue
        found[label] = (value, start, raw)
    missing = [label for label in LABELS if label not in found]
    if missing and not diags:
        diags.append(Diagnostic("E501", f"no Conductor plan: missing {', '.join(missing)}", _span_at(clean, 0),
                                "expected `model_id = [...]`, `subtasks = [...]`, `access_list = [...]`", filename))
    if diags:
        return None, diags
    (models, m_pos, m_raw), (subtasks, s_pos, _), (access, a_pos, a_raw) = (found[label] for label in LABELS)
    lengths = {len(models), len(subtasks), len(access)}
    if len(lengths) > 1:
        return None, [Diagnostic("E502", f"lists of different lengths: model_id {len(models)}, subtasks {len(subtasks)}, "
                                 f"access_list {len(access)}", _span_at(clean, m_pos, len(m_raw)), None, filename)]
    for i, mid in enumerate(models):
        if not isinstance(mid, int) or isinstance(mid, bool):
            diags.append(Diagnostic("E505", f"model_id[{i}] is {mid!r}, not an integer", _span_at(clean, m_pos, len(m_raw)), None, filename))
    for i, sub in enumerate(subtasks):
        if not isinstance(sub, str):
            diags.append(Diagnostic("E505", f"subtasks[{i}] is not a string", _span_at(clean, s_pos), None, filename))
    for i, entry in enumerate(access):
        if entry in ("all", ["all"]) or entry == []:
            continue
        if not isinstance(entry, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in entry):
            diags.append(Diagnostic("E505", f"access_list[{i}] is {entry!r}: expected [], \"all\" or earlier step positions",
                                    _span_at(clean, a_pos, len(a_raw)), None, filename))
            continue
        for x in entry:
            if not 0 <= x < i:
                diags.append(Diagnostic("E504", f"access_list[{i}] names step {x}, which is not an earlier step",
                                        _span_at(clean, a_pos, len(a_raw)),
                                        f"step {i} may see steps 0..{i - 1}" if i else "the first step can see no earlier step", filename))
    if diags:
        return None, diags
    return ConductorPlan(models, subtasks, access), []


def to_flow(plan: ConductorPlan, model_map: dict[int, str], name: str = "conductor", filename: str = "<conductor>") -> tuple[str | None, list[Diagnostic]]:
    """The flow text for a parsed plan. Each worker sees the question, its access list and its subtask, as in Conductor."""
    diags = [Diagnostic("E503", f"model_id[{i}] = {mid} is not in --map (it has {', '.join(map(str, sorted(model_map))) or 'nothing'})",
                        Span(1, 1, 1, 2), None, filename) for i, mid in enumerate(plan.models) if mid not in model_map]
    if diags:
        return None, diags
    lines = ["version 1", f'flow {name} "Imported from a Conductor completion"', "", "input question", ""]
    for i, (mid, sub, entry) in enumerate(zip(plan.models, plan.subtasks, plan.access, strict=True)):
        if entry in ("all", ["all"]):
            sees = "all"
        else:
            sees = ", ".join(["question", *(f"s{x + 1}" for x in entry)])
        lines += [f"step s{i + 1} {{", f"  model: {model_map[mid]}", f"  sees: {sees}", f"  task: {encode_string(sub)}", "}", ""]
    return "\n".join(lines).rstrip() + "\n", []


def parse_map(text: str) -> dict[int, str]:
    """`0=alias0,1=alias1` as a dict; raises ValueError with the bad item."""
    out: dict[int, str] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, alias = item.partition("=")
        if not sep or not key.strip().isdigit() or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", alias.strip()):
            raise ValueError(f"--map item {item!r}: expected N=alias")
        out[int(key)] = alias.strip()
    return out
