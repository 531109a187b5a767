"""Pulling a flow out of a planner's reply: reasoning preambles, `<think>` blocks and code fences removed."""

from __future__ import annotations

import re

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```[ \t]*(?:flow|baton)?[ \t]*\n(.*?)```", re.S)
_LAST = re.compile(r"^[ \t]*(?:output|input|budget|version|flow)\b")
_START = re.compile(r"^[ \t]*(?:version|flow|input|budget|step|fuse|route|loop|models)\b", re.M)


def strip_thinking(text: str) -> str:
    text = _THINK.sub("", text)
    if re.search(r"</think>", text, re.I):  # an opening tag swallowed by the chat template: drop up to the close
        text = re.split(r"</think>", text, flags=re.I)[-1]
    return text


def extract_flow(reply: str) -> str:
    """The flow text in a reply: a fenced block if there is one, else from the first line that starts a flow."""
    text = strip_thinking(reply)
    fences = [m.group(1) for m in _FENCE.finditer(text) if _START.search(m.group(1))]
    if fences:
        return fences[-1].strip() + "\n"
    m = _START.search(text)
    if m is None:
        return text.strip() + "\n"
    lines = text[m.start():].split("```", 1)[0].splitlines()
    ends = [i for i, line in enumerate(lines) if line.rstrip().endswith("}") or _LAST.match(line)]
    if ends:
        lines = lines[: ends[-1] + 1]  # drop trailing prose ("Hope this helps.")
    return "\n".join(lines).strip() + "\n"
