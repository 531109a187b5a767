"""The planner's prompt: pool, language summary, examples, limits and the task.

The template lives in `prompt.txt` beside this module (override it with `--prompt FILE`);
it uses `$language`, `$pool`, `$limits`, `$examples` and `$task`. The language summary is
generated from the checker's own property schema, so it cannot drift from what
`baton validate` accepts.
"""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path

from engine.checks.properties import SCHEMAS, VALUE_KINDS, VALUE_WORDS
from engine.planner.limits import PlanLimits
from engine.pool import Pool

EXAMPLE_FLOWS = ("hello.flow", "tree.flow", "fuse_panel.flow")



def language_summary(allow: tuple[str, ...]) -> str:
    """A compact description of the constructs a plan may use, from the checker's schema."""
    lines = [
        "input question                 # the task, referenced as {question}",
        "step NAME { key: value ... }   # one model call",
    ]
    if "fuse" in allow:
        lines.append("fuse NAME { panel: a, b  judge: c  task: \"...\" }   # parallel panel, then a judge")
    if "route" in allow:
        lines.append('route NAME by STEP { "label" -> STEP  else -> STEP }   # run one branch, chosen by a step\'s reply')
    if "loop" in allow:
        lines.append("loop NAME max N { step ... verify NAME { ... accept: /ACCEPT/ } }   # worker/verifier rounds")
    lines.append("output NAME                    # which step's reply is the answer (default: the last)")
    lines.append("")
    for kind in ("step", *(k for k in ("fuse",) if k in allow)):
        keys = [k for k in SCHEMAS[kind] if k in ("model", "sees", "task", "max_tokens", "panel", "judge", "quorum", "expect")]
        lines.append(f"Properties of {kind}: " + "; ".join(f"{k}: {VALUE_WORDS.get(VALUE_KINDS[k].split(':')[0], VALUE_KINDS[k])}" for k in keys))
    lines.append("A step sees nothing but its own task unless `sees:` lists inputs or earlier steps; it receives their outputs.")
    return "\n".join(lines)


def pool_summary(pool: Pool, allowed: tuple[str, ...] = ()) -> str:
    rows = []
    for alias, spec in pool.models.items():
        if allowed and alias not in allowed:
            continue
        ctx = f", context {spec.context}" if spec.context else ""
        price = f"${spec.input_price:g}/${spec.output_price:g} per 1M tokens in/out" if (spec.input_price or spec.output_price) else "free"
        rows.append(f"- {alias}: {spec.description or spec.id}{ctx}; {price}")
    return "\n".join(rows)


def examples_text() -> str:
    out = []
    for name in EXAMPLE_FLOWS:
        try:
            text = (resources.files("engine") / "workflows" / name).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            text = (Path(__file__).resolve().parents[2] / "workflows" / name).read_text(encoding="utf-8")
        body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        out.append("```flow\n" + body.strip() + "\n```")
    return "\n\n".join(out)


def default_template() -> str:
    return (Path(__file__).parent / "prompt.txt").read_text(encoding="utf-8")


def build_prompt(task: str, pool: Pool, limits: PlanLimits, template: str | None = None) -> str:
    budget = f"; a budget of at most ${limits.budget_usd:g}" if limits.budget_usd is not None else ""
    lim = f"At most {limits.max_steps} steps; constructs allowed: {', '.join(limits.allow)}{budget}."
    return string.Template(template or default_template()).safe_substitute(
        language=language_summary(limits.allow), pool=pool_summary(pool, limits.models), limits=lim,
        examples=examples_text(), task=task,
    )
