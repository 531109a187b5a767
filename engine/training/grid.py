"""Recorded per-question outcomes in the ZeroEval layout, as training and test examples for a router.

A grid folder holds `items.jsonl` (`id`, `question`, `gold`, `prompt_tokens_o200k`),
`correct.csv` (1 right, 0 wrong, empty no record; one column per model id),
`answers.csv` (each model's extracted answer) and `output_tokens_o200k.csv` (reply
lengths). The replay provider reads the same folders (docs/eval.md), so a user's own
recorded outputs work for both. Aliases are bound to model ids by the pool (an alias's
`id`); items any chosen model has no record for are left out, and the split into train and
test is by a seeded hash of the item id, so it is the same on every machine.

MMLU-Pro's layout is read too: `question_id` for `id`, `answer` (a letter) for `gold`,
`options` appended to the question as `A. ...` lines (the text a model is shown),
`preds.csv` for `answers.csv`, and items marked `version_conflict` (a run saw another
version of the question) left out. It records no prompt sizes, so a prompt's tokens are
estimated as a quarter of its characters (o200k averages about four characters a token on
English text).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.pool import Pool
from engine.router.model import Example, RouterError


@dataclass(frozen=True)
class GridItem:
    id: str
    example: Example
    gold: str
    answers: dict[str, str]


_ID_COLUMNS = ("id", "question_id")


def _csv(path: Path) -> dict[str, dict[str, str]]:
    if path.name == "answers.csv" and not path.exists() and (path.parent / "preds.csv").exists():
        path = path.parent / "preds.csv"  # MMLU-Pro's name for the extracted answers
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return {next(row[c] for c in _ID_COLUMNS if c in row): {k: v for k, v in row.items() if k not in _ID_COLUMNS}
                    for row in csv.DictReader(fh)}
    except FileNotFoundError:
        raise RouterError(f"{path} is missing: a grid folder holds items.jsonl, correct.csv, answers.csv, output_tokens_o200k.csv") from None


def grid_models(pool: Pool, folder: str | Path, aliases: list[str] | None = None) -> dict[str, str]:
    """alias -> model id, for the pool's aliases whose id is a model of the grid (or exactly `aliases`)."""
    columns = set(next(iter(_csv(Path(folder) / "correct.csv").values()), {}))
    chosen = {a: spec.id for a, spec in pool.models.items() if spec.id in columns and (aliases is None or a in aliases)}
    missing = [a for a in aliases or [] if a not in chosen]
    if missing:
        raise RouterError(f"{', '.join(missing)}: not pool aliases bound to a model of {folder}")
    if not chosen:
        raise RouterError(f"no alias of the pool {pool.source} is bound to a model recorded in {folder}")
    return chosen


def load_grid(folder: str | Path, models: Mapping[str, str]) -> list[GridItem]:
    folder = Path(folder)
    correct, answers, out_tokens = _csv(folder / "correct.csv"), _csv(folder / "answers.csv"), _csv(folder / "output_tokens_o200k.csv")
    items = []
    with open(folder / "items.jsonl", encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            if raw.get("version_conflict"):
                continue
            item_id = str(raw["id"] if "id" in raw else raw["question_id"])
            row = correct.get(item_id, {})
            if any(row.get(mid, "") == "" for mid in models.values()):
                continue
            text = raw["question"] + "".join(f"\n{chr(65 + i)}. {option}" for i, option in enumerate(raw.get("options") or []))
            right = {a: int(float(row[mid])) for a, mid in models.items()}
            tokens = {a: int(float(out_tokens.get(item_id, {}).get(mid) or 0)) for a, mid in models.items()}
            prompt_tokens = int(raw["prompt_tokens_o200k"] or 0) if "prompt_tokens_o200k" in raw else len(text) // 4  # MMLU-Pro records none
            example = Example(text, right, prompt_tokens, tokens)
            items.append(GridItem(item_id, example, str(raw.get("gold", raw.get("answer", ""))),
                                  {a: answers.get(item_id, {}).get(mid, "") for a, mid in models.items()}))
    return items


def item_cost(item: GridItem, alias: str, pool: Pool) -> float:
    """What the item cost on `alias`: its recorded tokens at the pool's prices (or, from an evaluation, its recorded cost)."""
    if alias in item.example.cost:
        return item.example.cost[alias]
    spec = pool.models[alias]
    return (item.example.prompt_tokens * (spec.input_price or 0.0) + item.example.output_tokens.get(alias, 0) * (spec.output_price or 0.0)) / 1e6


def split_grid(items: list[GridItem], train_share: float = 0.7, seed: int = 0) -> tuple[list[GridItem], list[GridItem]]:
    """(train, test): an item is in train when the seeded hash of its id falls below `train_share`."""
    def u(item: GridItem) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}:{item.id}".encode()).digest()[:8], "big") / 2**64

    train = [i for i in items if u(i) < train_share]
    test = [i for i in items if u(i) >= train_share]
    return train, test
