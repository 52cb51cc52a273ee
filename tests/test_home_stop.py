"""`swarm stop` against the pid file of a `swarm run`: a run that already ended but was not yet
reaped by whoever started it (a script that waits for it after `swarm stop`) is not running."""
from __future__ import annotations

import subprocess
import sys
import time

from coordinator.state.home import SwarmHome


def test_stop_sees_an_exited_unreaped_run_as_gone(tmp_path):
    home = SwarmHome(tmp_path / "home")
    home.root.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", "pass"])   # not waited for: a zombie once it exits
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[-1].split()[0] != "Z":
            time.sleep(0.05)
        home.pidfile.write_text(f"{p.pid}\n")
        assert home.running_pid() is None
        assert home.stop_run(timeout=3) is False
    finally:
        p.wait()


def test_stop_interrupts_a_live_run_and_waits_for_it(tmp_path):
    home = SwarmHome(tmp_path / "home")
    home.root.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", "import time\ntry:\n time.sleep(60)\nexcept KeyboardInterrupt:\n pass"])
    try:
        time.sleep(0.5)
        home.pidfile.write_text(f"{p.pid}\n")
        assert home.running_pid() == p.pid
        assert home.stop_run(timeout=30) is True   # SIGINT, the process exits, even unreaped
    finally:
        p.wait()
