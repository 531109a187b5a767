"""Extracting final answers from replies: what majority votes and number scorers compare.

A reply may be the JSON a prompt asked for (`{"reasoning": ..., "answer": "42"}`, maybe in
a code fence), or free text. `extract_answer` prefers an `answer` field, then falls back to
the last number in the text; `first_number` then normalises it ($ and commas stripped)
as ZeroEval's GSM8K scorer does, so replayed accuracies equal the recorded labels.
"""

from __future__ import annotations

import json
import re

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ANSWER_FIELD = re.compile(r'"answer"\s*:\s*"?([^"\n}]*)"?', re.I)


def answer_field(text: str) -> str | None:
    """The `answer` field of a JSON object in the text, if any."""
    for candidate in re.findall(r"\{.*\}", text, re.S)[-1:]:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and "answer" in data:
            return str(data["answer"])
    m = _ANSWER_FIELD.search(text)
    return m.group(1).strip() if m else None


def first_number(text: str | None) -> float | None:
    if text is None:
        return None
    m = _NUMBER.search(text.replace(",", "").replace("$", ""))
    return float(m.group()) if m else None


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text.replace(",", "").replace("$", ""))
    return float(found[-1]) if found else None


def extract_answer(text: str, mode: str = "number") -> str:
    """A comparable answer: for `number`, the answer field's first number or else the reply's last one;
    for `text`, the answer field or the stripped reply, lower-cased."""
    field = answer_field(text)
    if mode == "number":
        value = first_number(field) if field is not None else last_number(text)
        if value is None:
            return ""
        return str(int(value)) if value.is_integer() else repr(value)  # not :g, which rounds 1234567 to 1.23457e+06
    return (field if field is not None else text).strip().lower()


_EDGES = re.compile(r"""^[\s("'\[]+|[\s)"'\].]+$""")


def answer_key(answer: str | None) -> str:
    """What two recorded answers are compared by: a number's value (`18`, `18.0` and `$18` are one answer), else the
    text without case, surrounding brackets, quotes or a final full stop (`(B)`, `b.` and `B` are one answer: a
    multiple-choice letter). Empty for no answer."""
    if answer is None:
        return ""
    number = first_number(answer)
    if number is not None:
        return str(int(number)) if number.is_integer() else repr(number)
    return _EDGES.sub("", answer).lower()


def answers_equal(a: str | None, b: str | None) -> bool:
    key = answer_key(a)
    return key != "" and key == answer_key(b)


def numbers_equal(a: str | None, b: str | None) -> bool:
    x, y = first_number(a), first_number(b)
    return x is not None and y is not None and abs(x - y) < 1e-6
