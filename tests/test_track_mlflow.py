"""MLflow, for real: the follower against a real `mlflow server` on 127.0.0.1 (an outage in the
middle: the server stopped, decisions go on, the server back on the same port and store, the
follower catches up), and `swarm export --format mlflow` to that server and to local stores,
all read back with mlflow.search_runs and MlflowClient. Slow: the server takes 20-40 s to start
here and `import mlflow` 4-18 s."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("mlflow")

from coordinator.track.base import SwarmRun  # noqa: E402
from coordinator.track.config import MlflowTracking  # noqa: E402
from coordinator.track.follower import Follower, Trackers  # noqa: E402
from coordinator.track.mlflow_writer import MlflowWriter  # noqa: E402
from tests.mlflow_server import MlflowServer  # noqa: E402
from tests.track_history import SWARM, History  # noqa: E402


@pytest.fixture(autouse=True)
def hermetic(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_TOKEN",
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def client(redis_daemon):
    import redis

    c = redis.Redis.from_url(redis_daemon.url)
    yield c
    c.close()


def runs_of(uri: str, experiment: str):
    """Every run of `experiment`, read back with mlflow.search_runs (a pandas frame)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment])
    finally:
        mlflow.set_tracking_uri(None)


def children(df):
    return df[df["tags.mlflow.parentRunId"].notna()].set_index("tags.experiment_id")


def wait(cond, what: str, limit: float = 300.0):
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_follower_logs_every_record_through_an_outage_of_the_server(tmp_path, client):
    from mlflow.tracking import MlflowClient

    h = History(tmp_path / "home", client)
    expect = h.build()
    server = MlflowServer(tmp_path / "mlflow").start()
    f = None
    try:
        writer = MlflowWriter(MlflowTracking(tracking_uri=server.url, experiment="swarm-e2e"),
                              SwarmRun.from_info(h.info()))
        f = Follower(client, SWARM, writer, repo_path=h.home / "repo.git", swarm_home=h.home,
                     poll_s=0.1, retry_max_s=1.0).start()
        wait(lambda: f.behind() == 0 and f.written == 5, "the first records")
        df = runs_of(server.url, "swarm-e2e")
        assert len(df) == 6   # the swarm's run and one child per record
        parent = df[df["tags.mlflow.parentRunId"].isna()].iloc[0]
        assert parent["tags.swarm_id"] == SWARM and parent["params.budget"] == "5.0"
        kids = children(df)
        assert set(kids.index) == set(expect) and (kids["tags.mlflow.parentRunId"] == parent["run_id"]).all()
        assert kids["tags.decision"].to_dict() == expect
        one = kids.loc["exp-1"]
        assert one["params.DEPTH"] == "6" and one["params.program"] == "baseline"
        assert one["metrics.val_bpb"] == 2.40 and one["metrics.steps"] == 40
        assert one["metrics.training_seconds"] == 5.0 and one["tags.agent"] == "a0-baseline"
        assert one["tags.hardware_class"] == "cpu-test" and one["tags.commit"] == h.ledger.record("exp-1").commit
        assert kids.loc["exp-3"]["status"] == "FAILED" and one["status"] == "FINISHED"
        mc = MlflowClient(server.url)
        diff = mc.download_artifacts(one["run_id"], "train.py.diff", str(tmp_path / "a"))
        assert "-DEPTH = 4" in open(diff).read() and "+DEPTH = 6" in open(diff).read()
        tail = mc.download_artifacts(one["run_id"], "run.log.tail", str(tmp_path / "a"))
        assert open(tail).read().endswith("val_bpb 2.40")

        server.stop()   # the tracker goes down; the swarm goes on deciding
        h.decide("exp-1", "merge", "verified onto best", delta=0.12, merge_commit=h.root)
        h.record("exp-5", commit=h.commit("WINDOW = \"SL\"", "WINDOW = \"L\""), val=2.45, description="window L")
        h.decide("exp-5", "discard", "not better than best")
        wait(lambda: f.down_since is not None, "the follower to notice the outage")
        assert h.ledger.decision("exp-1").decision == "merge" and f.behind() == 2
        server.start()  # the same port and store
        wait(lambda: f.behind() == 0, "the catch-up")
        Trackers([f]).stop(drain_s=60)
        kids = children(runs_of(server.url, "swarm-e2e"))
        assert sorted(kids.index) == sorted([*expect, "exp-5"])   # one run per record, none twice
        assert kids.loc["exp-1"]["tags.decision"] == "merge" and kids.loc["exp-1"]["metrics.delta_best"] == 0.12
        assert kids.loc["exp-5"]["tags.decision"] == "discard"

        # exporting the same swarm to the same experiment adds nothing: the runs are found again
        r = _swarm_export(h, client, server.url, "swarm-e2e")
        assert r.returncode == 0, r.stderr
        assert "logged 6 records to MLflow at http://127.0.0.1" in r.stdout
        assert len(runs_of(server.url, "swarm-e2e")) == 7
    finally:
        if f is not None:
            Trackers([f]).stop(drain_s=0)
        server.stop()


def _swarm_export(h: History, client, uri: str, experiment: str, extra_env: dict | None = None):
    kw = client.connection_pool.connection_kwargs
    url = f"redis://:{kw['password']}@127.0.0.1:{kw['port']}/0"
    env = dict(os.environ, SWARM_HOME=str(h.home), **(extra_env or {}))
    # cwd: a local store puts its artifacts in ./mlruns of the working directory
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "export", "--redis-url", url,
                           "--format", "mlflow", "--output", uri, "--experiment", experiment],
                          env=env, cwd=h.home.parent, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_export_to_a_local_store(tmp_path, client, store):
    h = History(tmp_path / "home", client)
    expect = h.build()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else (tmp_path / "mlruns").as_uri()
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"} if store == "file" else {}
    r = _swarm_export(h, client, uri, "exported", env)
    assert r.returncode == 0, r.stderr
    os.environ.update(env)
    try:
        kids = children(runs_of(uri, "exported"))
    finally:
        for k in env:
            os.environ.pop(k)
    assert kids["tags.decision"].to_dict() == expect
    assert kids.loc["exp-2"]["params.LEARNING_RATE"] == "0.5" and kids.loc["exp-2"]["metrics.val_bpb"] == 2.70
