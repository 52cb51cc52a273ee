"""A train.py the swarm trained, or is training, is not trained again as another agent's
experiment (coordinator/decide/tried.py): the second agent's proposal is recorded as an invalid
edit naming the run that holds the state, and no run is spent. Real ResearchAgents, a real
Coordinator (redis, git), a deterministic fake runner."""
from __future__ import annotations

import re

import pytest

from agents.agent import CLAIM_TRIES, ResearchAgent
from agents.backends.base import Proposal
from agents.config import AgentConfig
from agents.messages import PromotionConfig
from agents.worktree import object_id
from coordinator.decide.core import Coordinator
from tests.fake_coordinator import TINY_PROGRAM, TINY_TRAIN, Scripted, fake_runner, set_lr as lr

HW = "test-hw"
VALS = {"0.04": 2.064, "0.03": 2.030, "0.02": 2.000, "0.05": 2.100}


def score(src: str) -> float:
    return VALS[re.search(r"^LEARNING_RATE = ([\d.]+)", src, re.M).group(1)]


def crash(desc: str) -> Proposal:
    return Proposal(text=f"DESCRIPTION: {desc}\ntrain.py\n<<<<<<< SEARCH\nCRASH = False  # raise at start-up\n"
                         f"=======\nCRASH = True  # raise at start-up\n>>>>>>> REPLACE\n")


@pytest.fixture
def coord(tmp_path, redis_url):
    cfg = PromotionConfig(min_dof=2, best_remeasures=0, sigma_prior=0.003)
    return Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=TINY_TRAIN)


class Counted:
    """The fake runner, counting the train.py texts it trained."""

    def __init__(self):
        self.inner, self.trained = fake_runner(score=lambda s: 9.0 if "CRASH = True" in s else score(s)), []

    def __call__(self, train_py, run_dir, **kw):
        from pathlib import Path
        self.trained.append(Path(train_py).read_text())
        return self.inner(train_py, run_dir, **kw)


def agent(tmp_path, coord, name, proposals, runner):
    cfg = AgentConfig(name=name, program_name="tiny", program_text=TINY_PROGRAM, seed=1,
                      swarm_home=tmp_path / "home", hardware_class=HW, budget=1.0, recent_n=0,
                      prepare_ahead=False)
    return ResearchAgent(cfg, coord, runner=runner, backend=Scripted(proposals))


def warm(agents, coord) -> None:
    for _ in range(10):
        busy = [a for a in agents if coord.next_job(a.cfg.name, HW) is not None]
        if not busy:
            return
        for a in busy:
            a._iteration()
    raise AssertionError("baseline jobs never stopped")


def exp(coord, desc):
    (r,) = [r for r in coord.records.values() if r.kind == "experiment" and r.description == desc]
    return r


def test_a_state_another_agent_trained_is_not_trained_again(tmp_path, coord):
    runner = Counted()
    a0 = agent(tmp_path, coord, "a0", [lr("0.04", "0.05", "worse")], runner)
    a1 = agent(tmp_path, coord, "a1", [lr("0.04", "0.05", "worse again"), lr("0.04", "0.03", "better")], runner)
    warm([a0, a1], coord)
    a0._iteration()
    first = exp(coord, "worse")
    assert first.status == "ok" and coord.decisions[first.experiment_id].decision == "discard"
    n = len(runner.trained)
    a1._iteration()
    dup = exp(coord, "worse again")
    assert dup.status == "invalid" and dup.commit is None
    assert dup.reason == f"already tried: a0's experiment {first.experiment_id} trained this train.py (discard)"
    assert coord.decisions[dup.experiment_id].decision == "invalid"
    # No run spent on it: the same iteration proposed again, and that idea trained.
    assert exp(coord, "better").status == "ok"
    assert runner.trained[n:] == [TINY_TRAIN.replace("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.03")]


def test_an_agent_that_repeats_tried_states_ends_its_iteration_without_a_run(tmp_path, coord):
    runner = Counted()
    a0 = agent(tmp_path, coord, "a0", [lr("0.04", "0.05", "worse")], runner)
    a1 = agent(tmp_path, coord, "a1", [lr("0.04", "0.05", f"again {i}") for i in range(CLAIM_TRIES + 1)], runner)
    warm([a0, a1], coord)
    a0._iteration()
    n = len(runner.trained)
    a1._iteration()
    refused = [r for r in coord.records.values() if r.description.startswith("again")]
    assert len(refused) == CLAIM_TRIES and len(runner.trained) == n
    assert all(r.status == "invalid" and r.reason.startswith("already tried: a0's") for r in refused)


def test_putting_back_a_state_best_had_is_refused(tmp_path, coord):
    """The root's baseline runs hold its train.py: an edit that undoes best's change is no new idea."""
    runner = Counted()
    a0 = agent(tmp_path, coord, "a0", [lr("0.04", "0.02", "win")], runner)
    a1 = agent(tmp_path, coord, "a1", [lr("0.02", "0.04", "undo")], runner)
    warm([a0, a1], coord)
    a0._iteration()
    assert coord.decisions[exp(coord, "win").experiment_id].decision == "promote"
    a1._maybe_adopt(coord.best(HW))
    assert score(a1.wt.source()) == 2.000
    a1._iteration()
    undo = exp(coord, "undo")
    assert undo.status == "invalid" and undo.reason.startswith("already tried: ")
    assert "baseline trained this train.py (sample)" in undo.reason


def test_a_state_in_flight_is_held_and_a_failed_run_frees_it(tmp_path, coord):
    warm([agent(tmp_path, coord, "a0", [], Counted())], coord)
    blob = object_id("blob", b"LEARNING_RATE = 1\n")
    assert coord.claim(HW, blob, "e1") is None
    assert coord.claim(HW, blob, "e1") is None          # the holder may ask again
    assert coord.claim(HW, blob, "e2") == "experiment e1 is training this train.py"
    assert coord.claim("other-hw", blob, "e2") is None   # another class measures it anew
    assert coord.claim(HW, "not a blob id", "e3") is None
    # A run that crashed measured nothing: its state may be tried again, by anyone.
    runner = Counted()
    a1 = agent(tmp_path, coord, "a1", [crash("boom")], runner)
    a2 = agent(tmp_path, coord, "a2", [crash("boom again")], runner)
    warm([a1, a2], coord)
    a1._iteration()
    assert exp(coord, "boom").status == "crash"
    a2._iteration()
    assert exp(coord, "boom again").status == "crash"
    assert sum("CRASH = True" in t for t in runner.trained) == 2


def test_a_restarted_coordinator_still_knows_what_was_tried(tmp_path, coord, redis_url):
    runner = Counted()
    a0 = agent(tmp_path, coord, "a0", [lr("0.04", "0.05", "worse")], runner)
    warm([a0], coord)
    a0._iteration()
    first = exp(coord, "worse")
    again = Coordinator(tmp_path / "home", redis_url, coord.cfg, swarm_id="t")
    text = TINY_TRAIN.replace("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.05")
    held = again.claim(HW, object_id("blob", text.encode()), "e9")
    assert held == f"a0's experiment {first.experiment_id} trained this train.py (discard)"


def test_the_agent_tests_fake_coordinator_refuses_a_tried_state_as_the_real_one_does(tmp_path):
    """tests/fake_coordinator.py used to accept every claim: agent tests never saw the refusal the
    real coordinator gives (two LLM-night scripts repeated one edit and passed). It holds states
    by the real rule (TriedStates) and answers in the same words."""
    from tests.fake_coordinator import FakeCoordinator, make_research_repo

    make_research_repo(tmp_path / "home")
    fake, runner = FakeCoordinator(), Counted()
    a0 = agent(tmp_path, fake, "a0", [lr("0.04", "0.05", "worse")], runner)
    a1 = agent(tmp_path, fake, "a1", [lr("0.04", "0.05", "worse again"), lr("0.04", "0.03", "better")], runner)
    a0._iteration()   # its baseline (the fake hands out no jobs: an agent measures its start itself)
    a0._iteration()
    a1._iteration()
    a1._iteration()
    recs = {r.description: r for r in fake.all_records() if r.kind == "experiment"}
    first, dup = recs["worse"], recs["worse again"]
    assert first.status == "ok" and dup.status == "invalid" and dup.commit is None
    assert dup.reason == f"already tried: a0's experiment {first.experiment_id} trained this train.py (discard)"
    assert recs["better"].status == "ok"
    assert runner.trained.count(TINY_TRAIN.replace("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.05")) == 1
