"""Training examples from a recorded evaluation (`baton eval`): per item, which flow got it right, at what cost, and
what it answered (for an answer scorer).

An evaluation records results, not questions, so the dataset it ran on is given again. Each
flow stands for a pool alias: a flow label that is an alias, or `solo_<alias>`, or an explicit
`label=alias` mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from engine.eval.dataset import load_dataset
from engine.router.model import Example, RouterError
from engine.run.answers import extract_answer, first_number
from engine.run.home import RESULTS_JOURNAL, RunHome
from engine.run.journal import read_lines
from engine.training.grid import GridItem


def examples_from_eval(eval_ids: list[str], dataset: str | Path, aliases: set[str], home: str | Path | None = None,
                       mapping: Mapping[str, str] | None = None) -> tuple[list[Example], dict[str, str]]:
    """(examples, alias -> flow label) from one or more evaluations over the same dataset."""
    items, labels = items_from_eval(eval_ids, dataset, aliases, home, mapping)
    return [i.example for i in items], labels


def items_from_eval(eval_ids: list[str], dataset: str | Path, aliases: set[str], home: str | Path | None = None,
                    mapping: Mapping[str, str] | None = None) -> tuple[list[GridItem], dict[str, str]]:
    """(items as a grid holds them, alias -> flow label): per item, each alias's outcome, recorded cost, reply tokens
    and extracted answer (a number when the reference is one, else the answer field or the reply's text)."""
    rows = load_dataset(dataset)
    questions = {item.id: "\n\n".join(str(v) for k, v in item.fields.items() if k not in ("id", "gold", "answer"))
                 for item in rows}
    golds = {item.id: item.reference for item in rows}
    outcomes: dict[str, dict[str, tuple[int, float, int, str]]] = {}
    labels: dict[str, str] = {}
    for eval_id in eval_ids:
        folder = RunHome(home).evals / eval_id
        if not folder.is_dir():
            raise RouterError(f"no evaluation {eval_id} in {RunHome(home).evals}")
        for line in read_lines(folder / RESULTS_JOURNAL):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            alias = (mapping or {}).get(r["flow"]) or (r["flow"] if r["flow"] in aliases else r["flow"].removeprefix("solo_"))
            if alias not in aliases:
                continue
            labels[alias] = r["flow"]
            gold = golds.get(r["item"]) or ""
            answer = extract_answer(r.get("output") or "", "number" if first_number(gold) is not None else "text")
            outcomes.setdefault(r["item"], {})[alias] = (int(bool(r["correct"])), float(r.get("cost", 0.0)),
                                                          int(r.get("output_tokens", 0)), answer)
    chosen = sorted(labels)
    if not chosen:
        raise RouterError("no flow of those evaluations stands for a pool alias (name flows after aliases, or pass --as LABEL=ALIAS)")
    items = [GridItem(item, Example(questions[item], {a: got[a][0] for a in chosen}, cost={a: got[a][1] for a in chosen},
                                    output_tokens={a: got[a][2] for a in chosen}), golds.get(item) or "", {a: got[a][3] for a in chosen})
             for item, got in outcomes.items() if item in questions and all(a in got for a in chosen)]
    return items, labels
