"""Parquet snapshots of the ledger: automatic ones in the background every SNAPSHOT_EVERY
records, and the one snapshot() writes on demand."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from coordinator.state.ledger import Ledger

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 50          # records between automatic parquet snapshots...
SNAPSHOT_MIN_GAP_S = 30.0    # ...and at least this long apart: each one reads the whole ledger


class Snapshots:
    """The caller serialises count(), maybe_start(), reset() and write() (the decision lock)."""

    def __init__(self, ledger: Ledger, path: Path):
        self.ledger, self.path = ledger, path
        self.since = 0                               # records since the last snapshot
        self.at = 0.0                                # time.monotonic() of the last automatic one
        self.thread: threading.Thread | None = None  # the automatic one in flight, if any

    def count(self) -> None:
        self.since += 1

    def reset(self) -> None:
        self.since, self.at = 0, 0.0

    def maybe_start(self) -> None:
        """Start an automatic snapshot when one is due and none is running."""
        if (self.since >= SNAPSHOT_EVERY and time.monotonic() - self.at >= SNAPSHOT_MIN_GAP_S
                and (self.thread is None or not self.thread.is_alive())):
            # Off the decision lock, one at a time: a snapshot reads the whole ledger back from
            # redis (O(records)); done inside the lock it held up every report behind it.
            self.since, self.at = 0, time.monotonic()
            self.thread = threading.Thread(target=self._background, daemon=True, name="ledger-snapshot")
            self.thread.start()

    def _background(self) -> None:
        try:
            self.ledger.write_parquet(self.path)
        except Exception as e:  # the next one (or the final snapshot()) will try again
            log.warning("automatic snapshot failed: %s", str(e).splitlines()[0][:200])

    def write(self) -> Path:
        """Write the snapshot now (redis writes buffered so far included); returns its path."""
        self.since = 0
        self.ledger.flush()
        if self.thread is not None:
            self.thread.join()  # never let an older automatic one land after this
        return self.ledger.write_parquet(self.path)
