"""The promotion rule as pure functions: pooled sigma, margin, verdicts, the held-out check."""
from __future__ import annotations

import math
import random

import pytest

from coordinator.decide.rules import NoisePool, Samples, is_suspect, judge, margin_for, standard_error
from agents.messages import PromotionConfig


def samples(*xs, confirm=None):
    s = Samples()
    for x in xs:
        s.add(x, confirm)
    return s


def pooled_sigma(groups: list[list[float]], prior: float) -> float:
    """The textbook formula the incremental NoisePool must agree with: pooled within-group std
    over groups of >= 2 samples (else `prior`)."""
    m2 = 0.0
    dof = 0
    for g in groups:
        if len(g) >= 2:
            mu = sum(g) / len(g)
            m2 += sum((x - mu) ** 2 for x in g)
            dof += len(g) - 1
    return math.sqrt(m2 / dof) if dof else prior


def test_pooled_sigma_matches_incremental_pool():
    rng = random.Random(1)
    groups = [[rng.gauss(i, 0.01) for _ in range(rng.randint(1, 6))] for i in range(30)]
    pool = NoisePool()
    for g in groups:
        s = Samples()
        for x in g:
            pool.add(s, x)
    ref = pooled_sigma(groups, prior=0.5)
    assert pool.sigma(0.5) == pytest.approx(ref, rel=1e-9)
    assert 0.007 < ref < 0.013  # the true within-commit std is 0.01, whatever the commit means
    assert pooled_sigma([[1.0], [2.0]], prior=0.123) == 0.123
    assert NoisePool().sigma(0.2) == 0.2


def test_margin_grows_with_noise_lines_and_has_a_floor():
    cfg = PromotionConfig(min_delta=0.001, cost_per_line=1e-4)
    se = standard_error(0.004, 1, 3)
    assert se == pytest.approx(0.004 * math.sqrt(1 + 1 / 3))
    m = margin_for(cfg, se, 0, n_eff=0.75)
    assert 2.5 * se < m < 4 * se  # the first look's boundary: alpha is spent over every look
    assert margin_for(cfg, 2 * se, 0, n_eff=0.75) == pytest.approx(2 * m)
    assert margin_for(cfg, 1e-6, 0) == 0.001
    assert margin_for(cfg, se, 10, n_eff=0.75) == pytest.approx(m + 10 * 1e-4)
    assert margin_for(cfg, se, -5, n_eff=0.75) == m  # removals never lower the bar
    assert margin_for(cfg, se, 0, dof=8, n_eff=0.75) > m  # sigma from 8 dof: the t quantile


BEST = (2.0, 2.002, 1.998)


@pytest.mark.parametrize("cand,net,expect,nxt", [
    ((1.95,), 0, "promote", None),
    ((1.997,), 0, "pending", "candidate"),   # positive but inside the margin: another seed
    ((2.003,), 0, "discard", None),          # worse: stopped for futility at once
    ((2.001,), -3, "pending", "candidate"),  # removes lines, within the noise of best: confirm it
    ((2.001, 2.0005), -3, "simplification", None),  # ... and confirmed
    ((2.02,), -3, "discard", None),          # removes lines but clearly worse
    ((1.9935,), 200, "pending", "candidate"),  # would promote with no added lines; 200 lines cost 0.004
    ((1.997, 1.996, 1.997, 1.997), 0, "pending", "best"),  # more samples than best: best's turn
])
def test_judge(cand, net, expect, nxt):
    cfg = PromotionConfig(min_delta=0.001, cost_per_line=2e-5)
    v = judge(cfg, samples(*cand), samples(*BEST), sigma=0.002, net_added=net)
    assert v.decision == expect, v
    assert v.samples == len(cand) and v.next == nxt
    assert v.looks and v.looks[-1] == pytest.approx(1 / (1 / len(cand) + 1 / 3), abs=1e-3)


def test_a_test_carried_across_looks_ends_undecided_when_the_runs_say_nothing():
    """Looks carried from one call to the next, as the coordinator does: a candidate whose
    first run looked good and whose confirmations match best is discarded within the test's
    length, and a reference that cannot be sampled (a parent) is never asked for."""
    cfg = PromotionConfig(confirm_runs=15)
    best, cand = samples(*BEST * 3), samples(1.997)
    looks: tuple = ()
    for i in range(40):
        v = judge(cfg, cand, best, sigma=0.002, net_added=0, looks=looks, sample_ref=False)
        looks = v.looks
        if v.decision != "pending":
            break
        assert v.next == "candidate"
        cand.add(2.0 + (0.001 if i % 2 else -0.001))
    assert v.decision == "discard" and cand.n <= 1 + cfg.confirm_runs
    assert list(looks) == sorted(looks) and len(looks) == cand.n


def test_confirm_runs_zero_means_no_pending():
    cfg = PromotionConfig(confirm_runs=0)
    v = judge(cfg, samples(1.997), samples(2.0, 2.002, 1.998), sigma=0.002, net_added=0)
    assert v.decision == "discard"


def test_suspect_and_original_rule():
    assert is_suspect(2.1, 2.0, margin=0.01)
    assert not is_suspect(2.005, 2.0, margin=0.01)
    assert not is_suspect(None, 2.0, margin=0.01)
    s = samples(1.0, 2.0, confirm=3.0)
    assert s.confirm_mean == 3.0 and s.mean == 1.5


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="extra"):
        PromotionConfig(kk=3)
