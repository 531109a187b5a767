"""The run list as one self-contained HTML page: newest first, filtered by flow and status."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from engine.records.page_assets import CSS
from engine.records.run_page import esc
from engine.run.trace import RunStatus, RunSummary

STATUSES: tuple[RunStatus, ...] = ("running", "ok", "failed", "budget_exhausted", "interrupted")


def filter_runs(runs: Sequence[RunSummary], flow: str | None = None, status: str | None = None) -> list[RunSummary]:
    return [r for r in runs if (not flow or r.flow == flow) and (not status or r.status == status)]


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if epoch else "?"


def render_runs_page(runs: Sequence[RunSummary], href: Callable[[str], str], *, flow: str | None = None,
                     status: str | None = None, flows: Sequence[str] = (), form: bool = False) -> str:
    """The list; `href` gives each run's link. `form` (on `baton serve`) adds the filter controls, which reload the page."""
    rows = ["<tr><th>run</th><th>flow</th><th>status</th><th>cost</th><th>calls</th><th>duration</th><th>started (UTC)</th></tr>"]
    for r in runs:
        rows.append(f'<tr class="run" data-run="{esc(r.run_id)}"><td><a href="{esc(href(r.run_id))}">{esc(r.run_id)}</a></td>'
                    f'<td>{esc(r.flow)}</td><td><span class="badge {esc(r.status)}">{esc(r.status.replace("_", " "))}</span></td>'
                    f'<td class="num">${r.cost:.6f}</td><td class="num">{r.calls}</td><td class="num">{r.duration_s:.2f} s</td>'
                    f"<td>{_when(r.started)}</td></tr>")
    applied = ", ".join(f"{k} {v}" for k, v in (("flow", flow), ("status", status)) if v)
    controls = ""
    if form:
        flow_options = "".join(f'<option value="{esc(f)}"{" selected" if f == flow else ""}>{esc(f)}</option>' for f in flows)
        status_options = "".join(f'<option value="{s}"{" selected" if s == status else ""}>{s.replace("_", " ")}</option>' for s in STATUSES)
        controls = (f'<form class="filter" method="get">flow <select name="flow"><option value="">any</option>{flow_options}</select> '
                    f'status <select name="status"><option value="">any</option>{status_options}</select> '
                    '<button type="submit">filter</button></form>')
    empty = "" if runs else '<p class="hint" style="margin: 16px 20px">no runs' + (" match" if applied else " yet") + "</p>"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Baton runs</title>"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<style>{CSS}</style></head><body><header><h1>Runs</h1><div class=\"facts\"><span>{len(runs)} shown, newest first"
            + (f"; {esc(applied)}" if applied else "") + "</span></div></header>" + controls
            + (f'<table class="runs">{"".join(rows)}</table>' if runs else empty) + "</body></html>")
