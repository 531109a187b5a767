"""The run viewer's style sheet and script, inlined into every page (a page fetches nothing when viewed).

The script only shows and hides what the page already holds: which node's details are
open, how the nodes are coloured, and (on `baton serve`, for a run in flight) swapping in
the page's newer version every second and a half until the run has ended.
"""

from __future__ import annotations

CSS = """
:root { --ok:#2e7d32; --failed:#c62828; --skipped:#9e9e9e; --crit:#ef6c00; --ink:#222; --muted:#666; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); margin: 0; background: #fafafa; }
header { padding: 12px 20px; background: #fff; border-bottom: 1px solid #ddd; }
header h1 { font-size: 18px; margin: 0 0 4px; }
header .facts span { margin-right: 16px; color: var(--muted); }
header .facts b { color: var(--ink); font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; background: var(--muted); }
.badge.ok { background: var(--ok); } .badge.failed, .badge.budget_exhausted, .badge.interrupted { background: var(--failed); }
.badge.running { background: #1565c0; }
.error { color: var(--failed); margin: 6px 0 0; white-space: pre-wrap; }
main { display: flex; gap: 16px; padding: 16px 20px; align-items: flex-start; }
#graph { flex: 1 1 auto; overflow: auto; background: #fff; border: 1px solid #ddd; border-radius: 6px; max-height: 80vh; }
#details { flex: 0 0 500px; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 12px 14px; max-height: 80vh; overflow: auto; }
#graph { min-width: 0; }
@media (max-width: 900px) {  /* a phone: the graph above the details, each the page's width, the graph scrolling inside */
  main { flex-direction: column; align-items: stretch; padding: 10px; }
  #graph, #details { flex: 0 0 auto; width: 100%; box-sizing: border-box; }
  #graph { max-height: 60vh; }
  #details { max-height: none; }
}
.toolbar { padding: 8px 20px 0; color: var(--muted); }
.toolbar label { margin-right: 12px; cursor: pointer; }
.legend span { display: inline-block; margin-right: 10px; font-size: 12px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 3px; vertical-align: -2px; margin-right: 4px; border: 1px solid #888; }
svg text { font: 12px system-ui, sans-serif; fill: var(--ink); }
svg .node { cursor: pointer; }
svg .node rect.box { stroke-width: 1.5; rx: 6; }
svg .node.selected rect.box { stroke-width: 3.5; stroke: #0d47a1 !important; }
svg .node.critical rect.box { stroke: var(--crit); stroke-width: 3; }
svg .node .name { font-weight: 700; font-size: 13px; }
svg .node .kind { fill: var(--muted); font-size: 11px; }
svg .node .sub { fill: #444; }
svg .node .bad { fill: var(--failed); }
svg .edge { fill: none; stroke: #90a4ae; stroke-width: 1.5; }
svg .edge.label, svg .edge.rule { stroke: #7e57c2; stroke-dasharray: 5 3; }
svg .edge.guard { stroke: #bdbdbd; stroke-dasharray: 2 3; }
svg .edge.branch.skipped { stroke: #cfcfcf; stroke-dasharray: 2 4; }
svg .edge.critical { stroke: var(--crit); stroke-width: 3; }
svg .edge-note { font-size: 10px; fill: #7e57c2; }
.detail { display: none; } .detail.shown { display: block; }
.detail h2 { font-size: 16px; margin: 0 0 6px; }
.detail h3 { font-size: 13px; margin: 14px 0 4px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.detail .why { margin: 2px 0; }
pre { white-space: pre-wrap; word-break: break-word; background: #f5f5f5; border: 1px solid #e0e0e0; border-radius: 4px; padding: 6px 8px;
      font: 12px/1.35 ui-monospace, SFMono-Regular, Menlo, monospace; max-height: 320px; overflow: auto; margin: 4px 0; }
details { margin: 4px 0; } summary { cursor: pointer; }
table { border-collapse: collapse; width: 100%; font-size: 11.5px; }
.nowrap { white-space: nowrap; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eee; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fault td, tr.rejected td, tr.refused td { color: var(--failed); }
#timeline { margin: 0 20px 20px; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; overflow-x: auto; }
#timeline h2, #output h2 { font-size: 15px; margin: 0 0 6px; }
#timeline .row { fill: transparent; } #timeline .row.critical { fill: #fff3e0; }
#timeline .bar { stroke: #0003; } #timeline text { font-size: 11px; }
#output { margin: 0 20px 20px; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; }
.hint { color: var(--muted); font-size: 12px; }
table.runs { background: #fff; margin: 16px 20px; width: calc(100% - 40px); font-size: 13px; }
table.runs td, table.runs th { padding: 6px 8px; }
form.filter { padding: 10px 20px 0; }
"""

SCRIPT = """
(function () {
  function select(name) {
    document.querySelectorAll('.node.selected').forEach(function (n) { n.classList.remove('selected'); });
    document.querySelectorAll('.detail.shown').forEach(function (d) { d.classList.remove('shown'); });
    var node = document.querySelector('.node[data-step="' + CSS.escape(name) + '"]');
    var detail = document.getElementById('detail-' + name);
    if (!node || !detail) { return false; }
    node.classList.add('selected');
    detail.classList.add('shown');
    return true;
  }
  function colour(mode) {
    document.querySelectorAll('.node rect.box').forEach(function (r) {
      var fill = r.getAttribute('data-fill-' + mode);
      if (fill) { r.setAttribute('fill', fill); }
    });
    document.querySelectorAll('.legend').forEach(function (l) { l.hidden = l.getAttribute('data-mode') !== mode; });
  }
  function currentMode() {
    var checked = document.querySelector('input[name=colour]:checked');
    return checked ? checked.value : 'status';
  }
  function wire() {
    document.querySelectorAll('.node').forEach(function (n) {
      n.addEventListener('click', function () {
        var name = n.getAttribute('data-step');
        if (select(name)) { history.replaceState(null, '', '#' + encodeURIComponent(name)); }
      });
    });
    document.querySelectorAll('input[name=colour]').forEach(function (i) {
      i.addEventListener('change', function () { colour(currentMode()); });
    });
  }
  function restore() {
    var wanted = decodeURIComponent(location.hash.slice(1));
    if (!(wanted && select(wanted))) { select(document.body.getAttribute('data-first') || ''); }
    colour(currentMode());
  }
  function poll() {
    if (document.body.getAttribute('data-live') !== '1') { return; }
    setTimeout(function () {
      fetch(location.pathname + location.search, { cache: 'no-store', credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (text) {
          var fresh = new DOMParser().parseFromString(text, 'text/html');
          var mode = currentMode();
          document.getElementById('run').innerHTML = fresh.getElementById('run').innerHTML;
          document.body.setAttribute('data-live', fresh.body.getAttribute('data-live') || '0');
          document.body.setAttribute('data-status', fresh.body.getAttribute('data-status') || '');
          var radio = document.querySelector('input[name=colour][value=' + mode + ']');
          if (radio) { radio.checked = true; }
          wire(); restore(); poll();
        })
        .catch(function () { poll(); });
    }, 1500);
  }
  wire(); restore(); poll();
})();
"""
