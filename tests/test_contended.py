"""Contended runs (issue 20): a run the runner flags `contended` (the machine much slower than
its class's norm) cannot move best until its code is measured again, and feeds neither sigma nor
best's mean. Records built by hand, through the real Coordinator, redis and git."""
from __future__ import annotations

import pytest

from agents.messages import PromotionConfig
from coordinator.decide.core import Coordinator
from fake_runner import baseline_text
from test_judge_best import HW, agents_for, best, experiment, job_of, warm_up
from trainer.schema import ExperimentResult


@pytest.fixture
def coord(tmp_path, redis_url):
    return Coordinator(tmp_path / "home", redis_url, PromotionConfig(sigma_prior=0.003), swarm_id="t",
                       baseline_train_py=baseline_text())


def contended(rec, contention=0.6):
    return rec.model_copy(update={"result": ExperimentResult(
        status="ok", val_bpb=rec.val_bpb, contention=contention, contended=True)})


def test_a_contended_win_waits_for_a_clean_run_before_it_moves_best(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    text = a[0].text_at(coord.root).replace("A = 0", "A = 1")
    c = a[0].commit(coord.root, text, "A up")
    rec = contended(a[0].record(c, coord.root, description="A up"))  # 0.05 better: far past the margin
    d = coord.report(rec).decision
    assert d.decision == "pending" and d.stage == "contended" and best(coord) == coord.root, d
    job = job_of(coord, "a1")
    assert (job.kind, job.commit) == ("confirm", c)
    again = contended(a[1].record(job.commit, job.parent, kind="confirm", job=job))
    coord.report(again)  # contended again: measured again
    assert coord.decisions[rec.experiment_id].decision == "pending"
    job = job_of(coord, "a2")
    assert (job.kind, job.commit) == ("confirm", c)
    coord.report(a[2].record(job.commit, job.parent, kind="confirm", job=job))  # a clean run
    d = coord.decisions[rec.experiment_id]
    assert d.decision == "promote" and best(coord) == c and d.samples == 1, d


def test_contended_runs_feed_neither_sigma_nor_best(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    st0 = coord.status()["classes"][HW]
    for ag in a:  # repeats of best on a loaded machine: far worse, and contended
        coord.report(contended(ag.record(coord.root, coord.root, kind="baseline", val=2.3)))
    st = coord.status()["classes"][HW]
    assert (st["sigma"], st["noise_dof"], st["samples"], st["val_bpb"]) == (
        st0["sigma"], st0["noise_dof"], st0["samples"], st0["val_bpb"])
    assert coord.book.contended(HW, coord.root) == len(a)


def test_a_contended_verification_is_run_again(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, _ = experiment(coord, a[0], coord.root, "A up", A=1)
    for _ in range(10):  # best's re-measures
        job = job_of(coord, "a1")
        if job is None:
            break
        coord.report(a[1].record(job.commit, job.parent, kind=job.kind, job=job))
    rB, dB = experiment(coord, a[1], coord.root, "B up", B=1)
    assert dB.decision == "pending" and dB.merge_commit
    job = job_of(coord, "a2")
    assert (job.kind, job.commit) == ("verify", dB.merge_commit)
    coord.report(contended(a[2].record(job.commit, job.parent, kind="verify", job=job)))
    assert coord.decisions[rB.experiment_id].decision == "pending"
    job = job_of(coord, "a2")
    assert (job.kind, job.commit) == ("verify", dB.merge_commit)
    coord.report(a[2].record(job.commit, job.parent, kind="verify", job=job))
    assert coord.decisions[rB.experiment_id].decision == "merge"


def test_a_first_round_of_contended_baselines_is_measured_again(coord, tmp_path):
    """Every agent's first baseline run contended (the machine busy while the swarm started):
    none of them counts, so the baseline must be measured again. Before, the coordinator took
    "no sample of best yet" for "the first round is on its way" and never asked: the real quick
    start then ran its experiments unjudged."""
    a = agents_for(coord, tmp_path, n=2)
    for ag in a:
        job = job_of(coord, ag.name)
        assert job.kind == "baseline"
        rec = ag.record(job.commit, job.parent, kind="baseline", job=job, val=2.0)
        coord.begin(ag.started(rec))
        coord.report(contended(rec))
    assert coord.book.contended(HW, coord.root) == 2 and coord.book.of(HW, coord.root).n == 0
    jobs = [job_of(coord, ag.name) for ag in a]
    assert [(j.kind, j.commit) for j in jobs if j] == [("baseline", coord.root)] * 2, jobs


def test_contended_remeasures_bounds_what_a_loaded_machine_costs(tmp_path, redis_url):
    """`promotion.contended_remeasures`: a train.py with that many contended runs is not measured
    again, best (no more repeats) and candidates (unjudged) alike: on a machine loaded all night
    the swarm goes on with its research instead of re-measuring (before: 8 repeats of best, 15
    of each candidate, whatever the user wanted)."""
    coord = Coordinator(tmp_path / "home", redis_url,
                        PromotionConfig(sigma_prior=0.003, contended_remeasures=2), swarm_id="t",
                        baseline_train_py=baseline_text())
    a = agents_for(coord, tmp_path, n=2)
    for ag in a:  # the first round: both contended
        job = job_of(coord, ag.name)
        rec = ag.record(job.commit, job.parent, kind="baseline", job=job, val=2.0)
        coord.begin(ag.started(rec))
        coord.report(contended(rec))
    assert coord.book.contended(HW, coord.root) == 2
    assert [job_of(coord, ag.name) for ag in a] == [None, None]  # no third contended repeat asked for

    coord2 = Coordinator(tmp_path / "home2", redis_url,
                         PromotionConfig(sigma_prior=0.003, contended_remeasures=2), swarm_id="t2",
                         baseline_train_py=baseline_text())
    a = agents_for(coord2, tmp_path / "2")
    warm_up(coord2, a)
    text = a[0].text_at(coord2.root).replace("A = 0", "A = 1")
    c = a[0].commit(coord2.root, text, "A up")
    rec = contended(a[0].record(c, coord2.root, description="A up"))
    assert coord2.report(rec).decision.stage == "contended"
    job = job_of(coord2, "a1")
    assert (job.kind, job.commit) == ("confirm", c)
    coord2.report(contended(a[1].record(job.commit, job.parent, kind="confirm", job=job)))
    d = coord2.decisions[rec.experiment_id]
    assert d.decision == "unjudged" and "2 runs of it were contended" in d.reason, d
    assert job_of(coord2, "a2") is None or job_of(coord2, "a2").commit != c
