"""`swarm report`: one self-contained HTML page (plotly.js, data and the progress PNG inlined,
nothing fetched at view time): what happened in words, the progress plot, the lineage DAG
(labelled, readable without clicking), the steps of best, per-program table and noise. Every
figure comes from coordinator/state/figures.py; the page's data embeds them (`figures`)."""
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

from coordinator.review.report.allocation import allocation_html
from coordinator.review.report.gitdata import log_tail, train_py_diffs
from coordinator.review.report.export import OUTCOME_COLORS
from coordinator.review.report.layout import layered_positions
from coordinator.review.report.plot import program_colors, write_progress_png
from coordinator.review.report.search import search_html
from coordinator.review.report.tables import program_table, run_seconds
from coordinator.run.live import best_line, counts_line
from coordinator.state import figures
from coordinator.state.figures import record_status
from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

# record fields shown in the click panel, in this order (the rest is noise for a reviewer)
PANEL_FIELDS = ("experiment_id", "kind", "agent", "program", "backend", "hardware_class", "seed",
                "run_status", "reason", "decision", "decision_reason", "val_bpb",
                "confirm_bpb", "parent_val_bpb", "mean", "samples", "samples_best", "best_mean", "delta_best",
                "delta_parent", "margin", "sigma", "dof", "suspect", "contended", "contention",
                "best_before", "best_after", "merge_commit", "lines_added", "lines_removed",
                "fix_attempts", "training_seconds", "total_seconds", "memory_gb", "steps", "tokens",
                "prompt_tokens", "completion_tokens", "cost_usd", "started_at", "finished_at",
                "decided_at", "job_id")
TIME_FIELDS = ("started_at", "finished_at", "decided_at")   # the page shows them in local time
NODE_FIELDS = ("status", "outcome", "decision", "agent", "ran_by", "program", "hardware_class",
               "description", "experiment_id", "kind", "val_bpb", "samples", "value_source", "delta",
               "delta_parent", "decision_samples", "decision_samples_best", "step", "generation",
               "suspect", "contended", "is_merge", "on_best", "best_path", "lines_added",
               "lines_removed", "started_at", "finished_at")
# Labels on every node up to this many (above, only best's path: the page stays light).
LABEL_ALL_MAX = 2000


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


def _record(r: dict) -> dict:
    """A record for the click panel: no empty fields, and no `samples 0` where the decision
    did not count them (a discard records its best's samples, not the candidate's)."""
    out = {k: _clean(r.get(k)) for k in PANEL_FIELDS if k in r}
    for k in ("samples", "samples_best"):
        if not out.get(k):
            out.pop(k, None)
    return out


def _page_data(rows: list[dict], G: nx.DiGraph, repo_path: Path, swarm_home: Path,
               colors: dict[str, str], fig: figures.Figures) -> dict:
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
                    records=[_record(r) for r in recs],
                    diffs=[{"parent": p, "first_parent": bool(G.edges[p, n].get("first_parent", True)),
                            "text": diffs.get((p, n), "")} for p in G.predecessors(n)],
                    log=log_tail(swarm_home, main) if main else "")
        nodes.append(node)
    edges = [[index[u], index[v], bool(d.get("first_parent", True))] for u, v, d in G.edges(data=True)]
    return {"nodes": nodes, "edges": edges, "colors": colors, "outcome_colors": OUTCOME_COLORS,
            "time_fields": list(TIME_FIELDS), "label_all": len(nodes) <= LABEL_ALL_MAX,
            "figures": fig.model_dump()}


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _stats_html(rows: list[dict], fig: figures.Figures) -> str:
    # "device": a CPU swarm's hours are CPU-hours; the classes below say which devices
    head = ("program", "experiments", "runs", "keeps (moved best)", "of which merged", "carried",
            "pending", "discarded", "never judged", "failed", "invalid", "largest step Δ", "device-hours",
            "LLM cost $", "device-h / keep", "$ / keep")
    out = ["<table class='stats' id='program-table'><tr>"
           + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for t in program_table(rows, fig):
        cells = (html.escape(t["program"]), t["experiments"], t["runs"], t["keeps"], t["merged"],
                 t["carried"], t["pending"], t["discarded"], t["unjudged"], t["failed"], t["invalid"],
                 _fmt(t["largest_step"], "+.4f"), _fmt(t["gpu_hours"], ".2f"),
                 _fmt(t["llm_cost_usd"], ".2f"), _fmt(t["gpu_hours_per_keep"], ".2f"),
                 _fmt(t["cost_per_keep"], ".3f"))
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    hours: dict[str, float] = {}
    for r in rows:
        hours[r.get("hardware_class") or "?"] = hours.get(r.get("hardware_class") or "?", 0.0) + run_seconds(r) / 3600
    out.append("<p class='note'>experiments: the agents' own ideas (an invalid edit too, never "
               "trained); runs: every training, the coordinator's jobs (baseline, confirmation, "
               "verification) included; a keep: an experiment whose decision moved best. Δ: + = "
               "better. device-hours by hardware class: " + ", ".join(
                   f"{html.escape(hw)} ({'GPU' if 'cpu' not in hw.lower() else 'CPU'}) {h:.2f}"
                   for hw, h in sorted(hours.items())) + "</p>")
    return "".join(out)


def _noise_html(fig: figures.Figures, sigma, margin) -> str:
    items = []
    for hw, b in sorted(fig.best.items()):
        s = sigma if sigma is not None else b.sigma
        m = margin if margin is not None else b.margin
        items.append(f"<tr><td>{html.escape(hw)}</td><td>{_fmt(b.val_bpb, '.4f')}</td>"
                     f"<td>{b.samples}</td><td>{_fmt(s, '.5f')}</td><td>{_fmt(b.dof, 'd')}</td>"
                     f"<td>{_fmt(m, '.5f')}</td></tr>")
    return ("<table class='stats' id='noise-table'><tr><th>hardware class</th><th>best val_bpb "
            "(the value decisions use)</th><th>its samples</th><th>sigma (val_bpb noise)</th>"
            "<th>degrees of freedom</th><th>promotion margin (last decision)</th></tr>"
            + "".join(items) + "</table>")


def _steps_html(fig: figures.Figures) -> str:
    """Every move of best, per class: what changed, by how much, verified how."""
    out = ["<table class='stats' id='steps-table'><tr><th>class</th><th>step</th><th>commit</th>"
           "<th>Δ vs best before (+ = better)</th><th>decision</th><th>agent</th><th>program</th>"
           "<th>what changed</th><th>lines</th><th>verified</th><th>flags</th></tr>"]
    n = 0
    for hw, b in sorted(fig.best.items()):
        for s in b.steps:
            n += 1
            flags = " ".join(f for f, on in (("SUSPECT", s.suspect), ("contended", s.contended)) if on)
            cells = (hw, s.n, s.commit[:10], _fmt(s.delta, "+.4f"), s.decision, s.agent or "?",
                     s.program or "?", s.description, f"+{s.lines_added}/-{s.lines_removed}",
                     s.verified, flags)
            out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    if not n:
        return "<p class='note' id='steps-table'>best has not moved yet</p>"
    return "".join(out) + "</table>"


def _contended_html(rows: list[dict]) -> str:
    bad = [r for r in rows if r.get("contended")]
    if not bad:
        return ("<p class='note' id='contended'>no contended run (none trained on a machine much "
                "slower than its norm)</p>")
    out = ["<table class='stats' id='contended'><tr><th>record</th><th>kind</th><th>agent</th>"
           "<th>contention</th><th>val_bpb</th><th>decision</th></tr>"]
    for r in bad:
        cells = (r.get("experiment_id"), r.get("kind"), r.get("agent"), _fmt(r.get("contention"), ".2f"),
                 _fmt(r.get("val_bpb"), ".4f"), r.get("decision"))
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c or ''))}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def _headline_html(fig: figures.Figures) -> str:
    """The figures in the words `swarm status` uses."""
    data = {"experiments": fig.counts.experiments, "runs": fig.counts.runs, "jobs": fig.counts.jobs,
            "best_moves": fig.best_moves, "experiments_per_hour": fig.rates.experiments_per_hour}
    lines = [counts_line(data)] + [best_line(hw, b.model_dump()) for hw, b in sorted(fig.best.items())]
    outs = ", ".join(f"{n} {k}" for k, n in fig.counts.outcomes.items())
    if outs:
        lines.append(f"experiments by outcome: {outs}")
    return "<ul id='headline'>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def _lost_html(rows, G, lost: list[dict] | None = None) -> str:
    from coordinator.decide.audit import lost_winners_from_rows

    if lost is None:
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
                 studies: list | None = None, warning: str | None = None,
                 fig: figures.Figures | None = None, lost: list[dict] | None = None,
                 allocation: dict | None = None) -> Path:
    """Write out_dir/report.html (self-contained) and out_dir/progress.png; return the HTML path.

    DAG nodes are the nodes of G (one per trained commit); invalid edits, which have no
    commit, are listed in their own table. sigma/margin, when given, override the ledger's.
    `studies` (optuna_study.StudyView, from search.load_studies) add the search section.
    `allocation`: report/allocation.py's load_allocation (its section), None for none.
    `fig`: figures.compute over rows (with the published best), computed when None; `lost`:
    the lost-winner audit (from the ledger and git), computed from G when None.
    """
    if not rows:
        raise ReportError("the ledger is empty: nothing to report")
    repo_path, swarm_home, out_dir = Path(repo_path), Path(swarm_home), Path(out_dir)
    if not (repo_path / "HEAD").exists() and not (repo_path / ".git").exists():
        raise ReportError(f"not a git repository: {repo_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fig = fig or figures.compute(rows)
    colors = program_colors([r.get("program") or "?" for r in rows]
                            + [G.nodes[n].get("program") or "?" for n in G])
    png = write_progress_png(rows, out_dir / "progress.png", colors, fig)
    data = _page_data(rows, G, repo_path, swarm_home, colors, fig)
    png_b64 = base64.b64encode(png.read_bytes()).decode()
    # "</" inside a script block would end it early; JSON allows the escaped form
    data_json = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autoresearch-swarm report</title>
<style>{_asset("page.css")}</style></head>
<body>
<h1>autoresearch-swarm: morning review</h1>
{_warning_html(warning)}{_headline_html(fig)}
<p class="summary"><span>records: <b>{fig.counts.records}</b></span>
<span>trained commits: <b>{G.number_of_nodes()}</b></span>
<span>built {time.strftime("%Y-%m-%d %H:%M:%S %Z")}</span></p>
<h2>Progress</h2>
<img id="progress" alt="progress plot" src="data:image/png;base64,{png_b64}">
<h2>Steps of best</h2>
{_steps_html(fig)}
<h2>Lineage</h2>
<p class="note">One node per trained commit, labelled with its val_bpb (the value decisions use)
and its Δ (+ = better: a step of best against the best before it; any other result against
best when it was judged). Colour: what became of it; ◆ a merge commit, × crash, ▼ timeout;
the thick gold line is best's path; a red ring marks a suspect move, a purple ring a contended
run. x: the generation (commits from the root). Click a node for its records, its train.py
diff against each parent and its log tail.</p>
<div id="dagwrap"><div id="dag"></div><div id="panel">Click a node.</div></div>
<h2>Programs</h2>
{_stats_html(rows, fig)}
{allocation_html(allocation, colors)}
<h2>Noise and promotion margin</h2>
{_noise_html(fig, sigma, margin)}
<h2>Contended runs</h2>
{_contended_html(rows)}
<h2>Winners not on best</h2>
<p class="note">Results that beat best by more than the margin and are not on best, with why
(a verification or confirmation still pending, or put onto best and did not stack).</p>
{_lost_html(rows, G, lost)}
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
