"""Planning by choosing against planning by writing, with the embedded planner (run by hand; docs/planner.md).

    python bench/planner_select_bench.py [PLANNER ...]      # default: local (what `baton plan` uses with no pool)

Over 22 held-out everyday tasks (none of them in the repository's prompts, examples or patterns), for each style
(`--style select` and `--style write`, otherwise `baton plan`'s defaults: 5 steps, 3 repairs, the grammar) it counts:

- valid: a plan that passes every check within the repairs;
- about its task: the plan's task texts (every `task:` it writes, or its pattern's input) name the task's subject:
  at least one of the task's subject words below, case-blind;
- fits: the pattern it uses is one the task's kind fits (FITS). A written plan is read as a pattern by its shape:
  a fuse with a judge is `panel`, a vote `vote` (with `escalate`, `cascade`), a loop `verify_loop`, a route
  `route_by_label`, one step `solo`, and steps where a later one sees an earlier one (draft, then work on it)
  `critique`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.model import Flow, Fuse, Loop, Route, Step, Use  # noqa: E402
from engine.planner.limits import ALL_CONSTRUCTS, PlanLimits  # noqa: E402
from engine.planner.plan import PlanResult, plan  # noqa: E402
from engine.pool import default_pool  # noqa: E402
from engine.session import Session  # noqa: E402

#: The rule: which patterns fit each kind of task.
FITS = {
    "writing": {"critique", "panel"},          # a text to write well: drafted and revised, or several drafts judged
    "math": {"vote", "cascade"},               # one short answer: sampled and voted on, or checked by agreement
    "code": {"verify_loop", "critique"},       # something a checker can test, or a reviewer can fault
    "rules": {"verify_loop", "critique"},      # an answer with a checkable rule (a count, a format, a length)
    "advice": {"panel", "critique"},           # open questions: several views judged, or a draft criticised
    "fact": {"solo", "cascade"},               # a short fact: one call, or a cheap model confirmed by agreement
}

#: (task, kind, subject words)
TASKS: list[tuple[str, str, tuple[str, ...]]] = [
    ("Write a limerick about a dog who loves the rain", "writing", ("limerick", "dog", "rain")),
    ("Draft a polite email asking my manager for Friday off", "writing", ("email", "manager", "friday")),
    ("Write a two-sentence horror story set in a lighthouse", "writing", ("horror", "lighthouse")),
    ("Rewrite this sentence to sound more formal: gonna be late, sorry", "writing", ("formal", "late")),
    ("Write a product description for a bamboo toothbrush", "writing", ("toothbrush", "bamboo")),
    ("What is 348 divided by 12?", "math", ("348",)),
    ("A shirt costs $20 after a 20% discount. What was the original price?", "math", ("shirt", "discount")),
    ("Which is heavier: a kilogram of feathers or a kilogram of iron? A) feathers B) iron C) the same", "math",
     ("feathers", "iron", "kilogram")),
    ("How many minutes are there in a week?", "math", ("minutes", "week")),
    ("Write a SQL query that finds the ten most recent orders", "code", ("sql", "orders")),
    ("Write a bash one-liner that counts the lines in all .txt files", "code", ("bash", "lines")),
    ("Write a JavaScript function that debounces another function", "code", ("javascript", "debounce")),
    ("Give exactly three tips for sleeping better, as a numbered list", "rules", ("sleep",)),
    ("Summarise the plot of Romeo and Juliet in three sentences", "rules", ("romeo", "juliet")),
    ("Should a small bakery spend its budget on Instagram ads or a new oven?", "advice", ("bakery", "instagram", "oven")),
    ("Compare renting and buying a home for a young couple", "advice", ("renting", "buying", "home")),
    ("Plan a weekly study schedule for learning Spanish", "advice", ("spanish", "study")),
    ("What are the pros and cons of remote work for a startup?", "advice", ("remote", "startup")),
    ("What is the boiling point of water at sea level in Fahrenheit?", "fact", ("boiling", "fahrenheit", "water")),
    ("Translate 'where is the train station' into German", "fact", ("german", "train", "station")),
    ("Who painted the Mona Lisa?", "fact", ("mona", "lisa")),
    ("Define photosynthesis in one sentence", "fact", ("photosynthesis",)),
]


def shape(flow: Flow) -> str:
    """The pattern a flow is, read off its shape (the rule in the module's docstring)."""
    nodes = list(flow.nodes.values())
    uses = [n for n in nodes if isinstance(n, Use)]
    if uses:
        return uses[0].source
    if any(isinstance(n, Loop) for n in nodes):
        return "verify_loop"
    if any(isinstance(n, Route) for n in nodes):
        return "route_by_label"
    fuses = [n for n in nodes if isinstance(n, Fuse)]
    if any(f.judge for f in fuses):
        return "panel"
    if fuses:
        return "cascade" if any(f.escalate for f in fuses) else "vote"
    steps = [n for n in nodes if isinstance(n, Step)]
    if len(steps) == 1:
        return "solo"
    return "critique" if any(s for s in steps if any(seen in flow.nodes for seen in s.sees)) else "solo"


def task_texts(flow: Flow) -> str:
    """Every task text the plan gives its models (a pattern's input included)."""
    out: list[str] = []
    for node in flow.nodes.values():
        if isinstance(node, Use):
            out += list(node.texts.values())
        else:
            out.append(str(getattr(node, "task", "") or ""))
    return "\n".join(out)


async def one_style(planner: str, style: str) -> list[dict[str, object]]:
    pool = default_pool()
    rows = []
    async with Session(pool, cache=False) as session:
        for task, kind, subject in TASKS:
            allow = ALL_CONSTRUCTS if style == "select" else ("step", "fuse")
            t0 = time.perf_counter()
            result: PlanResult = await plan(task, pool, planner, session, limits=PlanLimits(allow=allow), style=style)  # type: ignore[arg-type]
            seconds = time.perf_counter() - t0
            flow = result.flow
            pattern = shape(flow) if flow is not None else None
            about = flow is not None and any(w in task_texts(flow).lower() for w in subject)
            rows.append({"task": task, "kind": kind, "valid": flow is not None, "attempts": len(result.attempts), "pattern": pattern,
                         "about": about, "fits": pattern in FITS[kind], "seconds": round(seconds, 1),
                         "texts": task_texts(flow)[:200] if flow is not None else None})
            print(f"{planner} {style:6} {'valid' if flow else 'INVALID':7} {str(pattern):15} about={about!s:5} "
                  f"fits={pattern in FITS[kind]!s:5} {seconds:5.1f}s  {task}", flush=True)
    return rows


async def main(planners: list[str]) -> None:
    report = {}
    for planner in planners:
        for style in ("select", "write"):
            rows = await one_style(planner, style)
            n = len(rows)
            summary = {k: sum(1 for r in rows if r[k]) for k in ("valid", "about", "fits")}
            chosen: dict[str, int] = {}
            for r in rows:
                chosen[str(r["pattern"])] = chosen.get(str(r["pattern"]), 0) + 1
            mean_s = sum(float(r["seconds"]) for r in rows) / n  # type: ignore[arg-type]
            print(f"== {planner} {style}: valid {summary['valid']}/{n}, about its task {summary['about']}/{n}, "
                  f"fits {summary['fits']}/{n}, mean {mean_s:.1f} s a plan; patterns {chosen}", flush=True)
            report[f"{planner}-{style}"] = {"summary": summary, "n": n, "mean_seconds": round(mean_s, 1), "patterns": chosen, "rows": rows}
    out = Path(__file__).parent / "results" / f"planner-select-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["local"]))
