"""The coordinator's process bounds its garbage collector's full pauses (coordinator/decide/perf.py
GcFreeze): after a full collection its survivors are frozen, so the next full collection scans only
what came since; every `refresh_s` everything is unfrozen once, so a cycle that died among frozen
objects is still collected. Each case runs in a fresh interpreter: freezing changes the whole
process's collector, which pytest's own must not see."""
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


def test_a_cycle_that_dies_among_frozen_objects_is_collected_after_the_refresh():
    out = _run("""
        import gc, time, weakref
        from coordinator.decide.perf import GcFreeze
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a                               # a cycle, alive for now
        gone = weakref.ref(a)
        GcFreeze.install(refresh_s=0.2)
        gc.collect()                                          # a, b survive and are frozen
        del a, b                                              # the cycle dies among frozen objects
        gc.collect()
        kept_while_frozen = gone() is not None
        time.sleep(0.3)
        gc.collect()                                          # past refresh_s: unfrozen at its end
        gc.collect()                                          # and this one scans everything
        print(kept_while_frozen, gone() is None)
    """)
    assert out == "True True", out

