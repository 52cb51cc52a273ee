"""bench/allocation.py runs end to end on one short seed of every scenario and ends with its summary
line; its figures are printed, never asserted (seed counts that tell settings apart take minutes)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "allocation.py"
LINE = re.compile(r"^agents=8 programs=4 barren_speedup=[\d.]+ equal_ratio=[\d.]+ late_bloomer_share=(nan|[\d.]+)$")


def test_bench_runs_every_scenario_and_prints_its_summary(tmp_path):
    p = subprocess.run([sys.executable, str(BENCH), "--seeds", "1", "--rounds", "3"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert LINE.match(lines[-1]), lines[-1]
    trace = next(x for x in lines if x.startswith("barren adaptive: agents on the programs that can move best"))
    assert len(trace.split(": ")[-1].split()) == 3   # one figure per round played
    assert sum(1 for x in lines if re.match(r"^  \S+ +(static|adaptive) +seed  0: ", x)) == 6
