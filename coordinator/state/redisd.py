"""A private redis-server on loopback with a password and AOF, started and stopped by PID.

Used by `swarm run` when no --redis-url is given, by the morning-after commands to bring the
ledger back from its AOF, and by the tests. The password lives in a 0600 config file, never on
a command line (where `ps` would show it).
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from coordinator.state import aof
from coordinator.state.procs import alive

log = logging.getLogger(__name__)


class RedisError(RuntimeError):
    """redis-server could not be started or reached."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisDaemon:
    """One redis-server whose data (AOF, pid, config, password) lives in `dir`.

    Starting it again on the same dir reuses the saved password and port when free, so an
    AOF written by one swarm is readable by the next command.
    """

    def __init__(self, dir: Path, port: int | None = None, password: str | None = None,
                 fsync: str = "always"):
        self.dir = Path(dir)
        self.fsync = fsync
        self._port = port
        self._password = password
        self.pid: int | None = None

    @property
    def pidfile(self) -> Path:
        return self.dir / "redis.pid"

    @property
    def secret_file(self) -> Path:
        return self.dir / "redis.secret"

    def _load_or_make_secret(self) -> tuple[str, int]:
        if self.secret_file.exists():
            pw, port = self.secret_file.read_text().split()
            return self._password or pw, self._port or int(port)
        return self._password or secrets.token_hex(24), self._port or free_port()

    def start(self, timeout: float = 10.0) -> "RedisDaemon":
        """Start the server (or adopt one already running on this dir). Raises RedisError."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisError("redis-server not found on PATH (apt-get install -y redis-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        password, port = self._load_or_make_secret()
        self._password, self._port = password, port
        if self.running():
            return self
        if (self.dir / "appendonlydir").is_dir() and not self._holder_alive():
            # a transaction a crash cut short must not come back at the next start (aof.py); never
            # under a server still alive (one busy loading does not answer a ping): it writes there
            aof.repair(self.dir / "appendonlydir")
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{password} {port}\n")
        conf = self.dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join([
                "bind 127.0.0.1", f"port {port}", f'requirepass "{password}"',
                "protected-mode yes", "appendonly yes", f"appendfsync {self.fsync}",
                f'dir "{self.dir}"', "daemonize yes", f'pidfile "{self.pidfile}"',
                'save ""', f'logfile "{self.dir / "redis.log"}"', "",
            ]))
        self.pidfile.unlink(missing_ok=True)
        proc = subprocess.run([exe, str(conf)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RedisError(f"redis-server failed to start: {(proc.stderr or proc.stdout).strip()[:200]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ping():
                self.pid = int(self.pidfile.read_text().strip()) if self.pidfile.exists() else None
                log.info("redis-server on 127.0.0.1:%d (pid %s, data in %s)", port, self.pid, self.dir)
                return self
            time.sleep(0.02)
        raise RedisError(f"redis-server on 127.0.0.1:{port} did not answer within {timeout:.0f}s "
                         f"(see {self.dir / 'redis.log'})")

    def revive(self) -> bool:
        """Start the server again from its AOF (same port and password) when the process this
        daemon started has died. Returns True when it did. Raises RedisError if it cannot.
        Only a dead process counts: a slow ping (a big AOF loading) must not start a second one."""
        if self.pid is None or alive(self.pid):
            return False
        log.warning("redis-server (pid %d) is gone; starting it again from its AOF in %s", self.pid, self.dir)
        self.pid = None
        self.start()
        return True

    def _ping(self) -> bool:
        import redis

        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # One try: redis-py's default retries a refused connection for seconds.
            return bool(redis.Redis(host="127.0.0.1", port=self._port, password=self._password,
                                    socket_timeout=0.5, retry=Retry(NoBackoff(), 0)).ping())
        except (redis.RedisError, OSError):
            return False

    def _pidfile_pid(self) -> int | None:
        """The pid the pid file names (None: no file, or not a number)."""
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _holder_alive(self) -> bool:
        """Whether the pid file names a live process (answering or not)."""
        pid = self._pidfile_pid()
        return pid is not None and alive(pid)

    def running(self) -> bool:
        pid = self._pidfile_pid()
        if pid is None or not alive(pid):  # a SIGKILLed server leaves its pidfile (and maybe a zombie) behind
            return False
        self.pid = pid
        return self._ping()

    @property
    def url(self) -> str:
        """redis:// URL with the password; treat it as a secret."""
        return f"redis://:{self._password}@127.0.0.1:{self._port}/0"

    @property
    def port(self) -> int:
        assert self._port is not None
        return self._port

    @property
    def password(self) -> str:
        assert self._password is not None
        return self._password

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server this daemon started, by its PID (SIGKILL when kill=True)."""
        pid = self.pid if self.pid is not None else self._pidfile_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.02)
        self.pid = None
