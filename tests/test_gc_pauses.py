"""The coordinator's process bounds its garbage collector's pauses (coordinator/decide/perf.py
GcFreeze): what survives a collection of the middle or oldest generation is frozen, so no later
collection scans it again; every `refresh_s` a thread of its own unfreezes everything and collects
it once, so a cycle that died among frozen objects is still freed. Each case runs in a fresh
interpreter: freezing changes the whole process's collector, which pytest's own must not see."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.strip()


def test_after_a_full_collection_the_survivors_are_frozen_and_the_next_one_scans_only_the_new():
    out = _run("""
        import gc
        from coordinator.decide.perf import GcFreeze
        keep = [{"k": [i]} for i in range(200_000)]          # a large long-lived heap
        GcFreeze.install(refresh_s=3600)
        gc.collect()                                          # a full collection: its survivors freeze
        frozen = gc.get_freeze_count()
        more = [{"k": [i]} for i in range(1000)]             # new objects: the only ones scanned
        print(frozen >= 200_000, len(gc.get_objects(2)) < 50_000)
    """)
    assert out == "True True", out


def test_survivors_of_a_middle_generation_collection_are_frozen_too():
    """Under the coordinator bench, freezing only after full collections still left full ones of
    31-43 ms (what came since the last); freezing after the middle generation's leaves none."""
    out = _run("""
        import gc
        from coordinator.decide.perf import GcFreeze
        GcFreeze.install(refresh_s=3600)
        before = gc.get_freeze_count()
        keep = [{"k": [i]} for i in range(5000)]
        gc.collect(1)
        print(gc.get_freeze_count() >= before + 5000, len(gc.get_objects(2)) < 1000)
    """)
    assert out == "True True", out


def test_a_cycle_that_dies_among_frozen_objects_is_freed_by_the_refresh():
    out = _run("""
        import gc, time, weakref
        from coordinator.decide.perf import GcFreeze
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a                               # a cycle, alive for now
        gone = weakref.ref(a)
        GcFreeze.install(refresh_s=0.5)                       # a, b are frozen
        del a, b                                              # the cycle dies among frozen objects
        gc.collect()
        kept_while_frozen = gone() is not None
        deadline = time.monotonic() + 10
        while gone() is not None and time.monotonic() < deadline:
            time.sleep(0.05)                                  # the refresh thread's turn
        print(kept_while_frozen, gone() is None, gc.get_freeze_count() > 0)
    """)
    assert out == "True True True", out

