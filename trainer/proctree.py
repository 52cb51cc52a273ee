"""Reading a sandbox's processes from the host side (locked): its descendants and their threads,
found through /proc/<pid>/task/<tid>/children, and the harness process inside it.

Used by the runner (to reach the sandbox's private scratch through the harness's root, and to
measure the machine's speed from the sandbox's threads), by the standby (is it set up yet?) and
by the supervisor's watchdog (its own copy, stdlib only)."""
from __future__ import annotations

import os
import time


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (not `pid` itself), found through each thread's children."""
    out, todo, seen = [], [pid], {pid}
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            for c in kids:
                if c not in seen:
                    seen.add(c)
                    out.append(c)
                    todo.append(c)
    return out


def threads(pids: list[int]) -> list[tuple[int, int]]:
    """(pid, tid) of every thread of `pids` that is alive now."""
    out = []
    for p in pids:
        try:
            out += [(p, int(t)) for t in os.listdir(f"/proc/{p}/task")]
        except (OSError, ValueError):
            continue
    return out


def is_harness(argv: list[bytes]) -> bool:
    """The training harness itself (`python -I -c "...trainer.harness..."`), not the supervisor
    (`python -I -S -c ...`) nor bwrap, whose argv also hold that code."""
    return argv[1:3] == [b"-I", b"-c"] and len(argv) > 3 and b"trainer.harness" in argv[3]


def wait_for(root: int, match, wait_s: float, alive=lambda: True) -> int | None:
    """The pid of the first process at or below `root` whose argv satisfies `match`, polled every
    5 ms for up to `wait_s` while `alive()`; None when it never appeared. A process shows its
    argv once it was exec'd, i.e. once bubblewrap has finished every mount."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and alive():
        for pid in [root, *descendants(root)]:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if match(argv):
                return pid
        time.sleep(0.005)
    return None
