"""Bookkeeping refs (refs/experiments/*, refs/candidates/*) written off the decision path.

Nothing decides by them (the ledger names every commit); they keep discarded and crashed
commits reviewable. A batch collects them under the decision lock, and a background thread
writes them (a file write each) after the lock is released. A restart writes the ones a crash
lost (Coordinator._restore_refs).
"""
from __future__ import annotations

import logging
import queue
import threading

from coordinator.state.repo import RepoError, ResearchRepo

log = logging.getLogger(__name__)


class RefWriter:
    def __init__(self, repo: ResearchRepo):
        self.repo = repo
        self._due: list[tuple[str, str]] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def later(self, name: str, commit: str) -> None:
        """Collect a ref for the current batch (under the decision lock)."""
        self._due.append((name, commit))

    def take(self) -> list[tuple[str, str]]:
        """The refs collected so far, cleared (a failed batch's are dropped this way too)."""
        due, self._due = self._due, []
        return due

    def write(self, due: list[tuple[str, str]]) -> None:
        """Hand refs to the writer thread (started on first use, or again if it died)."""
        if not due:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, daemon=True, name="ref-writer")
            self._thread.start()
        self._queue.put(due)

    def flush(self) -> None:
        """Wait until every ref handed over so far is written."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            due = self._queue.get()
            try:
                for name, commit in due:
                    try:
                        self.repo.write_loose_ref(name, commit)
                    except (RepoError, OSError) as e:  # the ledger still names the commit
                        log.warning("no ref %s: %s", name, e)
            finally:
                self._queue.task_done()
