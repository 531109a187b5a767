"""Recorded per-question outcomes in the ZeroEval layout, as training and test examples for a router.

A grid folder holds `items.jsonl` (`id`, `question`, `gold`, `prompt_tokens_o200k`),
`correct.csv` (1 right, 0 wrong, empty no record; one column per model id),
`answers.csv` (each model's extracted answer) and `output_tokens_o200k.csv` (reply
lengths). The replay provider reads the same folders (docs/eval.md), so a user's own
recorded outputs work for both. Aliases are bound to model ids by the pool (an alias's
`id`); items any chosen model has no record for are left out, and the split into train and
test is by a seeded hash of the item id, so it is the same on every machine.
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


def _csv(path: Path) -> dict[str, dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return {row["id"]: {k: v for k, v in row.items() if k != "id"} for row in csv.DictReader(fh)}
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
            row = correct.get(raw["id"], {})
            if any(row.get(mid, "") == "" for mid in models.values()):
                continue
            right = {a: int(float(row[mid])) for a, mid in models.items()}
            tokens = {a: int(float(out_tokens.get(raw["id"], {}).get(mid) or 0)) for a, mid in models.items()}
            example = Example(raw["question"], right, int(raw.get("prompt_tokens_o200k") or 0), tokens)
            items.append(GridItem(raw["id"], example, str(raw.get("gold", "")),
                                  {a: answers.get(raw["id"], {}).get(mid, "") for a, mid in models.items()}))
    return items


def split_grid(items: list[GridItem], train_share: float = 0.7, seed: int = 0) -> tuple[list[GridItem], list[GridItem]]:
    """(train, test): an item is in train when the seeded hash of its id falls below `train_share`."""
    def u(item: GridItem) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}:{item.id}".encode()).digest()[:8], "big") / 2**64

    train = [i for i in items if u(i) < train_share]
    test = [i for i in items if u(i) >= train_share]
    return train, test
