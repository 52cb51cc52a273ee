"""The bench's model of the machine's speed drift (bench/landscape.py Drift) and the analysis of
bench/drift.py's concurrent real runs: what they say is what the data and the settings hold."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from bench.drift import analyse
from bench.landscape import Drift


def test_drift_keeps_sigma_and_shares_its_part_within_a_round():
    d = Drift(0.6, 0.5, seed=3)
    rng = random.Random(0)
    sigma = 0.02
    pairs = [(d.noise(rng.gauss(0, sigma), r, sigma), d.noise(rng.gauss(0, sigma), r, sigma)) for r in range(4000)]
    xs = [x for p in pairs for x in p]
    assert statistics.stdev(xs) == pytest.approx(sigma, rel=0.05)
    a, b = zip(*pairs)
    assert statistics.correlation(a, b) == pytest.approx(0.6, abs=0.05)  # the shared share
    means = [(x + y) / 2 for x, y in pairs]
    assert statistics.correlation(means[:-1], means[1:]) == pytest.approx(0.5 * 0.6 / 0.8, abs=0.06)


def test_different_code_shares_the_cross_part_of_a_round_and_the_same_code_all_of_it():
    d = Drift.parse("0.8,0.0,0.5")
    assert (d.share, d.lag1, d.cross) == (0.8, 0.0, 0.5)
    rng = random.Random(1)
    sigma = 0.02
    rows = [[d.noise(rng.gauss(0, sigma), r, sigma, code) for code in ("A", "A", "B")] for r in range(4000)]
    a1, a2, b = zip(*rows)
    assert statistics.stdev(a1 + b) == pytest.approx(sigma, rel=0.05)  # sigma is unchanged
    assert statistics.correlation(a1, a2) == pytest.approx(0.8, abs=0.04)  # the same train.py: all of it
    assert statistics.correlation(a1, b) == pytest.approx(0.5, abs=0.04)   # another train.py: the cross part
    assert Drift.parse("0.8,0.1").cross == 0.8  # without CROSS, every run of a round shares it alike
    assert Drift.parse("0.8,0.1,0.5").at(3).cross == 0.5
    with pytest.raises(ValueError, match="cross"):
        Drift(0.5, 0.0, cross=0.6)


def test_the_machine_is_the_same_for_every_arm_of_a_seed_and_another_for_another_seed():
    d = Drift(0.5, 0.3)
    assert [d.at(7).z(r) for r in range(5)] == [d.at(7).z(r) for r in range(5)]
    assert [d.at(7).z(r) for r in range(5)] != [d.at(8).z(r) for r in range(5)]
    with pytest.raises(ValueError, match="share"):
        Drift(1.0, 0.0)


def _row(rnd, slot, steps, val):
    return {"round": rnd, "slot": slot, "status": "ok", "steps": steps, "val_bpb": val}


def test_the_analysis_finds_a_shared_speed_and_what_a_partner_run_removes():
    rng = random.Random(1)
    rows, slope = [], -0.3
    for r in range(60):
        m = rng.gauss(0, 0.08)  # the round's machine speed, shared
        for k in range(2):
            ls = math.log(100) + m + rng.gauss(0, 0.02)
            rows.append(_row(r, k, round(math.exp(ls)), 2.4 + slope * (ls - math.log(100)) + rng.gauss(0, 0.005)))
    f = analyse(rows)
    assert f["shared"] > 0.8 and f["slope"] == pytest.approx(slope, abs=0.05)
    assert f["sigma_pair"] < 0.6 * f["sigma"] and f["sigma_steps"] < f["sigma_pair"]
    # incomplete or crashed rounds are left out
    rows.append(_row(60, 0, 90, 2.5))
    rows += [dict(_row(61, 0, 90, 2.5)), dict(_row(61, 1, None, None), status="crash")]
    assert analyse(rows)["rounds"] == 60


def test_a_partner_of_other_code_is_centred_on_its_own_means_and_its_concurrent_difference_measured():
    """`--partner`: the last slot trains other code (more steps, a lower val_bpb). Centred on each
    code's own means, the shared speed is found as with one code, and the difference of concurrent
    runs (sd_diff) is far tighter than the same runs made apart would be (sd_apart)."""
    rng = random.Random(2)
    rows, slope = [], -0.3
    for r in range(80):
        m = rng.gauss(0, 0.08)
        for k, (steps0, val0) in enumerate(((100, 2.40), (130, 2.33))):
            ls = math.log(steps0) + m + rng.gauss(0, 0.02)
            row = _row(r, k, round(math.exp(ls)), val0 + slope * (ls - math.log(steps0)) + rng.gauss(0, 0.005))
            rows.append(dict(row, code="baseline" if k == 0 else "DEPTH=3"))
    f = analyse(rows)
    assert f["shared"] > 0.8 and f["slope"] == pytest.approx(slope, abs=0.05)
    assert f["partner_gain"] == pytest.approx(0.07, abs=0.01)
    assert f["sd_diff"] < 0.5 * f["sd_apart"]
    # the two codes' different step counts are not mistaken for the machine's speed
    assert f["sigma"] < 0.04


def test_with_constants_sets_a_module_constant_and_refuses_a_name_that_is_none():
    from bench.drift import with_constants

    text = "import os\nDEPTH = 8 if CUDA else 4               # transformer blocks\nWIDTH = 3\n"
    want = "import os\nDEPTH = 3               # transformer blocks\nWIDTH = 3\n"
    assert with_constants(text, {"DEPTH": "3"}) == want
    with pytest.raises(SystemExit, match="NOPE"):
        with_constants(text, {"NOPE": "1"})
