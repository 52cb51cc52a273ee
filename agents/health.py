"""How an agent's backend is doing: up, down (not answering: wait, growing and capped, then ask
again; no record, no experiment used up), refused (asking again cannot help: stop) or spent
(nothing left to propose from this train.py: wait for best to move). Every
change is a line in SWARM_HOME/logs/backend-<agent>.jsonl and shows in the agent's status."""
from __future__ import annotations

import collections
import logging
import time
from pathlib import Path

from agents.errors import BackendError, BackendUnavailable, ProposalAbandoned
from agents.transcript import BackendEvents

log = logging.getLogger(__name__)

# Backend errors (not bad edits) with the same message in a row before the agent stops
SAME_FAILURE_STOP = 5


class BackendHealth:
    """The backend's state for one agent. `secrets()` gives the values to redact."""

    def __init__(self, swarm_home: Path, agent: str, *, wait_s: float, wait_max_s: float,
                 secrets=lambda: []):
        self.agent = agent
        self.wait_s = wait_s
        self.wait_max_s = wait_max_s
        self.secrets = secrets
        self.events = BackendEvents(swarm_home, agent)
        self.state = "up"
        self.reason: str | None = None
        self.since: float | None = None
        self.failures = 0                   # consecutive requests without an answer
        self.counts: collections.Counter[str] = collections.Counter()
        self._last_error: tuple[str | None, int] = (None, 0)

    def same_failure(self, error: str | None) -> bool:
        """Note a proposal's backend error (None: a usable answer). True after the same error
        SAME_FAILURE_STOP times in a row: a backend failing at once every time (a CLI that is not
        logged in) would otherwise write invalid records in a hot loop."""
        if error is None or error != self._last_error[0]:
            self._last_error = (error, 1 if error else 0)
            return False
        self._last_error = (error, self._last_error[1] + 1)
        return self._last_error[1] >= SAME_FAILURE_STOP

    def failed(self, e: BackendError, what: str = "proposal") -> tuple[str, float]:
        """Record a failure. Returns ("abandoned", 0), ("refused", 0) (the agent stops) or
        ("down", seconds to wait before asking again)."""
        reason = " ".join(str(e).split())[:300]
        if isinstance(e, ProposalAbandoned):
            self.abandoned(e, what)
            return "abandoned", 0.0
        if not isinstance(e, BackendUnavailable):   # BackendRefused, or a backend's own kind
            self.state, self.reason = "refused", reason
            self.since = self.since or time.time()
            self.counts["refused"] += 1
            self.events.add("refused", reason, self.secrets(), what=what)
            log.error("%s: the backend refused: %s", self.agent, reason)
            return "refused", 0.0
        delay = min(self.wait_max_s, self.wait_s * 2 ** min(self.failures, 16))
        self.failures += 1
        if self.state != "down":
            self.since = time.time()
        self.state, self.reason = "down", reason
        self.counts["down"] += 1
        self.events.add("down", reason, self.secrets(), what=what, wait_s=delay,
                        failures=self.failures)
        log.warning("%s: backend not answering (%d in a row): %s; asking again in %.0f s",
                    self.agent, self.failures, reason, delay)
        return "down", delay

    def moved_on(self, program: str) -> None:
        """Its refusal cost the agent its program, not its work: it runs `program` now."""
        log.warning("%s: moved to program %s after the refusal", self.agent, program)
        self._up()

    def spent(self) -> None:
        """The refusal was the backend having nothing left to propose from its train.py: the agent
        waits for best to move (state `spent`, the reason kept), not stopped."""
        self.state = "spent"

    def resumed(self) -> None:
        """Best moved after the backend had nothing left to propose: it is asked again."""
        log.info("%s: the backend is asked again (best moved)", self.agent)
        self._up()

    def _up(self) -> None:
        self.state, self.reason, self.since, self.failures = "up", None, None, 0
        self._last_error = (None, 0)

    def answered(self) -> None:
        if self.state == "down":
            down_s = time.time() - (self.since or time.time())
            self.events.add("up", f"answering again after {down_s:.0f} s", [],
                            down_s=round(down_s, 1), failures=self.failures)
            log.warning("%s: backend answering again after %.0f s", self.agent, down_s)
        self.state, self.reason, self.since, self.failures = "up", None, None, 0

    def abandoned(self, e: BaseException, what: str) -> None:
        self.counts["abandoned"] += 1
        self.events.add("abandoned", f"{what} abandoned: {e}", self.secrets(), what=what)
        log.warning("%s: %s abandoned (stopping)", self.agent, what)

    def outcome(self) -> str | None:
        """`backend down for 42 s: <reason>` while in trouble, else None."""
        if self.state == "up":
            return None
        since = f" for {time.time() - self.since:.0f} s" if self.since else ""
        return f"backend {self.state}{since}: {self.reason}"

    def status(self) -> dict:
        return {"backend_state": self.state, "backend_reason": self.reason,
                "backend_since": self.since, "backend_events": dict(self.counts)}


# Runs of code that trained before (the baseline, a repeat of best, a confirmation or a
# verification: never the agent's new idea) that may crash in a row before the agent backs off.
ENV_CRASHES_BEFORE_WAIT = 2


class RunHealth:
    """Whether the machine can still train. A crash of an experiment is the idea's; a crash of
    code that trained before is the machine's or the sandbox's (a broken standby crashed every
    run, 150 records in two minutes): after ENV_CRASHES_BEFORE_WAIT in a row the agent waits,
    doubling from wait_s up to wait_max_s, before its next run; any run that ends ok resets."""

    def __init__(self, wait_s: float, wait_max_s: float):
        self.wait_s, self.wait_max_s = wait_s, wait_max_s
        self.streak = 0
        self.last_error: str | None = None

    def ran(self, kind: str, status: str, error: str | None) -> float:
        """Note a finished run; returns how long to wait before the next one (0: go on)."""
        if status == "ok":
            self.streak, self.last_error = 0, None
            return 0.0
        if kind == "experiment" or status not in ("crash", "timeout"):
            return 0.0
        self.streak += 1
        self.last_error = (error or status).splitlines()[0][:200] if (error or status) else status
        if self.streak < ENV_CRASHES_BEFORE_WAIT:
            return 0.0
        return min(self.wait_max_s, self.wait_s * 2 ** (self.streak - ENV_CRASHES_BEFORE_WAIT))
