"""A real `swarm run` (real trainer, Ray, redis, git) with both trackers configured in its
swarm.yaml: afterwards MLflow (a local sqlite store, read back with mlflow.search_runs) and the
W&B offline run directories (read back with wandb's protobuf records) hold one run per ledger
record, with the record's decision, and the swarm's own run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("mlflow")
pytest.importorskip("wandb")


@pytest.mark.timeout(1800)
def test_a_real_swarm_is_logged_to_mlflow_and_wandb(tmp_path, prepared_data_dir):
    from coordinator.state.home import SwarmHome, ledger_redis
    from coordinator.state.ledger import Ledger
    from tests.test_track_mlflow import children, runs_of
    from tests.wandb_offline import latest_runs

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "swarm.yaml").write_text(
        "backend: {type: mutate}\nprograms:\n  - {name: baseline}\n"
        # few runs: two baseline samples are enough to judge here, no re-measures or confirmations
        "promotion: {min_dof: 1, best_remeasures: 0, confirm_runs: 0}\n"
        f"tracking:\n  mlflow: {{tracking_uri: '{db}', experiment: e2e}}\n"
        f"  wandb: {{mode: offline, dir: '{tmp_path / 'wb'}', project: e2e}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_", "SWARM_", "RAY_"))}
    env.update(SWARM_HOME=str(tmp_path / "home"), SWARM_DATA_DIR=str(prepared_data_dir), PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", "--agents", "1", "--budget", "5",
                        "--max-experiments", "2", "--profile", "cpu", "--plain"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not logged yet" not in r.stderr, r.stderr[-3000:]
    home = SwarmHome(tmp_path / "home")
    swarm_id = home.info()["swarm_id"]
    with ledger_redis(home) as client:
        rows = Ledger(client, swarm_id).rows()
    decisions = {row["experiment_id"]: row["decision"] for row in rows}
    assert len(rows) >= 3 and {row["kind"] for row in rows} >= {"baseline", "experiment"}

    df = runs_of(db, "e2e")
    kids = children(df)
    assert len(df) == len(rows) + 1 and sorted(kids.index) == sorted(decisions)
    assert kids["tags.decision"].to_dict() == decisions
    for row in rows:
        k = kids.loc[row["experiment_id"]]
        assert k["tags.agent"] == row["agent"] and k["tags.hardware_class"] == row["hardware_class"]
        assert k["tags.commit"] == row["commit"] and k["params.program"] == "baseline"
        if row["val_bpb"] is not None:
            assert k["metrics.val_bpb"] == pytest.approx(row["val_bpb"])
            assert k["metrics.steps"] == row["steps"] and "params.DEPTH" in k

    runs = latest_runs(tmp_path / "wb" / "wandb")
    assert runs.pop(swarm_id)["job_type"] == "swarm"
    assert {k: v["summary"]["tag.decision"] for k, v in runs.items()} == decisions
