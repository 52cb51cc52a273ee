"""A verification whose best moved is stopped while it runs (issue 20): the coordinator cancels
the job and merges the candidate again onto the new best; the agent running it learns it (best
is no longer the commit the verification must beat) and stops the run through the runner's
cancel event. Real ResearchAgent, real Coordinator (redis, git), the contract-tested fake runner
(it trains by sleeping, checks `cancel`, sends the real runner's events)."""
from __future__ import annotations

import threading
import time

from agents.agent import ResearchAgent
from agents.backends.base import Proposal
from agents.config import AgentConfig
from agents.messages import PromotionConfig
from coordinator.decide.core import Coordinator
from fake_runner import FakeAgent, baseline_text, drain_jobs, true_bpb
from tests.fake_coordinator import TINY_PROGRAM, fake_runner

HW = "cpu-fake"
SLEEP = 4.0  # one run of the real agent, unless it is stopped


class Idle:
    name = "idle"

    def propose(self, ctx):
        return Proposal(error="no ideas")

    def fix(self, ctx, log_tail):
        return Proposal(error="no fix")


def test_a_verification_whose_best_moves_is_stopped_and_merged_again(tmp_path, redis_url):
    coord = Coordinator(tmp_path / "home", redis_url, PromotionConfig(sigma_prior=0.003, best_remeasures=0,
                                                                      min_dof=2),
                        swarm_id="t", baseline_train_py=baseline_text())
    f = [FakeAgent(f"f{i}", coord.repo.path, tmp_path / "wt", hw=HW, sigma=0.0005, seed=i) for i in range(2)]
    cfg = AgentConfig(name="r0", program_name="tiny", program_text=TINY_PROGRAM, seed=1,
                      swarm_home=tmp_path / "home", hardware_class=HW, budget=1.0, recent_n=0,
                      prepare_ahead=False, heartbeat_s=0.1)
    agent = ResearchAgent(cfg, coord, runner=fake_runner(score=true_bpb, sleep=SLEEP), backend=Idle())
    drain_jobs(coord, f, HW)                       # the first round of the fake agents
    agent._iteration()                             # its own baseline (slept through)
    drain_jobs(coord, f, HW)                       # repeats until sigma has min_dof
    rA, dA = f[0].experiment(coord, coord.root, "A up", A=1)
    assert dA.decision == "promote"
    rB, dB = f[1].experiment(coord, coord.root, "B up", B=1)   # off best, a winner: verified
    assert dB.decision == "pending" and dB.merge_commit
    t = threading.Thread(target=agent._iteration)  # takes the verification job and trains it
    t0 = time.monotonic()
    t.start()
    for _ in range(300):
        held = [st for st in coord.jobs.open_jobs(HW, "verify") if st.agent == "r0"]
        if held and agent.phase == "train":
            break
        time.sleep(0.02)
    assert held and held[0].job.parent == rA.commit
    time.sleep(0.3)  # it trains
    rC, dC = f[0].experiment(coord, rA.commit, "C up", C=1)     # best moves while it runs
    assert dC.decision == "promote"
    t.join()
    took = time.monotonic() - t0
    assert took < SLEEP / 2, took
    (rec,) = [r for r in coord.records.values() if r.agent == "r0" and r.kind == "verify"]
    assert rec.status == "crash" and rec.reason.startswith("cancelled: best moved"), rec
    assert coord.jobs.get(rec.job_id).cancelled
    # The candidate was merged again onto the new best, and the agent did not back off.
    dB = coord.decisions[rB.experiment_id]
    assert dB.decision == "pending" and dB.best_before == rC.commit and dB.merge_commit != rec.commit
    assert not agent.phase.startswith("waiting")
