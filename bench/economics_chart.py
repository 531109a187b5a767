"""Draw docs/img/economics-grids.svg: every strategy of `baton router report` on each recorded grid, k-split means.

Run by hand from the repository root (the MATH and MMLU-Pro grids live in ../shared/data):

    python -m bench.economics_chart [--splits 5] [--out docs/img/economics-grids.svg]

One panel per grid: accuracy (up) against mean cost per item relative to the best single model
(across, log scale), the single models as grey dots joined by the line random routing between
them reaches (the baseline every strategy must beat at its cost), the fixed strategies (router,
votes, cascade) in blue and the learned answer-scorer strategies in orange. It takes about ten
minutes, most of it MMLU-Pro's 12,000 questions.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from engine.pool import discover_pool
from engine.router.model import train_router
from engine.training.grid import grid_models, load_grid, split_grid
from engine.training.report import KSplitReport, Row, build_router_report, random_at_cost

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Grid:
    title: str
    folder: Path
    pool: Path
    vote: tuple[str, ...]
    cascade: tuple[str, str, str]


GRIDS = (
    Grid("GSM8K", ROOT / "workflows/eval/gsm8k", ROOT / "workflows/eval/models.toml", ("gpt4o_mini", "haiku", "flash"), ("flash", "haiku", "gpt4o")),
    Grid("MATH level 5", SHARED / "zeroeval_math/math_l5", ROOT / "workflows/eval/math_l5_models.toml", ("flash", "gpt4o_mini", "gpt4o"),
         ("flash", "gpt4o_mini", "gpt4o")),
    Grid("MMLU-Pro", SHARED / "mmlu_pro", ROOT / "workflows/eval/mmlu_pro_models.toml", ("flash", "llama70", "llama8"), ("flash", "llama70", "pro")),
)

#: Short labels for the strategies drawn (the report's row keys start with these).
LABELS = (("router over all", "router"), ("router cheapest/best", "router pair"), ("majority vote", "vote"), ("weighted vote", "weighted vote"),
          ("cascade:", "cascade"), ("learned vote", "learned vote"), ("learned cascade", "learned cascade"))


def k_split(grid: Grid, splits: int) -> KSplitReport:
    pool = discover_pool(None, grid.pool)
    models = grid_models(pool, grid.folder)
    items = load_grid(grid.folder, models)
    reports = []
    for seed in range(splits):
        train, test = split_grid(items, 0.7, seed)
        router = train_router([i.example for i in train], models, "logistic", seed=seed)
        reports.append(build_router_report(router, train, test, pool, vote=grid.vote, cascade=grid.cascade))
    return KSplitReport(reports, list(range(splits)))


def _label(key: str) -> str:
    for prefix, short in LABELS:
        if key.startswith(prefix):
            if short == "router":
                return "router " + key.split(", ")[-1].split(" to ")[0]
            if short == "learned cascade":
                return "learned cascade (knee)" if "(knee)" in key else "learned cascade (match)"
            return short
    return key


def panel(k: KSplitReport, title: str, x0: float, width: float, height: float) -> str:
    """One grid's panel as SVG elements, placed at x0."""
    means = [(s.key, sum(s.accuracy) / len(s.accuracy), sum(s.cost) / len(s.cost), s.against_random > 0) for s in k.summaries()]
    singles = [(key, acc, cost) for key, acc, cost, judged in means if not judged and key != "oracle"]
    best_acc, best_cost = max(((acc, cost) for _k, acc, cost in singles), key=lambda t: (t[0], -t[1]))
    drawn = [m for m in means if m[0] != "oracle"]
    accs = [acc for _k, acc, _c, _j in drawn]
    a_lo, a_hi = math.floor(min(accs) * 50) / 50, math.ceil(max(accs) * 50) / 50
    r_lo, r_hi = math.log10(min(c for *_r, c, _j in drawn) / best_cost) - 0.1, math.log10(max(c for *_r, c, _j in drawn) / best_cost) + 0.1
    left, top, right, bottom = x0 + 48, 34, x0 + width - 12, height - 40

    def x(cost: float) -> float:
        return left + (math.log10(cost / best_cost) - r_lo) / (r_hi - r_lo) * (right - left)

    def y(acc: float) -> float:
        return bottom - (acc - a_lo) / (a_hi - a_lo) * (bottom - top)

    out = [f'<text x="{x0 + width / 2:.0f}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>',
           f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#ccc"/>']
    step = 0.02 if a_hi - a_lo <= 0.1 else 0.05
    tick = math.ceil(a_lo / step - 1e-9) * step
    while tick <= a_hi + 1e-9:
        out.append(f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="10">{tick:.0%}</text>'
                   f'<line x1="{left}" x2="{right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>')
        tick += step
    for ratio in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
        if r_lo <= math.log10(ratio) <= r_hi:
            out.append(f'<text x="{x(ratio * best_cost):.1f}" y="{bottom + 14}" text-anchor="middle" font-size="10">{ratio:g}x</text>')
    # random routing over every model: the envelope of the singles, drawn across the cost range
    rows = [Row(key, [], cost) for key, _acc, cost in singles]
    for row, (_key, acc, _cost) in zip(rows, singles, strict=True):
        row.right = [1] * round(acc * 10000) + [0] * (10000 - round(acc * 10000))
    lo_cost, hi_cost = min(c for *_r, c in singles), max(c for *_r, c in singles)
    line = []
    for i in range(61):
        cost = lo_cost * (hi_cost / lo_cost) ** (i / 60)
        line.append(f"{x(cost):.1f},{y(random_at_cost(rows, cost)[0]):.1f}")
    out.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#999" stroke-dasharray="4 3"/>')
    placed: list[tuple[float, float, float]] = []  # labels drawn so far (left, right, baseline): later ones move past them
    numbers = {key: i for i, key in enumerate((m[0] for m in drawn if m[3]), start=1)}
    legend_y = height + 8
    for i, (key, acc, cost, _judged) in enumerate(m for m in drawn if m[3]):
        colour = "#e67e22" if key.startswith("learned") else "#2c6fbb"
        out.append(f'<text x="{x0 + 14 + (i % 2) * width / 2:.0f}" y="{legend_y + (i // 2) * 13}" font-size="10" fill="{colour}">'
                   f'{numbers[key]} {_label(key)}: {acc:.1%}, {cost / best_cost:.0%}</text>')
    for key, acc, cost, judged in sorted(drawn, key=lambda m: -m[1]):
        colour = "#999" if not judged else ("#e67e22" if key.startswith("learned") else "#2c6fbb")
        label = key if not judged else str(numbers[key])
        px, py = x(cost), y(acc)
        span = 5.2 * len(label) + 2
        lx, anchor = (px - 6, "end") if px + 6 + span > right else (px + 6, "start")
        lo, hi = (lx - span, lx) if anchor == "end" else (lx, lx + span)
        offsets = [py - 5 + d * sign for d in range(0, 80, 10) for sign in (1, -1)]  # nearest free line, above or below
        ly = next((o for o in offsets if not any(a < hi and lo < b and abs(o - base) < 10 for a, b, base in placed)), py - 5)
        placed.append((lo, hi, ly))
        out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"><title>{key}: {acc:.1%}, '
                   f'{cost / best_cost:.0%} of the best single model\'s cost</title></circle>'
                   f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="9" fill="{colour}" text-anchor="{anchor}">{label}</text>')
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{height - 8}" text-anchor="middle" font-size="11">cost per item, relative to the '
               f'best single model ({best_acc:.1%})</text>')
    return "".join(out)


def chart(reports: list[tuple[str, KSplitReport]]) -> str:
    width, height, below = 420, 330, 110
    total = width * len(reports)
    body = "".join(panel(k, title, i * width, width, height) for i, (title, k) in enumerate(reports))
    legend = (f'<text x="10" y="{height + below - 6}" font-size="11"><tspan fill="#999">grey: single models; dashed: random routing over them at equal '
              'cost</tspan><tspan fill="#2c6fbb">  blue: router, votes, cascade</tspan><tspan fill="#e67e22">  orange: learned answer '
              'scorer</tspan><tspan fill="#555">  (list: accuracy, cost relative to the best single model)</tspan></text>'
              )
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height + below}" font-family="sans-serif">'
            f'<rect width="{total}" height="{height + below}" fill="#fff"/>{body}{legend}</svg>\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs/img/economics-grids.svg"))
    args = parser.parse_args()
    reports = [(g.title, k_split(g, args.splits)) for g in GRIDS if g.folder.is_dir()]
    Path(args.out).write_text(chart(reports), encoding="utf-8")
    print(f"wrote {args.out}: {', '.join(t for t, _k in reports)}")


if __name__ == "__main__":
    main()
