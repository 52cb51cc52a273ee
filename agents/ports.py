"""How an agent talks to the coordinator: the CoordinatorPort protocol, and RayCoordinator,
which adapts a coordinator actor handle to it and never loses a record (spools on failure)."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agents.messages import Broadcast, Decision, ExperimentRecord, Job, ReportReply, StartedExperiment

log = logging.getLogger(__name__)


@runtime_checkable
class CoordinatorPort(Protocol):
    """The coordinator as an agent sees it. The real one is a Ray actor (coordinator/)."""

    def begin(self, started: StartedExperiment) -> None: ...

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> Decision: ...

    def next_job(self, agent: str, hardware_class: str) -> Job | None: ...

    def best(self, hardware_class: str) -> Broadcast | None: ...

    def recent(self, hardware_class: str, n: int) -> list[tuple[ExperimentRecord, Decision | None]]: ...

    def heartbeat(self, agent: str, status: dict) -> None: ...

    def fetch(self, commit: str) -> bytes: ...


class CoordinatorUnavailable(Exception):
    """The coordinator did not answer after the retries."""


class RayCoordinator:
    """CoordinatorPort over a Ray actor handle: each call is ray.get(...) with a timeout and a
    few quick retries. report() spools the record to `spool_dir` when the coordinator cannot
    be reached; flush() re-sends spooled records (call it at each iteration boundary)."""

    HINT_TTL_S = 5.0  # how long a report's answer stands in for next_job()/best()

    def __init__(self, handle: Any, spool_dir: Path, *, timeout_s: float = 30.0,
                 retries: int = 3, retry_delay_s: float = 0.5):
        self.handle = handle
        self.spool_dir = Path(spool_dir)
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        # A coordinator that answers report_sync tells, with each decision, whether a job waits
        # and what best is: the agent's next next_job()/best() then need no call of their own.
        try:
            self._sync = hasattr(handle, "report_sync")
        except Exception:
            self._sync = False
        self._hint: tuple[float, str, bool] | None = None
        self._best_hint: tuple[float, str, Broadcast] | None = None

    def _call(self, method: str, *args, retries: int | None = None):
        import ray

        last: Exception | None = None
        for attempt in range((self.retries if retries is None else retries) + 1):
            if attempt:
                time.sleep(self.retry_delay_s * attempt)
            try:
                return ray.get(getattr(self.handle, method).remote(*args), timeout=self.timeout_s)
            except Exception as e:  # actor restarting, timeout, died: all worth a retry
                last = e
                log.warning("coordinator.%s failed (attempt %d): %s", method, attempt + 1,
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise CoordinatorUnavailable(f"coordinator.{method} failed: {type(last).__name__}")

    def begin(self, started: StartedExperiment) -> None:
        """Record the intent; on failure only a warning (inflight.json still covers a death)."""
        try:
            self._call("begin", started)
        except CoordinatorUnavailable as e:
            log.warning("%s", e)

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> Decision | None:
        """The coordinator's decision, or None when it was unreachable and the record spooled."""
        try:
            if not self._sync:
                return self._call("report", record, bundle)
            reply: ReportReply = self._call("report_sync", record, bundle)
            now, hw = time.monotonic(), record.hardware_class
            self._hint = (now, hw, reply.job_waiting)
            self._best_hint = (now, hw, reply.best) if reply.best is not None else None
            return reply.decision
        except CoordinatorUnavailable as e:
            self._spool(record, bundle)
            log.warning("%s; record %s spooled", e, record.experiment_id)
            return None

    def _spool(self, record: ExperimentRecord, bundle: bytes | None) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"{record.experiment_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"record": record.model_dump(mode="json"),
                                   "bundle": bundle.hex() if bundle else None}))
        os.replace(tmp, path)

    def flush(self) -> int:
        """Re-send spooled records; returns how many were delivered."""
        if not self.spool_dir.is_dir():
            return 0
        sent = 0
        for path in sorted(self.spool_dir.glob("*.json")):
            data = json.loads(path.read_text())
            rec = ExperimentRecord.model_validate(data["record"])
            bundle = bytes.fromhex(data["bundle"]) if data.get("bundle") else None
            try:
                self._call("report", rec, bundle, retries=0)
            except CoordinatorUnavailable:
                break
            path.unlink()
            sent += 1
        return sent

    def next_job(self, agent: str, hardware_class: str) -> Job | None:
        hint, self._hint = self._hint, None  # good for one boundary only
        if (hint is not None and hint[1] == hardware_class and not hint[2]
                and time.monotonic() - hint[0] < self.HINT_TTL_S):
            return None
        try:
            return self._call("next_job", agent, hardware_class)
        except CoordinatorUnavailable:
            return None

    def best(self, hardware_class: str) -> Broadcast | None:
        hint, self._best_hint = self._best_hint, None
        if hint is not None and hint[1] == hardware_class and time.monotonic() - hint[0] < self.HINT_TTL_S:
            return hint[2]
        try:
            return self._call("best", hardware_class)
        except CoordinatorUnavailable:
            return None

    def recent(self, hardware_class: str, n: int) -> list[tuple[ExperimentRecord, Decision | None]]:
        try:
            return list(self._call("recent", hardware_class, n))
        except CoordinatorUnavailable:
            return []

    def heartbeat(self, agent: str, status: dict) -> None:
        # Best effort and never retried: a lost heartbeat is replaced by the next one.
        try:
            self._call("heartbeat", agent, status, retries=0)
        except CoordinatorUnavailable:
            pass

    def fetch(self, commit: str) -> bytes:
        return self._call("fetch", commit)
