"""Standby training sandboxes (locked): when a run ends, the runner can start the next run's
sandbox at once, so that it imports torch and warms the optimizer/export machinery (~8 s of a
CPU run's overhead) while the agent prepares its next experiment.

A standby is a fresh sandbox like any other (its own scratch, nothing of the last run in it)
that waits for its spec on the data pipe. Its scratch is made next to the run dirs and renamed
into the run dir that takes it: the bind mount follows the directory, and so does the
supervisor's working directory, which is how a restarted agent recognises the group as the
run's (agents/inflight.py). One standby per setting (key); a run with another setting, or in
another runs folder, starts fresh and the standby is discarded.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer import wire


@dataclass
class Standby:
    key: tuple
    proc: subprocess.Popen
    scratch: Path      # on this side; moves into the run dir when taken
    inside: str        # the scratch's path inside the sandbox, fixed at spawn
    ev_r: int
    dt_w: int
    log_r: int
    child_fds: tuple[int, int]   # (event, data) fd numbers inside the sandbox
    spawned: float
    unsafe: bool = False         # --unsafe-no-sandbox: no bind mount, paths are the host's

    def send_spec(self, spec_json: bytes) -> None:
        data = wire.HEADER.pack(wire.MAGIC, wire.SPEC, len(spec_json), 0, 0) + spec_json
        view = memoryview(data)
        while view:
            view = view[os.write(self.dt_w, view):]

    def discard(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout=2.0)
                break
            except subprocess.TimeoutExpired:
                continue
        for fd in (self.ev_r, self.dt_w, self.log_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.scratch, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat", "rb").read()
                ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _entered(sb: "Standby", wait_s: float = 15.0) -> bool:
    """True once the standby runs the harness, i.e. bubblewrap has finished its mounts. Its
    scratch is bound by path when bwrap starts: renaming it before then made bwrap fail with
    "Can't find source path" (seen when a job followed a run within milliseconds)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and sb.proc.poll() is None:
        for pid in [sb.proc.pid, *_descendants(sb.proc.pid)]:
            try:
                args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            # the harness itself (`python -I -c "...trainer.harness..."`), not the supervisor
            # (`python -I -S -c ...`) nor bwrap, whose argv also hold that code
            if args[1:3] == [b"-I", b"-c"] and len(args) > 3 and b"trainer.harness" in args[3]:
                return True
        time.sleep(0.02)
    return False


_WAITING: dict[tuple, Standby] = {}
_LOCK = threading.Lock()


def take(key: tuple, run_dir: Path) -> Standby | None:
    """The waiting standby for `key`, moved into run_dir/scratch; None if there is none usable."""
    with _LOCK:
        sb = _WAITING.pop(key, None)
    if sb is None:
        return None
    target = run_dir / "scratch"
    if sb.proc.poll() is not None or sb.scratch.parent != run_dir.parent or not _entered(sb):
        sb.discard()
        return None
    if target.exists():
        shutil.rmtree(target)
    try:
        os.rename(sb.scratch, target)
    except OSError:
        sb.discard()
        return None
    sb.scratch = target
    if sb.unsafe:  # no mount namespace: the process sees the directory where it now is
        sb.inside = str(target)
    return sb


def spawn(key: tuple, root: Path, launch: Callable[[Path, int, int], tuple[subprocess.Popen, int]],
          unsafe: bool = False) -> None:
    """Start a standby for `key` with a fresh scratch under `root`. `launch(scratch, event_w,
    data_r)` spawns the sandbox and returns (proc, the write end of its log pipe's reader)."""
    with _LOCK:
        old = _WAITING.pop(key, None)
    if old is not None:
        old.discard()
    scratch = root / f".standby-{os.urandom(6).hex()}"
    scratch.mkdir(parents=True)
    ev_r, ev_w = os.pipe()
    dt_r, dt_w = os.pipe()
    try:
        proc, log_r = launch(scratch, ev_w, dt_r)
    except Exception:
        for fd in (ev_r, dt_w):
            os.close(fd)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        os.close(ev_w)
        os.close(dt_r)
    with _LOCK:
        _WAITING[key] = Standby(key, proc, scratch, str(scratch), ev_r, dt_w, log_r, (ev_w, dt_r),
                                time.monotonic(), unsafe)


@atexit.register
def discard_all() -> None:
    """End every waiting standby of this process."""
    with _LOCK:
        waiting = list(_WAITING.values())
        _WAITING.clear()
    for sb in waiting:
        sb.discard()
