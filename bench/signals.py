"""A bench stopped by SIGTERM or SIGHUP (`kill PID`, `timeout`, a closed terminal) ends as on
Ctrl-C: SystemExit is raised in the main thread, so its `finally` blocks stop the redis-server it
started and remove its work folder (without this, Python dies at once and leaves both behind)."""
from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit(128 + the signal) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


def remove_work(path, tries: int = 20) -> None:
    """Remove a bench's work folder, again while threads that are still stopping (a simulated
    swarm's agents, when a signal ended the main thread) write into it: one rmtree can leave a
    file created behind its back."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        if not Path(path).exists():
            return
        time.sleep(0.1)
