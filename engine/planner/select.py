"""Planning by choosing (`baton plan --style select`): the planner picks a pattern of the library and its models;
Baton gives the pattern the task, writes the flow around that choice and checks it.

Small models write workflows badly from nothing (the embedded planner copied its prompt's examples into plans for
other tasks, "Solve with dynamic programming" for a haiku) but choose well enough from a fixed set, as TRINITY's small
selector does. So the planner's whole reply is one `use` of a library pattern, its roles bound to the pool's aliases:

    use "critique" as answer {
      writer: smol
      critic: local
    }

and Baton adds the pattern's input: the task's own text, so a plan is about its task by construction (a planner that
writes a `task:` line itself, unconstrained, keeps it). Where the planner's endpoint takes a grammar, the reply is held
to one generated from the library (each pattern's name, with exactly its roles, in order) and the pool's aliases.
Baton wraps the reply in a flow (a `flow` line and `output answer`) and checks it like any plan; a reply that does not
check is sent back with the diagnostics, as in the write style.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.checks.subflows import library_folder
from engine.errors import FlowError
from engine.planner.limits import PlanLimits
from engine.run.choices import gbnf_literal
from engine.syntax import ast
from engine.syntax.literals import encode_string
from engine.syntax.parser import parse

#: The node a select plan's answer comes from.
ANSWER = "answer"


@dataclass(frozen=True)
class Pattern:
    """A pattern of the library as the planner is shown it."""

    name: str
    description: str
    roles: tuple[str, ...]
    #: The constructs it is made of (step, fuse, route, loop) and how many model-calling nodes it has.
    constructs: tuple[str, ...]
    calls: int
    #: Tasks it fits (its file's `# example task:` lines): shown to the planner as worked choices.
    examples: tuple[str, ...] = ()


def catalogue(folder: Path | None = None) -> list[Pattern]:
    """The library's patterns, read from their files (name, description, roles, constructs), in name order."""
    out = []
    for path in sorted((folder or library_folder()).glob("*.flow")):
        try:
            doc = parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, FlowError):
            continue  # the library's own tests check every pattern; a broken one is not offered
        description = next((d.text.value for d in doc.items if isinstance(d, ast.Decl) and d.kind == "flow" and d.text), "")
        roles = tuple(m.name for item in doc.items if isinstance(item, ast.ModelsBlock) for m in item.models)
        constructs: list[str] = []
        calls = 0
        for item in doc.items:
            if isinstance(item, ast.Block):
                constructs.append(item.kind)
                calls += 1
            elif isinstance(item, ast.RouteNode):
                constructs.append("route")
            elif isinstance(item, ast.LoopNode):
                constructs.append("loop")
                calls += len(item.members)
        examples = tuple(c.text.split(":", 1)[1].strip() for c in doc.comments if c.text.startswith("# example task:"))
        out.append(Pattern(path.stem, description, roles, tuple(dict.fromkeys(constructs)), calls, examples))
    return out


def offered(patterns: list[Pattern], limits: PlanLimits) -> list[Pattern]:
    """The patterns a plan may use: made only of allowed constructs, within the step limit."""
    return [p for p in patterns if all(c in limits.allow for c in p.constructs) and p.calls <= limits.max_steps]


def select_gbnf(patterns: list[Pattern], aliases: list[str], allow_keep: bool = False) -> str:
    """A GBNF grammar whose sentences are exactly the `use` replies: a pattern, and an alias for each of its roles."""
    rules = [
        "root ::= " + ('"KEEP" | ' if allow_keep else "") + "plan",
        "plan ::= " + " | ".join(f"pattern-{i}" for i in range(len(patterns))),
        "alias ::= " + " | ".join(gbnf_literal(a) for a in aliases),
    ]
    for i, p in enumerate(patterns):
        head = gbnf_literal(f'use "{p.name}" as {ANSWER} {{')
        roles = "".join(f" {gbnf_literal(chr(10) + '  ' + role + ': ')} alias" for role in p.roles)
        rules.append(f"pattern-{i} ::= {head}{roles} {gbnf_literal(chr(10) + '}')}")
    return "\n".join(rules) + "\n"


#: Words too common to say what a task is about (for ordering the worked choices).
_STOP = frozenset(["a", "an", "the", "of", "to", "in", "for", "and", "or", "is", "are", "be", "what", "how", "that", "this", "my", "i", "me", "with", "on", "into", "it", "as", "at", "by", "from", "which", "who"])


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP}


def select_prompt(task: str, patterns: list[Pattern], pool_text: str, model: str) -> str:
    """What the planner is asked: the models, worked choices (every pattern's example tasks), then the task.

    The worked choices are ordered by how many words they share with the task, the closest last, right before the
    task: the embedded planner copies what it saw last, so the nearest example is the one it should weigh most (on the
    tuning tasks, 6 of 8 fitting choices against 5 of 8 in the library's order). The patterns' descriptions are left
    out: with them, it chose the panel for more tasks (bench/planner_select_bench.py, docs/planner.md).
    """
    wanted = _words(task)
    worked = sorted(((p, e) for p in patterns for e in p.examples),
                    key=lambda pe: len(_words(pe[1]) & wanted) / (len(_words(pe[1]) | wanted) or 1))
    return (f"Choose the pattern that fits each task, and a model for each of its roles.\n\nModels:\n{pool_text}\n\n"
            + "\n\n".join(f"Task: {e}\n{use_text(p, model)}" for p, e in worked) + f"\n\nTask: {task}\n")


def use_text(pattern: Pattern, model: str) -> str:
    """A `use` of `pattern` with every role bound to `model`: the reply's form."""
    return f'use "{pattern.name}" as {ANSWER} {{\n' + "".join(f"  {role}: {model}\n" for role in pattern.roles) + "}"


def instantiate(reply: str, task: str) -> str:
    """The flow a select reply stands for: its `use` given the task (unless it wrote a `task:` itself), with the flow's
    name and description and its output."""
    body = reply.strip()
    start = body.find("use ")
    body = body[start:] if start >= 0 else body
    end = body.rfind("}")
    body = body[: end + 1] if end >= 0 else body
    head, brace, rest = body.partition("{")
    if brace and not re.search(r"\btask\s*:", rest):
        body = f"{head}{{\n  task: {encode_string(task.strip())}\n  {rest.lstrip()}"
    summary = " ".join(task.split())
    summary = summary if len(summary) <= 120 else summary[:117] + "..."
    return f"version 1\nflow plan {encode_string(summary)}\n\n{body}\n\noutput {ANSWER}\n"
