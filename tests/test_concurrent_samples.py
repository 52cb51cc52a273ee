"""Runs of one train.py that train at the same time on one node share the machine's speed of that
moment (bench/drift.py measured 0.89 of a run's variance on this 2-core VM). With
`promotion.concurrent: shared` the coordinator clusters them, estimates that shared part from
the runs, and counts concurrent runs as what they are worth: in sigma's degrees of freedom and
in the sequential test. The samples and the pool on their own, then through the real
Coordinator (real redis-server, real bare git repo) with the drift that made a likely-null
change look like a winner in a real quick start (stop 28's note, run 1)."""
from __future__ import annotations

import random
import statistics

import pytest

from agents.messages import NoiseHistorySpec, PromotionConfig
from coordinator.decide.core import Coordinator
from coordinator.decide.rules import NoisePool, Samples
from fake_runner import FakeAgent, baseline_text, set_constants

HW = "cpu-fake"


def test_concurrent_runs_on_one_node_form_one_cluster_and_count_as_what_they_are_worth():
    s = Samples()
    s.add(2.00, at=("n1", 0.0, 40.0))
    s.add(2.01, at=("n1", 5.0, 44.0))     # overlaps the first by 35 of 39 s: the same moment
    s.add(2.02, at=("n2", 5.0, 44.0))     # another node: its own machine
    s.add(2.03, at=("n1", 35.0, 80.0))    # overlaps the first by 5 s: another moment
    s.add(2.04)                           # no window: a cluster of its own
    assert s.n == 5 and s.mean == pytest.approx(2.02)
    assert [c.n for c in s.clusters] == [2, 1, 1, 1]
    assert s.info(0.0) == 5.0
    # the mean weighs each run alike: var(mean) = sigma^2 sum m (1 + (m - 1) rho) / n^2
    assert s.info(1.0) == pytest.approx(25 / 7)
    assert s.info(0.5) == pytest.approx(25 / (2 * 1.5 + 3))
    m2, dof = s.within
    assert dof == 1 and m2 == pytest.approx(0.00005)
    zero = Samples()                          # windows of no length never cluster
    zero.add(1.0, at=("n1", 3.0, 3.0))
    zero.add(1.0, at=("n1", 3.0, 3.0))
    assert len(zero.clusters) == 2


def test_clusters_found_through_the_index_are_the_first_overlapping_ones_as_a_scan_finds_them():
    """Samples keeps clusters indexed by node and start; what it forms must be what scanning every
    cluster in order forms (the rule as first written), for runs reported out of order, nested,
    of several lengths, on several nodes, and without windows."""
    from coordinator.decide.rules import Cluster

    rng = random.Random(7)
    for case in range(200):
        s, scan = Samples(), []
        for _ in range(rng.randint(1, 120)):
            if rng.random() < 0.05:
                at = None
            else:
                start = rng.uniform(0, 2000)
                at = (rng.choice(["n1", "n2", "n3"]), start, start + rng.choice([0.0, 5.0, 40.0, 300.0]) * rng.random())
            s.add(2.0, at=at)
            c = next((c for c in scan if at is not None and c.overlaps(*at)), None)
            if c is None:
                c = Cluster(*(at or ("", 0.0, 0.0)))
                scan.append(c)
            c.n += 1
        assert [(c.node, c.start, c.end, c.n) for c in s.clusters] == \
            [(c.node, c.start, c.end, c.n) for c in scan], case


def _pool(share: float, rounds: int, width: int, seed: int = 0, sigma: float = 0.02) -> NoisePool:
    """One code's runs in rounds of `width` concurrent runs, `share` of the variance common to a round."""
    rng, pool, s = random.Random(seed), NoisePool(), Samples()
    for r in range(rounds):
        d = rng.gauss(0, sigma * share ** 0.5)
        for _ in range(width):
            pool.add(s, 2.0 + d + rng.gauss(0, sigma * (1 - share) ** 0.5), at=("n1", 100.0 * r, 100.0 * r + 40))
    return pool


def test_the_pool_tells_the_shared_part_from_the_runs():
    shared = [_pool(0.85, 40, 2, seed) for seed in range(20)]
    rhos = [p.clustered()[2] for p in shared]
    assert 0.7 < sum(rhos) / len(rhos) < 0.95
    sig = [(p.clustered()[0] / p.clustered()[1]) ** 0.5 for p in shared]
    raw = [(p.m2 / p.dof) ** 0.5 for p in shared]
    assert sum(sig) / len(sig) == pytest.approx(0.02, rel=0.08)
    assert sum(raw) / len(raw) < sum(sig) / len(sig)          # the runs alone understate it
    assert all(p.clustered()[1] < p.dof for p in shared)      # and their degrees of freedom overstate
    iid = [_pool(0.0, 40, 2, seed) for seed in range(20)]
    assert sum(p.clustered()[2] for p in iid) / len(iid) < 0.15
    assert sum(p.clustered()[1] for p in iid) / len(iid) > 0.85 * iid[0].dof
    one = _pool(0.85, 1, 8)                                    # one moment: sigma is not identified
    assert one.clustered() == (0.0, 0, 1.0)
    lone = NoisePool()                                         # no concurrent runs: as before
    s = Samples()
    for x in (2.0, 2.01, 2.02):
        lone.add(s, x)
    assert lone.clustered() == (lone.m2, lone.dof, 0.0)


def test_a_negative_shared_part_clips_to_the_plain_pooled_variance():
    """A 2-agent cpu-smoke swarm (2026-12-07: 9 baseline runs, 4 concurrent pairs and one alone)
    said sigma 0.0118 over 8 dof at its end (the runs' pooled variance) and left 0.0143 "over 8
    dof" in the noise history, which the next swarm started from: the within-pair variance alone
    (4 dof of evidence), taken whenever the shared part came out negative. Clipped to 0, the
    runs are independent and the estimate is the pooled one; never below it otherwise."""
    xs = [2.545993, 2.536287, 2.528933, 2.549946, 2.523498, 2.555339, 2.526200, 2.535645, 2.524396]
    pool, s = NoisePool(), Samples()
    for i, x in enumerate(xs):
        pool.add(s, x, at=("n1", 100.0 * (i // 2), 100.0 * (i // 2) + 40))
    m2, dof, rho = pool.clustered()
    assert rho == 0.0 and dof == 8 == pool.dof
    assert (m2 / dof) ** 0.5 == pytest.approx(statistics.stdev(xs)) == pytest.approx(0.011752, abs=1e-6)
    clipped = 0
    for seed in range(300):
        p = _pool(0.0, 5, 2, seed)
        m2, dof, rho = p.clustered()
        assert m2 / dof >= p.m2 / p.dof * (1 - 1e-12), seed
        if rho == 0.0:
            clipped += 1
            assert m2 == pytest.approx(p.m2) and dof == p.dof, seed
    assert clipped > 50   # the case is common when concurrent runs share nothing


# --- through the real Coordinator ------------------------------------------------------------
# The machine's speed round by round (bpb), as bench/drift.py measured it: concurrent runs share
# it, and it swings by about 0.02 from one round to the next. Five agents start with two quiet
# rounds of the baseline (nearly the same speed), then the machine is fast for a round (FAST) in
# which one agent's truly null change runs, then it swings as usual.
ROUNDS = (0.0, 0.004, -0.02, 0.02, -0.015, 0.01, 0.018, -0.01, 0.0, 0.015, -0.02, 0.005, 0.012, -0.008)
NULL_AT = 2


def _at(rec, r: int, k: int):
    """The record as run in round r (60 s apart, 40 s long; slot k starts a second later), node n1."""
    res = rec.result
    upd = {"started_at": 1000.0 + 60 * r + k, "finished_at": 1040.0 + 60 * r + k}
    if res is not None:
        upd["result"] = res.model_copy(update={"node": "n1"})
    return rec.model_copy(update=upd)


def _null_in_a_fast_round(home, redis_url, concurrent: str, history: NoiseHistorySpec | None = None,
                          null_at: int | None = NULL_AT, **promotion) -> tuple[str | None, Coordinator]:
    cfg = PromotionConfig(sigma_prior=0.003, concurrent=concurrent, **promotion)
    coord = Coordinator(home, redis_url, cfg, swarm_id=f"t-{concurrent}-{random.random():.9f}",
                        baseline_train_py=baseline_text(), history=history)
    agents = [FakeAgent(f"a{i}", coord.repo.path, home.parent / f"wt-{home.name}", hw=HW, sigma=0.0, seed=i)
              for i in range(5)]
    own, null = random.Random(1), None
    for r, off in enumerate(ROUNDS):
        for k, a in enumerate(agents):
            if r == null_at and k == 0:
                root = coord.repo.ref(f"refs/heads/best/{HW}")
                c = a.commit(root, set_constants(a.text_at(root), PAD_0=1), "PAD_0 0 -> 1")  # no effect
                rec = a.record(c, root, description="null", val=2.0 + off + own.gauss(0, 0.002))
                null = rec.experiment_id
            else:
                job = coord.next_job(a.name, HW)
                if job is None:
                    continue
                rec = a.record(job.commit, job.parent, kind=job.kind, job=job, val=2.0 + off + own.gauss(0, 0.002))
            coord.begin(a.started(rec))
            coord.report(_at(rec, r, k))
        if null is not None and coord.decisions[null].decision != "pending":
            break
    coord.flush_refs()   # and the noise history
    return (coord.decisions[null].decision if null else None), coord


def test_a_null_change_in_a_fast_round_moves_best_only_when_concurrent_runs_count_as_independent(tmp_path, redis_url):
    # Counted as ten independent runs, two quiet rounds make sigma small and sure: the fast
    # round alone carries a null change onto best (the 8-agent research bench with the measured
    # drift: false promotions 0.67% per experiment, best moved in 6 of 12 null swarms).
    before, c0 = _null_in_a_fast_round(tmp_path / "independent", redis_url, "independent")
    assert before in ("promote", "merge"), (before, c0.book.sigma(HW), c0.book.dof(HW))
    # Clustered, those rounds are two moments: sigma waits for more of them, and the change
    # is judged with the machine's swings in it.
    after, c1 = _null_in_a_fast_round(tmp_path / "shared", redis_url, "shared")
    assert after not in ("promote", "merge", "simplification"), after
    assert c1.book.rho(HW) > 0.8
    assert c1.book.sigma(HW) > 2 * c0.book.sigma(HW)


def test_auto_counts_concurrent_runs_as_shared_once_the_history_of_the_class_measured_it(tmp_path, redis_url):
    import json
    spec = NoiseHistorySpec(path=str(tmp_path / "noise-history.json"), profile="cpu", budget=30.0, apparatus="x")
    # The first swarm on the machine: nothing known, so concurrent runs count as independent
    # (the quick start's pace), but what it measured is left for the next swarm (this one
    # repeats the baseline for a while: min_dof 40).
    first, c0 = _null_in_a_fast_round(tmp_path / "first", redis_url, "auto", spec, null_at=None, min_dof=40)
    assert not c0.book.shared(HW) and c0.book.rho(HW) == 0.0
    line = next(iter(json.loads(spec.path and open(spec.path).read())["entries"].values()))["swarms"]
    (mine,) = line.values()
    assert mine["rho"] > 0.8 and mine["rho_dof"] >= 4
    # The next swarm of the class starts from it: concurrent runs count as what they are worth,
    # and sigma, measured honestly, comes with the history.
    second, c1 = _null_in_a_fast_round(tmp_path / "second", redis_url, "auto", spec)
    assert c1.book.shared(HW) and c1.book.rho(HW) > 0.8
    assert second not in ("promote", "merge", "simplification")
    # `independent` never clusters, whatever the history says
    third, c2 = _null_in_a_fast_round(tmp_path / "third", redis_url, "independent", spec)
    assert not c2.book.shared(HW)
