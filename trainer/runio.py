"""The runner's plumbing around one sandbox (locked): its log pipe into run.log (capped), the
log's tail and last error line, the files put into its scratch, and ending
its process group."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

TAIL_LINES = 40
LOG_CAP = 16 << 20          # bytes of run.log a run may write; the rest is dropped and counted


def die_with_parent() -> None:
    try:  # PR_SET_PDEATHSIG = 1: the sandbox gets SIGKILL when the thread that started it dies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


def kill_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """End the sandbox: its process group (supervisor and bwrap); the PID namespace takes
    every process inside with it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        t = time.monotonic() + wait
        while time.monotonic() < t and proc.poll() is None:
            time.sleep(0.02)


def log_tail(path: Path, n: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64_000))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def last_error(tail: str) -> str:
    """The line of a log tail that says what went wrong (unredacted: the caller redacts)."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln) or ln.startswith("api.submit"):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


class LogPump(threading.Thread):
    """Copies the sandbox's stdout+stderr into run.log, at most LOG_CAP bytes."""

    def __init__(self, fd: int, path: Path):
        super().__init__(daemon=True, name="swarm-log-pump")
        self.fd, self.path, self.dropped = fd, path, 0

    def run(self) -> None:
        written = 0
        with open(self.path, "ab") as f:
            try:
                while chunk := os.read(self.fd, 1 << 16):
                    keep = chunk[:max(0, LOG_CAP - written)]
                    f.write(keep)
                    f.flush()
                    written += len(keep)
                    self.dropped += len(chunk) - len(keep)
            except OSError:
                pass
            finally:
                os.close(self.fd)
            if self.dropped:
                f.write(f"\n[run.log capped at {LOG_CAP >> 20} MB: {self.dropped} bytes dropped]\n".encode())


def put_in(dir_fd: int, name: str, src: Path) -> None:
    """Copy `src` into the sandbox's scratch as a new file `name` (before any of train.py ran)."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 20)
