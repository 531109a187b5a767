"""`baton router train | calibrate | curve | report`: routers learned from recorded outcomes (docs/economics.md)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from engine.cli.common import fail
from engine.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine.pool import discover_pool
from engine.providers.embeddings import pool_embedder
from engine.router.files import load_router
from engine.router.model import RouterError, data_hash, train_router
from engine.router.policy import calibrate_accuracy, calibrate_strong_share
from engine.training.from_eval import examples_from_eval
from engine.training.grid import grid_models, load_grid, split_grid
from engine.training.report import build_router_report, render_router_report, router_curve

LEARNERS = ("logistic", "knn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="learn a router from a recorded grid or evaluations", description="learn a router")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--grid", metavar="DIR", help="recorded outcomes in the ZeroEval layout (docs/eval.md)")
    source.add_argument("--from", dest="from_eval", metavar="EVAL_ID", action="append", help="a `baton eval` run (repeatable)")
    train.add_argument("--dataset", metavar="FILE", help="with --from: the dataset the evaluation ran on")
    train.add_argument("--as", dest="mapping", metavar="LABEL=ALIAS,...", help="with --from: which flow stands for which alias")
    train.add_argument("--models", metavar="A,B,...", help="the aliases to route between (default: every alias the data has)")
    train.add_argument("--learner", choices=LEARNERS, default="logistic")
    train.add_argument("--embeddings", metavar="ALIAS", help="embed questions with this pool alias's /embeddings endpoint (its provider's "
                                                             "URL and key, its model id) instead of hashed n-grams; runs will call it too")
    train.add_argument("--train-share", type=float, default=0.7, help="share of items to train on; the rest is held out (default 0.7)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("-o", "--output", metavar="FILE.router", required=True)
    train.add_argument("--held-out", metavar="FILE.jsonl", help="with --grid: write the held-out items as a dataset, to evaluate flows on")
    _common(train)
    calibrate = sub.add_parser("calibrate", help="set a router's default threshold", description="set a router's default threshold")
    calibrate.add_argument("router", metavar="FILE.router")
    target = calibrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--strong-share", type=float, metavar="S", help="send this share of the held-out items to the strongest model")
    target.add_argument("--target-accuracy", type=float, metavar="A", help="the lowest threshold predicted to reach this accuracy")
    calibrate.add_argument("--grid", metavar="DIR", help="the reference set (default: the grid it was trained on)")
    _common(calibrate)
    curve = sub.add_parser("curve", help="quality and cost as the threshold moves", description="quality and cost as the threshold moves")
    curve.add_argument("router", metavar="FILE.router")
    curve.add_argument("--grid", metavar="DIR", help="recorded outcomes to score on (default: the grid it was trained on)")
    curve.add_argument("--svg", metavar="FILE.svg", help="also plot the curve")
    _common(curve)
    report = sub.add_parser("report", help="every strategy on held-out items: solo, random, router, vote, cascade, oracle",
                            description="the honest comparison (docs/economics.md)")
    report.add_argument("--grid", metavar="DIR", required=True)
    report.add_argument("--models", metavar="A,B,...")
    report.add_argument("--learner", choices=LEARNERS, action="append", help="repeatable (default: both)")
    report.add_argument("--train-share", type=float, default=0.7)
    report.add_argument("--seed", type=int, default=0)
    report.add_argument("--thresholds", default="0.9,0.95,0.97", metavar="T,T,...")
    report.add_argument("--vote", metavar="A,B,C", help="a majority-vote row over these aliases")
    report.add_argument("--cascade", metavar="A,B,STRONG", help="a cascade row: A and B, STRONG when they disagree")
    _common(report)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", metavar="FILE", help="the pool that binds aliases to recorded models (default: models.toml beside the grid)")
    p.add_argument("--home", metavar="DIR")


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    try:
        return {"train": _train, "calibrate": _calibrate, "curve": _curve, "report": _report}[args.action](args)
    except BrokenPipeError:
        raise
    except OSError as err:
        return fail(f"{err.filename or ''}: {err.strerror or err}", EXIT_FAILED)


def _pool(args: argparse.Namespace, grid: str | Path | None):  # type: ignore[no-untyped-def]
    return discover_pool(Path(grid) / ".." / "x.flow" if grid else None, args.pool)


def _train(args: argparse.Namespace) -> int:
    if not 0 < args.train_share < 1:
        return fail("--train-share is a share between 0 and 1", EXIT_USAGE)
    pool = _pool(args, args.grid)
    if args.grid:
        models = grid_models(pool, args.grid, _names(args.models))
        train, test = split_grid(load_grid(args.grid, models), args.train_share, args.seed)
        examples = [i.example for i in train]
        source = {"grid": _beside(args.grid, args.output), "n_train": len(train), "n_test": len(test),
                  "train_share": args.train_share, "seed": args.seed}
        if args.held_out:
            Path(args.held_out).write_text("".join(json.dumps({"id": i.id, "question": i.example.text, "gold": i.gold}) + "\n"
                                                   for i in test), encoding="utf-8")
    else:
        if not args.dataset:
            return fail("--from needs --dataset FILE (an evaluation records results, not questions)", EXIT_USAGE)
        mapping = dict(pair.split("=", 1) for pair in _names(args.mapping) or [])
        examples, labels = examples_from_eval(args.from_eval, args.dataset, set(_names(args.models) or pool.models), args.home, mapping)
        models = {a: pool.models[a].id for a in labels}
        source = {"evals": args.from_eval, "flows": labels, "dataset": _beside(args.dataset, args.output), "n_train": len(examples)}
    prices = {a: [pool.models[a].input_price, pool.models[a].output_price] for a in models}
    embeddings = (args.embeddings, pool_embedder(pool, args.embeddings)) if args.embeddings else None
    router = train_router(examples, models, args.learner, seed=args.seed, embeddings=embeddings,
                          trained_on={**source, "data_hash": data_hash(examples), "models": models, "prices": prices,
                                      "learner": args.learner, "date": time.strftime("%Y-%m-%d", time.gmtime())})
    router.save(args.output)
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output} ({size // 1024} KB): {args.learner} over {', '.join(models)}, {len(examples)} items")
    return EXIT_OK


def _beside(path: str, router_file: str) -> str:
    """A path as the router file records it: relative to the file's folder, so a committed router works from any checkout."""
    return os.path.relpath(Path(path).resolve(), Path(router_file).resolve().parent)


def _trained_grid(router, router_file: str) -> Path | None:  # type: ignore[no-untyped-def]
    grid = router.trained_on.get("grid")
    return (Path(router_file).resolve().parent / grid).resolve() if grid else None


def _held_out(router, args: argparse.Namespace, pool):  # type: ignore[no-untyped-def]
    """The items to score on: the held-out part of the grid the router was trained on, or all of another grid."""
    trained = _trained_grid(router, args.router)
    grid = Path(args.grid) if args.grid else trained
    if grid is None:
        raise RouterError("this router was not trained on a grid: name one with --grid")
    models = {a: s.model_id for a, s in router.models.items()}
    items = load_grid(grid, models)
    if trained is not None and grid.resolve() == trained:
        _train_part, items = split_grid(items, router.trained_on.get("train_share", 0.7), router.trained_on.get("seed", 0))
    return items


def _router_and_items(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The router file named, its pool, and the items to work on (its held-out items by default)."""
    router = load_router(args.router)
    pool = _pool(args, args.grid or _trained_grid(router, args.router))
    return router, pool, _held_out(router, args, pool)


def _calibrate(args: argparse.Namespace) -> int:
    router, pool, items = _router_and_items(args)
    aliases = list(router.models)
    costs = router.arm_costs(aliases, pool)
    predictions = [router.predict(i.example.text) for i in items]
    strong = max(aliases, key=lambda a: (router.models[a].accuracy, a))
    if args.strong_share is not None:
        threshold = calibrate_strong_share(predictions, costs, aliases, strong, args.strong_share)
        how = f"{args.strong_share:.0%} of {len(items)} reference items to {strong}"
    else:
        threshold = calibrate_accuracy(predictions, costs, aliases, args.target_accuracy)
        how = f"predicted accuracy {args.target_accuracy:.1%} on {len(items)} reference items"
    router.calibration = {"threshold": threshold, "how": how, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    router.save(args.router)
    print(f"{args.router}: threshold {threshold:.3f} ({how}); routes that name no threshold use it")
    return EXIT_OK


def _curve(args: argparse.Namespace) -> int:
    router, pool, items = _router_and_items(args)
    aliases = list(router.models)
    points = router_curve(router, items, pool, aliases, [t / 100 for t in range(80, 101)])
    print(f"{len(items)} items | threshold | accuracy | mean cost | share per model ({', '.join(aliases)})")
    for t, acc, cost, shares in points:
        print(f"  {t:.2f}  {acc:.1%}  ${cost:.6f}  " + " ".join(f"{shares[a]:.0%}" for a in aliases))
    if args.svg:
        Path(args.svg).write_text(_svg(points), encoding="utf-8")
        print(f"wrote {args.svg}")
    return EXIT_OK


def _svg(points: list) -> str:  # type: ignore[type-arg]
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


def _report(args: argparse.Namespace) -> int:
    pool = _pool(args, args.grid)
    models = grid_models(pool, args.grid, _names(args.models))
    train, test = split_grid(load_grid(args.grid, models), args.train_share, args.seed)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    cascade = _names(args.cascade)
    if cascade is not None and len(cascade) != 3:
        return fail("--cascade takes three aliases: A,B,STRONG", EXIT_USAGE)
    for learner in args.learner or list(LEARNERS):
        router = train_router([i.example for i in train], models, learner, seed=args.seed)
        report = build_router_report(router, train, test, pool, thresholds=thresholds, vote=_names(args.vote) or (),
                                     cascade=(cascade[0], cascade[1], cascade[2]) if cascade else None)
        print(render_router_report(report, f"{Path(args.grid).name}, router: {learner} (seed {args.seed})"))
        print()
    return EXIT_OK
