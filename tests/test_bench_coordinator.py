"""bench/coordinator.py runs end to end (both modes) and ends with its summary line. Its
figures are printed, never asserted: tests do not judge wall-clock times."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "coordinator.py"
LINE = re.compile(r"^agents=(\d+) decisions_per_s=[\d.]+ p50_ms=[\d.]+ p99_ms=[\d.]+ broadcast_all_ms=[\d.]+$")


@pytest.mark.parametrize("mode", [["--in-process"], ["--hosts", "2"]], ids=["in-process", "ray"])
def test_bench_runs_and_prints_its_summary(mode, tmp_path):
    p = subprocess.run([sys.executable, str(BENCH), "--agents", "8", "--seconds", "3", *mode],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    m = LINE.match(lines[-1])
    assert m and m.group(1) == "8", lines[-1]
    assert any(line.startswith("decision latency at the coordinator") for line in lines)
    assert any(line.startswith("agent round trip of a report") for line in lines)
