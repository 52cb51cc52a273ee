"""The agent follows the coordinator: it keeps a commit as its line only when the coordinator
kept it (promote, merge, pending) or said it beat its parent by the margin, and a line that
trails best by more than the margin is given up, whatever the adopt rule. Real ResearchAgent,
real Coordinator (redis, git), a deterministic fake runner (issue 13)."""
from __future__ import annotations

import re

import pytest

from agents.agent import ResearchAgent
from agents.config import AgentConfig
from agents.messages import PromotionConfig
from coordinator.decide.core import Coordinator
from tests.fake_coordinator import TINY_PROGRAM, TINY_TRAIN, Scripted, fake_runner, set_lr as lr

HW = "test-hw"
# val_bpb by LEARNING_RATE (everything else at its baseline): no noise, so sigma is 0 and the
# margin is min_delta (0.001); half of it (a confirmation) is 0.0005.
VALS = {"0.04": 2.064, "0.0399": 2.0638, "0.0398": 2.0633, "0.03": 2.030, "0.02": 2.000}


def score(src: str) -> float:
    return VALS[re.search(r"^LEARNING_RATE = ([\d.]+)", src, re.M).group(1)]


@pytest.fixture
def coord(tmp_path, redis_url):
    cfg = PromotionConfig(min_dof=2, best_remeasures=0, sigma_prior=0.003)
    return Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=TINY_TRAIN)


def agent(tmp_path, coord, name, proposals, adopt=None, score=score):
    cfg = AgentConfig(name=name, program_name="tiny", program_text=TINY_PROGRAM, seed=1,
                      swarm_home=tmp_path / "home", hardware_class=HW, budget=1.0, recent_n=0,
                      prepare_ahead=False, adopt=adopt)
    return ResearchAgent(cfg, coord, runner=fake_runner(score=score), backend=Scripted(proposals))


def warm(a: ResearchAgent, coord) -> None:
    """Run the agent's iterations until the coordinator has no more baseline runs for it."""
    for _ in range(10):
        if coord.next_job(a.cfg.name, HW) is None:
            return
        a._iteration()
    raise AssertionError("baseline jobs never stopped")


def test_agent_keeps_only_what_the_coordinator_keeps(tmp_path, coord):
    a = agent(tmp_path, coord, "a0", [lr("0.04", "0.0399", "noise-level"), lr("0.04", "0.02", "real win")])
    warm(a, coord)
    base = a.wt.head()
    assert base == coord.root and a.parent_val == pytest.approx(2.064)
    a._iteration()
    (noise,) = [r for r in coord.records.values() if r.description == "noise-level"]
    assert noise.val_bpb < noise.parent_val_bpb  # its one run beat its parent ...
    assert coord.decisions[noise.experiment_id].decision == "discard"
    assert a.wt.head() == base  # ... but the coordinator discarded it: not kept as the line
    a._iteration()
    (win,) = [r for r in coord.records.values() if r.description == "real win"]
    assert coord.decisions[win.experiment_id].decision == "promote"
    assert a.wt.head() == win.commit and a.kept == 1
    assert a.parent_val == pytest.approx(2.000)


def test_a_line_that_trails_best_by_more_than_the_margin_adopts_best_even_with_never(tmp_path, coord):
    a1 = agent(tmp_path, coord, "a1", [lr("0.04", "0.0398", "near the margin")], adopt="never")
    a0 = agent(tmp_path, coord, "a0", [lr("0.04", "0.03", "a win")], adopt="always")
    warm(a1, coord)
    warm(a0, coord)
    a1._iteration()
    (near,) = [r for r in coord.records.values() if r.description == "near the margin"]
    assert coord.decisions[near.experiment_id].decision == "pending"
    assert a1.wt.head() == near.commit  # pending: kept as a1's line while it is confirmed
    for _ in range(5):  # a0 runs the confirmation jobs first, then its own idea
        a0._iteration()
        wins = [r for r in coord.records.values() if r.description == "a win"]
        if wins:
            break
    (win,) = wins
    assert coord.decisions[win.experiment_id].decision == "promote"
    best = coord.best(HW)
    assert best.commit == win.commit
    a1._maybe_adopt(best)  # a1's line (2.0633) trails best (2.030) by far more than the margin
    assert a1.wt.head() == win.commit and a1.parent_val == pytest.approx(best.val_bpb)


def test_if_better_keeps_a_line_the_coordinator_is_still_judging(tmp_path, coord):
    a1 = agent(tmp_path, coord, "a1", [lr("0.04", "0.0398", "near the margin")], adopt="if-better")
    warm(a1, coord)
    a1._iteration()
    (near,) = [r for r in coord.records.values() if r.description == "near the margin"]
    assert coord.decisions[near.experiment_id].decision == "pending"
    assert a1.wt.head() == near.commit
    # best is unchanged and worse than the line by the coordinator's means: the line stays
    a1._maybe_adopt(coord.best(HW))
    assert a1.wt.head() == near.commit
