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


def test_a_pid_file_whose_pid_another_user_now_holds_is_no_run(tmp_path, monkeypatch):
    """The pid a `swarm run` wrote down, reused after it died by another user's process (kill(pid,
    0) answers EPERM): no run, as redisd already judged its server's pid; `swarm run` refused to
    start ("already running") and `swarm stop` died on the signal it may not send."""
    import os

    home = SwarmHome(tmp_path / "home")
    home.root.mkdir(parents=True, exist_ok=True)
    foreign = 987654

    def kill(pid, sig):
        if pid == foreign:
            raise PermissionError(1, "Operation not permitted")
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(os, "kill", kill)
    home.pidfile.write_text(f"{foreign}\n")
    assert home.running_pid() is None
    assert home.stop_run(timeout=3) is False


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


def test_a_review_command_while_a_run_starts_leaves_the_redis_it_brought_back(tmp_path):
    """`swarm status` (ledger_redis) during a `swarm run`'s start-up: the run adopts the server
    the review brought back from its AOF; stopping it on the way out pulled redis from under the
    starting swarm (test_swarm_run's Ctrl-C was lost in that race)."""
    import os
    import signal

    from coordinator.state.home import ledger_redis
    from coordinator.state.redisd import RedisDaemon

    home = SwarmHome(tmp_path / "home")
    home.root.mkdir(parents=True, exist_ok=True)
    first = RedisDaemon(home.redis_dir).start()   # the swarm's server, then stopped: an AOF left
    first.stop()
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])   # the `swarm run`
    pid = None
    try:
        home.pidfile.write_text(f"{run.pid}\n")
        with ledger_redis(home) as client:
            assert client is not None and client.ping()
            pid = int((home.redis_dir / "redis.pid").read_text())
        password, port = (home.redis_dir / "redis.secret").read_text().split()
        still = RedisDaemon(home.redis_dir, port=int(port), password=password).running()
        assert still, "the review stopped the redis a starting run adopts"
        home.pidfile.unlink()   # no run: a review stops what it started, as before
        with ledger_redis(home) as client:
            assert client.ping()
    finally:
        run.kill()
        run.wait()
        if pid is not None:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
