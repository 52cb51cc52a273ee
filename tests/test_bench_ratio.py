"""bench/ratio.py: the interval the benches print beside a ratio of two means over paired seeds
covers the true ratio about as often as it says, and is honest about what it cannot say."""
from __future__ import annotations

import numpy as np
import pytest

from bench.ratio import paired_ratio


def test_the_interval_covers_the_true_ratio_about_as_often_as_it_says():
    """Paired seeds as the benches have them: a shared per-seed difficulty (the arms' common luck)
    times each arm's own noise; true ratio of the means 1.2. 300 benches of 24 seeds each."""
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(300):
        hard = rng.gamma(4.0, 25.0, size=24)                     # runs a seed needs, ~100 +- 50
        a = 1.2 * hard * rng.lognormal(0.0, 0.25, size=24)
        b = hard * rng.lognormal(0.0, 0.25, size=24)
        truth = 1.2   # E[a] / E[b]: the lognormal factors have the same mean
        r = paired_ratio(list(a), list(b), resamples=1000, seed=i)
        covered += r.low <= truth <= r.high
        assert r.low <= r.value <= r.high
    assert 0.88 <= covered / 300 <= 0.99
    # pairing uses the shared difficulty: unpaired (b shuffled) intervals are wider
    a = list(1.2 * hard * rng.lognormal(0.0, 0.25, size=24))
    paired = paired_ratio(a, list(b), resamples=1000)
    unpaired = paired_ratio(a, list(rng.permutation(b)), resamples=1000)
    assert paired.high - paired.low < unpaired.high - unpaired.low


def test_deterministic_and_clear_about_bad_input():
    a, b = [10.0, 12.0, 9.0, 14.0], [9.0, 10.0, 9.5, 11.0]
    assert str(paired_ratio(a, b)) == str(paired_ratio(a, b))
    assert paired_ratio(a, b).value == pytest.approx(45 / 39.5)
    one = paired_ratio([3.0], [2.0])
    assert one.value == 1.5 and np.isnan(one.low) and "nan" in str(one)
    with pytest.raises(ValueError, match="same seeds"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        paired_ratio([], [])
