"""Evidence that accumulates (issue 20): a candidate inside the margin gets more samples of
itself and of best until the sequential test decides; best is compared by all its samples but
the experiment run that made it a winner; a candidate verified alone is never judged with that
run; one agent's real 2-2.5 sigma gain reaches best. Through the real Coordinator with a real
redis-server and a real bare git repo."""
from __future__ import annotations

import json
import random

import pytest

from agents.messages import NoiseHistorySpec, PromotionConfig
from coordinator.decide.core import Coordinator
from fake_runner import FakeAgent, baseline_text, drain_jobs, set_constants
from test_judge_best import HW, agents_for, best, experiment, job_of, run_jobs, warm_up


@pytest.fixture
def cfg():
    return PromotionConfig(sigma_prior=0.003)


@pytest.fixture
def coord(tmp_path, redis_url, cfg):
    return Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())


def test_a_candidate_better_measured_than_best_asks_for_a_sample_of_best(coord, tmp_path):
    """Best has best_remeasures samples since it moved; a candidate still inside the margin gets
    confirmations until it has more samples than best, then waits for a run of best (a repeat
    any agent may take), and is judged again when it comes. (8 agents: a class with
    2 x best_remeasures agents re-measures a new best fully up front.)"""
    a = agents_for(coord, tmp_path, n=2 * coord.cfg.best_remeasures)
    warm_up(coord, a)
    rA, dA = experiment(coord, a[0], coord.root, "A up", A=1)
    assert dA.decision == "promote"
    run_jobs(coord, a)  # best's re-measures: best_remeasures samples of it besides the winner's run
    mean = coord.book.ref(HW, rA.commit).mean
    n_best = coord.book.ref(HW, rA.commit).n
    assert n_best == coord.cfg.best_remeasures
    m = coord._class_margin(HW)
    r, d = experiment(coord, a[1], rA.commit, "Z on", Z=1, val=mean - 0.5 * m)
    assert d.decision == "pending" and d.waits == "candidate"
    for k in range(n_best):  # confirmations just inside the margin
        job = job_of(coord, "a2")
        assert (job.kind, job.commit) == ("confirm", r.commit), job
        coord.report(a[2].record(job.commit, job.parent, kind="confirm", job=job, val=mean - 0.5 * m))
        d = coord.decisions[r.experiment_id]
        assert d.decision == "pending" and len(d.looks) == k + 2, d
    assert d.waits == "best" and coord.book.of(HW, r.commit).n == n_best + 1, d
    job = job_of(coord, "a2")
    assert (job.kind, job.commit) == ("baseline", rA.commit)
    coord.report(a[2].record(job.commit, job.parent, kind="baseline", job=job, val=mean))
    d = coord.decisions[r.experiment_id]
    assert len(d.looks) == n_best + 2 and d.samples_best == n_best + 1, d


def test_best_is_compared_by_its_confirmations_not_by_the_run_that_made_it_a_winner(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    m0, m = coord.book.ref(HW, coord.root).mean, coord._class_margin(HW)
    # A lucky first run (just inside the margin, far better than its truth) ...
    r, d = experiment(coord, a[0], coord.root, "Z on", Z=1, val=m0 - 0.95 * m)
    assert d.decision == "pending"
    for _ in range(20):  # ... then confirmations at its truth until the test promotes it
        job = job_of(coord, "a1")
        if job is None:
            break
        val = m0 - 0.7 * m if job.kind == "confirm" else None
        coord.report(a[1].record(job.commit, job.parent, kind=job.kind, job=job, val=val))
        if coord.decisions[r.experiment_id].decision != "pending":
            break
    d = coord.decisions[r.experiment_id]
    assert d.decision == "promote" and best(coord) == r.commit, d
    ref = coord.book.ref(HW, r.commit)
    # Its reference: the confirmation runs (all at m0 - 0.0045), never the selected first run.
    assert ref.n == d.samples - 1 and ref.mean == pytest.approx(m0 - 0.7 * m)
    assert coord.status()["classes"][HW]["samples"] == ref.n


def test_a_candidate_verified_alone_is_never_judged_with_its_winning_run(coord, tmp_path):
    """A result beat best by far on its own run, but its change conflicts with best: its
    train.py goes onto best alone and is verified. The verification run says it is no better:
    the winning run (selected: the lowest of many) must not be averaged in."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, dA = experiment(coord, a[0], coord.root, "A up", A=1)
    assert dA.decision == "promote"
    run_jobs(coord, a)
    mean = coord.book.ref(HW, rA.commit).mean
    rA2, d2 = experiment(coord, a[1], coord.root, "A more", A=2, val=mean - 0.05)
    assert d2.decision == "pending" and d2.stage in ("verify", "verify-alone") and d2.merge_commit
    M = d2.merge_commit
    assert coord.repo.show(M) == coord.repo.show(rA2.commit)  # its own train.py: the same blob
    for _ in range(30):
        job = job_of(coord, "a2")
        if job is None or coord.decisions[rA2.experiment_id].decision != "pending":
            break
        val = mean if job.commit == M else None
        coord.report(a[2].record(job.commit, job.parent, kind=job.kind, job=job, val=val))
    d = coord.decisions[rA2.experiment_id]
    assert d.decision == "did-not-stack" and best(coord) == rA.commit, d
    assert coord.book.unselected(HW, M).n >= 1 and coord.book.of(HW, M).n > coord.book.unselected(HW, M).n


def _history(tmp_path, classes, sigma, dof=24) -> NoiseHistorySpec:
    rng = random.Random(1)
    entries = {}
    for hw in classes:
        xs = [rng.gauss(0, sigma) for _ in range(dof + 1)]
        mu = sum(xs) / len(xs)
        entries[f"{hw}|cpu|30|fp"] = {"swarms": {"earlier": {"m2": sum((x - mu) ** 2 for x in xs), "dof": dof}}}
    path = tmp_path / "noise-history.json"
    path.write_text(json.dumps({"version": 1, "entries": entries}))
    return NoiseHistorySpec(path=str(path), profile="cpu", budget=30, apparatus="fp")


@pytest.mark.slow
@pytest.mark.parametrize("effect_sigmas,history", [(2.25, True), (2.5, False)])
def test_one_agent_with_a_real_gain_of_two_to_two_and_a_half_sigma_reaches_best(
        tmp_path, redis_url, effect_sigmas, history):
    """The issue's case: one agent finds a change truly 2-2.5 sigma better than best. Its runs
    and every job the coordinator asks of it (confirmations, repeats of best) are its own. In
    60 seeds (a hardware class each) it reaches best in at least 95% of them (2.25 sigma on a
    class with noise history, 2.5 sigma measuring sigma from scratch)."""
    sigma = 0.01 / effect_sigmas  # knob C is worth 0.01 bpb
    seeds = 60
    classes = [f"cpu-s{i}" for i in range(seeds)]
    spec = _history(tmp_path, classes, sigma) if history else None
    coord = Coordinator(tmp_path / "home", redis_url, PromotionConfig(), swarm_id="one",
                        baseline_train_py=baseline_text(), history=spec)
    reached = runs = 0
    for i, hw in enumerate(classes):
        ag = FakeAgent("a0", coord.repo.path, tmp_path / f"wt{i}", hw=hw, sigma=sigma, seed=100 + i)
        runs += len(drain_jobs(coord, [ag], hw, rounds=40))
        root = coord.repo.ref(f"refs/heads/best/{hw}")
        c = ag.commit(root, set_constants(ag.text_at(root), C=1), "C on")
        rec = ag.record(c, root, description="C on")
        coord.begin(ag.started(rec))
        coord.report(rec)
        runs += 1 + len(drain_jobs(coord, [ag], hw, rounds=60))
        now = coord.repo.ref(f"refs/heads/best/{hw}")
        reached += coord.repo.is_ancestor(c, now)
    print(f"\n{effect_sigmas} sigma, history {history}: reached best in {reached}/{seeds} seeds, "
          f"{runs / seeds:.1f} runs each")
    assert reached >= 0.95 * seeds


def test_a_likely_winner_gets_its_confirmations_in_parallel(coord, tmp_path):
    """A candidate measured better than half its margin gets confirm_parallel confirmation runs
    at a time (a swarm's agents run them at once), one measured barely better one at a time."""
    a = agents_for(coord, tmp_path, n=8)  # two at a time from 8 agents (a quarter of them)
    warm_up(coord, a)
    m0, m = coord.book.ref(HW, coord.root).mean, coord._class_margin(HW)
    rL, dL = experiment(coord, a[0], coord.root, "Z on", Z=1, val=m0 - 0.8 * m)
    rB, dB = experiment(coord, a[0], coord.root, "Y on", Y=1, val=m0 - 0.15 * m)  # not pooled
    assert (dL.decision, dL.waits, dB.decision, dB.waits) == ("pending", "candidate", "pending", "candidate")
    jobs = [job_of(coord, x.name) for x in a[1:]]
    got = {r.commit: sum(1 for j in jobs if j is not None and j.kind == "confirm" and j.commit == r.commit)
           for r in (rL, rB)}
    assert got == {rL.commit: coord.cfg.confirm_parallel, rB.commit: 1}, jobs
    # The first of the likely winner's runs reports: its test goes on with two runs out again.
    jL = next(j for j in jobs if j is not None and j.commit == rL.commit)
    holder = a[1 + jobs.index(jL)]
    coord.report(holder.record(jL.commit, jL.parent, kind="confirm", job=jL, val=m0 - 0.8 * m))
    if coord.decisions[rL.experiment_id].decision == "pending":
        again = job_of(coord, holder.name)
        assert again is not None and again.commit == rL.commit and again.job_id != jL.job_id
