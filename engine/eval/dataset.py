"""Datasets: JSONL or CSV, one item per line with the flow's inputs and a reference answer."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError

REFERENCE_FIELDS = ("reference", "answer", "gold", "expected")


@dataclass(frozen=True)
class Item:
    id: str
    fields: dict[str, str]
    reference: str


def load_dataset(path: str | Path, limit: int | None = None) -> list[Item]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{p}: cannot read dataset: {err.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: dataset is not UTF-8 text") from None
    rows: list[dict[str, object]] = []
    if p.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise InputError(f"{p}:{n}: not a JSON object: {err}") from None
            if not isinstance(row, dict):
                raise InputError(f"{p}:{n}: each line must be a JSON object")
            rows.append(row)
    items = []
    for n, row in enumerate(rows, 1):
        ref_key = next((k for k in REFERENCE_FIELDS if k in row), None)
        if ref_key is None:
            raise InputError(f"{p}: item {n} has no reference answer (one of: {', '.join(REFERENCE_FIELDS)})")
        fields = {str(k): str(v) for k, v in row.items() if k not in ("id", ref_key)}
        items.append(Item(str(row.get("id", n)), fields, str(row[ref_key])))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise InputError(f"{p}: the dataset is empty")
    return items
