"""RayCoordinator: a report the coordinator cannot take is spooled to disk and re-sent at
the next iteration boundary, so no record is lost."""
from __future__ import annotations

import pytest

from agents.agent import ResearchAgent
from agents.config import AgentConfig
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
    agent = ResearchAgent(cfg, flaky, runner=fake_runner())
    agent.port.retry_delay_s = 0.01
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
