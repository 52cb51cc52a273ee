"""Agents build on the lead: while a candidate on best waits for its confirmation, an agent
whose line is best runs its next idea on top of that candidate (as one agent does on its own
pending line), and goes back to best when the candidate is decided against. An idea made on
the lead is judged by its own runs against best (one that wins carries the lead with it), and
one measured no better than the lead is discarded rather than confirmed. Real ResearchAgent,
real Coordinator (redis, git), a deterministic fake runner (issue 20)."""
from __future__ import annotations

import re

import pytest

from agents.agent import ResearchAgent
from agents.messages import PromotionConfig
from coordinator.decide.core import Coordinator
from tests.fake_coordinator import TINY_TRAIN, set_lr as lr
from tests.test_agent_follows import agent as _agent, warm

HW = "test-hw"
# val_bpb by LEARNING_RATE: no noise, so sigma is 0 and the margin is min_delta (0.001). 0.035
# and 0.037 are better than the baseline by less than the margin: pending, confirmed run by run.
VALS = {"0.04": 2.064, "0.035": 2.0632, "0.037": 2.0633, "0.02": 2.000, "0.0195": 1.9993}


def score(src: str) -> float:
    return VALS[re.search(r"^LEARNING_RATE = ([\d.]+)", src, re.M).group(1)]


def make_coord(tmp_path, redis_url, **kw):
    cfg = PromotionConfig(min_dof=2, best_remeasures=0, sigma_prior=0.003, **kw)
    return Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=TINY_TRAIN)


@pytest.fixture
def coord(tmp_path, redis_url):
    return make_coord(tmp_path, redis_url)


def agent(tmp_path, coord, name, proposals, adopt=None) -> ResearchAgent:
    return _agent(tmp_path, coord, name, proposals, adopt=adopt, score=score)


def pending_candidate(tmp_path, coord, name="a1", value="0.035"):
    """An agent whose idea is pending (better than best by less than the margin); its
    confirmation job is leased by a third agent, so the next agent to ask finds no job."""
    a1 = agent(tmp_path, coord, name, [lr("0.04", value, f"near {value}")])
    warm(a1, coord)
    a1._iteration()
    (near,) = [r for r in coord.records.values() if r.description == f"near {value}"]
    d = coord.decisions[near.experiment_id]
    assert d.decision == "pending" and d.stage == "confirm" and d.delta > 0
    return a1, near


def hold_jobs(coord, who="holder") -> None:
    """A warmed agent (see holder) leases the candidate's confirmation (and runs it not): the
    next agent to ask finds no job."""
    job = coord.next_job(who, HW)
    assert job is not None and job.kind == "confirm"


def idea_on_the_lead(tmp_path, coord, a0: ResearchAgent):
    """a0 (warmed) finds a1's idea pending and no job: one iteration of it. Returns a1's record."""
    warm(a0, coord)
    holder(tmp_path, coord)
    a1, near = pending_candidate(tmp_path, coord)
    hold_jobs(coord)
    a0._iteration()
    return near


def holder(tmp_path, coord, who="holder") -> ResearchAgent:
    h = agent(tmp_path, coord, who, [])
    warm(h, coord)
    return h


def test_the_lead_is_the_best_measured_candidate_pending_on_best(tmp_path, coord):
    assert coord.lead(HW) is None   # nothing pending
    a1, near = pending_candidate(tmp_path, coord, "a1", "0.037")
    lead = coord.lead(HW)
    assert lead is not None and lead.commit == near.commit and lead.experiment_id == near.experiment_id
    assert lead.best == coord.best(HW).commit
    assert lead.val_bpb == pytest.approx(2.0633)
    a2, nearer = pending_candidate(tmp_path, coord, "a2", "0.035")
    assert coord.lead(HW).commit == nearer.commit   # measured better than the first


def test_no_lead_when_switched_off(tmp_path, redis_url):
    coord = make_coord(tmp_path, redis_url, follow_leads=False)
    pending_candidate(tmp_path, coord)
    assert coord.lead(HW) is None


def test_an_agent_on_best_runs_its_idea_on_top_of_the_lead(tmp_path, coord):
    a0 = agent(tmp_path, coord, "a0", [lr("0.035", "0.02", "on the lead")])
    near = idea_on_the_lead(tmp_path, coord, a0)
    (rec,) = [r for r in coord.records.values() if r.description == "on the lead"]
    assert rec.status == "ok" and rec.parent == near.commit   # its edit applied to the lead's train.py
    # judged by its own run against best's: it beats best by far, and carries the lead with it
    assert coord.decisions[rec.experiment_id].decision == "promote"
    assert coord.decisions[near.experiment_id].decision == "carried"
    best = coord.best(HW)
    # best is a two-parent commit (old best first) with the idea's train.py; a0's head is the idea
    assert a0.wt.head() == rec.commit != best.commit and a0.wt.show(best.commit) == a0.wt.source()
    assert coord.lead(HW) is None


def test_an_idea_on_the_lead_no_better_than_the_lead_is_discarded_not_confirmed(tmp_path, coord):
    a0 = agent(tmp_path, coord, "a0", [lr("0.035", "0.037", "a copy of the lead, a little worse")])
    near = idea_on_the_lead(tmp_path, coord, a0)
    (rec,) = [r for r in coord.records.values() if r.description.startswith("a copy of the lead")]
    assert rec.parent == near.commit
    d = coord.decisions[rec.experiment_id]
    # better than best by as much as the lead (which is pending), but no better than the lead:
    # what it showed is the lead's change, whose own test goes on
    assert d.decision == "discard" and "no better than it" in d.reason, d.reason
    assert not [st for st in coord.jobs.open_jobs(HW) if st.job.for_experiment == rec.experiment_id]
    assert coord.decisions[near.experiment_id].decision == "pending" and coord.lead(HW).commit == near.commit
    assert a0.wt.head() == near.commit   # the line stays on the lead


def test_an_agent_on_its_own_line_or_with_adopt_never_stays(tmp_path, coord):
    a0 = agent(tmp_path, coord, "a0", [], adopt="never")
    warm(a0, coord)
    base = a0.wt.head()
    a1, near = pending_candidate(tmp_path, coord, "a1", "0.037")
    a2, nearer = pending_candidate(tmp_path, coord, "a2", "0.035")
    a0._follow_lead(coord.best(HW))
    a1._follow_lead(coord.best(HW))
    assert a0.wt.head() == base            # adopt: never
    assert a1.wt.head() == near.commit     # its own pending line, not the lead


def test_back_to_best_when_the_lead_is_decided_against(tmp_path, coord):
    a0 = agent(tmp_path, coord, "a0", [])
    warm(a0, coord)
    base = a0.wt.head()
    a1, near = pending_candidate(tmp_path, coord)
    a0._follow_lead(coord.best(HW))
    assert a0.wt.head() == near.commit and a0.parent_val == pytest.approx(2.0632)
    runner = agent(tmp_path, coord, "a2", [])
    for _ in range(40):   # no noise and under the margin: confirmed until its test gives up
        if coord.decisions[near.experiment_id].decision != "pending":
            break
        runner._iteration()
    assert coord.decisions[near.experiment_id].decision not in ("pending", "promote")
    assert coord.lead(HW) is None and coord.best(HW).commit == base
    a0._follow_lead(coord.best(HW))
    assert a0.wt.head() == base and a0.parent_val == pytest.approx(coord.best(HW).val_bpb)


def test_an_agent_whose_head_has_best_s_train_py_follows_the_next_lead(tmp_path, coord):
    a0 = agent(tmp_path, coord, "a0", [lr("0.035", "0.02", "on the lead")])
    idea_on_the_lead(tmp_path, coord, a0)
    best = coord.best(HW)
    assert a0.wt.head() != best.commit and a0.wt.show(best.commit) == a0.wt.source()
    a3 = agent(tmp_path, coord, "a3", [lr("0.02", "0.0195", "near the new best")])
    warm(a3, coord)
    a3._iteration()
    (nxt,) = [r for r in coord.records.values() if r.description == "near the new best"]
    assert coord.decisions[nxt.experiment_id].decision == "pending"
    a0._follow_lead(coord.best(HW))
    assert a0.wt.head() == nxt.commit
