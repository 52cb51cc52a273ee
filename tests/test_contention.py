"""The machine's own speed during a run (trainer/contention.py), through the real runner: a CPU hog
started in the middle of a run on the run's own core flags it `contended`; a train.py made
faster by a real code change (fewer layers) reads the same contention as the slower one, so it
is not flagged on a machine where the slower one is not (the measure never uses the
candidate's step count)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_runner import small_eval

from trainer.contention import CONTENDED_ABOVE

__all__ = ["small_eval"]  # a fixture, imported for this module's tests
pytestmark = pytest.mark.usefixtures("small_eval")  # 2 eval batches: the claim is the meter's, not the score's


@pytest.fixture
def one_core():
    """Run this test's runs (and so their sandboxes) on one core of this process's affinity,
    restored after (never wider than it was)."""
    before = os.sched_getaffinity(0)
    core = max(before)
    os.sched_setaffinity(0, {core})
    yield core
    os.sched_setaffinity(0, before)


def baseline_with(tmp_path: Path, depth: int) -> Path:
    from trainer import baseline_path
    src = baseline_path().read_text()
    assert "DEPTH = 8 if CUDA else 4" in src
    p = tmp_path / f"train_depth{depth}.py"
    p.write_text(src.replace("DEPTH = 8 if CUDA else 4", f"DEPTH = 8 if CUDA else {depth}"))
    return p


@pytest.mark.slow
def test_a_cpu_hog_started_mid_run_on_its_core_is_flagged(tmp_path, prepared_data_dir, one_core):
    from trainer.runner import run_experiment

    hog: list[subprocess.Popen] = []

    def on_event(e):
        if e["event"] == "progress" and e["progress"] >= 0.4 and not hog:
            hog.append(subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                        preexec_fn=lambda: os.sched_setaffinity(0, {one_core})))

    try:
        r = run_experiment(baseline_with(tmp_path, 4), tmp_path / "run", budget=10, threads=1,
                           data_dir=prepared_data_dir, on_event=on_event)
    finally:
        for h in hog:
            h.kill()
            h.wait()
    assert hog, "the run never got to its middle"
    assert r.status in ("ok", "timeout"), r.error
    assert r.contention is not None and r.contention > CONTENDED_ABOVE and r.contended, r.contention


@pytest.mark.slow
def test_a_faster_train_py_is_not_flagged_where_the_slower_one_is_not(tmp_path, prepared_data_dir, one_core):
    from trainer.runner import run_experiment

    runs = {}
    for depth in (4, 1, 4):  # slow, fast, slow: the machine's load drifts
        r = run_experiment(baseline_with(tmp_path, depth), tmp_path / f"run{len(runs)}", budget=6, threads=1,
                           data_dir=prepared_data_dir)
        assert r.status in ("ok", "timeout") and r.contention is not None, r.error
        runs[len(runs)] = r
    slow = [runs[0], runs[2]]
    fast = runs[1]
    rate = [x.steps / x.training_seconds for x in slow]
    assert fast.steps / fast.training_seconds > 1.3 * max(rate), (fast.steps, [x.steps for x in slow])
    lo = min(x.contention for x in slow)
    hi = max(x.contention for x in slow)
    assert lo - 0.1 <= fast.contention <= hi + 0.1, (fast.contention, lo, hi)
    if not any(x.contended for x in slow):
        assert not fast.contended, fast.contention


def test_the_meter_reads_another_process_taking_its_share_of_the_core():
    """The meter alone, on real processes: a busy loop on one core, measured alone and then with
    a second busy loop on the same core. With background load L (other users of the machine),
    alone it reads L/(1+L); with the second loop it must read (1+L)/(2+L): near 0 -> 0.5 quiet."""
    from trainer.contention import ContentionMeter

    core = max(os.sched_getaffinity(0))
    busy = [sys.executable, "-c", "while True: pass"]
    procs = [subprocess.Popen(busy, preexec_fn=lambda: os.sched_setaffinity(0, {core}))]

    def measure(seconds: float) -> float:
        m = ContentionMeter(procs[0].pid, share=1.0, cpus={core})
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            m.sample(counting=True)
            time.sleep(0.05)
        return m.value()

    try:
        alone = measure(2.5)
        procs.append(subprocess.Popen(busy, preexec_fn=lambda: os.sched_setaffinity(0, {core})))
        shared = measure(2.5)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    load = alone / max(1e-3, 1 - alone)
    assert shared == pytest.approx((1 + load) / (2 + load), abs=0.12), (alone, shared)
    assert shared > alone
