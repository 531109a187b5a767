"""The evaluation report as one self-contained HTML file: a table and a cost-vs-accuracy chart (inline SVG)."""

from __future__ import annotations

import html
import math

from engine.eval.runner import EvalReport

W, H, PAD = 640, 400, 60
TOP = 20  # the plot's top margin: only point labels go there


def _chart(report: EvalReport) -> str:
    pts = [(f.flow, max(f.mean_cost, 1e-9), f.accuracy, f.pareto) for f in report.flows]
    if not pts:
        return ""
    xs = [math.log10(c) for _, c, _, _ in pts]
    ys = [a for _, _, a, _ in pts]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y0, y1 = max(0.0, min(ys) - 0.03), min(1.0, max(ys) + 0.03)
    if y1 - y0 < 0.01:
        y0, y1 = y0 - 0.01, y1 + 0.01

    def sx(c: float) -> float:
        return PAD + (math.log10(c) - x0) / (x1 - x0) * (W - 2 * PAD)

    def sy(a: float) -> float:
        return H - PAD - (a - y0) / (y1 - y0) * (H - PAD - TOP)

    parts = [f'<svg id="pareto-chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
             'aria-label="cost versus accuracy">',
             f'<rect x="{PAD}" y="{TOP}" width="{W - 2 * PAD}" height="{H - PAD - TOP}" fill="#fafafa" stroke="#999"/>',
             f'<text x="{W / 2}" y="{H - 15}" text-anchor="middle" font-size="13">mean cost per item (USD, log scale)</text>',
             f'<text x="15" y="{H / 2}" text-anchor="middle" font-size="13" transform="rotate(-90 15 {H / 2})">accuracy</text>']
    for a in _accuracy_ticks(y0, y1):
        parts.append(f'<text x="{PAD - 6}" y="{sy(a) + 4:.1f}" text-anchor="end" font-size="11">{a * 100:.{_percent_decimals(y1 - y0)}f}%</text>')
    for c in _cost_ticks(x0, x1):
        parts.append(f'<text x="{sx(c):.1f}" y="{H - PAD + 16}" text-anchor="middle" font-size="11">{_dollars(c)}</text>')
    front = sorted((p for p in pts if p[3]), key=lambda p: p[1])
    if len(front) > 1:
        path = " ".join(f"{sx(c):.1f},{sy(a):.1f}" for _, c, a, _ in front)
        parts.append(f'<polyline class="frontier" points="{path}" fill="none" stroke="#d33" stroke-width="2" stroke-dasharray="6 3"/>')
    for name, c, a, on_front in pts:
        colour = "#d33" if on_front else "#36c"
        parts.append(f'<circle cx="{sx(c):.1f}" cy="{sy(a):.1f}" r="6" fill="{colour}"><title>{html.escape(name)}: '
                     f'{a * 100:.1f}%, ${c:.6f}/item</title></circle>')
        parts.append(f'<text x="{sx(c) + 9:.1f}" y="{sy(a) - 8:.1f}" font-size="12">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _accuracy_ticks(lo: float, hi: float) -> list[float]:
    """Round accuracies inside [lo, hi], 1, 2 or 5 times a power of ten apart, four to eight of them."""
    raw = (hi - lo) / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if raw <= m * power)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def _percent_decimals(span: float) -> int:
    return max(0, -math.floor(math.log10(span * 100 / 5)))


def _cost_ticks(log_lo: float, log_hi: float) -> list[float]:
    """Costs at 1, 2 and 5 times each power of ten within the (log10) range; only the powers when that is too many."""
    ticks = [m * 10.0**k for k in range(math.floor(log_lo), math.ceil(log_hi) + 1) for m in (1, 2, 5)
             if log_lo <= math.log10(m * 10.0**k) <= log_hi]
    if len(ticks) > 8:
        ticks = [t for t in ticks if math.isclose(10 ** round(math.log10(t)), t)]
    return ticks


def _dollars(c: float) -> str:
    """A cost as plain decimals with two significant digits ($0.000050, $0.0029, $1.50): no `3e-05` on an axis."""
    if c <= 1e-9:  # where the chart puts free flows (a log axis has no zero)
        return "$0"
    return f"${c:.{max(2, 1 - math.floor(math.log10(c)))}f}"


def _references(report: EvalReport) -> str:
    """The rows to judge the flows against, as the CLI prints them: the best flow, random routing between the cheapest
    and the best flow at each other flow's cost (its expected accuracy, beside the flow's own), and the oracle."""
    if not report.references:
        return ""
    rows = []
    for ref in report.references:
        own = f"{ref['flow_accuracy'] * 100:.1f}%" if "flow_accuracy" in ref else "–"
        rows.append(f"<tr><td>{html.escape(ref['row'])}</td><td>{ref['accuracy'] * 100:.1f}%</td><td>${ref['mean_cost']:.6f}</td>"
                    f"<td>{own}</td></tr>")
    return ("<h2>Reference rows</h2><p>What each flow should beat: the best flow alone, random routing between the cheapest "
            "and the best flow at the same mean cost (expected accuracy), and the oracle.</p>"
            "<div class=\"scroll\"><table id=\"references\"><tr><th>reference</th><th>accuracy</th><th>mean cost</th>"
            "<th>the flow at that cost</th></tr>\n" + "\n".join(rows) + "\n</table></div>")


def render_html(report: EvalReport) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(f.flow)}{' ★' if f.pareto else ''}</td><td>{f.n}</td><td>{f.accuracy * 100:.1f}%</td>"
        f"<td>{f.ci_low * 100:.1f}–{f.ci_high * 100:.1f}%</td><td>${f.total_cost:.4f}</td><td>${f.mean_cost:.6f}</td>"
        f"<td>{f'${f.cost_per_correct:.6f}' if f.cost_per_correct else '–'}</td><td>{f.latency_p50_ms:.0f}</td>"
        f"<td>{f.latency_p95_ms:.0f}</td><td>{f.calls_per_item:.2f}</td><td>{f.failures}</td></tr>"
        for f in report.flows)
    pairs = "\n".join(f"<tr><td>{html.escape(p['a'])}</td><td>{html.escape(p['b'])}</td><td>{p['a_only']}</td><td>{p['b_only']}</td>"
                      f"<td>{p['mcnemar_p']:.3g}</td></tr>" for p in report.pairs)
    oracle = f"<p>Oracle (an item counts if any flow got it right): {report.oracle * 100:.1f}%</p>" if report.oracle is not None else ""
    references = _references(report)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Baton evaluation {html.escape(report.eval_id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td{{white-space:nowrap}}td:first-child,th:first-child{{text-align:left}}
.scroll{{overflow-x:auto;max-width:100%}}svg{{max-width:100%;height:auto}}
p,h1{{overflow-wrap:anywhere}}#references td:first-child{{white-space:normal;min-width:12em}}
@media (max-width:700px){{body{{margin:10px}}td,th{{padding:3px 5px}}}}</style></head>
<body>
<h1>Evaluation {html.escape(report.eval_id)}</h1>
<p>Dataset: {html.escape(report.dataset)}; scorer: {html.escape(report.scorer)}; {report.duration_s:.1f}s.
★ marks the Pareto frontier (no other flow is both cheaper and more accurate).</p>
<div class="scroll"><table id="flows"><tr><th>flow</th><th>items</th><th>accuracy</th><th>95% CI</th><th>total cost</th><th>mean cost</th>
<th>cost per correct</th><th>p50 ms</th><th>p95 ms</th><th>calls/item</th><th>failures</th></tr>
{rows}
</table></div>
{oracle}
{references}
<h2>Cost versus accuracy</h2>
{_chart(report)}
{"<h2>Paired comparisons (McNemar's exact test)</h2><div class='scroll'><table><tr><th>A</th><th>B</th><th>only A right</th><th>only B right</th><th>p</th></tr>" + pairs + "</table></div>" if pairs else ""}
</body></html>
"""
