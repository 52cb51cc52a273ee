"""Group commit with one leader at a time: reports (and begins) that queue up while a batch runs
are decided together by the next leader, and their ledger writes reach redis in one MULTI/EXEC.

The first arrival leads: it runs a batch of everything queued, then hands the lead to the oldest
slot that queued meanwhile; the others sleep on their own event. (Waiting on the decision lock
instead, a finished report could wait out several later batches before its thread got it back.)
"""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

from agents.messages import ExperimentRecord, StartedExperiment

T = TypeVar("T")


class Slot:
    """One queued report (or begin) and, once decided, its answer."""

    __slots__ = ("record", "bundle", "done", "result", "error", "t0", "lead", "wake")

    def __init__(self, record: ExperimentRecord | StartedExperiment, bundle: bytes | None = None):
        self.record, self.bundle = record, bundle
        self.t0 = time.perf_counter()
        self.lead = False               # set when this slot's thread must run the next batch
        self.wake = threading.Event()   # set when it is done, or must lead
        self.done = False
        self.result = None
        self.error: Exception | None = None

    def finish(self) -> None:
        self.done = True
        self.wake.set()


class GroupCommit:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Slot] = []
        self._leading = False  # a thread is running batches (guarded by _lock)

    def __len__(self) -> int:
        """Slots queued and not yet taken by a batch."""
        return len(self._queue)

    def take(self) -> list[Slot]:
        """Everything queued so far (the leader's batch)."""
        with self._lock:
            batch, self._queue = self._queue, []
        return batch

    def submit(self, slot: Slot, lead: Callable[[], T]) -> T | None:
        """Queue `slot` and return once it is done. When this thread is the leader it calls
        lead(), which must take() the queue and finish() every slot it took, then hands the lead
        on; returns lead()'s value then, else None."""
        with self._lock:
            self._queue.append(slot)
            if not self._leading:
                self._leading = slot.lead = True
        if not slot.lead:
            slot.wake.wait()
        if slot.done:
            return None
        try:
            return lead()
        finally:
            with self._lock:
                nxt = self._queue[0] if self._queue else None
                if nxt is None:
                    self._leading = False
                else:
                    nxt.lead = True
            if nxt is not None:
                nxt.wake.set()
