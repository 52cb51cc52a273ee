"""Pools: results inside the margin, merged together onto best and verified as one
(coordinator/decide/pooling.py). Through the real Coordinator, a real redis-server and a real
bare git repo."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from agents.messages import PromotionConfig
from coordinator.decide.audit import lost_winners_from_rows
from coordinator.decide.core import Coordinator
from coordinator.run import live
from coordinator.review.lineage import build_lineage
from coordinator.review.report import render_tree
from fake_runner import baseline_text, check_invariants
from test_judge_best import HW, agents_for, best, experiment, job_of, run_jobs, warm_up


@pytest.fixture
def cfg():
    return PromotionConfig(sigma_prior=0.003)


def make(tmp_path, redis_url, cfg):
    return Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())


@pytest.fixture
def coord(tmp_path, redis_url, cfg):
    return make(tmp_path, redis_url, cfg)


def near(coord, frac: float) -> float:
    """A val_bpb that beats the root's mean by `frac` of the margin one new sample must clear."""
    m = coord._class_margin(HW)
    return coord.book.ref(HW, coord.root).mean - frac * m


def test_results_inside_the_margin_are_pooled_and_the_verified_pool_moves_best_once(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    r1, d1 = experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    assert d1.decision == "pending" and d1.stage == "confirm"  # alone: nobody to pool with yet
    r2, d2 = experiment(coord, a[1], coord.root, "C on", C=1, val=near(coord, 0.4))
    assert d2.decision == "pending" and d2.stage == "verify-pool", d2
    assert d2.pooled == [r1.experiment_id] and 0 < d2.delta < d2.margin
    M = d2.merge_commit
    text = coord.repo.show(M)
    assert "X = 1" in text and "C = 1" in text
    assert coord.repo.parents(M) == [coord.root, r2.commit, r1.commit]
    # The verification comes before the member's own confirmation, and beats best by far.
    job = job_of(coord, "a2")
    assert (job.kind, job.commit, job.parent) == ("verify", M, coord.root)
    rec = a[2].record(job.commit, job.parent, kind="verify", job=job, val=near(coord, 3.0))
    coord.begin(a[2].started(rec))
    assert coord.report(rec).decision.decision == "sample"
    final = coord.decisions[r2.experiment_id]
    assert final.decision == "merge" and final.best_after == M == best(coord)
    assert final.pooled == [r1.experiment_id]
    # The member reached best inside the pool: carried, its confirmation cancelled, not a move.
    c1 = coord.decisions[r1.experiment_id]
    assert c1.decision == "carried" and c1.best_after is None and c1.merge_commit == M
    assert not [st for st in coord.jobs.open_jobs(HW) if st.job.for_experiment == r1.experiment_id]
    moves = [d for d in coord.decisions.values() if d.best_after]
    assert len(moves) == 1
    check_invariants(coord, {HW: [coord.root, M]})
    assert coord.status()["lost_winners"] == []
    # The morning-after tree draws the pool (three parents) as one merge step of best.
    coord.flush_refs()
    G = build_lineage(coord.ledger.rows(), coord.repo.path)
    tree = render_tree(G, all=True)
    assert "1 step," in tree.splitlines()[0] and "merge" in tree and "C on" in tree, tree
    assert G.has_edge(r1.commit, M) and G.has_edge(r2.commit, M)
    # `swarm status` over the same ledger rows: one move of best, the carried member an
    # experiment like any other, not a move and not a lost winner.
    rows = coord.ledger.rows()
    data = live.gather(None, "t", rows)
    assert data["best_moves"] == 1 and data["experiments"] == 2
    assert lost_winners_from_rows(rows, lambda c: coord.repo.is_ancestor(c, M)) == []
    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=False, color_system=None).print(live.render(data))
    assert "best moved 1 time," in " ".join(buf.getvalue().split())


def test_a_pool_that_does_not_beat_best_leaves_each_result_to_itself_and_is_never_tried_again(
        coord, tmp_path, redis_url, cfg):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    r1, d1 = experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    r2, d2 = experiment(coord, a[1], coord.root, "C on", C=1, val=near(coord, 0.6))
    assert d2.stage == "verify-pool"
    M = d2.merge_commit
    done = run_jobs(coord, a, vals={M: near(coord, -1.0), "confirm": near(coord, 0.55)}, rounds=1)
    assert [j.kind for j, _ in done][:1] == ["verify"]
    # The pool did not beat best: r2 is judged alone (a confirmation: it earned one), r1 keeps its own.
    d2 = coord.decisions[r2.experiment_id]
    assert d2.decision in ("pending", "discard") and d2.stage != "verify-pool", d2
    assert best(coord) == coord.root
    assert coord.decisions[r1.experiment_id].decision in ("pending", "discard")
    # After a restart, the same combination (r3 has r2's train.py) is not verified again.
    coord2 = make(tmp_path, redis_url, cfg)
    r3, d3 = experiment(coord2, a[2], coord2.root, "C on again", C=1, val=near(coord2, 0.6))
    assert d3.stage != "verify-pool", d3
    assert not [st for st in coord2.jobs.open_jobs(HW) if st.job.kind == "verify"]


def test_changes_that_conflict_are_not_pooled(coord, tmp_path):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    r2, d2 = experiment(coord, a[1], coord.root, "X two", X=2, val=near(coord, 0.6))
    assert d2.decision == "pending" and d2.stage == "confirm" and not d2.pooled


def test_pools_open_per_best_are_bounded(tmp_path, redis_url):
    coord = make(tmp_path, redis_url, PromotionConfig(sigma_prior=0.003, pool_open_max=1))
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    _, d2 = experiment(coord, a[1], coord.root, "C on", C=1, val=near(coord, 0.6))
    assert d2.stage == "verify-pool"
    _, d3 = experiment(coord, a[2], coord.root, "Z on", Z=1, val=near(coord, 0.6))
    assert d3.stage == "confirm" and not d3.pooled


def test_below_pool_fraction_is_neither_pooled_nor_a_pool(coord, tmp_path, cfg):
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    _, d2 = experiment(coord, a[1], coord.root, "C tiny", C=1, val=near(coord, cfg.pool_fraction / 2))
    assert d2.stage != "verify-pool" and not d2.pooled


def test_a_pending_line_a_merge_takes_along_is_carried(coord, tmp_path):
    """An agent keeps a pending result as its line and stacks a winner on it: the winner (both
    edits, a descendant of best) goes onto best; the pending parent is carried."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    r1, d1 = experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    assert d1.decision == "pending"
    r2, d2 = experiment(coord, a[0], r1.commit, "A up", A=1)  # A is worth 0.05: far past the margin
    assert d2.decision == "promote" and best(coord) == d2.best_after
    assert coord.repo.is_ancestor(r1.commit, best(coord))
    c1 = coord.decisions[r1.experiment_id]
    assert c1.decision == "carried" and r2.experiment_id in c1.reason
    assert not [st for st in coord.jobs.open_jobs(HW) if st.job.for_experiment == r1.experiment_id]


def test_a_verification_showing_any_gain_is_confirmed(coord, tmp_path):
    """A pool is made of results that each looked better: a verification that beats best by
    less than half the margin (a single result would be discarded there) gets a confirmation."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    r2, d2 = experiment(coord, a[1], coord.root, "C on", C=1, val=near(coord, 0.6))
    M = d2.merge_commit
    job = job_of(coord, "a2")
    assert (job.kind, job.commit) == ("verify", M)
    rec = a[2].record(job.commit, job.parent, kind="verify", job=job, val=near(coord, 0.2))
    coord.begin(a[2].started(rec))
    coord.report(rec)
    d = coord.decisions[r2.experiment_id]
    assert d.decision == "pending" and d.stage == "verify-pool" and 0 < d.delta < 0.5 * d.margin, d
    assert [st.job.kind for st in coord.jobs.open_jobs(HW) if st.job.commit == M] == ["confirm"]


def test_a_pool_survives_a_coordinator_restart(coord, tmp_path, redis_url, cfg):
    """The coordinator is rebuilt from redis and git between forming a pool and its
    verification: the job is still handed out, the verified pool moves best, the member is
    carried, and the open pool still counts against pool_open_max."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    r1, _ = experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    r2, d2 = experiment(coord, a[1], coord.root, "C on", C=1, val=near(coord, 0.6))
    M = d2.merge_commit
    coord.flush_refs()
    coord = make(tmp_path, redis_url, cfg.model_copy(update={"pool_open_max": 1}))
    assert coord._pools_full(HW, coord.root)
    job = job_of(coord, "a2")
    assert (job.kind, job.commit) == ("verify", M)
    rec = a[2].record(job.commit, job.parent, kind="verify", job=job, val=near(coord, 3.0))
    coord.begin(a[2].started(rec))
    coord.report(rec)
    assert coord.decisions[r2.experiment_id].decision == "merge" and best(coord) == M
    assert coord.decisions[r1.experiment_id].decision == "carried"


def test_a_result_that_failed_in_a_pool_never_joins_one_with_the_same_partner(coord, tmp_path):
    """X and C were pooled and the pool did not beat best: a third result inside the margin is
    pooled with one of them at most, never with both again (the issue's 'one result joined 8
    pools with the same losing partner')."""
    a = agents_for(coord, tmp_path, n=4)
    warm_up(coord, a)
    r1, _ = experiment(coord, a[0], coord.root, "X on", X=1, val=near(coord, 0.6))
    r2, d2 = experiment(coord, a[1], coord.root, "C on", C=1, val=near(coord, 0.6))
    assert d2.stage == "verify-pool" and d2.pooled == [r1.experiment_id]
    M = d2.merge_commit
    job = job_of(coord, "a2")
    assert (job.kind, job.commit) == ("verify", M)
    rec = a[2].record(job.commit, job.parent, kind="verify", job=job, val=near(coord, -2.0))
    coord.begin(a[2].started(rec))
    coord.report(rec)
    d2 = coord.decisions[r2.experiment_id]
    assert d2.stage != "verify-pool" and best(coord) == coord.root
    r3, d3 = experiment(coord, a[3], coord.root, "Z on", Z=1, val=near(coord, 0.7))
    together = {r1.experiment_id, r2.experiment_id} <= set(d3.pooled) | {d3.experiment_id}
    assert not together, d3
    if d3.stage == "verify-pool":  # pooled with one of them: a pool of two, not three
        assert len(d3.pooled) == 1


def test_members_made_on_an_earlier_best_are_pooled_without_a_merge_base_fork(coord, tmp_path, monkeypatch):
    """A pool's members are often results made on an earlier best (the pool looks at the last few
    bests' results); that best is their merge base with best now (one parent, on best's
    first-parent line), so pooling them forks no `git merge-base` (each fork held the decision
    lock a few ms, and the coordinator bench's slow batches had up to 13)."""
    a = agents_for(coord, tmp_path)
    warm_up(coord, a)
    root = coord.root
    r1, d1 = experiment(coord, a[1], root, "X on", X=1, val=near(coord, 0.6))
    assert d1.decision == "pending" and d1.stage == "confirm"
    rB, dB = experiment(coord, a[0], root, "B on", B=1, val=near(coord, 1.5))
    assert dB.decision == "promote"
    B1 = best(coord)
    calls = []
    real = coord.repo.merge_base
    monkeypatch.setattr(coord.repo, "merge_base", lambda x, y: calls.append((x, y)) or real(x, y))
    ref, m = coord.book.ref(HW, B1).mean, coord._class_margin(HW)
    r2, d2 = experiment(coord, a[2], B1, "C on", C=1, val=ref - 0.4 * m)
    assert d2.decision == "pending" and d2.stage == "verify-pool" and d2.pooled == [r1.experiment_id], d2
    text = coord.repo.show(d2.merge_commit)
    assert "B = 1" in text and "X = 1" in text and "C = 1" in text
    assert calls == []
