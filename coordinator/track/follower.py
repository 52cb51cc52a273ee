"""The tracker follower: a thread of `swarm run` that reads the ledger stream from a cursor kept
in redis and logs every record, with its latest decision, to one tracker (MLflow or W&B).

Why a follower of the ledger, in `swarm run`, and not a call in the coordinator actor:
- a decision is durable once it is in redis; a tracker that is slow or down must never hold
  one up, so the tracker reads what is already decided, after the fact, at its own pace;
- the cursor (last stream id handled) and a digest per record (what the tracker holds) live in
  redis beside the ledger: an outage, a crash or a restart of `swarm run` loses nothing, the
  next follower goes on from the cursor, and a record is written again only when something
  logged about it changed (pending -> merge);
- the tracker's package, credentials (MLFLOW_TRACKING_*, WANDB_API_KEY) and network are the
  user's machine's, where `swarm run` runs; the coordinator actor imports neither package
  (`import mlflow` took 4-18 s here).
Every `decision` event of a record (a later one supersedes, see Ledger.put_decision) makes the
follower log the record's current row again: one tracker run per record, updated in place.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from coordinator.state import keys
from coordinator.track.base import TrackerDown, Writer, one_line
from coordinator.track.config import TrackingConfig

log = logging.getLogger(__name__)

SAY_AGAIN_S = 300.0   # a tracker still down is mentioned again this often (swarm.log)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _fields(f: dict) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in f.items()}


class Follower:
    """Logs the ledger of `swarm_id` on redis `client` to `writer`, from its cursor on."""

    def __init__(self, client, swarm_id: str, writer: Writer, *, repo_path: Path | None,
                 swarm_home: Path | None, retry_max_s: float = 60.0, poll_s: float = 1.0,
                 batch: int = 200):
        from coordinator.state.ledger import Ledger

        self.r = client
        self.writer = writer
        self.ledger = Ledger(client, swarm_id)
        self.cursor_key = keys.tracker(swarm_id, writer.key(), "cursor")
        self.logged_key = keys.tracker(swarm_id, writer.key(), "logged")
        self.repo_path, self.swarm_home = repo_path, swarm_home
        self.retry_max_s, self.poll_s, self.batch = retry_max_s, poll_s, batch
        self.down_since: float | None = None
        self.why: str | None = None
        self.written = 0
        self._said = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drain_until = float("inf")
        self.thread: threading.Thread | None = None

    # --- one pass ---------------------------------------------------------------------------

    def _events_after(self, cursor: str | None, count: int | None):
        start = "-" if cursor is None else "(" + cursor
        return self.r.xrange(self.ledger.key("ledger"), min=start, count=count)

    def step(self) -> int:
        """Handle up to `batch` stream events after the cursor; returns how many. Raises
        TrackerDown (the cursor stays: the batch is done again, records already written are
        skipped by their digest) or a redis error."""
        chunk = self._events_after(_s(self.r.get(self.cursor_key)), self.batch)
        if not chunk:
            return 0
        events = [_fields(f) for _, f in chunk]
        ids = [f["id"] for f in events if f.get("type") in ("record", "decision")]
        self.log_records(list(dict.fromkeys(ids)))
        self.r.set(self.cursor_key, _s(chunk[-1][0]))
        return len(chunk)

    def log_records(self, exp_ids: list[str]) -> int:
        """Write each record's current state (record + latest decision) unless the tracker holds
        it already; returns how many were written."""
        from coordinator.state.ledger import to_row
        from coordinator.track.entry import build_runs

        rows, tails = [], {}
        for exp in exp_ids:
            rec = self.ledger.record(exp)
            if rec is None:   # a decision is only ever put for a recorded experiment
                continue
            rows.append(to_row(rec, self.ledger.decision(exp)))
            if rec.result is not None and rec.result.log_tail:
                tails[exp] = rec.result.log_tail
        if not rows:
            return 0
        held = dict(zip([r["experiment_id"] for r in rows],
                        self.r.hmget(self.logged_key, [r["experiment_id"] for r in rows])))
        n = 0
        for run in build_runs(rows, self.repo_path, self.swarm_home, tails):
            digest = run.digest()
            if _s(held.get(run.experiment_id)) == digest:
                continue
            self.writer.write(run)
            self.r.hset(self.logged_key, run.experiment_id, digest)
            n += 1
        self.written += n
        return n

    def behind(self) -> int:
        """Records with events the tracker has not handled yet."""
        try:
            events = self._events_after(_s(self.r.get(self.cursor_key)), None)
        except Exception:
            return -1
        return len({f["id"] for f in map(_fields, (f for _, f in events))
                    if f.get("type") in ("record", "decision")})

    # --- the thread -------------------------------------------------------------------------

    def start(self) -> "Follower":
        self.thread = threading.Thread(target=self._loop, name=f"track-{self.writer.name}", daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        import redis

        delay = 1.0
        while True:
            stopping = self._stop.is_set()
            if stopping and time.monotonic() >= self._drain_until:
                break
            try:
                self.writer.open()
                n = self.step()
                if self.down_since is not None:
                    log.warning("tracking: %s answers again after %.0f s: catching up", self.writer.destination(),
                                time.monotonic() - self.down_since)
                    self.down_since, self.why = None, None
                delay = 1.0
                if n == 0:
                    if stopping:
                        break   # caught up
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                continue
            except TrackerDown as e:
                why = str(e)
            except redis.RedisError as e:
                why = f"the ledger's redis: {one_line(e)}"
            except Exception as e:   # a tracker must never take `swarm run` down
                log.debug("tracking: %s", self.writer.destination(), exc_info=True)
                why = f"{self.writer.destination()}: {one_line(e)}"
            self._down(why)
            wait = delay if not stopping else min(delay, max(0.0, self._drain_until - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()
            delay = min(delay * 2, self.retry_max_s)
        try:
            self.writer.close()
        except Exception as e:
            log.warning("tracking: %s: %s", self.writer.destination(), one_line(e))

    def _down(self, why: str) -> None:
        now = time.monotonic()
        self.why = why
        if self.down_since is None:
            self.down_since, self._said = now, now
            log.warning("tracking: %s; retrying in the background (the swarm goes on, nothing is "
                        "lost)", why)
        elif now - self._said >= SAY_AGAIN_S:
            self._said = now
            log.warning("tracking: still down after %.0f s: %s", now - self.down_since, why)

    def stop(self, drain_s: float) -> int:
        """Log what is left for up to `drain_s` seconds, then stop. Returns the records not
        logged yet (they are the next follower's)."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        self._wake.set()
        if self.thread is not None:
            self.thread.join(drain_s + 30)
        return self.behind()


class Trackers:
    """The followers `swarm run` started, one per configured tracker."""

    def __init__(self, followers: list[Follower]):
        self.followers = followers

    def stop(self, drain_s: float = 60.0) -> None:
        """Catch up (each for at most `drain_s`), then say what is left, if anything."""
        for f in self.followers:
            f._drain_until = time.monotonic() + drain_s
            f._stop.set()
            f._wake.set()
        for f in self.followers:
            left = f.stop(drain_s)
            if left:
                later = "the next `swarm run` in this SWARM_HOME logs them" + (
                    ", or `swarm export --format mlflow`" if f.writer.name == "mlflow" else "")
                log.warning("tracking: %s: %s record(s) not logged yet (%s); %s", f.writer.destination(),
                            "some" if left < 0 else left, f.why or "stopped", later)
            else:
                log.info("tracking: %s holds every record (%d written by this run)",
                         f.writer.destination(), f.written)
        self.followers = []


def make_writers(cfg: TrackingConfig, info: dict, swarm_home: Path | None) -> list[Writer]:
    from coordinator.track.base import SwarmRun

    swarm = SwarmRun.from_info(info)
    out: list[Writer] = []
    if cfg.mlflow is not None:
        from coordinator.track.mlflow_writer import MlflowWriter
        out.append(MlflowWriter(cfg.mlflow, swarm))
    if cfg.wandb is not None:
        from coordinator.track.wandb_writer import WandbWriter
        out.append(WandbWriter(cfg.wandb, swarm, swarm_home))
    return out


def start_trackers(cfg: TrackingConfig, redis_url: str, info: dict, swarm_home: Path) -> Trackers:
    """Start a follower per configured tracker (none: an empty Trackers)."""
    import redis

    followers = []
    for w in make_writers(cfg, info, swarm_home):
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=10)
        followers.append(Follower(client, info["swarm_id"], w, repo_path=Path(swarm_home) / "repo.git",
                                  swarm_home=Path(swarm_home), retry_max_s=cfg.retry_max_s).start())
        log.info("tracking: logging records to %s", w.destination())
    return Trackers(followers)
