"""Whether a process this tool started, and wrote the pid of, still runs.

One rule for every pid file the tool keeps (`swarm run`'s in the home, the embedded redis's):
a zombie (exited, not yet reaped by its parent: a `swarm run` started by a script that waits for it
after `swarm stop`, a SIGKILLed redis a container's init reaps late) is gone, and so is a pid
another user's process now holds (kill(pid, 0) answers EPERM): ours died and the number was reused.
"""
from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    except OSError:
        return True   # cannot tell: take it as running (never start a second one beside it)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True   # no /proc: trust kill()
