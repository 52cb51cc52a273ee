"""redis dies: the embedded one comes back from its AOF with nothing lost, and a coordinator
started while redis is still down waits for it when it is a restart, fails at once when not."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from coordinator.decide.core import Coordinator
from coordinator.state.ledger import LedgerError, connect_redis
from coordinator.state.procs import alive
from coordinator.state.redisd import RedisDaemon
from fake_runner import baseline_text
from agents.messages import PromotionConfig


def test_revive_restarts_a_killed_redis_from_its_aof(tmp_path):
    d = RedisDaemon(tmp_path / "redis").start()
    try:
        url, pid = d.url, d.pid
        assert not d.revive()  # alive: nothing to do
        c = connect_redis(url)
        c.set("kept", "yes")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        # Gone, not just silent: a SIGKILLed process closes its socket before the kernel marks it a
        # zombie, and revive() rightly leaves a process that still runs alone (CI hit that window).
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert d.revive()
        assert d.pid != pid and d.url == url  # same port and password: clients reconnect
        assert c.get("kept") == b"yes"  # appendfsync always: the write survived SIGKILL
        assert not d.revive()
    finally:
        d.stop(kill=True)


def test_restarted_coordinator_waits_for_redis_a_first_start_does_not(tmp_path, redis_daemon):
    cfg = PromotionConfig()
    home = tmp_path / "home"
    first = Coordinator(home, redis_daemon.url, cfg, swarm_id="w", baseline_train_py=baseline_text())
    root = first.root
    redis_daemon.stop(kill=True)
    with pytest.raises(LedgerError, match="cannot reach redis"):
        Coordinator(home, redis_daemon.url, cfg, swarm_id="w")
    t = threading.Timer(1.5, redis_daemon.start)
    t.start()
    try:
        t0 = time.monotonic()
        again = Coordinator(home, redis_daemon.url, cfg, swarm_id="w", redis_wait_s=60)
        assert time.monotonic() - t0 >= 1.0  # it waited for the restart, then rebuilt
        assert again.root == root
    finally:
        t.join()
