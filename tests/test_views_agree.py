"""One truth in every view (issue 23): `swarm status --json`, `swarm lineage --format json`,
`swarm export --format tsv --output -` and the report's embedded data show the same best value
(the coordinator's own, with its samples), the same experiment and run counts and the same
delta for each step of best, on a ledger the real Coordinator wrote (real redis and git)."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

from coordinator.cli import main
from tests.scripted_swarm import HW, scripted_swarm


@pytest.fixture
def swarm(tmp_path, redis_url):
    return scripted_swarm(tmp_path / "home", redis_url), redis_url


def _cli(capsys, *args) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def views(home, url, capsys, tmp_path) -> dict:
    """What each view says, parsed."""
    at = ["--swarm-home", str(home.root), "--redis-url", url]
    status = json.loads(_cli(capsys, "status", "--json", *at))
    lineage = json.loads(_cli(capsys, "lineage", "--format", "json", "--all", *at))
    tsv = list(csv.DictReader(io.StringIO(_cli(capsys, "export", "--format", "tsv", "--output", "-", *at)),
                              delimiter="\t"))
    _cli(capsys, "report", "--output", str(tmp_path / "report"), *at)
    page = (tmp_path / "report" / "report.html").read_text()
    report = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                                  page, re.S).group(1))
    return {"status": status, "lineage": lineage, "tsv": tsv, "report": report, "page": page}


def test_status_lineage_export_and_report_agree_with_the_coordinator(swarm, tmp_path, capsys):
    s, url = swarm
    coord = s.coord.status()["classes"][HW]            # the coordinator's own figures
    rows = s.coord.ledger.rows()
    v = views(s.home, url, capsys, tmp_path)
    best = coord["best"]

    # best's value: the one decisions use, and how many samples it rests on
    st = v["status"]["best"][HW]
    assert st["commit"] == best
    assert st["val_bpb"] == pytest.approx(coord["val_bpb"], abs=1e-12) and st["samples"] == coord["samples"]
    # ... which is not the mean of every sample of that commit (the runs that made it best
    # were selected for being low: best's re-measures alone are its reference)
    every = [r["val_bpb"] for r in rows if r["commit"] == best and r["run_status"] == "ok"]
    assert len(every) > coord["samples"]
    nodes = {n["id"]: n for n in v["lineage"]["nodes"]}
    assert nodes[best]["val_bpb"] == pytest.approx(coord["val_bpb"], abs=1e-12)
    assert nodes[best]["samples"] == coord["samples"]
    assert v["lineage"]["graph"]["summary"]["best"][HW]["val_bpb"] == pytest.approx(coord["val_bpb"], abs=1e-12)
    tsv_best = [r for r in v["tsv"] if r["commit"] == best]
    assert tsv_best and all(float(r["commit_val_bpb"]) == pytest.approx(coord["val_bpb"], abs=1e-6)
                            and int(r["commit_samples"]) == coord["samples"] for r in tsv_best)
    rep = v["report"]["figures"]["best"][HW]
    assert rep["val_bpb"] == pytest.approx(coord["val_bpb"], abs=1e-12) and rep["samples"] == coord["samples"]
    assert next(n for n in v["report"]["nodes"] if n["sha"] == best)["val_bpb"] == pytest.approx(coord["val_bpb"])

    # counts: experiments (the agents' ideas, invalid ones too) and runs (what trained)
    exps = sum(1 for r in v["tsv"] if r["kind"] == "experiment")
    runs = sum(1 for r in v["tsv"] if r["run_status"] != "invalid")
    assert exps == 8 and runs == len(rows) - 1
    assert (v["status"]["experiments"], v["status"]["runs"]) == (exps, runs)
    assert (v["lineage"]["graph"]["summary"]["experiments"], v["lineage"]["graph"]["summary"]["runs"]) == (exps, runs)
    assert (v["report"]["figures"]["counts"]["experiments"], v["report"]["figures"]["counts"]["runs"]) == (exps, runs)
    assert f"{exps} experiments, {runs} runs" in v["page"]

    # each step of best: the delta of the decision that made it (+ = better), everywhere
    moves = sorted((d for d in s.coord.decisions.values() if d.best_after), key=lambda d: d.decided_at)
    want = [d.delta for d in moves]
    assert len(want) == 3
    assert [x["delta"] for x in st["steps"]] == pytest.approx(want)
    on_steps = sorted((n for n in v["lineage"]["nodes"] if n.get("step")), key=lambda n: n["step"])
    assert [n["id"] for n in on_steps] == [d.best_after for d in moves]
    assert [n["delta"] for n in on_steps] == pytest.approx(want)
    tsv_steps = sorted((r for r in v["tsv"] if r["best_step"]), key=lambda r: int(r["best_step"]))
    assert [float(r["delta_best"]) for r in tsv_steps] == pytest.approx(want, abs=1e-6)
    assert [x["delta"] for x in rep["steps"]] == pytest.approx(want)
    rep_steps = sorted((n for n in v["report"]["nodes"] if n.get("step")), key=lambda n: n["step"])
    assert [n["delta"] for n in rep_steps] == pytest.approx(want)

    # keeps: the TSV's `keep`, one per move (the contended discard beat its parent: not a keep)
    assert sum(1 for r in v["tsv"] if r["status"] == "keep") == 3 == v["status"]["keeps"]
    assert re.search(r"<tr><td>all</td><td>8</td><td>\d+</td><td>3</td>", v["page"])


def test_views_show_suspect_contended_pending_and_who_made_each_commit(swarm, tmp_path, capsys):
    s, url = swarm
    v = views(s.home, url, capsys, tmp_path)
    suspect = next(d.experiment_id for d in s.coord.decisions.values() if d.suspect)
    assert v["status"]["suspect"] == [suspect]
    assert v["status"]["contended"] == [s.contended_id]
    text = _cli(capsys, "status", "--swarm-home", str(s.home.root), "--redis-url", url)
    flat = " ".join(text.split())
    assert f"SUSPECT moves (the confirm split got worse): {suspect}" in flat
    assert f"contended runs (the machine was slower than its norm): 1: {s.contended_id}" in flat
    assert s.contended_id in v["page"][v["page"].index("id='contended'"):]
    assert "SUSPECT" in v["page"][v["page"].index("id='steps-table'"):v["page"].index("<h2>Lineage")]
    nodes = {n["id"]: n for n in v["lineage"]["nodes"]}
    root = nodes[s.coord.root]
    # the root is everyone's: no agent is credited with it
    assert root["agent"] is None and root["program"] == "baseline" and root["outcome"] == "baseline"
    merge = next(d for d in s.coord.decisions.values() if d.decision == "merge")
    cand = s.coord.records[merge.experiment_id]
    m = nodes[merge.merge_commit]
    assert m["is_merge"] and m["outcome"] == "merged" and m["agent"] == cand.agent
    assert m["description"] == cand.description
    pending = s.coord.records[s.pending_id]
    assert nodes[pending.commit]["outcome"] == "pending"
    contended = s.coord.records[s.contended_id]
    assert nodes[contended.commit]["contended"] is True
    assert all(isinstance(n["generation"], int) for n in v["lineage"]["nodes"])
    # the panel says how many samples the decision used, never `samples 0` for a trained run
    for n in v["report"]["nodes"]:
        for r in n["records"]:
            assert r.get("samples", 1) != 0
