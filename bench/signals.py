"""A bench stopped by SIGTERM or SIGHUP (`kill PID`, `timeout`, a closed terminal) ends as on
Ctrl-C: SystemExit is raised in the main thread, so its `finally` blocks stop the redis-server it
started and remove its work folder (without this, Python dies at once and leaves both behind)."""
from __future__ import annotations

import signal
import threading


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit(128 + the signal) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)
