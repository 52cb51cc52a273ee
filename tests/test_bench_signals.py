"""A bench stopped by SIGTERM or SIGHUP (`kill PID`, `timeout`, a closed terminal) stops the
redis-server it started and removes its work folder, as when it ends or gets Ctrl-C: a killed
bench used to leave both behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.state.procs import alive

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script,args,sig", [
    ("allocation.py", ["--seeds", "1", "--rounds", "30", "--scenarios", "barren"], signal.SIGTERM),
    ("research.py", ["--seeds", "1"], signal.SIGHUP),
])
def test_a_bench_stopped_by_a_signal_leaves_no_redis_and_no_work_folder(tmp_path, script, args, sig):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, str(BENCH / script), *args], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        pidfile, deadline = None, time.time() + 120
        while time.time() < deadline and pidfile is None:
            found = [f for f in tmp_path.glob("*/redis/redis.pid") if f.read_text().strip()]
            pidfile = found[0] if found else None
            if p.poll() is not None:
                pytest.fail(f"the bench ended before its redis-server started: {p.stdout.read()[-2000:]}")
            time.sleep(0.2)
        assert pidfile is not None, "no redis-server pidfile under the bench's work folder"
        redis_pid = int(pidfile.read_text().strip())
        work = pidfile.parent.parent
        assert alive(redis_pid)
        time.sleep(1.0)   # into its rounds
        os.kill(p.pid, sig)
        out, _ = p.communicate(timeout=60)
        assert p.returncode != 0, out[-2000:]
        deadline = time.time() + 10
        while alive(redis_pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not alive(redis_pid), f"redis-server {redis_pid} outlived the bench"
        assert not work.exists(), f"{work} is left behind: {sorted(x.name for x in work.iterdir())}"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for f in tmp_path.glob("*/redis/redis.pid"):
            try:
                pid = int(f.read_text().strip())
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            except (ValueError, OSError):
                pass
