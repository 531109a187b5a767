"""One run as one self-contained HTML page: the DAG, each node's details, the time line, the output.

Everything is rendered here, in Python: the layout (`engine.records.layout`), the SVG, and a
hidden details section per node that the page's small script shows on a click. Text from
models, inputs and providers is untrusted; every piece of it goes through `esc` (HTML
escaping, quotes included), in element text and in attributes alike, so a reply holding
`<script>` or `</textarea>` is shown as the text it is.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import textwrap
import time
from typing import Any

from engine.records import explain
from engine.records.layout import NODE_WIDTH, Box, Point, layout
from engine.records.page_assets import CSS, SCRIPT
from engine.run.trace import Attempt, StepResult, is_nested, nested_in

LINE = 16
PAD = 10
MAX_CHARS = 29
#: The page runs its own script and nothing else, even were some text to slip past the escaping.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
STATUS_FILL = {"ok": "#e8f5e9", "failed": "#ffebee", "skipped": "#f5f5f5", "not_run": "#ffffff", "resumed": "#e3f2fd",
               "input": "#fffde7", "pending": "#ffffff"}
STATUS_STROKE = {"ok": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e", "not_run": "#9e9e9e", "resumed": "#1565c0",
                 "input": "#c0a000", "pending": "#1565c0"}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _short(text: str, width: int = MAX_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


def _wrapped(text: str, cls: str, lines: int = 2) -> list[tuple[str, str]]:
    """A long fact over a few lines of the box (the last one cut short if it must be)."""
    parts = textwrap.wrap(" ".join(text.split()), MAX_CHARS) or [""]
    if len(parts) > lines:
        parts = [*parts[: lines - 1], _short(" ".join(parts[lines - 1:]))]
    return [(part, cls) for part in parts]


def _dollars(usd: float) -> str:
    return f"${usd:.6f}" if usd < 0.01 else f"${usd:.4f}"


def _seconds(ms: float) -> str:
    if ms < 10:
        return f"{ms:.1f} ms"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def shown_status(step: StepResult | None) -> str:
    if step is None:
        return "not_run"
    return "resumed" if step.resumed and step.status == "ok" else step.status


def _panel_members(step: StepResult) -> list[tuple[str, Attempt]]:
    """Each panel member's last attempt, by role (`panel[0]` ...), in panel order."""
    last: dict[str, Attempt] = {}
    for a in step.attempts:
        if a.role.startswith("panel["):
            last[a.role] = a
    return sorted(last.items(), key=lambda kv: int(kv[0][6:-1]))


def node_lines(name: str, attrs: dict[str, Any], step: StepResult | None, value: str | None,
               running: bool = False) -> list[tuple[str, str]]:
    """The text lines of a node's box, each with its CSS class: what the picture says without a click."""
    kind = attrs.get("kind", "step")
    if kind == "input":
        return [(name, "name"), ("input", "kind"), (_short(value or ""), "sub")]
    status = shown_status(step)
    lines = [(name, "name"), (kind, "kind")]
    if kind == "loop" and attrs.get("members"):
        members = " \u21c4 ".join(m for m, _kind, _models in attrs["members"])
        lines[1] = (_short(f"loop: {members}, at most {attrs.get('max_rounds', '?')} rounds"), "kind")
    if kind == "use" and attrs.get("uses"):
        lines[1] = (_short(f'use "{attrs["uses"]}"'), "kind")
    if step is None:
        return [*lines, ("not finished yet" if running else "not run", "sub")]
    if step.model:
        lines.append((_short(f"model {step.model}"), "sub"))
    facts = status.replace("_", " ")
    if step.status == "ok" or step.attempts:
        facts += (f" \u00b7 {_dollars(step.cost)}" if kind != "route" else "") + f" \u00b7 {_seconds(step.latency_ms)}"
    lines.append((facts, "bad" if step.status == "failed" else "sub"))
    if kind == "fuse" and not _panel_members(step) and step.verdict:
        lines.append((_short(f"\u2192 vote: {step.verdict}"), "sub"))
    if step.decision is not None:
        d = step.decision
        lines.append((_short(f"\u2192 {d.chosen}"), "sub"))
        lines.extend(_wrapped(f"by {d.matched}", "kind"))
        if d.skipped:
            lines.extend(_wrapped("skipped: " + ", ".join(d.skipped), "kind", 3))
    for i, verdict in enumerate(step.verdicts, 1):
        accepted = verdict.startswith("ACCEPTED")
        said = verdict.split(": ", 1)[-1]
        mark = "\u2713" if accepted else "\u2717"
        lines.append((_short(f"round {i} {mark} {said}"), "sub" if accepted else "bad"))
    if step.status == "failed" and step.error:
        lines.extend(_wrapped(step.error, "bad", 3))
    return lines


MEMBER_W, MEMBER_H, MEMBER_GAP, JUDGE_GAP = 120, 38, 8, 22


def _cluster(step: StepResult | None) -> tuple[list[tuple[str, Attempt]], Attempt | None]:
    """A fuse's panel (each member's last call) and its judge's or escalation's last call, as drawn inside its box."""
    if step is None or step.kind != "fuse":
        return [], None
    finals = [a for a in step.attempts if a.role in ("judge", "escalate")]
    return _panel_members(step), finals[-1] if finals else None


def _cluster_size(step: StepResult | None) -> tuple[float, float]:
    """The room a fuse's panel and judge take below its text lines: (width, height)."""
    members, last = _cluster(step)
    if not members:
        return 0.0, 0.0
    width = len(members) * MEMBER_W + (len(members) - 1) * MEMBER_GAP
    height = MEMBER_H + (JUDGE_GAP + MEMBER_H if last is not None or (step and step.verdict) else 0) + PAD
    return width, height


def _mini_box(x: float, y: float, w: float, role: str, title: str, line: str, a: Attempt | None, tip: str) -> str:
    ok = a is not None and a.answered
    fill, stroke = (STATUS_FILL["ok"], STATUS_STROKE["ok"]) if ok else ("#fff3e0", "#ef6c00") if a is None else (STATUS_FILL["failed"], STATUS_STROKE["failed"])
    return (f'<g class="member" data-role="{esc(role)}" data-ok="{"1" if ok else "0"}"><title>{esc(tip)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.0f}" height="{MEMBER_H}" rx="4" fill="{fill}" stroke="{stroke}"/>'
            f'<text class="kind" x="{x + 6:.1f}" y="{y + 14:.1f}">{esc(title)}</text>'
            f'<text class="{"sub" if ok else "bad"}" x="{x + 6:.1f}" y="{y + 30:.1f}">{esc(line)}</text></g>')


def _cluster_svg(step: StepResult, box: Box, top: float) -> str:
    """A fuse's panel members side by side, arrows into its judge (or its vote): the fusion as a picture."""
    members, last = _cluster(step)
    width, _ = _cluster_size(step)
    x0 = box.x + (box.w - width) / 2
    parts = []
    judge_y = top + MEMBER_H + JUDGE_GAP
    judge_x = box.x + (box.w - MEMBER_W * 1.6) / 2
    for i, (role, a) in enumerate(members):
        x = x0 + i * (MEMBER_W + MEMBER_GAP)
        ok = a.answered
        line = _short(f"\u2713 {_seconds(a.latency_ms)}" if ok else f"\u2717 {a.cause or a.status}", 19)
        parts.append(_mini_box(x, top, MEMBER_W, role, _short(f"{role} {a.alias}", 19), line, a,
                               f"{role} {a.alias}: {a.status} {a.cause} {a.reason}".strip()))
        if last is not None or step.verdict:
            parts.append(f'<path class="edge{"" if ok else " skipped branch"}" d="M{x + MEMBER_W / 2:.1f},{top + MEMBER_H:.1f} '
                         f'L{judge_x + MEMBER_W * 0.8:.1f},{judge_y - 2:.1f}" marker-end="url(#arrow)"/>')
    if last is not None:
        ok = last.answered
        line = _short(f"\u2713 {_seconds(last.latency_ms)}" if ok else f"\u2717 {last.cause or last.status}", 28)
        parts.append(_mini_box(judge_x, judge_y, MEMBER_W * 1.6, last.role, _short(f"{last.role} {last.alias}", 28), line, last,
                               f"{last.role} {last.alias}: {last.status}"))
    elif step.verdict:
        parts.append(_mini_box(judge_x, judge_y, MEMBER_W * 1.6, "vote", "vote", _short(step.verdict, 28), None if step.status != "ok" else
                               Attempt(alias="", status="ok"), step.verdict))
    return "".join(parts)


def _heat(value: float, top: float, low: tuple[int, int, int], high: tuple[int, int, int]) -> str:
    share = 0.0 if top <= 0 else min(1.0, value / top)
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _graph_svg(run: explain.RecordedRun, critical: list[str]) -> str:
    g = run.graph
    steps = run.summary.steps
    running = run.summary.status == "running"
    texts = {n: node_lines(n, g.nodes[n], steps.get(n), run.inputs.get(n), running) for n in g.nodes}
    clusters = {n: _cluster_size(steps.get(n)) for n in g.nodes}
    placed = layout(g, lambda n: PAD * 2 + LINE * len(texts[n]) + clusters[n][1],
                    lambda n: max(NODE_WIDTH, clusters[n][0] + 2 * PAD))
    top_cost = max((s.cost for s in steps.values()), default=0.0)
    top_latency = max((s.latency_ms for s in steps.values()), default=0.0)
    on_path = set(critical)
    path_edges = set(zip(critical, critical[1:], strict=False))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{placed.width:.0f}" height="{placed.height:.0f}" '
             f'viewBox="0 0 {placed.width:.0f} {placed.height:.0f}" role="img" aria-label="the flow\'s steps">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto">'
             '<path d="M0,0 L10,5 L0,10 z" fill="#90a4ae"/></marker></defs>']
    for src, course in placed.trunks.items():  # the shared lane of a node's edges that skip layers
        parts.append(f'<path class="edge trunk" d="{_course(course)}"><title>{esc(src)}, to the steps below</title></path>')
    for src, dst, data in g.edges(data=True):
        parts.append(_edge(placed.routes[(src, dst)], src, dst, data, run, (src, dst) in path_edges))
    for name in g.nodes:
        kind = g.nodes[name].get("kind", "step")
        step = steps.get(name)
        status = "input" if kind == "input" else shown_status(step)
        if step is None and run.summary.status == "running":
            status = "pending"
        box = placed.boxes[name]
        fills = {"status": STATUS_FILL.get(status, "#fff"),
                 "cost": _heat(step.cost if step else 0.0, top_cost, (255, 253, 231), (239, 108, 0)),
                 "latency": _heat(step.latency_ms if step else 0.0, top_latency, (232, 240, 254), (21, 101, 192))}
        classes = "node" + (" critical" if name in on_path else "")
        dash = ' stroke-dasharray="5 3"' if status in ("skipped", "not_run", "pending") else ""
        parts.append(f'<g class="{classes}" data-step="{esc(name)}" data-kind="{esc(kind)}" data-status="{esc(status)}" '
                     f'data-model="{esc(step.model or "") if step else ""}" tabindex="0">'
                     f'<title>{esc(name)}: {esc(status)}</title>'
                     f'<rect class="box" x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.0f}" height="{box.h:.0f}" '
                     f'fill="{fills["status"]}" stroke="{STATUS_STROKE.get(status, "#888")}"{dash} '
                     + " ".join(f'data-fill-{mode}="{colour}"' for mode, colour in fills.items()) + "/>")
        for i, (text, cls) in enumerate(texts[name]):
            parts.append(f'<text class="{cls}" x="{box.x + PAD:.1f}" y="{box.y + PAD + LINE * (i + 1) - 4:.1f}">{esc(text)}</text>')
        if step is not None and clusters[name][1]:
            parts.append(_cluster_svg(step, box, box.y + PAD + LINE * len(texts[name]) + 4))
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _course(points: list[Point]) -> str:
    """An SVG path through the points, each leg a curve that leaves and arrives vertically."""
    (x, y), *rest = points
    d = [f"M{x:.1f},{y:.1f}"]
    for i, (nx_, ny) in enumerate(rest):
        end = ny - 2 if i == len(rest) - 1 else ny  # the arrow's tip on the target's edge
        mid = (y + ny) / 2
        d.append(f"C{x:.1f},{mid:.1f} {nx_:.1f},{mid:.1f} {nx_:.1f},{end:.1f}")
        x, y = nx_, ny
    return " ".join(d)


def _edge(points: list[Point], src: str, dst: str, data: dict[str, Any], run: explain.RecordedRun, critical: bool) -> str:
    kind = data.get("kind", "sees")
    classes = ["edge", kind]
    decision = run.summary.steps[dst].decision if dst in run.summary.steps else None
    if kind == "branch" and decision is not None and decision.chosen != src:
        classes.append("skipped")
    if critical:
        classes.append("critical")
    note = data.get("arm") or ("label" if kind == "label" else "")
    tip = {"sees": f"{dst} sees {src}", "template": f"{dst}'s task names {src}", "label": f"{dst} routes on {src}'s label",
           "rule": f"{dst}'s rule reads {src}", "branch": f"{dst} takes {src}'s output when chosen ({note})",
           "guard": f"{dst} waits for route {data.get('route', '')}"}.get(kind, kind)
    path = f'<path class="{" ".join(classes)}" d="{_course(points)}" marker-end="url(#arrow)"><title>{esc(tip)}</title></path>'
    if note and kind in ("branch", "label"):
        (x1, y1), (x2, y2) = points[-2], points[-1]
        path += f'<text class="edge-note" x="{(x1 + x2) / 2 + 4:.1f}" y="{(y1 + y2) / 2 - 3:.1f}">{esc(_short(note, 28))}</text>'
    return path


def _attempts_table(step: StepResult) -> str:
    if not step.attempts:
        return '<p class="hint">no model calls</p>'
    rows = ['<table class="attempts"><tr><th>#</th><th>call, and why it was made</th><th>status</th><th>tokens in/out</th>'
            '<th>cost</th><th>time</th></tr>']
    for i, (a, why) in enumerate(zip(step.attempts, explain.call_causes(step), strict=True), 1):
        status = a.status + (f" ({a.cause})" if a.cause else "") + (" truncated" if a.truncated else "")
        tip = "; ".join(x for x in (a.model_id, a.reason, a.cost_note, f"finish {a.finish_reason}" if a.finish_reason else "") if x)
        rows.append(f'<tr class="{esc(a.status)}" title="{esc(tip)}"><td>{i}</td><td><span class="nowrap">{esc(a.role)} <b>{esc(a.alias)}</b></span>'
                    f'<br><span class="hint">{esc(why)}</span></td><td>{esc(status)}</td><td class="num">{a.input_tokens}/{a.output_tokens}</td>'
                    f'<td class="num">{_dollars(a.cost)} <span class="hint">{esc(a.cost_source)}</span></td>'
                    f'<td class="num nowrap">{_seconds(a.latency_ms)}</td></tr>')
        if a.reason and not a.answered:
            rows.append(f'<tr class="{esc(a.status)}"><td></td><td colspan="5">{esc(a.reason)}</td></tr>')
        if a.tool_calls:  # what the model asked the client's tools to do (arguments scrubbed like any provider text)
            calls = "; ".join(f"{(c.get('function') or {}).get('name', '?')}({(c.get('function') or {}).get('arguments', '')})"
                              for c in a.tool_calls)
            rows.append(f'<tr class="{esc(a.status)}"><td></td><td colspan="5"><span class="hint">tool calls:</span> '
                        f'<code>{esc(_short(calls, 300))}</code></td></tr>')
    rows.append("</table>")
    return "".join(rows)


def _prompts(step: StepResult) -> str:
    out = []
    for p in step.prompts:
        blocks = "".join(
            f'<details class="block"><summary>{esc(b.title)}</summary>'
            + (f'<div class="hint">subtask</div><pre>{esc(b.subtask)}</pre><div class="hint">response</div>' if b.subtask is not None else "")
            + f"<pre>{esc(b.body)}</pre></details>" for b in p.blocks)
        seen = f'{len(p.blocks)} block{"s" if len(p.blocks) != 1 else ""} visible' if p.blocks else "sees nothing but its task"
        out.append(f'<details class="prompt" open><summary><b>{esc(p.role)}</b> prompt: {seen}</summary>'
                   + (f'<div class="hint">system</div><pre>{esc(p.system)}</pre>' if p.system else "")
                   + blocks + f'<div class="hint">its subtask</div><pre class="task">{esc(p.task)}</pre>'
                   f'<details><summary>the exact messages sent</summary><pre class="messages">{esc(explain.pretty_messages(p))}</pre>'
                   "</details></details>")
    return "".join(out) or '<p class="hint">no prompt recorded</p>'


def _detail(name: str, kind: str, step: StepResult | None, run: explain.RecordedRun) -> str:
    head = f'<section class="detail" id="detail-{esc(name)}"><h2>{esc(name)} <span class="hint">{esc(kind)}</span></h2>'
    if kind == "input":
        return head + f'<h3>value</h3><pre class="output">{esc(run.inputs.get(name, ""))}</pre></section>'
    if step is None:
        later = "not finished yet: the page follows the run" if run.summary.status == "running" else "not run"
        return head + f'<p class="hint">{later}</p></section>'
    return head + _detail_body(kind, step, run) + "</section>"


def _sub_run(step: StepResult, run: explain.RecordedRun) -> str:
    """A sub-flow's steps, each folded: what it did, as a step of the caller is shown."""
    parts = ["<h3>its steps (the sub-flow's run)</h3>"]
    for inner in nested_in(run.summary.steps, step.name):
        summary = (f"{esc(inner.name)} <span class=\"hint\">{esc(inner.kind)}</span> \u00b7 {esc(shown_status(inner).replace('_', ' '))}"
                   + (f" \u00b7 {esc(inner.model)}" if inner.model else "") + f" \u00b7 {_dollars(inner.cost)}")
        parts.append(f'<details class="substep"><summary>{summary}</summary>{_detail_body(inner.kind, inner, run)}</details>')
    return "".join(parts)


def _detail_body(kind: str, step: StepResult, run: explain.RecordedRun) -> str:
    spent = ("no calls of its own: it takes the chosen branch's output" if kind == "route" else
             f"{step.input_tokens} in / {step.output_tokens} out tokens \u00b7 {_dollars(step.cost)}")
    facts = [f'<p class="why"><span class="badge {esc(step.status)}">{esc(shown_status(step).replace("_", " "))}</span> '
             + (f"model <b>{esc(step.model)}</b> " if step.model else "") + f"{spent} \u00b7 {_seconds(step.latency_ms)}</p>"]
    if step.reason:
        facts.append(f'<p class="why">why: {esc(step.reason)}</p>')
    if step.resumed:
        facts.append('<p class="why">from the run\'s previous attempt: not called again</p>')
    if step.decision is not None:
        d = step.decision
        facts.append(f'<p class="why">decision: {"label " + esc(repr(d.label)) + ", " if d.label is not None else ""}'
                     f'{esc(d.matched)} \u2192 <b>{esc(d.chosen)}</b>; skipped: {esc(", ".join(d.skipped) or "none")}</p>')
        if d.predictions:
            facts.append('<p class="why">router predicted: ' + ", ".join(
                f"{esc(a)} {p:.3f} (${d.costs.get(a, 0.0):.6f})" for a, p in d.predictions.items()) + "</p>")
    if step.scores:
        facts.append('<p class="why">scorer rated: ' + ", ".join(f"{esc(repr(a))} {p:.3f}" for a, p in step.scores.items()) + "</p>")
    for i, verdict in enumerate(step.verdicts, 1):
        facts.append(f'<p class="why">round {i}: {esc(verdict)}</p>')
    if step.verdict and not step.verdicts:
        facts.append(f'<p class="why">verdict: {esc(step.verdict)}</p>')
    if step.error:
        facts.append(f'<p class="error">{esc(step.error)}</p>')
    output = f'<h3>output</h3><pre class="output">{esc(step.output)}</pre>' if step.output else ""
    shown = _prompts(step)
    if not step.prompts and run.flow is None and "messages" in run.inputs:  # a pass-through call: the client's own messages
        shown = f'<div class="hint">the exact messages sent</div><pre class="messages">{esc(_pretty_json(run.inputs["messages"]))}</pre>'
    if kind == "use":  # its calls and prompts are its steps'
        return "".join(facts) + output + _sub_run(step, run)
    return "".join(facts) + output + "<h3>calls</h3>" + _attempts_table(step) + "<h3>what it was shown</h3>" + shown


def _pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=2)
    except ValueError:
        return text


def _nested_order(steps: dict[str, StepResult]) -> list[tuple[str, StepResult]]:
    """The recorded steps, each sub-flow's right after its `use`."""
    out: list[tuple[str, StepResult]] = []

    def add(step: StepResult) -> None:
        out.append((step.name, step))
        for inner in nested_in(steps, step.name):
            add(inner)

    for name, step in steps.items():
        if not is_nested(name):
            add(step)
    return out


def _timeline(run: explain.RecordedRun, critical: list[str]) -> str:
    summary = run.summary
    rows = [(n, s) for n, s in _nested_order(summary.steps) if s.attempts or s.started]
    if not rows:
        return ""
    t0 = min([summary.started or float("inf"), *(s.started for _, s in rows if s.started)])
    t_end = max([summary.finished, *(s.finished for _, s in rows), *(a.started + a.latency_ms / 1000 for _, s in rows for a in s.attempts)])
    span = max(t_end - t0, 1e-3)
    label_w, plot_w, row_h = 170, 760, 18
    scale = plot_w / span
    height = row_h * len(rows) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" height="{height}">']
    on_path = set(critical)
    for i, (name, step) in enumerate(rows):
        y = i * row_h
        parts.append(f'<rect class="row{" critical" if name in on_path else ""}" x="0" y="{y}" width="{label_w + plot_w}" height="{row_h}"/>')
        depth = name.count("/")  # a sub-flow's step, indented under its use
        parts.append(f'<text x="{4 + 10 * depth}" y="{y + 13}">{esc(_short(name.rsplit("/", 1)[-1], 26 - 2 * depth))}</text>')
        if step.started and step.finished:
            x = label_w + (step.started - t0) * scale
            parts.append(f'<rect x="{x:.1f}" y="{y + 8}" width="{max(1.0, (step.finished - step.started) * scale):.1f}" height="2" fill="#90a4ae">'
                         f'<title>{esc(name)}: {_seconds((step.finished - step.started) * 1000)}</title></rect>')
        for a in step.attempts:
            if not a.started:
                continue
            colour = {"ok": "#66bb6a", "cache_hit": "#26a69a", "rejected": "#ffa726"}.get(a.status, "#ef5350")
            x = label_w + (a.started - t0) * scale
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{max(2.0, a.latency_ms / 1000 * scale):.1f}" height="{row_h - 6}" '
                         f'fill="{colour}"><title>{esc(name)} {esc(a.role)} {esc(a.alias)}: {esc(a.status)}, {_seconds(a.latency_ms)}</title></rect>')
    for k in range(5):
        x = label_w + plot_w * k / 4
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{_seconds(span * k / 4 * 1000)}</text>')
    parts.append("</svg>")
    return ('<section id="timeline"><h2>Time line</h2><p class="hint">one row per step; bars are model calls (green ok, '
            'teal cache hit, orange rejected by a check, red failed); the critical path is shaded</p>' + "".join(parts) + "</section>")


def _legends() -> str:
    return ('<span class="legend" data-mode="status">'
            + "".join(f'<span><i style="background:{STATUS_FILL[s]};border-color:{STATUS_STROKE[s]}"></i>{s.replace("_", " ")}</span>'
                      for s in ("ok", "failed", "skipped", "not_run", "resumed", "input"))
            + '<span><i style="background:#fff;border:2px solid var(--crit)"></i>critical path</span></span>'
            '<span class="legend" data-mode="cost" hidden>lighter is cheaper, darker orange costs more</span>'
            '<span class="legend" data-mode="latency" hidden>lighter is faster, darker blue is slower</span>')


def _error_at(run: explain.RecordedRun) -> str:
    """Where the failed node is written in the flow, with its line, so a reader goes straight to what to change."""
    s = run.summary
    if not s.error_at or not s.error_step:
        return ""
    line = run.source_line(s.error_step)
    return (f'<p class="hint">at <code>{esc(s.error_at)}</code> (step <code>{esc(s.error_step)}</code>)'
            + (f': <code>{esc(line)}</code>' if line else "") + "</p>")


def render_run_page(run: explain.RecordedRun, *, live: bool = False, runs_href: str | None = None) -> str:
    """The page of one run; `live` (on `baton serve`) makes a page of a run in flight reload its content until it ends."""
    s = run.summary
    critical = explain.critical_path(run)
    g = run.graph
    first = next((n for n in (s.error_step, s.tool_calls_by, s.output_step) if n and n in g), next(iter(g.nodes), ""))
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.started)) if s.started else "?"
    header = (f'<header><h1>{esc(s.flow)} <span class="badge {esc(s.status)}">{esc(s.status.replace("_", " "))}</span></h1>'
              f'<div class="facts"><span>run <b class="run-id">{esc(s.run_id)}</b></span><span>started <b>{started}</b></span>'
              f'<span>cost <b class="cost">{_dollars(s.cost)}</b></span><span>calls <b>{s.calls}</b></span>'
              f"<span>cache hits <b>{s.cache_hits}</b></span><span>tokens <b>{s.input_tokens} in / {s.output_tokens} out</b></span>"
              f"<span>wall time <b>{s.duration_s:.2f} s</b></span>"
              + (f'<span><a href="{esc(runs_href)}">all runs</a></span>' if runs_href else "") + "</div>"
              + (f'<p class="error">{esc(s.error)}</p>' if s.error else "")
              + _error_at(run)
              + "".join(f'<p class="error">warning: {esc(w)}</p>' for w in s.warnings)
              + (f'<p class="hint">{esc(run.flow_problem)}</p>' if run.flow_problem else "") + "</header>")
    toolbar = ('<div class="toolbar">colour nodes by: '
               + "".join(f'<label><input type="radio" name="colour" value="{m}"{" checked" if m == "status" else ""}> {m}</label>'
                         for m in ("status", "cost", "latency"))
               + _legends() + ' <span class="hint">click a node for its prompt, output and calls</span></div>')
    details = "".join(_detail(n, g.nodes[n].get("kind", "step"), s.steps.get(n), run) for n in g.nodes)
    answered_by = s.tool_calls_by or s.output_step
    calls = s.steps[answered_by].tool_calls if answered_by in s.steps else []
    answer = s.output or "".join(f'{c["function"]["name"]}({c["function"]["arguments"]})\n' for c in calls if "function" in c)
    heading = f"Answer: tool calls of {esc(answered_by)}" if s.tool_calls_by else f"Output ({esc(s.output_step)})"
    output = (f'<section id="output"><h2>{heading}</h2><pre class="output">{esc(answer or "")}</pre></section>'
              if s.output is not None else "")
    body = (header + toolbar + f'<main><div id="graph">{_graph_svg(run, critical)}</div><div id="details">{details}</div></main>'
            + output + _timeline(run, critical))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(s.flow)} \u00b7 run {esc(s.run_id)}</title>"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            f"script-src '{SCRIPT_HASH}'; connect-src 'self'; img-src data:\">"
            f"<style>{CSS}</style></head>"
            f'<body data-first="{esc(first)}" data-status="{esc(s.status)}" data-live="{"1" if live and s.status == "running" else "0"}">'
            f'<div id="run">{body}</div><script>{SCRIPT}</script></body></html>')
