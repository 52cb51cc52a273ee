"""How an agent talks to the coordinator: the CoordinatorPort protocol (declared once: the
actor's forwarding methods and RayCoordinator's generic calls are made from its method list),
and RayCoordinator, which adapts a coordinator actor handle to it and never loses a record."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

from agents.messages import Broadcast, Decision, ExperimentRecord, Job, Lead, ReportReply, StartedExperiment
from agents.program import ProgramSpec

log = logging.getLogger(__name__)


@runtime_checkable
class CoordinatorPort(Protocol):
    """The coordinator as an agent sees it. The real one is coordinator.decide.core.Coordinator,
    a Ray actor (coordinator/decide/actor.py) reached through RayCoordinator. Adding a method
    here and to Coordinator is all it takes: the actor and RayCoordinator forward it."""

    def claim(self, hardware_class: str, blob: str, experiment_id: str) -> str | None:
        """Before an experiment is committed: None to train it (its train.py, by git blob id,
        is now held for experiment_id), else why not (another run trained or is training that
        very train.py: coordinator/decide/tried.py)."""

    def begin(self, started: StartedExperiment) -> None: ...

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> ReportReply | None:
        """The decision, plus whether a job waits and what best is. None only from a
        RayCoordinator that could not reach the coordinator (the record was spooled)."""

    def next_job(self, agent: str, hardware_class: str) -> Job | None: ...

    def best(self, hardware_class: str) -> Broadcast | None: ...

    def recent(self, hardware_class: str, n: int) -> list[tuple[ExperimentRecord, Decision | None]]: ...

    def lead(self, hardware_class: str) -> Lead | None:
        """The candidate pending on best that an agent whose line is best builds its next idea
        on (coordinator/decide/leads.py), or None."""

    def heartbeat(self, agent: str, status: dict) -> None: ...

    def fetch(self, commit: str) -> bytes: ...

    def assignment(self, agent: str, program: str, leaving: str | None = None) -> ProgramSpec | None:
        """At an iteration boundary: the program the agent runs from now on (adaptive
        allocation, coordinator/decide/allocation.py), or None to stay on `program`.
        `leaving`: why its backend refused `program` (it moves at once, or stops on None)."""

    def flush(self) -> int:
        """Re-send records spooled while the coordinator was unreachable (called at each
        iteration boundary); returns how many were delivered."""


PORT_METHODS: tuple[str, ...] = tuple(
    name for name, v in vars(CoordinatorPort).items() if callable(v) and not name.startswith("_"))
"""The port's method names, in declaration order: what the actor and RayCoordinator forward."""


class CoordinatorUnavailable(Exception):
    """The coordinator did not answer after the retries."""


@dataclasses.dataclass(frozen=True)
class Hint:
    """What a report's reply said about the agent's next boundary, and when."""

    at: float                   # time.monotonic() of the reply
    hardware_class: str
    job_waiting: bool
    best: Broadcast | None

    def fresh(self, hardware_class: str, ttl_s: float) -> bool:
        return self.hardware_class == hardware_class and time.monotonic() - self.at < ttl_s


class RayCoordinator:
    """CoordinatorPort over a Ray actor handle: each call is ray.get(...) with a timeout and a
    few quick retries. Port methods not written here are forwarded as they are (`_call`); the
    ones here have their own semantics: report() spools the record to `spool_dir` when the
    coordinator cannot be reached and flush() re-sends it; heartbeat() is best effort; the
    reply of a report stands in for the next next_job()/best()."""

    HINT_TTL_S = 5.0  # how long a report's answer stands in for next_job()/best()

    def __init__(self, handle: Any, spool_dir: Path, *, timeout_s: float = 30.0,
                 retries: int = 3, retry_delay_s: float = 0.5):
        self.handle = handle
        self.spool_dir = Path(spool_dir)
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        # Each good for one boundary: next_job() and best() each consume their own.
        self._job_hint: Hint | None = None
        self._best_hint: Hint | None = None

    def _call(self, method: str, *args, retries: int | None = None):
        import ray

        def warn(state):
            e = state.outcome.exception()
            log.warning("coordinator.%s failed (attempt %d): %s", method, state.attempt_number,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)

        # Actor restarting, timeout, died: all worth a retry.
        retrying = Retrying(stop=stop_after_attempt((self.retries if retries is None else retries) + 1),
                            wait=wait_incrementing(self.retry_delay_s, self.retry_delay_s),
                            retry=retry_if_exception_type(Exception), after=warn)
        try:
            return retrying(lambda: ray.get(getattr(self.handle, method).remote(*args),
                                            timeout=self.timeout_s))
        except RetryError as e:
            last = e.last_attempt.exception()
            raise CoordinatorUnavailable(f"coordinator.{method} failed: {type(last).__name__}") from last

    def claim(self, hardware_class: str, blob: str, experiment_id: str) -> str | None:
        # Unreachable: train it (at worst a state tried twice, judged as ever).
        try:
            return self._call("claim", hardware_class, blob, experiment_id, retries=0)
        except CoordinatorUnavailable:
            return None

    def begin(self, started: StartedExperiment) -> None:
        """Record the intent; on failure only a warning (inflight.json still covers a death)."""
        try:
            self._call("begin", started)
        except CoordinatorUnavailable as e:
            log.warning("%s", e)

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> ReportReply | None:
        """The coordinator's reply, or None when it was unreachable and the record spooled."""
        try:
            reply: ReportReply = self._call("report", record, bundle)
        except CoordinatorUnavailable as e:
            self._spool(record, bundle)
            log.warning("%s; record %s spooled", e, record.experiment_id)
            return None
        hint = Hint(time.monotonic(), record.hardware_class, reply.job_waiting, reply.best)
        self._job_hint = hint
        self._best_hint = hint if reply.best is not None else None
        return reply

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
        hint, self._job_hint = self._job_hint, None
        if hint is not None and not hint.job_waiting and hint.fresh(hardware_class, self.HINT_TTL_S):
            return None
        try:
            return self._call("next_job", agent, hardware_class)
        except CoordinatorUnavailable:
            return None

    def best(self, hardware_class: str) -> Broadcast | None:
        hint, self._best_hint = self._best_hint, None
        if hint is not None and hint.fresh(hardware_class, self.HINT_TTL_S):
            return hint.best
        try:
            return self._call("best", hardware_class)
        except CoordinatorUnavailable:
            return None

    def recent(self, hardware_class: str, n: int) -> list[tuple[ExperimentRecord, Decision | None]]:
        try:
            return list(self._call("recent", hardware_class, n))
        except CoordinatorUnavailable:
            return []

    def assignment(self, agent: str, program: str, leaving: str | None = None) -> ProgramSpec | None:
        # An unreachable coordinator moves nobody: the agent stays on its program.
        try:
            return self._call("assignment", agent, program, leaving, retries=0)
        except CoordinatorUnavailable:
            return None

    def lead(self, hardware_class: str) -> Lead | None:
        # Unreachable: no lead (the agent stays on its line; nothing is lost).
        try:
            return self._call("lead", hardware_class, retries=0)
        except CoordinatorUnavailable:
            return None

    def heartbeat(self, agent: str, status: dict) -> None:
        # Best effort and never retried: a lost heartbeat is replaced by the next one.
        try:
            self._call("heartbeat", agent, status, retries=0)
        except CoordinatorUnavailable:
            pass


def _forwarder(name: str):
    def call(self: RayCoordinator, *args):
        return self._call(name, *args)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"coordinator.{name}(...) through the actor, retried; raises CoordinatorUnavailable."
    return call


for _name in PORT_METHODS:
    if _name not in vars(RayCoordinator):
        setattr(RayCoordinator, _name, _forwarder(_name))
