"""`swarm report`: the self-contained HTML page and progress.png, checked in headless Chromium."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from coordinator.review.report import ReportError, build_report
from coordinator.review.report.tables import program_table
from tests.headless import NODE_COUNT_JS, NODE_XY_JS, Browser, find_chromium
from tests.synthetic import lineage_graph, make_swarm


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("swarm")
    sw = make_swarm(home, experiments=80, agents=4, hardware_classes=("h100", "a100"), seed=0)
    kinds = {r["run_status"] for r in sw.rows} | {r["decision"] for r in sw.rows}
    # the ledger this test needs: every kind of outcome, a merge, a suspect promotion, 2 classes
    assert {"crash", "timeout", "invalid", "merge", "promote", "discard"} <= kinds
    assert any(r["suspect"] and r["decision"] == "promote" for r in sw.rows)
    G = lineage_graph(sw)
    html = build_report(sw.rows, G, repo_path=sw.repo_path, swarm_home=home,
                        out_dir=home / "reports")
    return sw, G, html


def _data(html):
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                  html.read_text(), re.S)
    return json.loads(m.group(1))


def test_report_is_self_contained_with_png_tables_and_noise(built):
    sw, G, html = built
    text = html.read_text()
    # no external script, stylesheet or image (plotly.js itself holds link strings for its
    # logo; that nothing is fetched at view time is checked in the browser test)
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|<img[^>]*src=[\"']?(https?:)?//", text)
    assert "Plotly" in text and "id='program-table'" in text and "id='noise-table'" in text
    png = html.parent / "progress.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in text
    sigma = next(r["sigma"] for r in sw.rows if r["sigma"])
    assert f"{sigma:.5f}" in text
    for r in sw.rows:
        if r["run_status"] == "invalid":
            assert r["experiment_id"] in text  # the invalid-edits table lists every one


def test_report_data_distinguishes_every_kind_and_holds_real_diffs(built):
    sw, G, html = built
    data = _data(html)
    assert len(data["nodes"]) == G.number_of_nodes() == len(sw.trained_commits())
    nodes = {n["sha"]: n for n in data["nodes"]}
    by_status = {r["commit"]: r["run_status"] for r in sw.rows if r["kind"] == "experiment"
                 and r["commit"]}
    for sha, st in by_status.items():
        if st in ("crash", "timeout"):
            assert nodes[sha]["status"] == st
    merge = next(r for r in sw.rows if r["decision"] == "merge")
    m = nodes[merge["merge_commit"]]
    assert m["is_merge"] and len(m["diffs"]) == 2
    assert {d["first_parent"] for d in m["diffs"]} == {True, False}
    assert any(n["suspect"] for n in data["nodes"])
    assert {n["hardware_class"] for n in data["nodes"]} >= {"h100", "a100"}
    r = next(r for r in sw.rows if r["decision"] == "discard")
    real = subprocess.run(["git", "-C", str(sw.repo_path), "diff", r["parent"], r["commit"],
                           "--", "train.py"], capture_output=True, text=True, check=True).stdout
    diff = nodes[r["commit"]]["diffs"][0]["text"]
    added = [ln for ln in real.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert added and all(ln in diff.splitlines() for ln in added)
    assert r["experiment_id"] in nodes[r["commit"]]["log"]


def test_program_table_counts(built):
    sw, _, _ = built
    t = {row["program"]: row for row in program_table(sw.rows)}
    exps = [r for r in sw.rows if r["kind"] == "experiment"]
    assert t["all"]["experiments"] == len(exps)
    assert t["all"]["runs"] == sum(1 for r in sw.rows if r["run_status"] != "invalid")
    # a keep is an experiment whose decision moved best: the TSV's `keep`, one per move
    keeps = [r for r in sw.rows if r["status"] == "keep"]
    assert t["all"]["keeps"] == len(keeps) == len({r["best_after"] for r in keeps})
    assert t["all"]["merged"] == sum(1 for r in keeps if r["decision"] == "merge")
    assert sum(v["experiments"] for k, v in t.items() if k != "all") == len(exps)
    assert t["all"]["llm_cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in sw.rows))
    assert t["all"]["cost_per_keep"] == pytest.approx(t["all"]["llm_cost_usd"] / len(keeps))
    assert t["all"]["largest_step"] == pytest.approx(max(r["decision_delta"] for r in keeps))


def test_keeps_never_count_a_discard():
    """Issue 23: the table said 2 keeps where the TSV said 1: it counted a discard that beat
    its own parent. A keep is an experiment whose decision moved best."""
    base = dict(hardware_class="hw", kind="experiment", run_status="ok", program="p", agent="a0")
    rows = [dict(base, experiment_id="e1", commit="c1", decision="promote", best_after="c1",
                 best_before="c0", delta_best=0.02, delta_parent=0.02, status="keep"),
            dict(base, experiment_id="e2", commit="c2", decision="discard", delta_best=-0.01,
                 delta_parent=0.004, status="discard")]
    t = {row["program"]: row for row in program_table(rows)}
    assert t["all"]["keeps"] == 1 and t["all"]["discarded"] == 1


def test_report_rejects_empty_ledger_and_missing_repo(tmp_path, built):
    sw, G, _ = built
    with pytest.raises(ReportError, match="ledger is empty"):
        build_report([], G, repo_path=sw.repo_path, swarm_home=tmp_path, out_dir=tmp_path)
    with pytest.raises(ReportError, match="not a git repository"):
        build_report(sw.rows, G, repo_path=tmp_path / "nope", swarm_home=tmp_path,
                     out_dir=tmp_path)


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_report_in_headless_chromium_counts_nodes_and_shows_diff_on_click(built, tmp_path):
    sw, G, html = built
    # the DAG draws one node per trained commit (crashed and timed-out runs included; invalid
    # edits have no commit); the root baseline is itself a trained commit (its baseline runs)
    r = next(r for r in sw.rows if r["decision"] == "promote")
    real = subprocess.run(["git", "-C", str(sw.repo_path), "diff", r["parent"], r["commit"],
                           "--", "train.py"], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in real.splitlines() if ln.startswith("+") and not ln.startswith("+++"))
    with Browser() as b:
        b.open(html)
        assert b.eval(NODE_COUNT_JS) == len(sw.trained_commits())
        fetched = b.eval("performance.getEntriesByType('resource').map(e => e.name)"
                         ".filter(u => !u.startsWith('data:'))")
        assert fetched == [], f"the page fetched {fetched}"
        i = b.eval(f"window.__reportData.nodes.findIndex(n => n.sha === '{r['commit']}')")
        assert i >= 0
        x, y = b.eval(NODE_XY_JS % i)
        b.eval(f"window.scrollTo(0, {y} - 300)")
        x, y = b.eval(NODE_XY_JS % i)
        b.click(x, y)
        deadline = time.monotonic() + 10
        while b.eval("document.getElementById('panel').dataset.sha || ''") != r["commit"]:
            assert time.monotonic() < deadline, "clicking the node did not open its panel"
            time.sleep(0.05)
        panel = b.eval("document.getElementById('panel').innerText")
        assert line in panel
        assert r["experiment_id"] in panel
        shot = b.screenshot(tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


LABEL_BOXES_JS = """(function(){
  var gd = document.getElementById('dag'), fl = gd._fullLayout, r = gd.getBoundingClientRect(), out = [];
  gd.querySelectorAll('.scatterlayer .trace').forEach(function(g){
    var tr = g.__data__ && g.__data__[0] && g.__data__[0].trace;
    if (!tr || (tr.meta !== 'label' && tr.meta !== 'label-best') || tr.visible !== true) return;
    g.querySelectorAll('.textpoint').forEach(function(tp){
      var d = tp.__data__, b = tp.getBoundingClientRect();
      out.push([tr.meta, r.left + fl.xaxis._offset + fl.xaxis.l2p(d.x),
                r.top + fl.yaxis._offset + fl.yaxis.l2p(d.y), b.left, b.bottom]);
    });
  });
  return out;
})()"""


def test_dag_labels_leave_their_nodes_and_signs_readable(built):
    # The quick start's report drew each label from its node's centre: the marker hid the sign of
    # every delta to the right of a node ("+0.0202" read "0.0202") and the foot of best's labels.
    sw, G, html = built
    with Browser() as b:
        b.open(html)
        # zoomed to three generations: wide enough for every label (report/page.js fitLabels)
        b.eval("Plotly.relayout(document.getElementById('dag'), {'xaxis.range': [-0.5, 2.5]}).then(() => 1)")
        time.sleep(0.5)
        boxes = b.eval(LABEL_BOXES_JS)
    boxes = [x for x in boxes if x[3] or x[4]]   # drawn (the zoom leaves later generations off)
    best = [x for x in boxes if x[0] == "label-best"]
    right = [x for x in boxes if x[0] == "label"]
    assert best and right, boxes
    for _m, cx, cy, left, bottom in best:     # above a best-path node (14 px: 7 px radius)
        assert bottom <= cy - 7 + 1, (cx, cy, left, bottom)
    for _m, cx, cy, left, bottom in right:    # right of any other node (at most 12 px: 6 px radius)
        assert left >= cx + 4.5 - 0.5, (cx, cy, left, bottom)


def test_best_is_drawn_at_the_value_decisions_used_with_its_samples():
    from coordinator.review.report.plot import best_track
    rows = [dict(hardware_class="hw", kind="baseline", commit="c0", run_status="ok", val_bpb=v,
                 finished_at=t, decided_at=t, decision="sample", sigma=0.02)
            for t, v in ((1, 2.50), (2, 2.40), (3, 2.45))]
    rows += [dict(hardware_class="hw", kind="experiment", commit="c1", run_status="ok", val_bpb=2.30,
                  finished_at=4, decided_at=4, decision="promote", best_before="c0", best_after="c1",
                  mean=2.30, samples=1, samples_best=3, delta_best=0.15, sigma=0.02),
             # best's re-measure, then a result judged against best's fresh samples
             dict(hardware_class="hw", kind="baseline", commit="c1", run_status="ok", val_bpb=2.34,
                  finished_at=5, decided_at=5, decision="sample", sigma=0.02),
             dict(hardware_class="hw", kind="experiment", commit="c2", run_status="ok", val_bpb=2.40,
                  finished_at=6, decided_at=6, decision="discard", best_before="c1", mean=2.40,
                  samples_best=1, delta_best=-0.06, sigma=0.02)]
    track = best_track(rows, "hw")
    assert [(t, round(v, 6), n) for t, v, n, _ in track] == [(1, 2.45, 3), (4, 2.30, 1), (6, 2.34, 1), (6, 2.34, 1)]


def test_invalid_edits_link_their_transcript_and_backend_trouble_is_listed(tmp_path):
    home = tmp_path / "home"
    sw = make_swarm(home, experiments=80, agents=2, hardware_classes=("cpu-x-2t",), seed=0)
    bad = [r for r in sw.rows if r["run_status"] == "invalid"]
    assert bad
    t = home / "runs" / bad[0]["experiment_id"] / "proposal.json"
    t.parent.mkdir(parents=True, exist_ok=True)
    t.write_text("{}")
    (home / "logs").mkdir()
    (home / "logs" / "backend-agent-a.jsonl").write_text(
        json.dumps({"time": 1.0, "agent": "agent-a", "kind": "down", "reason": "connection refused"})
        + "\n" + json.dumps({"time": 2.0, "agent": "agent-a", "kind": "up", "reason": "back"}) + "\n")
    page = build_report(sw.rows, lineage_graph(sw), repo_path=sw.repo_path, swarm_home=home,
                        out_dir=home / "reports").read_text()
    assert f"<a href='../runs/{bad[0]['experiment_id']}/proposal.json'>proposal.json</a>" in page
    assert page.count("proposal.json</a>") == 1          # only where a transcript exists
    table = page[page.index("id='backend-table'"):]
    assert "<td>agent-a</td><td>down</td><td>1</td>" in table and "connection refused" in table
    assert "GPU-hours" not in page and "device-hours" in page and "cpu-x-2t (CPU)" in page


def test_the_allocation_plot_runs_to_the_swarms_end_in_the_progress_plots_unit():
    # The quick start (2 agents, 7.3 minutes, no reassignment): the plot ended at the second agent's
    # first record, 0.00016 hours in, with `architecture` drawn at 0 agents all along.
    from coordinator.review.report.allocation import timeline_steps

    t0 = 1_800_000_000.0
    timeline = [(t0, "a0", "baseline"), (t0 + 0.56, "a1", "architecture")]
    unit, xs, ys = timeline_steps(timeline, t0 + 7.3 * 60)
    assert unit == "minutes" and xs[0] == 0.0 and xs[-1] == pytest.approx(7.3)
    assert ys == {"architecture": [0, 1, 1], "baseline": [1, 1, 1]}
    moved = timeline + [(t0 + 3 * 3600, "a0", "architecture")]
    unit, xs, ys = timeline_steps(moved, t0 + 5 * 3600)
    assert unit == "hours" and xs == pytest.approx([0.0, 0.56 / 3600, 3.0, 5.0])
    assert ys == {"architecture": [0, 1, 2, 2], "baseline": [1, 1, 0, 0]}
