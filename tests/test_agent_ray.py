"""ResearchAgent as a Ray actor on a loopback local Ray: killed mid-run it leaves exactly one
`crash` record and a clean worktree; two agents with different programs train for real."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from agents.actor import agent_actor
from agents.config import AgentConfig
from tests import fake_coordinator
from tests.fake_coordinator import FakeCoordinator, make_research_repo

ROOT = Path(__file__).resolve().parents[1]
BASELINE = (ROOT / "trainer" / "baseline" / "train.py").read_text()


@pytest.fixture
def coord_cls(ray_local):
    # Workers cannot import the tests folder: ship the fake coordinator by value.
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(fake_coordinator)
    yield ray_local.remote(FakeCoordinator).options(num_cpus=0)
    ray.cloudpickle.unregister_pickle_by_value(fake_coordinator)


def wait_for(pred, timeout=120, every=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def config(tmp_path, name, program, data_dir, budget):
    return AgentConfig(name=name, program_name=program, program_path=ROOT / "programs" / f"{program}.md",
                       seed=hash(name) % 1000, swarm_home=tmp_path / "home", budget=budget,
                       profile="cpu-smoke", device="cpu", threads=1, data_dir=data_dir)  # 2 eval batches


def test_ray_kill_mid_run_gives_one_crash_and_a_clean_worktree(ray_local, coord_cls, tmp_path,
                                                               prepared_data_dir):
    ray = ray_local
    make_research_repo(tmp_path / "home", BASELINE)
    coord = coord_cls.remote(tmp_path / "home" / "repo.git")
    cfg = config(tmp_path, "victim", "optimizer", prepared_data_dir, budget=120)
    actor = agent_actor(cfg, cpus=1).remote(cfg, coord)
    ref = actor.run.remote(max_experiments=1)
    wait_for(lambda: ray.get(actor.status.remote())["phase"] == "train")
    started = ray.get(coord.all_started.remote())
    assert len(started) == 1
    eid = started[0].experiment_id
    time.sleep(3)   # the child is training now
    ray.kill(actor, no_restart=True)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(ref, timeout=60)
    assert ray.get(coord.all_records.remote()) == []
    wt = tmp_path / "home" / "worktrees" / "victim"
    (wt / "train.py").write_text("# a half-applied edit left behind\n")
    again = agent_actor(cfg, cpus=1).remote(cfg, coord)
    status = ray.get(again.status.remote(), timeout=120)
    recs = ray.get(coord.all_records.remote())
    assert [(r.experiment_id, r.status, r.reason) for r in recs] == [(eid, "crash", "agent died mid-run")]
    assert status["phase"] == "starting"
    assert subprocess.run(["git", "status", "--porcelain"], cwd=wt, capture_output=True,
                          text=True).stdout == ""
    assert not (tmp_path / "home" / "agents" / "victim" / "inflight.json").exists()
    # a second restart finds nothing to recover: still exactly one record
    ray.kill(again, no_restart=True)
    third = agent_actor(cfg, cpus=1).remote(cfg, coord)
    ray.get(third.status.remote(), timeout=120)
    assert len(ray.get(coord.all_records.remote())) == 1
    ray.kill(third, no_restart=True)


@pytest.mark.slow
def test_two_agents_two_programs_real_trainer(ray_local, coord_cls, tmp_path, prepared_data_dir):
    ray = ray_local
    baseline = make_research_repo(tmp_path / "home", BASELINE)
    coord = coord_cls.remote(tmp_path / "home" / "repo.git")
    actors, refs = {}, {}
    for name, program in [("opt", "optimizer"), ("sched", "schedule")]:
        # 8 s runs and 2 experiments each: what this shows (two programs' records, worktrees and
        # kept chains through the real trainer on Ray) does not need more; 20 s x 3 took 369 s.
        cfg = config(tmp_path, name, program, prepared_data_dir, budget=8)
        actors[name] = agent_actor(cfg, cpus=1).remote(cfg, coord)
        refs[name] = actors[name].run.remote(max_experiments=2)
    summaries = {n: ray.get(r, timeout=1500) for n, r in refs.items()}
    recs = ray.get(coord.all_records.remote())
    for name, program in [("opt", "optimizer"), ("sched", "schedule")]:
        assert summaries[name]["stop_reason"] == "max_experiments"
        mine = [r for r in recs if r.agent == name and r.kind == "experiment"]
        assert len(mine) >= 2
        wt = tmp_path / "home" / "worktrees" / name
        for r in mine:
            assert (r.program, r.seed, r.backend) == (program, hash(name) % 1000, "mutate")
            assert r.hardware_class.startswith("cpu-")
            if r.status == "ok":
                assert r.result.training_seconds and r.result.total_seconds and r.result.eval_seconds
                assert r.result.budget == 8
        # A commit measured more than once (the baseline: both agents ran it) has one score per
        # run. A commit this agent kept itself must beat its own run of the parent; one it
        # adopted through best was promoted by the coordinator, which compares with best's
        # score (another agent's run of the parent may be worse than this agent's).
        kept = {r.commit: r for r in recs if r.kind == "experiment" and r.status == "ok"}
        decisions = ray.get(coord.all_decisions.remote())
        chain = subprocess.run(["git", "rev-list", f"{baseline}..HEAD"], cwd=wt, capture_output=True,
                               text=True, check=True).stdout.split()
        for c in chain:
            parent = subprocess.run(["git", "rev-parse", f"{c}^"], cwd=wt, capture_output=True,
                                    text=True, check=True).stdout.strip()
            assert kept[c].parent == parent
            assert (kept[c].val_bpb < kept[c].parent_val_bpb
                    or decisions[kept[c].experiment_id].decision == "promote"), kept[c]
        assert subprocess.run(["git", "status", "--porcelain"], cwd=wt, capture_output=True,
                              text=True).stdout == ""
    for a in actors.values():
        ray.kill(a, no_restart=True)
