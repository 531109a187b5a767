"""The run viewer on `baton serve`: `/runs` (the list) and `/runs/{id}` (one run, live while it is in flight).

The pages are `engine.records`' own (the same HTML `baton view` writes). With keys, a key
sees only the runs it started, and another key's run is answered as no run at all, as on
`/v1/runs/{id}`. Browsers authenticate with HTTP Basic (any user name, the key as the
password): a 401 from these paths asks for it, so the pages open from an address bar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from aiohttp import web

from engine.errors import UnknownRun
from engine.records.explain import read_recorded_run
from engine.records.run_page import esc, render_run_page
from engine.records.runs_page import STATUSES, filter_runs, render_runs_page
from engine.run.home import RunHome
from engine.run.reader import read_run
from engine.run.trace import RunSummary
from engine.serve.keys import KeySpec
from engine.serve.ledger import Ledger
from engine.serve.shared_records import shared_record

PAGE_LIMIT = 200
LOGIN = {"WWW-Authenticate": 'Basic realm="baton runs", charset="UTF-8"'}
NO_STORE = {"Cache-Control": "no-store"}


def login_required() -> web.Response:
    return web.Response(status=401, headers=LOGIN, content_type="text/html",
                        text="<!DOCTYPE html><title>Baton runs</title><p>Sign in with one of the server's keys as the password.</p>")


def _not_found(run_id: str) -> web.Response:
    return web.Response(status=404, content_type="text/html", headers=NO_STORE,
                        text=f"<!DOCTYPE html><title>No such run</title><p>No run {esc(run_id)}. <a href=\"/runs\">All runs</a></p>")


def _visible_folders(home: RunHome, ledger: Ledger | None, key: KeySpec | None) -> Iterator[Path]:
    owned = ledger.owned(key.name) if key is not None and ledger is not None else None
    for folder in home.run_folders():
        if key is None or (owned is not None and folder.name in owned):
            yield folder


def runs_list(home: RunHome, ledger: Ledger | None, key: KeySpec | None, query: dict[str, str]) -> web.Response:
    flow = query.get("flow") or None
    status = query.get("status") if query.get("status") in STATUSES else None
    runs: list[RunSummary] = []
    flows: set[str] = set()
    for summary in _visible_runs(home, ledger, key, flow, status):
        flows.add(summary.flow)
        if filter_runs([summary], flow, status) and len(runs) < PAGE_LIMIT:
            runs.append(summary)
    page = render_runs_page(runs, lambda run_id: f"/runs/{run_id}", flow=flow, status=status, flows=sorted(flows), form=True)
    return web.Response(text=page, content_type="text/html", headers=NO_STORE)


def _visible_runs(home: RunHome, ledger: Ledger | None, key: KeySpec | None, flow: str | None,
                  status: str | None) -> list[RunSummary]:
    """This machine's runs and (replicas sharing records) the other machines' finished ones, newest first."""
    local = [read_run(folder) for folder in _visible_folders(home, ledger, key)]
    if ledger is None or not ledger.shares_records:
        return local
    seen = {s.run_id for s in local}
    owned = ledger.owned(key.name) if key is not None else None
    shared = [RunSummary.model_validate_json(text) for text in ledger.recent_records(PAGE_LIMIT, flow, status)]
    others = [s for s in shared if s.run_id not in seen and (owned is None or s.run_id in owned)]
    return sorted(local + others, key=lambda s: -s.started)


def run_page(home: RunHome, ledger: Ledger | None, key: KeySpec | None, run_id: str) -> web.Response:
    if key is not None and (ledger is None or ledger.owner(run_id) != key.name):
        return _not_found(run_id)
    try:
        folder = home.find_run(run_id)
        recorded = read_recorded_run(folder) if folder.name == run_id else None  # a unique prefix finds a run in `baton view`, not here
    except UnknownRun:
        recorded = shared_record(ledger, run_id)
    if recorded is None:
        return _not_found(run_id)
    page = render_run_page(recorded, live=True, runs_href="/runs")
    return web.Response(text=page, content_type="text/html", headers=NO_STORE)
