"""The two embedded models on one fixed task set, to choose defaults by measurement (run by hand).

    python bench/local_models.py [--skip-planner]

Four parts, each model through the same flows (temperature 0, seed 0, no cache):

- factual: twelve short questions with known answers, through hello.flow's task, scored by
  keyword;
- label: nine questions to label code / math / other ("Reply with the label only"); how often
  the reply *is* a label, and how often the right one, free and with `choices:`;
- verdict: six question + answer pairs to judge ACCEPT / REVISE; the same two figures;
- planner: `baton plan` on ten tasks under the GBNF grammar with up to 3 repairs: valid plans,
  valid at the first attempt, dead steps (W401), and plans whose task text mentions the user's
  task (a step's task has `{question}` or one of the task's content words: three letters or
  more, not a stopword such as "explain" or "write").
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.planner_bench import TASKS  # noqa: E402
from engine.loading import check_source
from engine.planner.limits import PlanLimits  # noqa: E402
from engine.planner.plan import plan  # noqa: E402
from engine.pool import default_pool
from engine.run.choices import choice_of  # noqa: E402
from engine.session import Session

ALIASES = ("local", "smol")
FACTS = [
    ("What is the capital of France?", ["paris"]),
    ("What is 12 times 11?", ["132"]),
    ("What colour is the sky on a clear day?", ["blue"]),
    ("How many days are there in a week?", ["seven", "7"]),
    ("What is the largest planet in the solar system?", ["jupiter"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("What is the boiling point of water in degrees Celsius?", ["100"]),
    ("What gas do plants absorb from the air?", ["carbon dioxide", "co2"]),
    ("How many legs does a spider have?", ["eight", "8"]),
    ("What is the chemical symbol for gold?", ["au"]),
    ("Which ocean is the largest?", ["pacific"]),
    ("What is the square root of 81?", ["nine", "9"]),
]
LABELS = [
    ("Write a Python function that reverses a string.", "code"), ("Fix this SQL query: SELEC * FROM users", "code"),
    ("What does `git rebase` do?", "code"), ("What is 17 times 23?", "math"), ("Solve 2x + 3 = 11.", "math"),
    ("What is the derivative of x squared?", "math"), ("Who painted the Mona Lisa?", "other"),
    ("Suggest a name for a cat.", "other"), ("Why do leaves change colour in autumn?", "other"),
]
VERDICTS = [
    ("What is the capital of France?", "Paris.", "ACCEPT"), ("What is 2 + 2?", "4", "ACCEPT"),
    ("How many legs does a spider have?", "Eight.", "ACCEPT"), ("What is the capital of France?", "Berlin.", "REVISE"),
    ("What is 2 + 2?", "5", "REVISE"), ("How many legs does a spider have?", "Six.", "REVISE"),
]
LABEL_TASK = "Is this question about code, math or something else? Reply with the label only: code, math or other.\\n\\n{q}"
VERDICT_TASK = "Question: {q}\\nAnswer: {a}\\n\\nIs the answer correct? Reply ACCEPT or REVISE."


def one_step(alias: str, task: str, inputs: tuple[str, ...], extra: str = "") -> str:
    return "".join(f"input {n}\n" for n in inputs) + f'step s {{ model: {alias}  task: "{task}"  max_tokens: 64 {extra}}}\n'


async def ask(session: Session, source: str, inputs: dict[str, str]) -> tuple[str, float]:
    result = check_source(source, session.pool, "bench.flow")
    assert result.flow is not None, [d.message for d in result.diagnostics]
    t0 = time.perf_counter()
    try:
        summary = await session.run(result.flow, inputs, record=False, cache=False)
        return summary.output or "", time.perf_counter() - t0
    except Exception as err:  # a failed check under choices: counted as not compliant
        return f"<{type(err).__name__}>", time.perf_counter() - t0


STOPWORDS = {"the", "and", "for", "why", "what", "then", "into", "with", "from", "that", "this", "give", "write", "check",
             "explain", "find", "name", "draft", "plan", "three", "two", "day"}


def mentions(flow_text: str, task: str) -> bool:
    """A step's task names `{question}`, or a content word of the user's task (three letters or more, no stopword)."""
    tasks = " ".join(re.findall(r'task:\s*"((?:[^"\\]|\\.)*)"', flow_text)).lower()
    words = {w for w in re.findall(r"[a-z]{3,}", task.lower())} - STOPWORDS
    return "{question}" in tasks or any(re.search(rf"\b{w}", tasks) for w in words)


async def main(skip_planner: bool) -> None:
    pool = default_pool()
    rows: dict[str, dict[str, str]] = {a: {} for a in ALIASES}
    async with Session(pool, cache=False, durable=False) as session:
        for alias in ALIASES:
            hits, times = 0, []
            for question, keys in FACTS:
                text, took = await ask(session, one_step(alias, "Answer in one or two sentences: {q}", ("q",)), {"q": question})
                times.append(took)
                hits += any(k in text.lower() for k in keys)
                print(f"{alias} fact: {question} -> {text[:80]!r}", flush=True)
            rows[alias]["factual (of 12)"] = f"{hits}"
            rows[alias]["factual s/answer"] = f"{statistics.mean(times):.2f}"
            for label_kind, extra in (("free", ""), ("choices", 'choices: "code", "math", "other"')):
                ok = right = 0
                for question, want in LABELS:
                    text, _ = await ask(session, one_step(alias, LABEL_TASK, ("q",), extra), {"q": question})
                    got = choice_of(text, ["code", "math", "other"])
                    ok += got is not None
                    right += got == want
                rows[alias][f"label is a label, {label_kind} (of 9)"] = str(ok)
                rows[alias][f"label right, {label_kind} (of 9)"] = str(right)
            for verdict_kind, extra in (("free", ""), ("choices", 'choices: "ACCEPT", "REVISE"')):
                ok = right = 0
                for question, answer, want in VERDICTS:
                    text, _ = await ask(session, one_step(alias, VERDICT_TASK, ("q", "a"), extra), {"q": question, "a": answer})
                    got = choice_of(text, ["ACCEPT", "REVISE"])
                    ok += got is not None
                    right += got == want
                rows[alias][f"verdict is a verdict, {verdict_kind} (of 6)"] = str(ok)
                rows[alias][f"verdict right, {verdict_kind} (of 6)"] = str(right)
            if skip_planner:
                continue
            valid = first = dead = mention = 0
            times = []
            for task in TASKS:
                t0 = time.perf_counter()
                result = await plan(task, pool, alias, session, limits=PlanLimits(max_steps=3), constrain="gbnf", repairs=3,
                                    max_tokens=300)
                times.append(time.perf_counter() - t0)
                first += bool(result.attempts and result.attempts[0].valid)
                valid += result.ok
                if result.ok:
                    dead += sum(d.get("code") == "W401" for d in result.attempts[-1].diagnostics)
                    mention += mentions(result.text, task)
                print(f"{alias} plan: {task[:40]!r} ok={result.ok} {times[-1]:.1f}s", flush=True)
            rows[alias]["plans valid (of 10)"] = str(valid)
            rows[alias]["plans valid at once (of 10)"] = str(first)
            rows[alias]["dead steps in valid plans"] = str(dead)
            rows[alias]["valid plans that mention the task"] = str(mention)
            rows[alias]["planner s/plan"] = f"{statistics.mean(times):.1f}"
    keys = list(rows[ALIASES[0]])
    print(f"\n| measure | {' | '.join(f'`{a}`' for a in ALIASES)} |\n|---|{'---|' * len(ALIASES)}")
    for key in keys:
        print(f"| {key} | {' | '.join(rows[a].get(key, '') for a in ALIASES)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-planner", action="store_true")
    asyncio.run(main(parser.parse_args().skip_planner))
