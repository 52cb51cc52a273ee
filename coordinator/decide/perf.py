"""The coordinator's view of its own speed: decision latency and decision-lock time per batch."""
from __future__ import annotations

import threading
import time
from collections import deque


def _pct(sorted_xs: list[float], p: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(round(p / 100 * (len(sorted_xs) - 1))))]


class PerfStats:
    """Thread-safe: written by every reporting thread, read by perf()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (records in the batch, seconds holding the decision lock) of recent batches.
        self.batches: deque[tuple[int, float]] = deque(maxlen=4096)
        # Seconds from a report's arrival to its decision (queue + decision + commit).
        self.latency: deque[float] = deque(maxlen=16384)

    def report_done(self, seconds: float) -> None:
        with self._lock:
            self.latency.append(seconds)

    def batch_done(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batches.append((size, seconds))

    def summary(self) -> dict:
        """See Coordinator.perf()."""
        with self._lock:
            b, lat = list(self.batches), sorted(self.latency)
        if not b:
            return {"batches": 0, "cpu_s": time.process_time()}
        secs = sorted(t for _, t in b)
        n = sum(k for k, _ in b)
        return {"batches": len(b), "records": n, "mean_batch": n / len(b),
                "cpu_s": time.process_time(),  # this process's CPU time so far
                "decisions": len(lat), "decision_p50_ms": _pct(lat, 50) * 1000,
                "decision_p99_ms": _pct(lat, 99) * 1000,
                "batch_p50_ms": _pct(secs, 50) * 1000, "batch_p99_ms": _pct(secs, 99) * 1000,
                "capacity_per_s": n / max(sum(secs), 1e-9)}
