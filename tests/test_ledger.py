"""The ledger: idempotent appends, rows, TSV/parquet/JSON exports, snapshot, reading without Ray."""
from __future__ import annotations

import io
import json

import redis

from coordinator.decide.core import Coordinator
from coordinator.state.ledger import ROW_COLUMNS, Ledger, read_parquet_rows, write_json_rows, write_tsv_rows
from fake_runner import FakeAgent, baseline_text, drain_jobs, warm_up
from trainer.schema import ExperimentResult
from agents.messages import ExperimentRecord, PromotionConfig, StartedExperiment

HW = "cpu-fake"


def scenario(tmp_path, redis_url):
    coord = Coordinator(tmp_path / "home", redis_url, PromotionConfig(sigma_prior=0.003, best_remeasures=0),
                        swarm_id="L", baseline_train_py=baseline_text())
    agents = [FakeAgent(f"a{i}", coord.repo.path, tmp_path / "wt", sigma=0.0005, seed=i) for i in range(3)]
    assert warm_up(coord, agents) == 9  # 3 first-round baselines, 6 repeats: sigma's 8 dof
    r1, _ = agents[0].experiment(coord, coord.root, "A up", A=1)
    r2, _ = agents[1].experiment(coord, coord.root, "B up", B=1)
    drain_jobs(coord, agents)
    bad = ExperimentRecord(experiment_id="inv-1", agent="a2", program="p", hardware_class=HW,
                           parent=r1.commit, commit=None, status="invalid", reason="edit did not apply")
    coord.report(bad)
    return coord, agents, r1, r2


def test_rows_exports_and_snapshot(tmp_path, redis_url):
    coord, agents, r1, r2 = scenario(tmp_path, redis_url)
    led = Ledger(redis.Redis.from_url(redis_url), "L")  # a reader, as the CLI makes one
    rows = led.rows()
    assert len(rows) == len(coord.records) == 13  # 9 baselines, 2 experiments, 1 verify, 1 invalid
    by_id = {r["experiment_id"]: r for r in rows}
    assert by_id[r2.experiment_id]["decision"] == "merge" and by_id[r2.experiment_id]["status"] == "keep"
    assert by_id["inv-1"]["status"] == "invalid" and by_id["inv-1"]["commit"] is None
    assert set(rows[0]) == set(ROW_COLUMNS)

    buf = io.StringIO()
    write_tsv_rows(led.rows(), buf)
    lines = buf.getvalue().splitlines()
    assert lines[0].split("\t")[:8] == ["commit", "val_bpb", "memory_gb", "status", "description",
                                         "agent", "program", "parent"]
    assert len(lines) == 14 and all(len(l.split("\t")) == len(ROW_COLUMNS) for l in lines)

    js = io.StringIO()
    write_json_rows(led.rows(), js)
    assert [r["experiment_id"] for r in json.loads(js.getvalue())] == [r["experiment_id"] for r in rows]

    snap = coord.snapshot()
    assert snap == tmp_path / "home" / "snapshots" / "ledger.parquet"
    back = read_parquet_rows(snap)
    assert [r["experiment_id"] for r in back] == [r["experiment_id"] for r in rows]
    assert back[-1]["decision"] == "invalid"
    out = tmp_path / "x.tsv"
    write_tsv_rows(led.rows(), out)
    assert out.read_text() == buf.getvalue()


def test_memory_gb_from_result(tmp_path, redis_url):
    coord = Coordinator(tmp_path / "home", redis_url, PromotionConfig(), swarm_id="M",
                        baseline_train_py=baseline_text())
    coord.next_job("a", HW)
    rec = ExperimentRecord(experiment_id="m-1", kind="baseline", agent="a", program="p",
                           hardware_class=HW, parent=coord.root, commit=coord.root, status="ok",
                           val_bpb=2.0, result=ExperimentResult(status="ok", peak_memory_mb=1536.0,
                                                                node="gpu-node-3"))
    coord.report(rec)
    (row,) = coord.ledger.rows()
    assert row["memory_gb"] == 1.5 and row["decision"] == "sample"
    assert row["node"] == "gpu-node-3"   # the host: concurrent runs of one node share its drift


def test_appends_are_idempotent(tmp_path, redis_url):
    r = redis.Redis.from_url(redis_url)
    led = Ledger(r, "I")
    s = StartedExperiment(experiment_id="e1", agent="a", program="p", hardware_class=HW, parent="x")
    assert led.add_started(s) and not led.add_started(s)
    rec = ExperimentRecord(experiment_id="e1", agent="a", program="p", hardware_class=HW, parent="x",
                           status="crash")
    assert led.add_record(rec) and not led.add_record(rec)
    assert r.xlen(led.key("ledger")) == 2
    assert [t for t, _, _ in led.events()] == ["started", "record"]
    assert led.counts() == {"started": 1, "records": 1, "decisions": 0, "jobs": 0}


def test_automatic_snapshot_is_written_in_the_background(tmp_path, redis_url, monkeypatch):
    import time

    import coordinator.decide.snapshots as snapshots

    monkeypatch.setattr(snapshots, "SNAPSHOT_EVERY", 3)
    monkeypatch.setattr(snapshots, "SNAPSHOT_MIN_GAP_S", 0.0)
    coord, agents, r1, r2 = scenario(tmp_path, redis_url)  # 13 records: at least one automatic snapshot
    snap = tmp_path / "home" / "snapshots" / "ledger.parquet"
    deadline = time.monotonic() + 30
    while not snap.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert coord.snapshots.thread is not None  # it ran on its own thread, not under the decision lock
    coord.snapshots.thread.join(timeout=30)
    ids = {r["experiment_id"] for r in read_parquet_rows(snap)}
    assert r1.experiment_id in ids
    assert coord.snapshot() == snap and len(read_parquet_rows(snap)) == 13
