"""Adaptive allocation in a real `swarm run` (the real CLI, supervisor, coordinator actor and agent
actors on a private local Ray on 127.0.0.1), the runs scored by tests/test_multinode.py's
FakeRunner (1 s each): swarm.yaml reaches the coordinator, an agent actor asks through the
actor port and moves, and a second `swarm run` in the same home keeps the allocation."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_multinode import ROOT

# Two agents both on optimizer (weights 3 : 0.01); schedule below its floor of one agent takes
# the first agent whose dwell (one run) is over.
YAML = """\
profile: cpu
backend: {type: mutate}
programs:
  - {name: optimizer, weight: 3}
  - {name: schedule, weight: 0.01}
allocation: {mode: adaptive, min_agents: 1, dwell_runs: 1}
"""


def _run(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), SWARM_HOME=str(tmp_path / "home"),
               SWARM_DATA_DIR=str(tmp_path / "data"), MN_RUN_S="1")
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


@pytest.mark.slow
def test_swarm_run_moves_an_agent_and_a_restart_keeps_it(tmp_path):
    (tmp_path / "swarm.yaml").write_text(YAML)
    _run(tmp_path)
    evs = _events(tmp_path / "home")
    moves = [e for t, e in evs if t == "allocation"]
    assert len(moves) == 1 and moves[0]["program"] == "schedule" and moves[0]["previous"] == "optimizer"
    moved = moves[0]["agent"]
    at = next(i for i, (t, _e) in enumerate(evs) if t == "allocation")
    after = [e for t, e in evs[at:] if t == "record" and e["agent"] == moved]
    assert after and {e["program"] for e in after} == {"schedule"}

    first_run = len(evs)
    _run(tmp_path)   # swarm run again: its agents start on optimizer, the moved one resumes
    evs = _events(tmp_path / "home")
    assert [e for t, e in evs if t == "allocation"] == moves    # no new move
    second = [e for t, e in evs[first_run:] if t == "record" and e["agent"] == moved]
    assert second and second[-1]["program"] == "schedule"
