"""The coordinator's view of its own speed: decision latency, decision-lock time per batch, and
the interpreter's garbage-collection pauses (every thread of the process stops for them)."""
from __future__ import annotations

import gc
import threading
import time
from collections import deque


def _pct(sorted_xs: list[float], p: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(round(p / 100 * (len(sorted_xs) - 1))))]


class GcPauses:
    """The process's garbage-collection pauses by generation (one gc callback per process)."""

    _installed: "GcPauses | None" = None

    def __init__(self) -> None:
        self.pauses: dict[int, deque[float]] = {g: deque(maxlen=4096) for g in range(3)}
        self.counts = {g: 0 for g in range(3)}
        self._t0 = 0.0

    @classmethod
    def install(cls) -> "GcPauses":
        if cls._installed is None:
            cls._installed = cls()
            gc.callbacks.append(cls._installed._callback)
        return cls._installed

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            g = info.get("generation", 2)
            self.counts[g] += 1
            self.pauses[g].append(time.perf_counter() - self._t0)

    def summary(self) -> dict:
        full = sorted(self.pauses[2])
        return {"gc_collections": dict(self.counts), "gc_full_max_ms": (full[-1] if full else 0.0) * 1000,
                "gc_full_total_ms": sum(full) * 1000,
                "gc_young_total_ms": (sum(self.pauses[0]) + sum(self.pauses[1])) * 1000,
                "gc_frozen": gc.get_freeze_count()}


FREEZE_FROM = 1   # survivors of a collection of this generation or older are frozen


class GcFreeze:
    """Bounds the garbage collector's pauses in a process that holds a large, growing heap of
    long-lived objects (the coordinator actor's: records, decisions, caches, the state it
    rebuilt at start): what survives a collection of the middle or oldest generation is frozen
    (gc.freeze: moved where no collection looks), so no collection scans it again and full
    collections have next to nothing left to scan. Measured (bench/coordinator.py --agents 256,
    20 s): without, full collections of 119-131 ms (in-process 100-240 ms) stopped every thread,
    a decision in flight included; freezing after full ones only, 31-43 ms; after the middle
    generation's too, none ran. A heap grown to 3 million containers: worst pause 982 -> 6 ms.
    The price: a cycle of frozen objects that dies later is not freed while frozen (refcounting
    still frees everything outside cycles), so every `refresh_s` a thread of its own unfreezes
    everything, collects it once (one long pause per refresh_s) and freezes the survivors."""

    _installed: "GcFreeze | None" = None

    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self._refreshing = False

    @classmethod
    def install(cls, refresh_s: float = 600.0) -> "GcFreeze":
        """Once per process (later calls return the first); freezes what is alive now."""
        if cls._installed is None:
            cls._installed = g = cls(refresh_s)
            gc.callbacks.append(g._callback)
            gc.freeze()
            threading.Thread(target=g._refresh_loop, name="gc-refresh", daemon=True).start()
        return cls._installed

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "stop" and info.get("generation", 0) >= FREEZE_FROM and not self._refreshing:
            gc.freeze()

    def _refresh_loop(self) -> None:
        while True:
            time.sleep(self.refresh_s)
            self.refresh()

    def refresh(self) -> None:
        """Unfreeze, collect everything once, freeze what survived."""
        self._refreshing = True   # no collection in between freezes the heap again
        try:
            gc.unfreeze()
            gc.collect()
        finally:
            self._refreshing = False
        gc.freeze()


class PerfStats:
    """Thread-safe: written by every reporting thread, read by perf()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (records in the batch, seconds holding the decision lock, CPU seconds the deciding
        # thread ran meanwhile) of recent batches: wall minus CPU is waiting, for redis's reply, a
        # core or the interpreter lock (the actor's other threads receive the calls arriving meanwhile).
        self.batches: deque[tuple[int, float, float]] = deque(maxlen=4096)
        # Seconds from a report's arrival to its decision (queue + decision + commit).
        self.latency: deque[float] = deque(maxlen=16384)
        self.gc = GcPauses.install()

    def report_done(self, seconds: float) -> None:
        with self._lock:
            self.latency.append(seconds)

    def batch_done(self, size: int, seconds: float, cpu_s: float) -> None:
        with self._lock:
            self.batches.append((size, seconds, cpu_s))

    def summary(self) -> dict:
        """See Coordinator.perf()."""
        with self._lock:
            b, lat = list(self.batches), sorted(self.latency)
        if not b:
            return {"batches": 0, "cpu_s": time.process_time(), **self.gc.summary()}
        secs = sorted(t for _, t, _ in b)
        n = sum(k for k, _, _ in b)
        slow = sorted(b, key=lambda x: x[1])[-max(1, len(b) // 100):]   # the slowest 1% of batches
        return {"batches": len(b), "records": n, "mean_batch": n / len(b),
                "cpu_s": time.process_time(),  # this process's CPU time so far
                "decisions": len(lat), "decision_p50_ms": _pct(lat, 50) * 1000,
                "decision_p99_ms": _pct(lat, 99) * 1000,
                "batch_p50_ms": _pct(secs, 50) * 1000, "batch_p99_ms": _pct(secs, 99) * 1000,
                "capacity_per_s": n / max(sum(secs), 1e-9),
                "record_p50_ms": _pct(sorted(t / k for k, t, _ in b if k), 50) * 1000,
                "batch_cpu_share": sum(c for *_, c in b) / max(sum(secs), 1e-9),
                "slow_batch_cpu_share": sum(c for *_, c in slow) / max(sum(t for _, t, _ in slow), 1e-9),
                **self.gc.summary()}
