"""The real trainer's landscape (bench/real_landscape.py): a GP fitted to measured runs, rebuilt
from the data on every load. Checked on the shipped data and on a small file of known shape."""
from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

from bench.real_landscape import DATA, RealLandscape  # noqa: E402

SPACE = {"LR": {"type": "log", "min": 0.001, "max": 0.1, "step": 1.5},
         "DEPTH": {"type": "int", "min": 2, "max": 12, "step": 1}}


@pytest.fixture(scope="module")
def real():
    return RealLandscape()


def test_the_shipped_data_says_how_and_where_it_was_taken():
    meta = json.loads(DATA.with_suffix(".meta.json").read_text())
    for key in ("code_version", "machine", "started", "budget", "threads", "profile", "search_space", "baseline"):
        assert meta[key], key
    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    assert sum(r["part"] == "baseline" for r in rows) >= 20
    assert {"oat", "local", "global", "pairs"} <= {r["part"] for r in rows}


@pytest.mark.slow  # a second fit of the shipped data
def test_the_fit_is_reproducible_from_the_data(real):
    again = RealLandscape()
    text = real.baseline_text().replace("DEPTH = 8 if CUDA else 4", "DEPTH = 8 if CUDA else 3")
    assert again.true_bpb(text) == real.true_bpb(text)
    a = [real.sample(text, random.Random(7))[1] for _ in range(3)]
    b = [again.sample(text, random.Random(7))[1] for _ in range(3)]
    assert a == b


def test_the_baseline_is_where_its_repeats_are(real):
    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    vals = [r["val_bpb"] for r in rows if r["part"] == "baseline" and r["status"] == "ok"]
    se = statistics.stdev(vals) / len(vals) ** 0.5
    assert abs(real.baseline - statistics.mean(vals)) < 3 * se
    assert real.sigma == pytest.approx(statistics.stdev(vals))
    assert real.max_gain == pytest.approx(real.baseline - real.optimum)


@pytest.mark.slow  # a second fit of the shipped data
def test_knobs_outside_the_text_keep_the_baseline_and_null_is_flat(real):
    text = real.baseline_text()
    assert real.true_bpb(text) == real.baseline
    assert real.gain(text) == 0.0
    null = RealLandscape(null=True)
    moved = text.replace("MATRIX_LR = 0.02", "MATRIX_LR = 0.05")
    assert null.true_bpb(moved) == null.baseline and null.max_gain == 0.0


def test_programs_are_the_shipped_ones_cut_to_the_measured_knobs(real):
    from agents.program import parse_program
    names = real.programs_for(4)
    assert names[0] == "baseline" and len(set(names)) == 4
    for n in set(names):
        space = parse_program(real.program_text(n), n).search_space
        assert space and set(space) <= set(real.space)
    assert set(parse_program(real.program_text("baseline"), "b").search_space) == set(real.space)


def _write(tmp: Path, rows: list[dict]) -> Path:
    p = tmp / "toy.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p.with_suffix(".meta.json").write_text(json.dumps({"search_space": SPACE, "baseline": {"LR": 0.01, "DEPTH": 4}}))
    return p


def _toy(lr, depth):  # a known bowl: best at LR 0.03, DEPTH 6
    import math
    return 2.0 + 0.05 * (math.log(lr / 0.03) / math.log(1.5)) ** 2 / 9 + 0.01 * (depth - 6) ** 2


def test_the_gp_recovers_a_known_landscape_and_its_crashes(tmp_path, monkeypatch):
    rng = random.Random(0)
    rows = []
    for i in range(60):
        lr, depth = 0.01 * 1.5 ** rng.randint(-4, 6), rng.randint(2, 12)
        crash = lr > 0.07
        rows.append({"part": "global", "point": {"LR": round(lr, 6), "DEPTH": depth}, "seed": i,
                     "status": "crash" if crash else "ok",
                     "val_bpb": None if crash else _toy(lr, depth) + rng.gauss(0, 0.002), "total_seconds": 40.0})
    for i in range(20):
        rows.append({"part": "baseline", "point": {"LR": 0.01, "DEPTH": 4}, "seed": 100 + i, "status": "ok",
                     "val_bpb": _toy(0.01, 4) + rng.gauss(0, 0.002), "total_seconds": 40.0})
    land = RealLandscape(_write(tmp_path, rows))
    monkeypatch.setattr(land, "point_of", lambda text: dict(zip(("LR", "DEPTH"), json.loads(text))))
    for lr, depth in ((0.01, 4), (0.0225, 6), (0.015, 8), (0.0067, 3)):
        assert land.true_bpb(json.dumps([lr, depth])) == pytest.approx(_toy(lr, depth), abs=0.01)
    assert land.sample(json.dumps([0.0759, 4]), rng) == ("crash", None)
    assert land.sample(json.dumps([0.01, 4]), rng)[0] == "ok"
    assert land.optimum < land.baseline - 0.03
