"""What every tracker writer is: the swarm it logs (SwarmRun), the one error a follower handles
(TrackerDown), and the small interface the follower and `swarm export` call (Writer)."""
from __future__ import annotations

import hashlib
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from coordinator.track.entry import TrackedRun


class TrackerDown(RuntimeError):
    """The tracker did not take a write (unreachable, refused, not configured); one line. The
    follower tries again later; nothing is marked logged."""


class SwarmRun(BaseModel):
    """The swarm as one tracker run: its id, and its params (profile, budget, ...)."""
    model_config = ConfigDict(extra="forbid")

    swarm_id: str
    params: dict[str, str] = {}
    created_at: float = 0.0

    @classmethod
    def from_info(cls, info: dict) -> "SwarmRun":
        """From SWARM_HOME/swarm.json."""
        params = {k: str(info[k]) for k in ("profile", "budget", "redis") if info.get(k) is not None}
        return cls(swarm_id=info["swarm_id"], params=params, created_at=float(info.get("created_at") or 0))


class Writer(Protocol):
    """A tracker writer. `open()` and `write()` raise TrackerDown; `write` is idempotent (the
    same record written twice is one tracker run, holding the later state)."""
    name: str

    def destination(self) -> str:
        """Where it writes, for messages (no secrets)."""

    def key(self) -> str:
        """A short stable id of the destination, for the follower's state in redis."""

    def open(self) -> None: ...

    def write(self, run: TrackedRun) -> None: ...

    def close(self) -> None: ...


def destination_key(name: str, *parts: str | None) -> str:
    return f"{name}-" + hashlib.sha1("|".join(p or "" for p in parts).encode()).hexdigest()[:10]


def one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    text = text if len(text) <= 200 else text[:200].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
