"""Adaptive allocation in a real `swarm run` (the real CLI, supervisor, coordinator actor and agent
actors), the runs scored by tests/test_multinode.py's FakeRunner (1 s each): swarm.yaml reaches
the coordinator, an agent actor asks through the actor port and moves, and a second `swarm run`
in the same home keeps the allocation; the agents on a worker node of a loopback cluster
(tests/test_multinode.py's Cluster: the worker has its own home and data dir), so the moves go
through the actor port across nodes. One test: the cluster's start is most of its time."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_multinode import AGENT_RESOURCE, ROOT, Cluster, live_worker

# Two agents both on optimizer (weights 3 : 0.01); schedule below its floor of one agent takes
# the first agent whose dwell (one run) is over.
# cpu-smoke: the cpu profile scoring 2 eval batches (trainer/profiles.py); the claims here are not the score's
YAML = """\
profile: cpu-smoke
backend: {type: mutate}
programs:
  - {name: optimizer, weight: 3}
  - {name: schedule, weight: 0.01}
allocation: {mode: adaptive, min_agents: 1, dwell_runs: 1}
"""


def _run(tmp_path, *args, env=None):
    env = dict(env or os.environ, PYTHONPATH=str(ROOT), SWARM_HOME=str(tmp_path / "home"),
               SWARM_DATA_DIR=str(tmp_path / "data"), MN_RUN_S="1")
    if "--address" not in args:  # a private local Ray
        env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-m", "tests.test_multinode", "run", "--config",
                        str(tmp_path / "swarm.yaml"), "--agents", "2", "--budget", "5",
                        "--max-experiments", "1", "--plain", *args],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _events(home):
    from coordinator.state.home import SwarmHome, ledger_redis
    from coordinator.state.ledger import Ledger

    h = SwarmHome(home)
    with ledger_redis(h) as client:
        return [(t, json.loads(js)) for t, _id, js in Ledger(client, h.info()["swarm_id"]).events()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("alloc-mn"))
    try:
        c.head()
        yield c
    finally:
        c.shutdown()


@pytest.mark.slow
def test_agents_on_a_worker_node_move_too(cluster, tmp_path):
    live_worker(cluster, "w1")
    (tmp_path / "swarm.yaml").write_text(YAML + f"agents: {{cpus_per_agent: 1, resource: {AGENT_RESOURCE}}}\n")
    _check(tmp_path, "--address", cluster.address, env=cluster.env)
    # the agents ran (and moved) on the worker: their clones are under its node home only
    swarm_id = next(e["swarm_id"] for t, e in _events(tmp_path / "home") if t == "record")
    assert (cluster.base / "w1" / "home" / swarm_id / "worktrees").is_dir()
    assert not any((tmp_path / "home" / "worktrees").glob("*"))


def _check(tmp_path, *args, env=None):
    _run(tmp_path, *args, env=env)
    evs = _events(tmp_path / "home")
    moves = [e for t, e in evs if t == "allocation"]
    assert len(moves) == 1 and moves[0]["program"] == "schedule" and moves[0]["previous"] == "optimizer"
    moved = moves[0]["agent"]
    at = next(i for i, (t, _e) in enumerate(evs) if t == "allocation")
    after = [e for t, e in evs[at:] if t == "record" and e["agent"] == moved]
    assert after and {e["program"] for e in after} == {"schedule"}

    first_run = len(evs)
    _run(tmp_path, *args, env=env)   # swarm run again: its agents start on optimizer, the moved one resumes
    evs = _events(tmp_path / "home")
    assert [e for t, e in evs if t == "allocation"] == moves    # no new move
    second = [e for t, e in evs[first_run:] if t == "record" and e["agent"] == moved]
    assert second and second[-1]["program"] == "schedule"
