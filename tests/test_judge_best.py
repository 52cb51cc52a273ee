"""Every ok result is judged against best, whatever its parent; sigma is trusted only with
enough degrees of freedom; jobs follow best; each figure means one thing. Through the real
Coordinator with a real redis-server and a real bare git repo (issue 13)."""
from __future__ import annotations

import pytest

from agents.messages import PromotionConfig
from coordinator.decide.core import Coordinator
import fake_runner
from fake_runner import (FakeAgent, baseline_text, check_invariants, drop_pads,
                         set_constants)

HW = "cpu-fake"
# Baseline values whose spread gives sigma ~0.0017: effects of 0.05 are certain, 0.005 is not.
VALS = (2.000, 2.002, 1.998)


def decide(coord, rec):
    """The decision of a report (report() answers a ReportReply holding it)."""
    return coord.report(rec).decision


def job_of(coord, agent, hw=HW):
    return coord.next_job(agent, hw)


@pytest.fixture
def cfg():
    return PromotionConfig(sigma_prior=0.003)


@pytest.fixture
def coord(tmp_path, redis_url, cfg):
    return Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())


def agents_for(coord, tmp_path, n=3):
    return [FakeAgent(f"a{i}", coord.repo.path, tmp_path / "wt", hw=HW, sigma=0.0005, seed=i)
            for i in range(n)]


def warm_up(coord, agents, vals=VALS):
    """Run every baseline job the coordinator hands out (its first round, then the repeats it
    schedules until sigma has enough degrees of freedom); returns how many ran."""
    return fake_runner.warm_up(coord, agents, vals, hw=HW, check_sample=True)


def experiment(coord, agent, parent, description, val=None, **values):
    text = set_constants(agent.text_at(parent), **values)
    c = agent.commit(parent, text, description)
    rec = agent.record(c, parent, description=description, val=val)
    coord.begin(agent.started(rec))
    return rec, decide(coord, rec)


def run_jobs(coord, agents, vals: dict | None = None, rounds=30):
    """Every job handed out, run; `vals` forces the measured value of a job by its kind or
    commit. Returns [(job, decision)]."""
    out = []
    for _ in range(rounds):
        got = False
        for a in agents:
            job = job_of(coord, a.name)
            if job is None:
                continue
            got = True
            v = None
            if vals:
                v = vals.get(job.commit, vals.get(job.kind))
            rec = a.record(job.commit, job.parent, kind=job.kind, job=job, val=v)
            coord.begin(a.started(rec))
            out.append((job, decide(coord, rec)))
        if not got:
            break
    return out


def best(coord):
    return coord.repo.ref(f"refs/heads/best/{HW}")


def test_replay_off_best_line_beats_best_and_reaches_it_through_a_verified_merge(coord, tmp_path):
    """The real run of the issue: a1 trained X on the baseline while best moved to Y; X merged
    onto Y did not stack; a1 kept X and trained Z on it, the swarm's lowest val_bpb, beating
    best by far more than the margin. Z must reach best through a verified merge."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    seen = [best(coord)]
    rY, dY = experiment(coord, a[0], coord.root, "Y on", Y=1)
    assert dY.decision == "promote"
    seen.append(best(coord))
    run_jobs(coord, a)  # re-measures of the new best
    rX, dX = experiment(coord, a[1], coord.root, "X on", X=1)
    assert dX.decision == "pending" and dX.merge_commit  # its change beat its parent: verify the merge
    run_jobs(coord, a)
    assert coord.decisions[rX.experiment_id].decision == "did-not-stack"
    assert best(coord) == rY.commit
    # a1 kept X as its line (the coordinator said it beat its parent by the margin) ...
    rZ, dZ = experiment(coord, a[1], rX.commit, "A up on X", A=1)
    # ... and Z, off best, is judged against best: it beats it by far more than the margin.
    assert dZ.decision == "pending" and dZ.merge_commit, dZ
    assert dZ.delta > dZ.margin > 0
    done = run_jobs(coord, a)
    assert "verify" in [j.kind for j, _ in done]
    final = coord.decisions[rZ.experiment_id]
    assert final.decision == "merge", final
    M = best(coord)
    seen.append(M)
    assert M == final.best_after and coord.repo.parents(M)[0] == rY.commit
    assert coord.repo.is_ancestor(rZ.commit, M)
    text = coord.repo.show(M)
    assert "A = 1" in text and "Y = 1" in text and "X = 1" in text
    check_invariants(coord, {HW: seen})


def test_conflicting_winner_goes_onto_best_alone_after_verification(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, dA = experiment(coord, a[0], coord.root, "A up", A=1)
    assert dA.decision == "promote"
    run_jobs(coord, a)
    # The same line changed differently, and better: a textual conflict with best.
    rA2, d2 = experiment(coord, a[1], coord.root, "A more", A=2)
    assert d2.decision == "pending" and d2.merge_commit, d2
    assert coord.repo.show(d2.merge_commit) == coord.repo.show(rA2.commit)
    assert coord.repo.parents(d2.merge_commit) == [rA.commit, rA2.commit]
    assert best(coord) == rA.commit  # nothing moves before verification
    done = run_jobs(coord, a)
    assert [j.commit for j, _ in done if j.kind == "verify"] == [d2.merge_commit]
    final = coord.decisions[rA2.experiment_id]
    assert final.decision == "merge" and best(coord) == d2.merge_commit
    check_invariants(coord, {HW: [coord.root, rA.commit, d2.merge_commit]})


def test_merge_that_does_not_stack_falls_back_to_the_candidate_alone(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rB, _ = experiment(coord, a[0], coord.root, "B up", B=1)
    run_jobs(coord, a)
    rA, d = experiment(coord, a[1], coord.root, "A twice", A=2)  # 1.90 alone, best is 1.95
    assert d.decision == "pending" and d.merge_commit
    merged = d.merge_commit
    # The merged commit's verification comes out bad: it did not stack ...
    done = run_jobs(coord, a, vals={merged: 1.97})
    d2 = coord.decisions[rA.experiment_id]
    # ... but the candidate alone beats best: its train.py goes onto best, verified like a merge.
    assert d2.decision == "merge", d2
    M = best(coord)
    assert M != merged and coord.repo.parents(M) == [rB.commit, rA.commit]
    assert coord.repo.show(M) == coord.repo.show(rA.commit)
    assert [j.commit for j, _ in done if j.kind == "verify"] == [merged, M]


def test_ancestry_by_content_not_by_first_parent_ids(coord, tmp_path):
    """A line whose parent has best's train.py under another commit id is on best."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, _ = experiment(coord, a[0], coord.root, "A up", A=1)
    run_jobs(coord, a)
    # a1 made the same change on its own (another commit, same train.py as best) ...
    twin = a[1].commit(coord.root, a[1].text_at(rA.commit), "A up, again")
    assert twin != rA.commit
    # ... and then a real win on top of it.
    rB, d = experiment(coord, a[1], twin, "B up", B=1)
    assert d.decision in ("promote", "merge"), d  # no verification needed: this text was measured
    M = best(coord)
    assert d.best_after == M and coord.repo.parents(M)[0] == rA.commit
    assert coord.repo.show(M) == coord.repo.show(rB.commit)
    assert not [j for j, _ in run_jobs(coord, a) if j.kind == "verify"]


def test_no_promotion_before_enough_degrees_of_freedom(coord, tmp_path, cfg):
    a = agents_for(coord, tmp_path)
    for ag in a:  # the first round only: 3 samples of the baseline, 2 degrees of freedom
        job = job_of(coord, ag.name)
        rec = ag.record(job.commit, job.parent, kind="baseline", job=job, val=VALS[int(ag.name[1])])
        decide(coord, rec)
    assert coord.status()["classes"][HW]["noise_dof"] < cfg.min_dof
    r, d = experiment(coord, a[0], coord.root, "A up", A=1)
    assert d.decision == "pending" and best(coord) == coord.root  # a clear win waits for sigma
    # The coordinator schedules repeats of the baseline until sigma can be trusted.
    n = warm_up(coord, a)
    assert n >= cfg.min_dof + 1 - 3
    final = coord.decisions[r.experiment_id]
    assert final.decision == "promote" and best(coord) == r.commit
    assert final.dof >= cfg.min_dof and final.sigma > 0 and final.margin > 0


def test_sigma_leaves_out_the_run_that_earned_a_confirmation(coord, tmp_path):
    """A result looked good on its own run (that is why it gets a confirmation): that run is
    selected, and pooled with its confirmation it would inflate sigma. Only the confirmations
    (and repeats of best) feed the noise pool."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    st = coord.status()["classes"][HW]
    sigma0, dof0 = st["sigma"], st["noise_dof"]
    mean = coord.book.ref(HW, coord.root).mean
    m = coord._class_margin(HW)
    r, d = experiment(coord, a[0], coord.root, "Z lucky", Z=1, val=mean - 0.95 * m)
    assert d.decision == "pending" and d.stage == "confirm"
    for val in (mean, mean + 0.0002):  # the truth: no better than best
        job = job_of(coord, "a1")
        assert job.kind == "confirm" and job.commit == r.commit
        rec = a[1].record(job.commit, job.parent, kind="confirm", job=job, val=val)
        coord.begin(a[1].started(rec))
        decide(coord, rec)
    st = coord.status()["classes"][HW]
    # Two confirmations: one more degree of freedom, and sigma from their spread (0.0002), not
    # from the lucky run's distance to them (0.95 margin: counted, sigma grew by a quarter).
    assert st["noise_dof"] == dof0 + 1
    assert st["sigma"] <= sigma0
    assert coord.decisions[r.experiment_id].decision in ("pending", "discard")
    assert best(coord) == coord.root


def test_margin_is_the_sequential_tests_first_boundary_on_the_t_scale(coord, tmp_path, cfg):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    r, d = experiment(coord, a[0], coord.root, "A up", A=1)
    from coordinator.decide.rules import design
    from coordinator.decide.sequential import boundaries, z_to_t
    n_eff = 1 / (1 + 1 / d.samples_best)
    assert d.looks == [pytest.approx(n_eff, abs=1e-3)]
    upper = boundaries((round(n_eff, 3),), design(cfg))[0][0]
    se = d.sigma / n_eff ** 0.5
    assert d.margin == pytest.approx(max(cfg.min_delta, z_to_t(upper, d.dof) * se))
    assert z_to_t(upper, d.dof) > upper > 2.5


def test_new_best_is_remeasured_first(coord, tmp_path, cfg):
    # a class of 2 x best_remeasures agents: all of its re-measures up front (half the agents)
    a = agents_for(coord, tmp_path, n=max(3, 2 * cfg.best_remeasures))
    warm_up(coord, a)
    rZ, dZ = experiment(coord, a[2], coord.root, "Z on", Z=1, val=1.9955)  # near the margin: confirm
    assert dZ.decision == "pending" and not dZ.merge_commit
    rA, dA = experiment(coord, a[0], coord.root, "A up", A=1)
    assert dA.decision == "promote"
    kinds = []
    for ag in a:
        job = job_of(coord, ag.name)
        if job is not None:
            kinds.append((job.kind, job.commit))
    # Top priority: best_remeasures repeats of the new best, then the rest.
    assert cfg.best_remeasures >= 1
    assert kinds[: cfg.best_remeasures] == [("baseline", rA.commit)] * cfg.best_remeasures
    assert kinds[cfg.best_remeasures] == ("confirm", rZ.commit)


def test_a_small_class_remeasures_a_new_best_with_half_its_agents_and_the_rest_on_demand(coord, tmp_path, cfg):
    """Re-measures up front take at most half the class's agents: with 2 agents, 4 of them held
    both agents for two rounds after every move (the real quick start: 12 of its 33 runs). The
    rest of best's samples come when a candidate needs them: each further look of a candidate
    is a sample of best while best has fewer samples than the candidate."""
    assert cfg.best_remeasures >= 2
    a = agents_for(coord, tmp_path, n=2)
    warm_up(coord, a)
    rA, dA = experiment(coord, a[0], coord.root, "A up", A=1)
    assert dA.decision == "promote"
    jobs = [job_of(coord, ag.name) for ag in a]
    assert [(j.kind, j.commit) for j in jobs if j] == [("baseline", rA.commit)]   # one, not 4
    rec = a[0].record(jobs[0].commit, jobs[0].parent, kind="baseline", job=jobs[0])
    coord.begin(a[0].started(rec))
    decide(coord, rec)
    assert job_of(coord, "a1") is None            # nothing up front any more: a1 does research
    # a candidate near best's value: the test goes on with more looks, each of best while best
    # has fewer samples than the candidate, else of the candidate
    rB, dB = experiment(coord, a[1], rA.commit, "B on", B=1, val=dA.mean - 0.6 * dB_margin(coord))
    assert dB.decision == "pending"
    looks = []
    for _ in range(6):
        job = job_of(coord, "a0")
        if job is None:
            break
        n_best, n_cand = coord.book.unselected(HW, rA.commit).n, coord.book.of(HW, rB.commit).n
        looks.append(job.kind)
        assert (job.kind, job.commit) == (("baseline", rA.commit) if n_best < n_cand else ("confirm", rB.commit))
        rec = a[0].record(job.commit, job.parent, kind=job.kind, job=job)
        coord.begin(a[0].started(rec))
        decide(coord, rec)
    assert looks and coord.decisions[rB.experiment_id].decision != "pending", looks


def dB_margin(coord):
    """The margin of the class's latest decision (what a candidate must beat best by)."""
    return max(d.margin or 0.0 for d in coord.decisions.values())


def test_another_look_only_when_the_test_goes_on(coord, tmp_path):
    """Under the sequential test's floor: discarded at once, no job. Between the floor and the
    margin: pending, and a confirmation of it is the next job."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    r1, d1 = experiment(coord, a[0], coord.root, "Z worse", Z=1, val=2.004)
    assert d1.decision == "discard" and d1.delta < 0 and job_of(coord, "a1") is None
    r2, d2 = experiment(coord, a[0], coord.root, "Z near", Z=2, val=1.9955)
    assert 0 < d2.delta < d2.margin
    assert d2.decision == "pending" and d2.stage == "confirm" and d2.waits == "candidate"
    job = job_of(coord, "a1")
    assert job.kind == "confirm" and job.commit == r2.commit


def test_simplification_needs_a_confirmation(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    c = a[0].commit(coord.root, drop_pads(a[0].text_at(coord.root)), "drop pads")
    rec = a[0].record(c, coord.root, val=2.0005)
    d = decide(coord, rec)
    assert d.decision == "pending" and best(coord) == coord.root
    done = run_jobs(coord, a, vals={"confirm": 2.0})
    assert [j.kind for j, _ in done][:1] == ["confirm"]
    assert coord.decisions[rec.experiment_id].decision == "simplification" and best(coord) == c


def test_open_verification_follows_best(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, _ = experiment(coord, a[0], coord.root, "A up", A=1)
    run_jobs(coord, a)
    rB, dB = experiment(coord, a[1], coord.root, "B up", B=1)
    assert dB.decision == "pending" and dB.merge_commit
    old_merge = dB.merge_commit
    rC, dC = experiment(coord, a[2], rA.commit, "C up", C=3)  # on best: moves best before B's verify
    assert dC.decision == "promote"
    done = run_jobs(coord, a)
    verifies = [j for j, _ in done if j.kind == "verify"]
    assert verifies and all(j.parent == rC.commit for j in verifies), verifies
    assert old_merge not in [j.commit for j in verifies]
    final = coord.decisions[rB.experiment_id]
    assert final.decision == "merge" and coord.repo.parents(best(coord))[0] == rC.commit


def test_job_lease_covers_a_whole_run(tmp_path, redis_url):
    cfg = PromotionConfig(sigma_prior=0.003, job_lease_s=None)
    coord = Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())
    a = agents_for(coord, tmp_path)
    job = job_of(coord, "a0")
    rec = a[0].record(job.commit, job.parent, kind="baseline", job=job, val=2.0)
    from trainer.schema import ExperimentResult
    rec.result = ExperimentResult(status="ok", val_bpb=2.0, budget=1200.0, training_seconds=1200.0,
                                  startup_seconds=60.0, eval_seconds=120.0, total_seconds=1380.0)
    decide(coord, rec)
    assert coord.jobs.lease_s >= 1380.0 * 1.5
    # swarm run derives the first lease from the budget and the profile's start-up and eval limits
    from coordinator.run.swarm import job_lease
    from trainer.profiles import get_profile
    prof = get_profile("gpu")
    assert job_lease(300.0, prof) > 300.0 + prof.startup_limit + prof.eval_limit > 900.0


def test_a_merge_is_counted_once(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, _ = experiment(coord, a[0], coord.root, "A up", A=1)
    run_jobs(coord, a)
    rB, dB = experiment(coord, a[1], coord.root, "B up", B=1)
    done = run_jobs(coord, a)
    (vjob, vdec), = [(j, d) for j, d in done if j.kind == "verify"]
    assert coord.decisions[rB.experiment_id].decision == "merge"
    assert vdec.decision == "sample" and vdec.best_after is None
    moves = [d for d in coord.decisions.values() if d.best_after == best(coord)]
    assert len(moves) == 1


def test_never_judged_has_its_own_status(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, _ = experiment(coord, a[0], coord.root, "A up", A=1)
    run_jobs(coord, a)
    rB, dB = experiment(coord, a[1], coord.root, "B up", B=1)
    for _ in range(5):  # its verification run crashes every time
        job = job_of(coord, "a2")
        if job is None:
            break
        rec = a[2].record(job.commit, job.parent, kind=job.kind, job=job)
        if job.kind == "verify":
            rec = rec.model_copy(update={"status": "crash", "val_bpb": None, "reason": "boom"})
        decide(coord, rec)
    d = coord.decisions[rB.experiment_id]
    assert d.decision == "unjudged", d


def test_delta_vs_parent_and_vs_best_are_two_fields_plus_is_better(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, _ = experiment(coord, a[0], coord.root, "A up", A=1)       # best ~1.95
    run_jobs(coord, a)
    rW, dW = experiment(coord, a[1], coord.root, "C up", C=1)      # ~1.99: beats its parent, not best
    assert dW.delta_parent == pytest.approx(2.0 - 1.99, abs=0.003)
    assert dW.delta == pytest.approx(1.95 - 1.99, abs=0.003)      # delta is vs best, + = better
    assert dW.delta < 0 < dW.delta_parent
    # the samples behind it (adaptive allocation reads a change's effect in sds from them)
    assert dW.samples == 1 and dW.samples_best >= 1 and dW.dof >= 2


def test_lost_winner_audit_lists_only_pending_work(coord, tmp_path):
    from coordinator.decide.audit import lost_winners
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rA, _ = experiment(coord, a[0], coord.root, "A up", A=1)
    run_jobs(coord, a)
    rB, dB = experiment(coord, a[1], coord.root, "A twice B", A=2, B=1)  # off best, beats it
    rows = lost_winners(coord, HW)
    assert [(r["experiment_id"], r["why"]) for r in rows] == [(rB.experiment_id, "pending")]
    st = coord.status()
    assert st["lost_winners"] and st["lost_winners"][0]["experiment_id"] == rB.experiment_id
    run_jobs(coord, a)
    assert lost_winners(coord, HW) == [] and coord.status()["lost_winners"] == []
    cls = coord.status()["classes"][HW]
    assert cls["sigma"] > 0 and cls["noise_dof"] >= coord.cfg.min_dof and cls["margin"] > 0


def test_a_winner_that_conflicts_with_a_newer_best_is_still_verified(coord, tmp_path):
    """X beat best by the margin and waited for its verification; best then moved to Y, which
    changed the same line further. X's change no longer applies and alone it is worse than Y:
    it is verified alone anyway (once a winner, it ends on best, pending or did-not-stack,
    never lost to a conflict)."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rB, dB = experiment(coord, a[0], coord.root, "B up", B=1)
    assert dB.decision == "promote"
    run_jobs(coord, a)  # re-measures of the new best
    rX, dX = experiment(coord, a[1], coord.root, "A up", A=2)  # made on the old best
    assert dX.decision == "pending" and dX.stage == "verify" and dX.beat_best
    rY, dY = experiment(coord, a[2], rB.commit, "A up more", A=3)
    assert dY.decision == "promote" and best(coord) == rY.commit
    d = coord.decisions[rX.experiment_id]
    assert d.decision == "pending" and d.stage == "verify-alone", d
    run_jobs(coord, a)
    assert coord.decisions[rX.experiment_id].decision == "did-not-stack"
    assert all(row["why"] != "LOST" for row in coord.status()["lost_winners"])


def test_a_winner_whose_change_is_already_in_best_is_carried(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    rAB, dAB = experiment(coord, a[0], coord.root, "A and B up", A=1, B=1)
    assert dAB.decision == "promote"
    rA, dA = experiment(coord, a[1], coord.root, "A up", A=1)  # made on the old best
    assert dA.decision == "carried" and "already in best" in dA.reason and dA.beat_parent
    assert all(row["why"] != "LOST" for row in coord.status()["lost_winners"])


@pytest.mark.parametrize("n_agents", [2, 4])
def test_a_checks_share_of_half_keeps_the_other_half_exploring(tmp_path, redis_url, n_agents):
    """checks_share 0.5: confirmations and verifications run on at most half the class's agents
    at a time (at least one), the others do their own research (2 of 5 real quick starts had
    both agents confirming near-null candidates for minutes). A job held counts until its run
    reports; then the next one is handed out."""
    cfg = PromotionConfig(sigma_prior=0.003, checks_share=0.5)
    coord = Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())
    a = agents_for(coord, tmp_path, n=n_agents)
    warm_up(coord, a)
    near = []
    for i in range(n_agents):   # candidates inside the margin: each wants confirmations
        rec, d = experiment(coord, a[i], coord.root, f"Z near {i}", Z=i + 1, val=1.9985)
        assert d.decision == "pending" and d.stage == "confirm", d
        near.append(rec)
    cap = max(1, n_agents // 2)
    held = [(ag, job_of(coord, ag.name)) for ag in a]
    taken = [(ag, j) for ag, j in held if j is not None]
    assert len(taken) == cap and all(j.kind == "confirm" for _, j in taken), [j for _, j in held]
    # the same agents, asking again while they run: their own leases, nobody else gets one
    assert [job_of(coord, ag.name) for ag, j in held if j is None] == [None] * (n_agents - cap)
    ag, j = taken[0]
    rec = ag.record(j.commit, j.parent, kind=j.kind, job=j)
    coord.begin(ag.started(rec))
    decide(coord, rec)
    free = [x for x, jj in held if jj is None][0]
    nxt = job_of(coord, free.name)   # one confirmation reported: another agent may take one now
    assert nxt is not None and nxt.kind in ("confirm", "verify"), nxt


def test_by_default_every_agent_takes_confirmations(tmp_path, redis_url):
    """checks_share 1.0, the default: every agent takes confirmations (0.5 cost the 8-agent
    research bench its speed-up: bench/results/checks-share-2026-12-03.txt)."""
    cfg = PromotionConfig(sigma_prior=0.003)
    coord = Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())
    a = agents_for(coord, tmp_path, n=2)
    warm_up(coord, a)
    for i in range(2):
        _, d = experiment(coord, a[i], coord.root, f"Z near {i}", Z=i + 1, val=1.9985)
        assert d.decision == "pending" and d.stage == "confirm", d
    assert all(job_of(coord, ag.name) is not None for ag in a)


def test_every_decision_records_the_bests_mean_it_compared_with(coord, tmp_path):
    """The last screen said 'moved 2 times: 2.4070 -> 2.1737' where the first move was judged
    against 2.4099 (9 samples): a move's record held only the new best's own mean, so the views
    took the baseline's value from an older decision (8 samples). Every decision that compares
    a result with best now records best's mean (`best_mean`, over `samples_best`), and the views
    start from what the first move was judged against."""
    from coordinator.state import figures

    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    root = coord.root
    base = [r.val_bpb for r in coord.records.values() if r.kind == "baseline" and r.commit == root]
    # a change measured better by about one margin: pending, then its confirmations decide it
    rec, d = experiment(coord, a[0], root, "A up", val=1.995, A=1)
    assert d.decision == "pending" and d.best_mean == pytest.approx(sum(base) / len(base))
    assert d.samples_best == len(base) and d.best_mean - d.mean == pytest.approx(d.delta)
    run_jobs(coord, a, vals={rec.commit: 1.990, "baseline": 2.0})
    move = coord.decisions[rec.experiment_id]
    assert move.decision == "promote", move
    base = [r.val_bpb for r in coord.records.values() if r.kind == "baseline" and r.commit == root
            and coord.decisions[r.experiment_id].decided_at <= move.decided_at]
    assert (move.best_mean, move.samples_best) == (pytest.approx(sum(base) / len(base)), len(base))
    rows = coord.ledger.rows()
    b = figures.compute(rows).best[HW]
    assert (b.baseline, b.baseline_val_bpb, b.baseline_samples) == (root, pytest.approx(move.best_mean),
                                                                     move.samples_best)
    row = next(r for r in rows if r["experiment_id"] == rec.experiment_id)
    assert row["best_mean"] == pytest.approx(move.best_mean)
