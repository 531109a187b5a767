"""`baton router`'s work as functions over files: train, find held-out items, calibrate, draw the curve.

The command line parses arguments, calls these and prints; everything a script would need to
do the same (which items are held out, what the router file records about its training) is here.
Network code stays out: a router over embeddings is given its embedder by the caller.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.pool import Pool
from engine.router.model import Embedder, Example, Learner, Router, RouterError, data_hash, train_router
from engine.router.policy import calibrate_accuracy, calibrate_strong_share
from engine.training.from_eval import examples_from_eval
from engine.training.grid import GridItem, grid_models, load_grid, split_grid

LEARNERS: tuple[Learner, ...] = ("logistic", "knn")


def beside(path: str | Path, router_file: str | Path) -> str:
    """A path as a router file records it: relative to the file's folder, so a committed router works from any checkout."""
    return os.path.relpath(Path(path).resolve(), Path(router_file).resolve().parent)


def train_on_grid(pool: Pool, grid: str | Path, output: str | Path, *, aliases: list[str] | None = None, learner: Learner = "logistic",
                  train_share: float = 0.7, seed: int = 0, embeddings: tuple[str, Embedder] | None = None,
                  held_out: str | Path | None = None) -> tuple[Router, int]:
    """A router trained on the training part of a recorded grid and saved to `output`; (router, examples used).

    The file records the grid (relative to itself), the split and its seed, so `held_out_items` finds
    the same held-out items again; `held_out` also writes them out as JSONL (id, question, gold)."""
    if not 0 < train_share < 1:
        raise RouterError(f"the training share must be between 0 and 1, not {train_share:g}")
    models = grid_models(pool, grid, aliases)
    train, test = split_grid(load_grid(grid, models), train_share, seed)
    if held_out is not None:
        Path(held_out).write_text("".join(json.dumps({"id": i.id, "question": i.example.text, "gold": i.gold}) + "\n" for i in test),
                                  encoding="utf-8")
    source = {"grid": beside(grid, output), "n_train": len(train), "n_test": len(test), "train_share": train_share, "seed": seed}
    examples = [i.example for i in train]
    return _trained(pool, examples, models, source, output, learner, seed, embeddings), len(examples)


def train_on_evals(pool: Pool, eval_ids: list[str], dataset: str | Path, output: str | Path, *, aliases: list[str] | None = None,
                   mapping: dict[str, str] | None = None, home: str | Path | None = None, learner: Learner = "logistic", seed: int = 0,
                   embeddings: tuple[str, Embedder] | None = None) -> tuple[Router, int]:
    """A router trained on recorded `baton eval` runs over `dataset`, saved to `output`; (router, examples used)."""
    examples, labels = examples_from_eval(eval_ids, dataset, set(aliases or pool.models), home, mapping)
    models = {a: pool.models[a].id for a in labels}
    source = {"evals": eval_ids, "flows": labels, "dataset": beside(dataset, output), "n_train": len(examples)}
    return _trained(pool, examples, models, source, output, learner, seed, embeddings), len(examples)


def _trained(pool: Pool, examples: list[Example], models: dict[str, str], source: dict[str, Any], output: str | Path,
             learner: Learner, seed: int, embeddings: tuple[str, Embedder] | None) -> Router:
    prices = {a: [pool.models[a].input_price, pool.models[a].output_price] for a in models}
    router = train_router(examples, models, learner, seed=seed, embeddings=embeddings,
                          trained_on={**source, "data_hash": data_hash(examples), "models": models, "prices": prices,
                                      "learner": learner, "date": time.strftime("%Y-%m-%d", time.gmtime())})
    router.save(output)
    return router


def trained_grid(router: Router, router_file: str | Path) -> Path | None:
    """The grid a router was trained on, as its file records it (relative to the file), or None."""
    grid = router.trained_on.get("grid")
    return (Path(router_file).resolve().parent / grid).resolve() if grid else None


def held_out_items(router: Router, router_file: str | Path, grid: str | Path | None = None) -> list[GridItem]:
    """The items to score a router on: the held-out part of the grid it was trained on, or all of another grid."""
    trained = trained_grid(router, router_file)
    folder = Path(grid) if grid else trained
    if folder is None:
        raise RouterError("this router was not trained on a grid, and no grid was named to score it on")
    items = load_grid(folder, {a: s.model_id for a, s in router.models.items()})
    if trained is not None and folder.resolve() == trained:
        _train_part, items = split_grid(items, router.trained_on.get("train_share", 0.7), router.trained_on.get("seed", 0))
    return items


def calibrate(router: Router, router_file: str | Path, items: Sequence[GridItem], pool: Pool, *,
              strong_share: float | None = None, target_accuracy: float = 0.9) -> tuple[float, str]:
    """Set the router's threshold from reference items (a share sent to the strongest model, or a target accuracy),
    save it in the file, and return (threshold, how it was chosen)."""
    aliases = list(router.models)
    costs = router.arm_costs(aliases, pool)
    predictions = [router.predict(i.example.text) for i in items]
    strong = max(aliases, key=lambda a: (router.models[a].accuracy, a))
    if strong_share is not None:
        threshold = calibrate_strong_share(predictions, costs, aliases, strong, strong_share)
        how = f"{strong_share:.0%} of {len(items)} reference items to {strong}"
    else:
        threshold = calibrate_accuracy(predictions, costs, aliases, target_accuracy)
        how = f"predicted accuracy {target_accuracy:.1%} on {len(items)} reference items"
    router.calibration = {"threshold": threshold, "how": how, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    router.save(router_file)
    return threshold, how


CurvePoint = tuple[float, float, float, Mapping[str, float]]


def curve_svg(points: Sequence[CurvePoint]) -> str:
    """Accuracy against mean cost per item as the threshold moves, as a small SVG (every fourth threshold labelled)."""
    w, h, pad = 560, 360, 50
    costs = [c for _, _, c, _ in points]
    accs = [a for _, a, _, _ in points]
    c0, c1 = min(costs), max(costs) or 1.0
    a0, a1 = min(accs), max(accs)
    span_c, span_a = (c1 - c0) or 1.0, (a1 - a0) or 0.01

    def xy(c: float, a: float) -> str:
        return f"{pad + (c - c0) / span_c * (w - 2 * pad):.1f},{h - pad - (a - a0) / span_a * (h - 2 * pad):.1f}"

    line = " ".join(xy(c, a) for _, a, c, _ in points)
    labels = "".join(f'<text x="{xy(c, a).split(",")[0]}" y="{float(xy(c, a).split(",")[1]) - 6:.1f}" font-size="10">{t:.2f}</text>'
                     for t, a, c, _ in points[::4])
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"><rect width="{w}" height="{h}" fill="#fff"/>'
            f'<polyline points="{line}" fill="none" stroke="#36c" stroke-width="2"/>{labels}'
            f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle" font-size="12">mean cost per item: ${c0:.6f} to ${c1:.6f}</text>'
            f'<text x="14" y="{h / 2}" font-size="12" transform="rotate(-90 14 {h / 2})">accuracy {a0:.1%} to {a1:.1%}</text></svg>')
