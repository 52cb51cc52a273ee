"""A real short swarm (`swarm run`: the real trainer on CPU, Ray, redis, git; the offline
`mutate` backend; both trackers configured in its swarm.yaml), run once for this module, then:

- every view of it: `swarm status --json` while it runs and after it stopped, `swarm lineage
  --format json`, `swarm export --format tsv --output -` and the report's embedded data agree on
  best's value (the coordinator's own), the experiment and run counts and each step's delta; the
  end of `swarm run` says the same in words (issue 23);
- the trackers: MLflow (a local sqlite store, read back with mlflow.search_runs) and the W&B
  offline run directories (read back with wandb's protobuf records) hold one run per ledger
  record, with the record's decision, and the swarm's own run.

One swarm serves both (a swarm each cost the slow tier ~100 s more)."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow
TRACKERS = all(importlib.util.find_spec(m) for m in ("mlflow", "wandb"))


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWARM_", "RAY_", "MLFLOW_", "WANDB_"))}
    # the prepared data of this machine's cache (prepared once, read-only to a swarm)
    return dict(env, SWARM_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")


def _swarm(tmp_path, *args, timeout=300):
    r = subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=tmp_path,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _published(home):
    """The latest-best keys the coordinator wrote: the value every agent adopts."""
    from coordinator.run.live import published
    from coordinator.state.home import SwarmHome, ledger_redis

    h = SwarmHome(home)
    with ledger_redis(h) as client:
        return published(client, h.info()["swarm_id"])


@pytest.fixture(scope="module")
def real_swarm(tmp_path_factory):
    """One real swarm: 2 agents, 2 experiments each, `swarm status` polled while it runs."""
    tmp_path = tmp_path_factory.mktemp("views-swarm")
    db, wb = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "wb"
    # mutate explicitly (no LLM key here; `auto` would pick optuna, which is fine but slower
    # to start); min_dof 2 so that two agents' short baseline round lets best move; concurrent runs
    # independent whatever the noise history of this machine's cache says (it lies beside its data);
    # a loaded machine's contended runs measured again twice at most and a candidate confirmed three
    # times at most (the views agree either way; the default 15 kept an agent confirming after the
    # other stopped)
    tracking = (f"tracking:\n  mlflow: {{tracking_uri: '{db}', experiment: e2e}}\n"
                f"  wandb: {{mode: offline, dir: '{wb}', project: e2e}}\n") if TRACKERS else ""
    (tmp_path / "swarm.yaml").write_text("backend: {type: mutate}\nprograms:\n"
                                         "  - {name: optimizer}\n  - {name: schedule}\n"
                                         "promotion: {min_dof: 2, best_remeasures: 1, "
                                         "concurrent: independent, contended_remeasures: 2, confirm_runs: 3}\n"
                                         "profile: cpu-smoke\n" + tracking)   # 2 eval batches: trainer/profiles.py
    p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "--agents", "2", "--budget", "8",
                          "--max-experiments", "2", "--plain"], cwd=tmp_path, env=_env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # `swarm status` works while the swarm runs (its redis, no Ray)
        live_seen = None
        deadline = time.monotonic() + 1200
        while p.poll() is None and time.monotonic() < deadline:
            # not too often: each `swarm status` is a Python start-up on the cores the swarm
            # (and its Ray, which must start within 30 s) needs
            time.sleep(20)
            r = subprocess.run([sys.executable, "-m", "coordinator.cli", "status", "--json"], cwd=tmp_path,
                               env=_env(tmp_path), capture_output=True, text=True, timeout=120)
            if r.returncode == 0 and p.poll() is None:
                d = json.loads(r.stdout)
                if d["running"] and d["records"] > 0:
                    live_seen = d
                    break
        out, err = p.communicate(timeout=1500)
    finally:
        if p.poll() is None:  # the test failed or timed out: stop the swarm it started, cleanly
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=180)
            except subprocess.TimeoutExpired:
                p.kill()
    return SimpleNamespace(tmp_path=tmp_path, rc=p.returncode, out=out, err=err, live_seen=live_seen,
                           db=db, wb=wb)


def _value(v) -> str:
    """A best's value as the views print it: '-' when it has none (every run contended)."""
    return "-" if v is None else f"{v:.4f}"


@pytest.mark.timeout(1800)   # about 3 minutes on a quiet 2-core machine; a loaded one trains slower
def test_a_real_swarm_shows_one_truth_in_every_view(real_swarm):
    tmp_path, out, err = real_swarm.tmp_path, real_swarm.out, real_swarm.err
    assert real_swarm.rc == 0, err[-3000:]
    assert real_swarm.live_seen is not None, "swarm status never answered while the swarm ran"

    status = json.loads(_swarm(tmp_path, "status", "--json"))
    assert status["running"] is False and status["current_ideas"] == []
    lineage = json.loads(_swarm(tmp_path, "lineage", "--format", "json", "--all"))
    tsv = list(csv.DictReader(io.StringIO(_swarm(tmp_path, "export", "--format", "tsv", "--output", "-")),
                              delimiter="\t"))
    _swarm(tmp_path, "report")
    page = (tmp_path / "home" / "reports" / "report.html").read_text()
    report = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                                  page, re.S).group(1))
    pub = _published(tmp_path / "home")
    assert len(pub) == 1
    (hw, key), = pub.items()

    # best's value: the coordinator's (its latest-best key), and its samples
    st = status["best"][hw]
    # samples: best's runs besides the one that selected it (0 when a new best's re-measure did
    # not run before the swarm's last experiment); every view must say the same number
    assert (st["commit"], st["samples"]) == (key["commit"], key["samples"])
    assert st["val_bpb"] == pytest.approx(key["val_bpb"], abs=1e-12)
    node = next(n for n in lineage["nodes"] if n["id"] == key["commit"])
    assert node["val_bpb"] == pytest.approx(key["val_bpb"], abs=1e-12) and node["samples"] == key["samples"]
    assert report["figures"]["best"][hw]["val_bpb"] == pytest.approx(key["val_bpb"], abs=1e-12)
    # (a busy machine: every run contended, best has no sample and no value; every view says so)
    assert all((float(r["commit_val_bpb"]) if r["commit_val_bpb"] else None) == pytest.approx(key["val_bpb"], abs=1e-6)
               for r in tsv if r["commit"] == key["commit"] and r["hardware_class"] == hw)

    # counts
    exps = sum(1 for r in tsv if r["kind"] == "experiment")
    runs = sum(1 for r in tsv if r["run_status"] != "invalid")
    assert exps >= 4
    for got in (status, lineage["graph"]["summary"], report["figures"]["counts"]):
        assert (got["experiments"], got["runs"]) == (exps, runs)

    # each step of best: one delta everywhere
    want = [s["delta"] for s in st["steps"]]
    steps = sorted((r for r in tsv if r["best_step"]), key=lambda r: int(r["best_step"]))
    assert [float(r["delta_best"]) for r in steps] == pytest.approx(want, abs=1e-6)
    assert [n["delta"] for n in sorted((n for n in lineage["nodes"] if n.get("step")),
                                       key=lambda n: n["step"])] == pytest.approx(want)
    assert [s["delta"] for s in report["figures"]["best"][hw]["steps"]] == pytest.approx(want)

    # the end of `swarm run`: the last plain line (the live view's last frame) and the words
    # after it say the same figures as status
    plain = [ln for ln in out.splitlines() if ln.startswith("[swarm] ")]
    assert plain and plain[-1].startswith(f"[swarm] {exps} experiments, {runs} runs, best {hw} "
                                          f"{_value(st['val_bpb'])} ({st['samples']} samples), "
                                          f"moved {len(want)} time")
    tail = out[out.index(plain[-1]) + len(plain[-1]):]
    assert f"{exps} experiments and {runs} runs" in tail
    if want:
        assert f"best [{hw}] moved {len(want)} time" in tail
        for s in st["steps"]:
            assert f"{s['delta']:+.4f} {s['decision']}" in tail
    else:
        # why: the bar it did not clear, or (a busy machine) that nothing could be judged
        why = ("A result must beat best by the margin" in tail
               or "No margin was set yet: the noise estimate rests on" in tail
               or "No experiment was judged: best has no sample to compare with. The machine was busy" in tail)
        assert f"best [{hw}] did not move" in tail and why, tail
    for cmd in ("swarm lineage", "swarm status", "swarm report", "swarm export --format tsv --output -"):
        assert cmd in tail


@pytest.mark.timeout(1800)   # the swarm it reads may be started by this test (run alone)
@pytest.mark.skipif(not TRACKERS, reason="the [mlflow] and [wandb] extras are not installed")
def test_a_real_swarm_is_logged_to_mlflow_and_wandb(real_swarm):
    from coordinator.state.home import SwarmHome, ledger_redis
    from coordinator.state.ledger import Ledger
    from tests.test_track_mlflow import children, runs_of
    from tests.wandb_offline import latest_runs

    assert real_swarm.rc == 0, real_swarm.err[-3000:]
    assert "not logged yet" not in real_swarm.err, real_swarm.err[-3000:]
    home = SwarmHome(real_swarm.tmp_path / "home")
    swarm_id = home.info()["swarm_id"]
    with ledger_redis(home) as client:
        rows = Ledger(client, swarm_id).rows()
    decisions = {row["experiment_id"]: row["decision"] for row in rows}
    assert len(rows) >= 3 and {row["kind"] for row in rows} >= {"baseline", "experiment"}

    df = runs_of(real_swarm.db, "e2e")
    kids = children(df)
    assert len(df) == len(rows) + 1 and sorted(kids.index) == sorted(decisions)
    assert kids["tags.decision"].to_dict() == decisions
    for row in rows:
        k = kids.loc[row["experiment_id"]]
        assert k["tags.agent"] == row["agent"] and k["tags.hardware_class"] == row["hardware_class"]
        assert k["tags.commit"] == row["commit"] and k["params.program"] == (row["program"] or "")
        if row["val_bpb"] is not None:
            assert k["metrics.val_bpb"] == pytest.approx(row["val_bpb"])
            assert k["metrics.steps"] == row["steps"] and "params.DEPTH" in k

    runs = latest_runs(real_swarm.wb / "wandb")
    assert runs.pop(swarm_id)["job_type"] == "swarm"
    assert {k: v["summary"]["tag.decision"] for k, v in runs.items()} == decisions
