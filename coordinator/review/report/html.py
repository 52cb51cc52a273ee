"""`swarm report`: one self-contained HTML page (plotly.js, data and the progress PNG inlined,
nothing fetched at view time) with the interactive lineage DAG, per-program table and noise."""
from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import time
from importlib import resources
from pathlib import Path

import networkx as nx

from coordinator.review.report.gitdata import log_tail, train_py_diffs
from coordinator.review.report.layout import layered_positions
from coordinator.review.report.plot import program_colors, write_progress_png
from coordinator.review.report.search import search_html
from coordinator.review.report.tables import (noise_by_class, program_table, record_status,
                                       run_seconds, status_counts)
from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

# record fields shown in the click panel, in this order (the rest is noise for a reviewer)
PANEL_FIELDS = ("experiment_id", "kind", "agent", "program", "backend", "hardware_class", "seed",
                "run_status", "status", "reason", "decision", "decision_reason", "val_bpb",
                "confirm_bpb", "parent_val_bpb", "delta_best", "delta_parent", "margin", "sigma", "dof",
                "samples", "suspect", "best_before", "best_after", "merge_commit", "lines_added",
                "lines_removed", "fix_attempts",
                "training_seconds", "total_seconds", "memory_gb", "peak_memory_mb", "steps", "prompt_tokens",
                "completion_tokens", "cost_usd", "started_at", "finished_at", "job_id")
NODE_FIELDS = ("status", "decision", "agent", "program", "hardware_class", "description",
               "experiment_id", "kind", "val_bpb", "delta", "samples", "suspect", "is_merge",
               "on_best", "lines_added", "lines_removed")


class ReportError(ValueError):
    """The report cannot be built from what it was given."""


def _clean(v):
    """JSON-safe scalar: NaN becomes null, numpy and other scalars become plain Python."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if hasattr(v, "item"):
        return _clean(v.item())
    return str(v)


def _asset(name: str) -> str:
    return resources.files("coordinator.review.report").joinpath(name).read_text()


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ReportError("the HTML report needs the 'plotly' package (pip install plotly)") from e
    return get_plotlyjs()


def _page_data(rows: list[dict], G: nx.DiGraph, repo_path: Path, swarm_home: Path,
               colors: dict[str, str]) -> dict:
    pos = layered_positions(G)
    order = sorted(G.nodes, key=lambda n: (pos[n][0], -pos[n][1]))
    index = {n: i for i, n in enumerate(order)}
    pairs = [(p, n) for n in order for p in G.predecessors(n)]
    diffs = train_py_diffs(repo_path, pairs)
    by_commit: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("commit"):
            by_commit.setdefault(r["commit"], []).append(r)
    nodes = []
    for n in order:
        a = G.nodes[n]
        recs = sorted(by_commit.get(n, []), key=lambda r: r.get("finished_at") or 0)
        main = next((r for r in recs if r.get("experiment_id") == a.get("experiment_id")),
                    recs[0] if recs else {})
        node = {k: _clean(a.get(k)) for k in NODE_FIELDS}
        node.update(sha=n, x=pos[n][0], y=pos[n][1],
                    program=a.get("program") or "?",
                    records=[{k: _clean(r.get(k)) for k in PANEL_FIELDS if k in r} for r in recs],
                    diffs=[{"parent": p, "first_parent": bool(G.edges[p, n].get("first_parent", True)),
                            "text": diffs.get((p, n), "")} for p in G.predecessors(n)],
                    log=log_tail(swarm_home, main) if main else "")
        nodes.append(node)
    edges = [[index[u], index[v], bool(d.get("first_parent", True))] for u, v, d in G.edges(data=True)]
    return {"nodes": nodes, "edges": edges, "colors": colors}


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _stats_html(rows: list[dict]) -> str:
    # "device": a CPU swarm's hours are CPU-hours; the classes below say which devices
    head = ("program", "experiments", "keeps", "promotions", "best Δ", "device-hours", "LLM cost $",
            "device-h / accept", "$ / accept")
    out = ["<table class='stats' id='program-table'><tr>"
           + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for t in program_table(rows):
        cells = (html.escape(t["program"]), t["experiments"], t["keeps"], t["promotions"],
                 _fmt(t["best_delta"], ".4f"), _fmt(t["gpu_hours"], ".2f"),
                 _fmt(t["llm_cost_usd"], ".2f"), _fmt(t["gpu_hours_per_accept"], ".2f"),
                 _fmt(t["cost_per_accept"], ".3f"))
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    hours: dict[str, float] = {}
    for r in rows:
        hours[r.get("hardware_class") or "?"] = hours.get(r.get("hardware_class") or "?", 0.0) + run_seconds(r) / 3600
    out.append("<p class='note'>device-hours by hardware class: " + ", ".join(
        f"{html.escape(hw)} ({'GPU' if 'cpu' not in hw.lower() else 'CPU'}) {h:.2f}"
        for hw, h in sorted(hours.items())) + "</p>")
    return "".join(out)


def _noise_html(rows, sigma, margin) -> str:
    per = noise_by_class(rows)
    items = []
    for hw, d in sorted(per.items()):
        s = sigma if sigma is not None else d["sigma"]
        m = margin if margin is not None else d["margin"]
        dof = None if d.get("dof") is None else int(d["dof"])
        items.append(f"<tr><td>{html.escape(hw)}</td><td>{_fmt(s, '.5f')}</td>"
                     f"<td>{_fmt(dof, 'd')}</td><td>{_fmt(m, '.5f')}</td></tr>")
    return ("<table class='stats' id='noise-table'><tr><th>hardware class</th><th>sigma "
            "(val_bpb noise)</th><th>degrees of freedom</th><th>promotion margin (last decision)"
            "</th></tr>" + "".join(items) + "</table>")


def _lost_html(rows, G) -> str:
    from coordinator.decide.audit import lost_winners_from_rows

    lost = lost_winners_from_rows(rows, lambda c: bool(c in G and G.nodes[c].get("on_best")))
    if not lost:
        return "<p class='note' id='lost-winners'>none: every result that beat best by the margin is on best</p>"
    out = ["<table class='stats' id='lost-winners'><tr><th>experiment</th><th>agent</th><th>idea</th>"
           "<th>Δ vs best (+ = better)</th><th>margin</th><th>why not on best</th></tr>"]
    for r in lost:
        cells = (r["experiment_id"], r["agent"], r["description"], _fmt(r["delta"], "+.4f"),
                 _fmt(r["margin"], ".4f"), r["why"] if r["why"] != "LOST" else "LOST (no recorded reason)")
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c or ''))}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def _invalid_html(rows, swarm_home: Path, out_dir: Path) -> str:
    bad = [r for r in rows if record_status(r) == "invalid"]
    if not bad:
        return "<p class='note'>no invalid edits</p>"
    out = ["<table class='stats' id='invalid-table'><tr><th>experiment</th><th>agent</th>"
           "<th>program</th><th>hardware class</th><th>description</th><th>reason</th>"
           "<th>transcript</th></tr>"]
    for r in bad:
        cells = [html.escape(str(r.get(k) or "")) for k in ("experiment_id", "agent", "program",
                                                            "hardware_class", "description", "reason")]
        # what the model was asked and answered (agents write it; older swarms have none)
        t = swarm_home / "runs" / str(r.get("experiment_id")) / "proposal.json"
        href = html.escape(os.path.relpath(t, out_dir)) if t.is_file() else None
        cells.append(f"<a href='{href}'>proposal.json</a>" if href else "–")
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def _warning_html(warning: str | None) -> str:
    if not warning:
        return ""
    return ('<p class="warning" id="unsafe-warning" style="color:#fff;background:#b00020;padding:8px;'
            f'font-weight:bold">{html.escape(warning)}</p>\n')


def _backend_html(swarm_home: Path) -> str:
    """The backends' trouble, which is not in the ledger: no answer is not an experiment."""
    from agents.transcript import read_events

    events = read_events(swarm_home)
    if not events:
        return "<p class='note'>no backend trouble (no outage, refusal or abandoned call)</p>"
    by: dict[tuple[str, str], list[dict]] = {}
    for e in events:
        by.setdefault((str(e.get("agent")), str(e.get("kind"))), []).append(e)
    out = ["<table class='stats' id='backend-table'><tr><th>agent</th><th>event</th><th>count</th>"
           "<th>first</th><th>last</th><th>last reason</th></tr>"]
    for (agent, kind), es in sorted(by.items()):
        when = [time.strftime("%H:%M:%S", time.localtime(x.get("time") or 0)) for x in (es[0], es[-1])]
        cells = [agent, kind, str(len(es)), *when, str(es[-1].get("reason") or "")]
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table><p class='note'>from logs/backend-&lt;agent&gt;.jsonl</p>"


def build_report(rows: list[dict], G: nx.DiGraph, *, repo_path: Path, swarm_home: Path,
                 out_dir: Path, sigma: float | None = None, margin: float | None = None,
                 studies: list | None = None, warning: str | None = None) -> Path:
    """Write out_dir/report.html (self-contained) and out_dir/progress.png; return the HTML path.

    DAG nodes are the nodes of G (one per trained commit); invalid edits, which have no
    commit, are listed in their own table. sigma/margin, when given, override the ledger's.
    `studies` (optuna_study.StudyView, from search.load_studies) add the search section.
    """
    if not rows:
        raise ReportError("the ledger is empty: nothing to report")
    repo_path, swarm_home, out_dir = Path(repo_path), Path(swarm_home), Path(out_dir)
    if not (repo_path / "HEAD").exists() and not (repo_path / ".git").exists():
        raise ReportError(f"not a git repository: {repo_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    colors = program_colors([r.get("program") or "?" for r in rows]
                            + [G.nodes[n].get("program") or "?" for n in G])
    png = write_progress_png(rows, out_dir / "progress.png", colors)
    data = _page_data(rows, G, repo_path, swarm_home, colors)
    counts = status_counts(rows)
    summary = "".join(f"<span>{html.escape(k)}: <b>{v}</b></span>" for k, v in sorted(counts.items()))
    png_b64 = base64.b64encode(png.read_bytes()).decode()
    # "</" inside a script block would end it early; JSON allows the escaped form
    data_json = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autoresearch-swarm report</title>
<style>{_asset("page.css")}</style></head>
<body>
<h1>autoresearch-swarm: morning review</h1>
{_warning_html(warning)}<p class="summary"><span>records: <b>{len(rows)}</b></span>{summary}
<span>trained commits: <b>{G.number_of_nodes()}</b></span>
<span>built {time.strftime("%Y-%m-%d %H:%M:%S")}</span></p>
<h2>Progress</h2>
<img id="progress" alt="progress plot" src="data:image/png;base64,{png_b64}">
<h2>Lineage</h2>
<p class="note">One node per trained commit, colored by program. ● ok, × crash, ▼ timeout,
◆ merge commit; thick outline: on best; red ring: suspect promotion; red dashes: merged-in
parent. Click a node for its record, its train.py diff against each parent and its log tail.</p>
<div id="dagwrap"><div id="dag"></div><div id="panel">Click a node.</div></div>
<h2>Programs</h2>
{_stats_html(rows)}
<h2>Noise and promotion margin</h2>
{_noise_html(rows, sigma, margin)}
<h2>Winners not on best</h2>
<p class="note">Results that beat best by more than the margin and are not on best, with why
(a verification or confirmation still pending, or put onto best and did not stack).</p>
{_lost_html(rows, G)}
<h2>Invalid edits (not trained)</h2>
{_invalid_html(rows, swarm_home, out_dir)}
<h2>Backend outages and refusals (not experiments)</h2>
{_backend_html(swarm_home)}
{search_html(studies or [])}
<script type="application/json" id="report-data">{data_json}</script>
<script>{_plotly_js()}</script>
<script>{_asset("page.js")}</script>
</body></html>
"""
    path = atomic_write(out_dir / "report.html", page)
    log.info("report: %d records, %d nodes, %.2fs -> %s", len(rows), G.number_of_nodes(),
             time.perf_counter() - t0, path)
    return path
