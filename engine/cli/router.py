"""`baton router train | train-scorer | calibrate | curve | report`: routers and answer scorers learned from recorded outcomes
(docs/economics.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import fail
from engine.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine.pool import Pool, discover_pool
from engine.providers.embeddings import pool_embedder
from engine.router.files import load_router
from engine.router.model import Router, RouterError, train_router
from engine.training.grid import GridItem, grid_models, item_cost, load_grid, split_grid
from engine.training.report import (
    KSplitReport,
    build_router_report,
    curve_thresholds,
    render_k_split_report,
    render_router_report,
    router_curve,
)
from engine.training.scoring import Target, play, train_scorer_on_evals, train_scorer_on_grid
from engine.training.service import LEARNERS, calibrate, curve_svg, held_out_items, train_on_evals, train_on_grid, trained_grid


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
    scorer = sub.add_parser("train-scorer", help="learn an answer scorer for a fuse's learned vote or cascade",
                            description="learn an answer scorer from a recorded grid (docs/language.md, learned votes and cascades)")
    scorer_source = scorer.add_mutually_exclusive_group(required=True)
    scorer_source.add_argument("--grid", metavar="DIR", help="recorded outcomes in the ZeroEval layout (docs/eval.md)")
    scorer_source.add_argument("--from", dest="from_eval", metavar="EVAL_ID", action="append",
                               help="a `baton eval` run of one flow per member (repeatable)")
    scorer.add_argument("--dataset", metavar="FILE", help="with --from: the dataset the evaluation ran on")
    scorer.add_argument("--as", dest="mapping", metavar="LABEL=ALIAS,...", help="with --from: which flow stands for which alias")
    scorer.add_argument("--panel", metavar="A,B,...", required=True, help="the fuse's panel: the aliases that answer first")
    scorer.add_argument("--escalate", metavar="ALIAS", help="the model asked when the best answer is rated below the threshold")
    goal = scorer.add_mutually_exclusive_group()
    goal.add_argument("--target-accuracy", type=float, metavar="A", help="the threshold escalating least that reaches this accuracy")
    goal.add_argument("--escalate-share", type=float, metavar="S", help="escalate at most this share of the items")
    goal.add_argument("--match-escalate", action="store_true", help="escalate least while reaching the escalate model's own accuracy")
    scorer.add_argument("--train-share", type=float, default=0.7, help="share of items to train on; the rest is held out (default 0.7)")
    scorer.add_argument("--seed", type=int, default=0)
    scorer.add_argument("-o", "--output", metavar="FILE.scorer", required=True)
    _common(scorer)
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
    report.add_argument("--seed", type=int, default=0, help="the first split's seed (the others follow it)")
    report.add_argument("--splits", type=int, default=5, metavar="K",
                        help="seeded train/test splits to average over (default 5; 1 prints that split's full table)")
    report.add_argument("--thresholds", metavar="T,T,...",
                        help="route over every model at these thresholds (default: those sending 25/50/75%% to the strongest)")
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
        return {"train": _train, "train-scorer": _train_scorer, "calibrate": _calibrate, "curve": _curve, "report": _report}[args.action](args)
    except BrokenPipeError:
        raise
    except OSError as err:
        return fail(f"{err.filename or ''}: {err.strerror or err}", EXIT_FAILED)


def _pool(args: argparse.Namespace, grid: str | Path | None) -> Pool:
    return discover_pool(Path(grid) / ".." / "x.flow" if grid else None, args.pool)


def _train(args: argparse.Namespace) -> int:
    if not 0 < args.train_share < 1:
        return fail("--train-share is a share between 0 and 1", EXIT_USAGE)
    pool = _pool(args, args.grid)
    embeddings = (args.embeddings, pool_embedder(pool, args.embeddings)) if args.embeddings else None
    if args.grid:
        router, n = train_on_grid(pool, args.grid, args.output, aliases=_names(args.models), learner=args.learner,
                                  train_share=args.train_share, seed=args.seed, embeddings=embeddings, held_out=args.held_out)
    else:
        if not args.dataset:
            return fail("--from needs --dataset FILE (an evaluation records results, not questions)", EXIT_USAGE)
        mapping = dict(pair.split("=", 1) for pair in _names(args.mapping) or [])
        router, n = train_on_evals(pool, args.from_eval, args.dataset, args.output, aliases=_names(args.models), mapping=mapping,
                                   home=args.home, learner=args.learner, seed=args.seed, embeddings=embeddings)
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output} ({size // 1024} KB): {args.learner} over {', '.join(router.models)}, {n} items")
    return EXIT_OK


def _train_scorer(args: argparse.Namespace) -> int:
    if not 0 < args.train_share < 1:
        return fail("--train-share is a share between 0 and 1", EXIT_USAGE)
    for name, value in (("--target-accuracy", args.target_accuracy), ("--escalate-share", args.escalate_share)):
        if value is not None and not 0 <= value <= 1:
            return fail(f"{name} is a share between 0 and 1", EXIT_USAGE)
    panel = _names(args.panel) or []
    pool = _pool(args, args.grid)
    target = Target(accuracy=args.target_accuracy, escalate_share=args.escalate_share, match_escalate=args.match_escalate)
    if args.grid:
        scorer, train, test = train_scorer_on_grid(pool, args.grid, args.output, panel, args.escalate, target=target,
                                                   train_share=args.train_share, seed=args.seed)
    else:
        if not args.dataset:
            return fail("--from needs --dataset FILE (an evaluation records results, not questions)", EXIT_USAGE)
        mapping = dict(pair.split("=", 1) for pair in _names(args.mapping) or [])
        scorer, train, test = train_scorer_on_evals(pool, args.from_eval, args.dataset, args.output, panel, args.escalate,
                                                    mapping=mapping, home=args.home, target=target, train_share=args.train_share,
                                                    seed=args.seed)
    print(f"wrote {args.output}: an answer scorer for the panel {', '.join(panel)}, trained on {len(train)} items")
    if scorer.escalate is not None:
        c = scorer.calibration
        print(f"threshold {scorer.threshold:.3f} ({c['rule']}): on the training items, out of fold, {c['accuracy']:.1%} "
              f"with {c['escalated']:.0%} escalated to {scorer.escalate}")
    if test:
        played = play(scorer, test, pool)
        line = f"on the {len(test)} held-out items: {sum(played.right) / len(test):.1%} at ${played.cost:.6f} per item"
        if scorer.escalate is not None:
            alone = sum(i.example.right[scorer.escalate] for i in test) / len(test)
            alone_cost = sum(item_cost(i, scorer.escalate, pool) for i in test) / len(test)
            line += f" ({played.escalated:.0%} escalated); {scorer.escalate} alone: {alone:.1%} at ${alone_cost:.6f}"
        print(line)
    return EXIT_OK


def _router_and_items(args: argparse.Namespace) -> tuple[Router, Pool, list[GridItem]]:
    """The router file named, its pool, and the items to work on (its held-out items by default)."""
    router = load_router(args.router)
    if not args.grid and trained_grid(router, args.router) is None:
        raise RouterError(f"{args.router} was not trained on a grid: name one with --grid")
    pool = _pool(args, args.grid or trained_grid(router, args.router))
    return router, pool, held_out_items(router, args.router, args.grid)


def _calibrate(args: argparse.Namespace) -> int:
    router, pool, items = _router_and_items(args)
    threshold, how = calibrate(router, args.router, items, pool, strong_share=args.strong_share, target_accuracy=args.target_accuracy)
    print(f"{args.router}: threshold {threshold:.3f} ({how}); routes that name no threshold use it")
    return EXIT_OK


def _curve(args: argparse.Namespace) -> int:
    router, pool, items = _router_and_items(args)
    aliases = list(router.models)
    points = router_curve(router, items, pool, aliases, curve_thresholds(router, items, pool, aliases))
    print(f"{len(items)} items | threshold | accuracy | mean cost | share per model ({', '.join(aliases)})")
    for t, acc, cost, shares in points:
        print(f"  {t:.3f}  {acc:.1%}  ${cost:.6f}  " + " ".join(f"{shares[a]:.0%}" for a in aliases))
    if args.svg:
        Path(args.svg).write_text(curve_svg(points), encoding="utf-8")
        print(f"wrote {args.svg}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    pool = _pool(args, args.grid)
    models = grid_models(pool, args.grid, _names(args.models))
    grid = load_grid(args.grid, models)
    thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else None
    cascade = _names(args.cascade)
    if cascade is not None and len(cascade) != 3:
        return fail("--cascade takes three aliases: A,B,STRONG", EXIT_USAGE)
    if args.splits < 1:
        return fail("--splits takes a whole number from 1", EXIT_USAGE)
    seeds = list(range(args.seed, args.seed + args.splits))
    for learner in args.learner or list(LEARNERS):
        reports = []
        for seed in seeds:
            train, test = split_grid(grid, args.train_share, seed)
            router = train_router([i.example for i in train], models, learner, seed=seed)
            reports.append(build_router_report(router, train, test, pool, thresholds=thresholds, vote=_names(args.vote) or (),
                                               cascade=(cascade[0], cascade[1], cascade[2]) if cascade else None))
        if len(seeds) == 1:
            print(render_router_report(reports[0], f"{Path(args.grid).name}, router: {learner} (seed {args.seed})"))
        else:
            print(render_k_split_report(KSplitReport(reports, seeds), f"{Path(args.grid).name}, router: {learner}"))
        print()
    return EXIT_OK
