"""bench/coordinator.py runs end to end (both modes) and ends with its summary line. Its
figures are printed, never asserted: tests do not judge wall-clock times."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "coordinator.py"
LINE = re.compile(r"^agents=(\d+) decisions_per_s=[\d.]+ p50_ms=[\d.]+ p99_ms=[\d.]+ broadcast_all_ms=[\d.]+$")


@pytest.mark.parametrize("mode", [["--in-process"], ["--hosts", "2"]], ids=["in-process", "ray"])
def test_bench_runs_and_prints_its_summary(mode, tmp_path):
    mark = f"bench-{uuid.uuid4().hex}"   # every process the bench starts inherits it
    work = tmp_path / "tmp"   # the bench's own folder (redis, repos) goes here, its Ray session's in /tmp/rb*
    work.mkdir()
    env = {**os.environ, "SWARM_TEST_MARK": mark, "TMPDIR": str(work)}
    before = set(Path("/tmp").glob("rb*"))
    p = subprocess.run([sys.executable, str(BENCH), "--agents", "8", "--seconds", "3", *mode],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    left = _survivors(mark)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    m = LINE.match(lines[-1])
    assert m and m.group(1) == "8", lines[-1]
    assert any(line.startswith("decision latency at the coordinator") for line in lines)
    assert any(line.startswith("agent round trip of a report") for line in lines)
    # the bench stops what it started: no Ray worker (an agent host, the coordinator actor), no
    # raylet or redis-server of its run outlives it
    assert not left, f"processes of the bench outlived it: {left}"
    # nor its folders: its redis and repos, its Ray session's logs and sockets
    # (/tmp/rb* only for the Ray case: under xdist the other case may run beside this one)
    new_rb = set(Path("/tmp").glob("rb*")) - before if "--in-process" not in mode else set()
    left_dirs = sorted(map(str, new_rb | set(work.iterdir())))
    assert not left_dirs, f"the bench left {left_dirs}"


def _survivors(mark: str, grace: float = 10.0) -> list[str]:
    """Processes whose environment carries `mark`, after up to `grace` seconds for them to go
    (killed here, by PID, so that a failing run leaves nothing behind)."""
    deadline = time.monotonic() + grace
    while True:
        found = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if mark.encode() in (d / "environ").read_bytes():
                    found[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for pid in found:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    return [f"{pid} {cmd}" for pid, cmd in found.items()]
