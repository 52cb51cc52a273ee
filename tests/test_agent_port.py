"""RayCoordinator: a report the coordinator cannot take is spooled to disk and re-sent at
the next iteration boundary, so no record is lost."""
from __future__ import annotations

import pytest

from agents.agent import ResearchAgent
from agents.config import AgentConfig
from agents.ports import RayCoordinator
from tests import fake_coordinator
from tests.fake_coordinator import TINY_PROGRAM, FlakyCoordinator, fake_runner, make_research_repo


@pytest.fixture
def flaky(ray_local):
    # Workers cannot import the tests folder: ship the fake coordinator by value.
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(fake_coordinator)
    yield ray_local.remote(FlakyCoordinator).options(num_cpus=0).remote()
    ray.cloudpickle.unregister_pickle_by_value(fake_coordinator)


def test_unreachable_report_is_spooled_then_delivered(ray_local, flaky, tmp_path):
    ray = ray_local
    make_research_repo(tmp_path / "home")
    cfg = AgentConfig(name="sp", program_name="tiny", program_text=TINY_PROGRAM,
                      swarm_home=tmp_path / "home", hardware_class="hw", budget=1)
    agent = ResearchAgent(cfg, RayCoordinator(flaky, cfg.state_dir / "spool", retry_delay_s=0.01),
                          runner=fake_runner())
    ray.get(flaky.set_down.remote(True))
    agent.run(max_experiments=1)      # baseline + 1 experiment, both unreported
    spool = tmp_path / "home" / "agents" / "sp" / "spool"
    assert len(list(spool.glob("*.json"))) == 2
    assert ray.get(flaky.all_records.remote()) == []
    ray.get(flaky.set_down.remote(False))
    agent.run(max_experiments=1)
    recs = ray.get(flaky.all_records.remote())
    assert [r.kind for r in recs] == ["baseline", "experiment", "experiment"]
    assert list(spool.glob("*.json")) == []


def test_report_answer_stands_in_for_next_job_and_best(ray_local, tmp_path):
    """A report's reply says whether a job waits and what best is: an agent asks next_job/best
    only at its first boundary and when a job is waiting: one call per iteration instead of three."""
    import ray.cloudpickle

    from tests.fake_coordinator import CountingCoordinator
    from agents.messages import Job

    ray = ray_local
    ray.cloudpickle.register_pickle_by_value(fake_coordinator)
    try:
        coord = ray.remote(CountingCoordinator).options(num_cpus=0).remote()
        root = make_research_repo(tmp_path / "home")
        cfg = AgentConfig(name="sy", program_name="tiny", program_text=TINY_PROGRAM,
                          swarm_home=tmp_path / "home", hardware_class="hw", budget=1)
        agent = ResearchAgent(cfg, RayCoordinator(coord, cfg.state_dir / "spool"), runner=fake_runner())
        agent.run(max_experiments=4)   # baseline + 4 experiments
        calls = ray.get(coord.call_counts.remote())
        assert calls["report"] == 5
        # next_job at the first boundary only; best at start-up and the first boundary only
        assert calls["next_job"] == 1 and calls["best"] == 2
        # A job appears: the next report says so, and the agent asks for it and runs it.
        ray.get(coord.add_job.remote(Job(job_id="confirm-1", kind="confirm", commit=root, parent=root,
                                         hardware_class="hw", seed=5)))
        agent.run(max_experiments=2)
        recs = ray.get(coord.all_records.remote())
        assert "confirm-1" in [r.job_id for r in recs]
        assert ray.get(coord.call_counts.remote())["next_job"] >= 2
    finally:
        ray.cloudpickle.unregister_pickle_by_value(fake_coordinator)
