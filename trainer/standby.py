"""Standby training sandboxes (locked): when a run ends, the runner can start the next run's
sandbox at once, so that it imports torch and warms the optimizers and the forward recording (~8 s
of a CPU run's overhead) while the agent prepares its next experiment.

A standby is a fresh sandbox like any other (its own private scratch, nothing of the last run
in it) that waits for its spec on the data pipe. Its host folder (the supervisor's working
directory, never bound into the sandbox) is made next to the run dirs and renamed into the run
dir that takes it, which is how a restarted agent recognises the group as the run's
(agents/inflight.py). The scratch itself is a tmpfs inside the sandbox: nothing on the host is
renamed under a mount (a bind mount whose host folder was renamed was detached in the sandbox
where the sandbox's root was the host's: every standby run with a swarm home outside /tmp
crashed with FileNotFoundError). One standby per setting (key); a run with another setting, or
in another runs folder, starts fresh and the standby is discarded.
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

from trainer import proctree, wire
from trainer.sandbox import SCRATCH_INSIDE
from trainer.sandbox import open_scratch as through_root

ENTER_WAIT_S = 15.0   # seconds a sandbox may take to be set up (bwrap's mounts) before it is given up


@dataclass
class Standby:
    key: tuple
    proc: subprocess.Popen
    scratch: Path      # the host folder (cwd of the supervisor); moves into the run dir when taken
    inside: str        # the scratch's path inside the sandbox
    ev_r: int
    dt_w: int
    log_r: int
    child_fds: tuple[int, int]   # (event, data) fd numbers inside the sandbox
    spawned: float
    unsafe: bool = False         # --unsafe-no-sandbox: no namespaces, the scratch is the host folder
    quota_mb: int | None = None  # the size of its private scratch
    scratch_fd: int | None = None  # set when taken: a directory fd on the scratch, for the runner

    def send_spec(self, spec_json: bytes) -> None:
        send_spec(self.dt_w, spec_json)

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
        for fd in (self.ev_r, self.dt_w, self.log_r, self.scratch_fd):
            try:
                if fd is not None:
                    os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.scratch, ignore_errors=True)


def send_spec(dt_w: int, spec_json: bytes) -> None:
    """The run's spec to a waiting harness, as one SPEC frame on its data pipe."""
    data = wire.HEADER.pack(wire.MAGIC, wire.SPEC, len(spec_json), 0, 0) + spec_json
    view = memoryview(data)
    while view:
        view = view[os.write(dt_w, view):]


def open_scratch(proc: subprocess.Popen, host: Path, unsafe: bool, quota_mb: int | None,
                 wait_s: float = ENTER_WAIT_S) -> int | None:
    """A directory fd on the scratch of the sandbox `proc` once its harness runs (bubblewrap has
    then finished its mounts, and no code of train.py ran yet: it waits for its spec); None if
    the harness never started. Unsandboxed, the scratch is the host folder itself."""
    pid = proctree.wait_for(proc.pid, proctree.is_harness, wait_s, alive=lambda: proc.poll() is None)
    if pid is None:
        return None
    if unsafe or not quota_mb:
        return os.open(host, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return through_root(pid, quota_mb)
    except OSError:
        return None


_WAITING: dict[tuple, Standby] = {}
_LOCK = threading.Lock()


def take(key: tuple, run_dir: Path) -> Standby | None:
    """The waiting standby for `key`, its host folder moved into run_dir/scratch and its scratch
    open (scratch_fd); None if there is none usable."""
    with _LOCK:
        sb = _WAITING.pop(key, None)
    if sb is None:
        return None
    target = run_dir / "scratch"
    if sb.proc.poll() is not None or sb.scratch.parent != run_dir.parent:
        sb.discard()
        return None
    sb.scratch_fd = open_scratch(sb.proc, sb.scratch, sb.unsafe, sb.quota_mb)
    if sb.scratch_fd is None:
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
          unsafe: bool = False, quota_mb: int | None = None) -> None:
    """Start a standby for `key` with a fresh host folder under `root`. `launch(folder, event_w,
    data_r)` spawns the sandbox and returns (proc, the read end of its log pipe)."""
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
        inside = str(scratch) if unsafe or not quota_mb else SCRATCH_INSIDE
        _WAITING[key] = Standby(key, proc, scratch, inside, ev_r, dt_w, log_r, (ev_w, dt_r), time.monotonic(),
                                unsafe, quota_mb)


@atexit.register
def discard_all() -> None:
    """End every waiting standby of this process."""
    with _LOCK:
        waiting = list(_WAITING.values())
        _WAITING.clear()
    for sb in waiting:
        sb.discard()
