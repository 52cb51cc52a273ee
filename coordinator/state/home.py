"""SWARM_HOME: where one swarm keeps its state, its persisted id, and the way back to its ledger.

The morning-after commands (status, lineage, report, export) use `ledger_redis` to reach the
ledger: the embedded redis if it still runs, else brought back from its AOF (and stopped
again afterwards), else nothing (the caller then reads the parquet snapshot). No Ray here.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

from coordinator.state.procs import alive
from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

INFO_FILE = "swarm.json"


class SwarmError(RuntimeError):
    """A bad input or environment for a `swarm` command; the message is one line."""


class HomeError(SwarmError):
    """SWARM_HOME is missing or unreadable."""


def unsafe_warning(info: dict) -> str | None:
    """The line status and the report show when a run of this swarm had no sandbox."""
    if not info.get("unsafe_no_sandbox"):
        return None
    runs = ", ".join(str(r) for r in info.get("unsafe_runs", [])) or "?"
    return (f"WARNING: run(s) {runs} of this swarm used --unsafe-no-sandbox: train.py ran without "
            f"the sandbox, so its results could be forged")


def resolve_home(cli_value: str | None = None, cfg_value: str | None = None) -> Path:
    """--swarm-home, else $SWARM_HOME, else swarm.yaml's swarm_home, else ./.swarm."""
    raw = cli_value or os.environ.get("SWARM_HOME") or cfg_value or ".swarm"
    return Path(raw).expanduser().resolve()


def new_swarm_id() -> str:
    return time.strftime("sw-%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def redact_url(url: str | None) -> str | None:
    """The URL without its password, safe for logs and swarm.json."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class SwarmHome:
    """The layout of one SWARM_HOME directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    info_path = property(lambda self: self.root / INFO_FILE)
    redis_dir = property(lambda self: self.root / "redis")
    logs_dir = property(lambda self: self.root / "logs")
    snapshots_dir = property(lambda self: self.root / "snapshots")
    reports_dir = property(lambda self: self.root / "reports")
    pidfile = property(lambda self: self.root / "swarm.pid")
    ledger_snapshot = property(lambda self: self.root / "snapshots" / "ledger.parquet")

    def exists(self) -> bool:
        return self.info_path.is_file()

    def info(self) -> dict:
        """swarm.json; raises HomeError when this is not a swarm's home."""
        if not self.info_path.is_file():
            raise HomeError(f"{self.root}: no swarm here (no {INFO_FILE}); set SWARM_HOME or "
                            f"--swarm-home to the directory `swarm run` used")
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HomeError(f"{self.info_path}: unreadable ({e.__class__.__name__})") from None

    def write_info(self, info: dict) -> None:
        """Atomically (temp file + rename): a crash never leaves half a swarm.json."""
        atomic_write(self.info_path, json.dumps(info, indent=2, sort_keys=True) + "\n")

    def create_or_resume(self, redis_url: str | None, *, profile: str | None = None,
                         budget: float | None = None, unsafe: bool = False) -> tuple[dict, bool]:
        """Returns (info, resumed). A new home gets a new swarm id; an existing one keeps it.
        The profile and budget are recorded: a resumed swarm must train under the same ones.
        `unsafe` (--unsafe-no-sandbox) is recorded for good: once one run of this swarm trained
        unconfined, its ledger holds results a train.py could have forged."""
        fixed = {k: v for k, v in (("profile", profile), ("budget", budget)) if v is not None}
        if self.exists():
            info = self.info()
            info["runs"] = info.get("runs", 0) + 1
            for k, v in fixed.items():
                info.setdefault(k, v)
            if unsafe:
                info["unsafe_no_sandbox"] = True
                info.setdefault("unsafe_runs", []).append(info["runs"])
            self.write_info(info)
            return info, True
        info = {"swarm_id": new_swarm_id(), "created_at": time.time(), "runs": 1,
                "redis": "embedded" if redis_url is None else redact_url(redis_url), **fixed}
        if unsafe:
            info.update(unsafe_no_sandbox=True, unsafe_runs=[1])
        for d in (self.logs_dir, self.snapshots_dir, self.reports_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.write_info(info)
        return info, False

    # --- the pid of a running `swarm run`, for `swarm stop` ---

    def write_pid(self) -> None:
        self.pidfile.write_text(f"{os.getpid()}\n")

    def clear_pid(self) -> None:
        with contextlib.suppress(OSError):
            if self.pidfile.read_text().strip() == str(os.getpid()):
                self.pidfile.unlink()

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def stop_run(self, timeout: float = 120.0) -> bool:
        """SIGINT the running `swarm run` (a clean stop) and wait for it. False: none ran."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                return True
            time.sleep(0.2)
        raise HomeError(f"swarm run (pid {pid}) did not stop within {timeout:.0f}s")


@contextlib.contextmanager
def ledger_redis(home: SwarmHome, redis_url: str | None = None):
    """Yields a redis client on the swarm's ledger, or None when none can be had.

    An explicit `redis_url` wins; else the embedded server: used when it runs, brought back
    from its AOF when it does not (and stopped again on exit, only when started here and no
    `swarm run` has begun meanwhile: that run adopted it).
    """
    import redis

    from coordinator.state.ledger import LedgerError, connect_redis
    from coordinator.state.redisd import RedisDaemon, RedisError

    if redis_url:
        try:
            client = connect_redis(redis_url)
        except LedgerError as e:
            raise HomeError(str(e)) from None
        yield client
        client.close()
        return
    secret = home.redis_dir / "redis.secret"
    if not secret.exists():
        yield None
        return
    # with the saved password and port, running() can tell a live server from a dead one
    password, port = secret.read_text().split()
    daemon = RedisDaemon(home.redis_dir, port=int(port), password=password)
    started_here = False
    if not daemon.running():
        try:
            daemon.start()
            started_here = True
            log.info("brought the ledger's redis back from its AOF in %s", home.redis_dir)
        except RedisError as e:
            log.warning("cannot bring redis back (%s); reading the snapshot", e)
            yield None
            return
    client = redis.Redis.from_url(daemon.url, socket_connect_timeout=3)
    try:
        yield client
    finally:
        client.close()
        # A `swarm run` starting meanwhile adopts the server brought back here (RedisDaemon.start
        # adopts a live one): it is the run's now, and stopping it pulled redis from under it.
        if started_here and home.running_pid() is None:
            daemon.stop()
