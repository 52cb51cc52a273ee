"""Secrets stay secret in what the CLI writes and starts: URLs are redacted, swarm.json holds no
password, and the embedded redis listens on loopback with a password kept off its command line.
(The full search after a real run is in test_swarm_run.py.)"""
import json
from pathlib import Path

import redis

from coordinator.state.home import SwarmHome, redact_url


def test_redact_url():
    assert redact_url("redis://:hunter2@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
    assert redact_url("redis://user:pw@h/1") == "redis://user:***@h/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url(None) is None


def test_swarm_json_never_holds_a_redis_password(tmp_path):
    home = SwarmHome(tmp_path / "h")
    info, resumed = home.create_or_resume("redis://:hunter2@10.0.0.5:6379/0")
    assert not resumed and "hunter2" not in home.info_path.read_text()
    info2, resumed2 = home.create_or_resume(None)
    assert resumed2 and info2["swarm_id"] == info["swarm_id"] and info2["runs"] == 2


def test_embedded_redis_is_loopback_with_password_off_the_command_line(redis_daemon):
    cmdline = Path(f"/proc/{redis_daemon.pid}/cmdline").read_bytes()
    assert redis_daemon.password.encode() not in cmdline
    r = redis.Redis(host="127.0.0.1", port=redis_daemon.port, password=redis_daemon.password)
    assert r.config_get("bind")["bind"] == "127.0.0.1"
    assert r.config_get("protected-mode")["protected-mode"] == "yes"
    try:
        redis.Redis(host="127.0.0.1", port=redis_daemon.port).ping()
        raise AssertionError("redis answered without a password")
    except redis.AuthenticationError:
        pass


def test_status_output_has_no_password(tmp_path, redis_daemon, capsys):
    """`swarm status --redis-url` with a password prints neither the URL's password nor the URL."""
    from coordinator.cli import main

    home = SwarmHome(tmp_path / "h")
    home.create_or_resume(redis_daemon.url)
    rc = main(["status", "--json", "--swarm-home", str(home.root), "--redis-url", redis_daemon.url])
    out = capsys.readouterr()
    assert rc == 0 and json.loads(out.out)["experiments"] == 0
    assert redis_daemon.password not in out.out + out.err
    log = (home.root / "logs" / "swarm.log").read_text()
    assert redis_daemon.password not in log
