"""The Coordinator: owns the research repo, the ledger and the decisions (a plain class; actor.py wraps it).

Decisions are made one at a time under one lock, in the order reports reach the coordinator.
Every ok result is judged against the current best of its class, whatever its parent
(judging.py): the first of several winners from one parent fast-forwards `best`; the next ones
are then off best and take the merge path (their change merged onto the current best, a
verification run, then `merge` or `did-not-stack`). A retried report returns the experiment's
current decision and appends nothing.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from pathlib import Path

from coordinator.state import broadcast
from coordinator.decide.commits import CommitCache
from coordinator.decide.groupcommit import GroupCommit, Slot
from coordinator.decide.jobs import JOB_MAX_ATTEMPTS, JobBoard
from coordinator.decide.judging import DEFAULT_LEASE_S, Judging
from coordinator.state.ledger import Ledger, LedgerError, connect_redis
from coordinator.decide.refwriter import RefWriter
from coordinator.state.repo import RepoError, ResearchRepo
from coordinator.decide.rules import NoisePool, Samples, Verdict, is_suspect
from agents.messages import (Broadcast, Decision, ExperimentRecord, Job, PromotionConfig,
                             ReportReply, StartedExperiment)

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 50          # records between automatic parquet snapshots...
SNAPSHOT_MIN_GAP_S = 30.0    # ...and at least this long apart: each one reads the whole ledger
_HW_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _pct(sorted_xs: list[float], p: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(round(p / 100 * (len(sorted_xs) - 1))))]


class CoordinatorError(RuntimeError):
    """A request the coordinator cannot serve (unknown commit to fetch, no baseline...)."""


class Coordinator(Judging):
    """The agent-facing port: begin, report, next_job, best, recent, heartbeat, fetch, plus
    status, reconcile_dead_agent and snapshot. State lives in redis and git; this object is a
    cache rebuilt from them on construction, so it may be killed and re-created at any time."""

    def __init__(self, swarm_home: Path, redis_url: str, promotion: PromotionConfig,
                 swarm_id: str | None = None, baseline_train_py: str | None = None,
                 redis_wait_s: float = 0.0):
        self.home = Path(swarm_home)
        self.cfg = promotion
        self.swarm_id = swarm_id or "swarm"
        self._lock = threading.RLock()  # the decision lock
        self._group = GroupCommit()
        self._stats_lock = threading.Lock()
        self._stale = False
        self.r = connect_redis(redis_url, wait_s=redis_wait_s)
        self.ledger = Ledger(self.r, self.swarm_id)
        self.repo = ResearchRepo(self.home / "repo.git")
        if not self.repo.exists():
            if baseline_train_py is None:
                from trainer import baseline_path  # the agents' engineer's module; late import
                baseline_train_py = Path(baseline_path()).read_text()
            self.repo.create(baseline_train_py)
        self.root = self.repo.root()
        self.refwriter = RefWriter(self.repo)
        # (records in the batch, seconds holding the decision lock) of recent batches: perf().
        self._batches: deque[tuple[int, float]] = deque(maxlen=4096)
        # Seconds from a report's arrival here to its decision (queue + decision + commit).
        self._latency: deque[float] = deque(maxlen=16384)
        self._load()

    # -- rebuilding from redis and git ----------------------------------------------------------
    def _load(self) -> None:
        self.records: dict[str, ExperimentRecord] = {}
        self.decisions: dict[str, Decision] = {}
        self.started: dict[str, StartedExperiment] = {}
        self.samples: dict[tuple[str, str], Samples] = {}
        # Samples of a best taken after it became best: the one(s) that made it best were
        # selected for being low, so once it has fresh ones they alone are its reference.
        self.fresh: dict[tuple[str, str], Samples] = {}
        self.noise: dict[str, NoisePool] = {}
        self.order: dict[str, list[str]] = {}
        self.commits = CommitCache(self.repo)
        self._latest: dict[str, Broadcast | None] = {}
        self.refwriter.take()  # a failed batch's refs: its decisions never reached redis
        self._bests: dict[str, str] = {}
        self._since_snapshot = 0
        self._snap_thread: threading.Thread | None = None
        self._snap_at = 0.0
        last_move: dict[str, Decision] = {}
        events = list(self.ledger.events())
        for typ, id, js in events:
            if typ == "started":
                self.started[id] = StartedExperiment.model_validate_json(js)
            elif typ == "record":
                rec = ExperimentRecord.model_validate_json(js)
                self.records[id] = rec
                self.order.setdefault(rec.hardware_class, []).append(id)
            elif typ == "decision":
                d = Decision.model_validate_json(js)
                self.decisions[id] = d
                if d.best_after and d.hardware_class:
                    last_move[d.hardware_class] = d
        self.jobs = JobBoard(self.ledger, self.cfg.job_lease_s or DEFAULT_LEASE_S)
        self._todo = []
        self.classes = {name.removeprefix("refs/heads/best/") for name in self.repo.refs("refs/heads/best/")}
        # Samples in stream order: a record's sample counts from its record event (as when it
        # was decided), a best's fresh samples from the decision that moved best to it.
        for typ, id, js in events:
            if typ == "record":
                rec, d = self.records[id], self.decisions.get(id)
                if d is not None and d.decision != "rejected" and rec.status == "ok":
                    self._add_sample(rec)
                    self._note_run_length(rec)
            elif typ == "decision" and '"best_after":null' not in js:
                d = Decision.model_validate_json(js)
                if d.best_after and d.hardware_class and self.commits.has(d.best_after):
                    self._start_fresh(d.hardware_class, d.best_after)
        for hw, d in last_move.items():
            self._reconcile_ref(hw, d)
        undecided = [id for id in self.records if id not in self.decisions]
        for id in undecided:  # the coordinator died between storing a record and deciding it
            log.warning("deciding %s, recorded before the last restart but never decided", id)
            self._decide(self.records[id])
        self._pending_on_old_best()  # best moved, or sigma became trusted, before a restart
        self._run_followups()
        for hw in sorted(self.classes):
            self._schedule_repeats(hw)
            self._sync_best_key(hw)
        self.refwriter.write(self.refwriter.take())
        self._restore_refs()
        self.jobs.update_offers()  # deciding the undecided above may have opened jobs
        self._stale = False
        log.info("coordinator %s: %d records, %d decisions, classes %s", self.swarm_id,
                 len(self.records), len(self.decisions), sorted(self.classes))

    def _reconcile_ref(self, hw: str, d: Decision) -> None:
        ref = self._ref(hw)
        cur = self.repo.ref(ref)
        target = d.best_after
        if cur == target or target is None or not self.repo.has_commit(target):
            return
        if cur is None or self.repo.is_ancestor(cur, target):
            # The ledger is written first: a promotion whose ref move did not happen is re-applied.
            log.warning("best[%s]: re-applying %s from the ledger (ref was %s)", hw, target[:10],
                        (cur or "none")[:10])
            self.repo.set_ref(ref, target)
            self._bests.pop(hw, None)
        elif self.repo.is_ancestor(target, cur):
            log.warning("best[%s]: git ref %s is ahead of the ledger (%s); trusting git", hw,
                        cur[:10], target[:10])
        else:
            log.error("best[%s]: git ref %s and ledger %s diverged; keeping git", hw, cur[:10], target[:10])

    def _sync_best_key(self, hw: str) -> None:
        cur = self.repo.ref(self._ref(hw))
        key = broadcast.latest(self.r, self.swarm_id, hw)
        s = self._samples_of(hw, cur)
        if cur is None or s.n == 0 or (key is not None and key.commit == cur):
            return
        self._publish(hw, cur, None, None)

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _ref(hw: str) -> str:
        return f"refs/heads/best/{hw}"

    def _best_commit(self, hw: str) -> str:
        # Only this object moves best refs (under the lock), so a cache is exact.
        c = self._bests.get(hw)
        if c is None:
            c = self.repo.ref(self._ref(hw))
            if c is None:
                raise CoordinatorError(f"hardware class {hw!r} has no best ref")
            self._bests[hw] = c
        return c

    def flush_refs(self) -> None:
        """Wait until every bookkeeping ref decided so far is written."""
        self.refwriter.flush()

    def _restore_refs(self) -> None:
        """Experiment refs a crash lost between a decision and its ref write."""
        have = set(self.repo.refs("refs/experiments/"))
        missing = [(f"refs/experiments/{i}", r.commit) for i, r in self.records.items()
                   if r.commit and f"refs/experiments/{i}" not in have]
        if missing:
            self.commits.look([c for _, c in missing])
            due = [(n, c) for n, c in missing if self.commits.seen(c)]
            if due:
                log.info("restoring %d experiment refs", len(due))
                self.refwriter.write(due)

    def _samples_of(self, hw: str, commit: str | None) -> Samples:
        if commit is None:
            return Samples()
        return self.samples.get((hw, self.commits.blob(commit)), Samples())

    def _ref_samples(self, hw: str, commit: str | None) -> Samples:
        """What a commit is compared by: its fresh samples once it has any (a best), else all."""
        if commit is None:
            return Samples()
        key = (hw, self.commits.blob(commit))
        f = self.fresh.get(key)
        return f if f is not None and f.n else self.samples.get(key, Samples())

    def _fresh_n(self, hw: str, commit: str) -> int:
        key = (hw, self.commits.blob(commit))
        f = self.fresh.get(key)
        return f.n if f is not None else self.samples.get(key, Samples()).n

    def _start_fresh(self, hw: str, commit: str) -> None:
        self.fresh[(hw, self.commits.blob(commit))] = Samples()

    def _sigma(self, hw: str) -> float:
        return self.noise.get(hw, NoisePool()).sigma(self.cfg.sigma_prior)

    def _add_sample(self, rec: ExperimentRecord) -> None:
        if rec.val_bpb is None or not self.commits.has(rec.commit):
            return
        key = (rec.hardware_class, self.commits.blob(rec.commit))
        s = self.samples.setdefault(key, Samples())
        self.noise.setdefault(rec.hardware_class, NoisePool()).add(s, rec.val_bpb, rec.confirm_bpb)
        if key in self.fresh:
            self.fresh[key].add(rec.val_bpb, rec.confirm_bpb)

    def _register(self, hw: str) -> bool:
        if hw in self.classes:
            return True
        if not _HW_RE.match(hw):
            return False
        self.repo.update_ref(self._ref(hw), self.root, None)  # CAS create; no-op if it exists
        self.classes.add(hw)
        log.info("new hardware class %s: best starts at the baseline %s", hw, self.root[:10])
        return True

    def _put(self, d: Decision) -> Decision:
        self.ledger.put_decision(d)
        self.decisions[d.experiment_id] = d
        return d

    def _dec(self, rec: ExperimentRecord, decision: str, reason: str, **kw) -> Decision:
        if decision == "rejected":
            log.warning("rejected %s: %s", rec.experiment_id, reason)
        return self._put(Decision(experiment_id=rec.experiment_id, decision=decision, reason=reason,
                                  hardware_class=rec.hardware_class, **kw))

    def _publish(self, hw: str, commit: str, exp_id: str | None, decision: str | None) -> Broadcast:
        s = self._ref_samples(hw, commit)
        b = Broadcast(swarm_id=self.swarm_id, hardware_class=hw, commit=commit,
                      val_bpb=s.mean if s.n else float("nan"),
                      seq=broadcast.next_seq(self.r, self.swarm_id, hw),
                      experiment_id=exp_id, decision=decision)
        broadcast.publish(self.r, b)
        self._latest[hw] = b
        return b

    def _latest_best(self, hw: str) -> Broadcast | None:
        """The best key's value: only this object writes it, so it is read from redis once."""
        if hw not in self._latest:
            self._latest[hw] = broadcast.latest(self.r, self.swarm_id, hw)
        return self._latest[hw]

    # -- deciding ---------------------------------------------------------------------------------
    def _decide(self, rec: ExperimentRecord) -> Decision:
        d = self._decide_one(rec)
        self._run_followups()  # candidates to merge again onto a new best, results sigma waited for
        self._schedule_repeats(rec.hardware_class)
        return d

    def _decide_one(self, rec: ExperimentRecord) -> Decision:
        hw = rec.hardware_class
        st = self.jobs.finished(rec) if rec.job_id else None
        if hw not in self.classes:
            return self._dec(rec, "rejected", f"unknown hardware class {hw!r}")
        if rec.commit is not None and self.commits.has(rec.commit):
            # Discarded and crashed commits stay reviewable.
            self.refwriter.later(f"refs/experiments/{rec.experiment_id}", rec.commit)
        if rec.status != "ok":
            dec = self._dec(rec, rec.status, rec.reason or f"run ended with {rec.status}")
            if st is not None and st["done"] and st["job"]["for_experiment"] and not st.get("cancelled"):
                self._give_up(st["job"]["for_experiment"], st["job"],
                              f"its {rec.kind} run failed {JOB_MAX_ATTEMPTS} times")
            return dec
        if not self.commits.has(rec.commit):
            return self._dec(rec, "rejected", f"unknown commit {rec.commit!r} (not in the research "
                             f"repo and no bundle sent)")
        if rec.val_bpb is None:
            return self._dec(rec, "rejected", "status ok but no val_bpb")
        try:
            self.commits.blob(rec.commit)
        except RepoError:
            return self._dec(rec, "rejected", f"commit {rec.commit[:10]} has no train.py")
        dof0 = self._dof(hw)
        self._add_sample(rec)
        self._note_run_length(rec)
        self._sample_added(hw, dof0)
        best = self._best_commit(hw)
        if self.commits.blob(rec.commit) == self.commits.blob(best):
            self._refresh_best_key(hw, best)
        noise = dict(sigma=self._sigma(hw), dof=self._dof(hw), samples=self._samples_of(hw, rec.commit).n)
        if rec.kind == "baseline":
            return self._dec(rec, "sample", "baseline run: a noise sample", **noise)
        if rec.kind in ("confirm", "verify"):
            orig = st["job"]["for_experiment"] if st else None
            if orig is None or orig not in self.records:
                return self._dec(rec, "sample", f"{rec.kind} run: a sample (no candidate to decide)", **noise)
            # The candidate's decision changes; this record stays a sample (a move is counted once).
            od = self._rejudge(orig)
            gone = f" (job cancelled: {st['cancelled']})" if st.get("cancelled") else ""
            return self._dec(rec, "sample", f"{rec.kind} run for {orig}{gone}: it is now {od.decision}", **noise)
        return self._judge_experiment(rec)

    def _refresh_best_key(self, hw: str, best: str) -> None:
        key = self._latest_best(hw)
        if key is None or key.commit != best:
            self._publish(hw, best, None, None)
        else:  # same seq: the value of the same commit got one more sample (written with the batch)
            s = self._ref_samples(hw, best)
            self._latest[hw] = key = key.model_copy(update={"val_bpb": s.mean})
            self.ledger.set(broadcast.best_key(self.swarm_id, hw), key.model_dump_json())

    def _move_best(self, rec: ExperimentRecord, hw: str, old: str, new: str, v: Verdict, sigma: float,
                   kind: str, merge_commit: str | None = None, reason_prefix: str = "", **fields) -> Decision:
        cs, bs = self._samples_of(hw, new), self._ref_samples(hw, old)
        suspect = is_suspect(cs.confirm_mean, bs.confirm_mean, v.margin)
        reason = reason_prefix + v.reason + (" [suspect: confirm split got worse]" if suspect else "")
        fields.update(samples_best=bs.n, mean=cs.mean)
        # Ledger first, then the ref (CAS), then the broadcast: a restart re-applies a lost ref move.
        d = self._dec(rec, kind, reason, delta=v.delta, margin=v.margin, sigma=sigma, samples=v.samples,
                      best_before=old, best_after=new, suspect=suspect, merge_commit=merge_commit, **fields)
        self.ledger.flush()
        self._bests.pop(hw, None)
        self._start_fresh(hw, new)
        if not self.repo.update_ref(self._ref(hw), new, old):
            raise CoordinatorError(f"best[{hw}] moved under the coordinator (expected {old[:10]})")
        self._publish(hw, new, rec.experiment_id, kind)
        self._best_moved(hw, new)
        log.info("%s %s: best[%s] %s -> %s (delta %.4f, margin %.4f, sigma %.4f, n=%d)%s", kind,
                 rec.experiment_id, hw, old[:10], new[:10], v.delta, v.margin, sigma, v.samples,
                 " SUSPECT" if suspect else "")
        return d

    # -- the agent-facing port ------------------------------------------------------------------
    def begin(self, started: StartedExperiment) -> None:
        """Record the intent to run an experiment (before training). Idempotent by experiment_id.
        Goes through the same queue as reports, so it shares their group commit."""
        if started.experiment_id in self.started and not self._stale:
            return
        self._submit(Slot(started))

    def _begin_one(self, started: StartedExperiment) -> None:
        if started.experiment_id in self.started:
            return
        self._register(started.hardware_class)
        self.ledger.add_started(started)
        self.started[started.experiment_id] = started

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> Decision:
        """Store a record and decide it. Idempotent: a retried report returns the experiment's
        current decision and appends nothing. `bundle`: git bundle bytes holding record.commit
        (from an agent on another node). Bad records are decided `rejected`, never raised.
        Raises LedgerError when redis stays unreachable past the retry window.

        Reports that queue up while a decision runs are decided together by the next lock
        holder, in arrival order, and their ledger writes go to redis in one MULTI/EXEC
        (group commit: one fsync for the batch, not one per write)."""
        return self._submit(Slot(record, bundle))

    def report_sync(self, record: ExperimentRecord, bundle: bytes | None = None) -> ReportReply:
        """report(), plus whether next_job would hand the reporting agent a job right now and
        the latest best of its class: what the agent asks at its next iteration boundary,
        answered in the same call (through Ray each call costs ~1 ms of CPU on each side)."""
        d = self.report(record, bundle)
        hw = record.hardware_class
        # Outside the lock: read the cache, never fill it (a fill racing a publish could put an
        # older best back); before the first publish of this process, ask redis.
        best = self._latest.get(hw)
        return ReportReply(decision=d, job_waiting=self._job_waiting(record.agent, hw),
                           best=best if best is not None else self.best(hw))

    def _job_waiting(self, agent: str, hardware_class: str) -> bool:
        """False when next_job(agent, hardware_class) would surely answer None now. Read
        without the lock, like next_job's fast path."""
        return (hardware_class not in self.classes or self._stale
                or self.jobs.may_have(agent, hardware_class))

    def _submit(self, slot: Slot):
        """Queue a report or begin for the group commit (groupcommit.py); when this thread
        leads, it runs the batch under the decision lock."""
        def lead():
            with self._lock:
                return self._run_batch()
        refs = self._group.submit(slot, lead)
        if isinstance(slot.record, ExperimentRecord):
            with self._stats_lock:
                self._latency.append(time.perf_counter() - slot.t0)
        # The batch's bookkeeping refs, by the thread that ran it, after the lock is released.
        self.refwriter.write(refs or [])
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run_batch(self) -> list[tuple[str, str]]:
        t0 = time.perf_counter()
        batch = self._group.take()
        try:
            if self._stale:
                self._load()
            self.commits.look([c for sl in batch for c in (sl.record.commit, sl.record.parent)])
            with self.ledger.batch():
                for sl in batch:
                    try:
                        if isinstance(sl.record, StartedExperiment):
                            self._begin_one(sl.record)
                        else:
                            sl.result = self._report_one(sl.record, sl.bundle)
                    except (RepoError, CoordinatorError) as e:
                        sl.error = e
        except Exception as e:  # the batch did not reach redis: the caches are ahead of it
            self._stale = True
            log.error("ledger write failed (%s); state will be rebuilt from redis and git",
                      str(e).splitlines()[0][:200])
            for sl in batch:
                sl.result, sl.error = None, e if isinstance(e, LedgerError) else LedgerError(
                    f"ledger write failed: {str(e).splitlines()[0][:200]}")
        finally:
            try:
                self.jobs.update_offers()
            finally:
                for sl in batch:
                    if sl.result is None and sl.error is None and isinstance(sl.record, ExperimentRecord):
                        sl.error = CoordinatorError(f"report {sl.record.experiment_id} was not decided")
                    sl.finish()
                with self._stats_lock:
                    self._batches.append((len(batch), time.perf_counter() - t0))
        if (self._since_snapshot >= SNAPSHOT_EVERY and not self._stale
                and time.monotonic() - self._snap_at >= SNAPSHOT_MIN_GAP_S
                and (self._snap_thread is None or not self._snap_thread.is_alive())):
            # Off the decision lock, one at a time: a snapshot reads the whole ledger back from
            # redis (O(records)); done inside the lock it held up every report behind it.
            self._since_snapshot, self._snap_at = 0, time.monotonic()
            self._snap_thread = threading.Thread(target=self._background_snapshot, daemon=True,
                                                 name="ledger-snapshot")
            self._snap_thread.start()
        return self.refwriter.take()

    def _background_snapshot(self) -> None:
        try:
            self.ledger.write_parquet(self.home / "snapshots" / "ledger.parquet")
        except Exception as e:  # the next one (or the final snapshot()) will try again
            log.warning("automatic snapshot failed: %s", str(e).splitlines()[0][:200])

    def _report_one(self, record: ExperimentRecord, bundle: bytes | None) -> Decision:
        d = self.decisions.get(record.experiment_id)
        if d is not None:
            return d
        if bundle:
            try:
                self.repo.fetch_bundle(bundle)
            except RepoError as e:
                log.warning("bundle from %s not fetched: %s", record.agent, e)
        if record.experiment_id not in self.records:
            record = record.model_copy(update={"swarm_id": record.swarm_id or self.swarm_id})
            self.ledger.add_record(record)
            self.records[record.experiment_id] = record
            self.order.setdefault(record.hardware_class, []).append(record.experiment_id)
        self._since_snapshot += 1
        return self._decide(self.records[record.experiment_id])

    def next_job(self, agent: str, hardware_class: str) -> Job | None:
        """A baseline run for an agent new to this class, else an open confirm/verify job (or one
        whose lease ran out), oldest first, else None (do your own research).
        Raises CoordinatorError for a hardware class name that cannot be a git ref."""
        # Fast path without the decision lock, for the common answer (a known agent, no job
        # it could take: none open, or all leased to others and not expired): every agent asks
        # at every boundary, and queueing each question behind the decisions in flight doubled
        # their latency. A job freed just after this read is handed out at the agent's next boundary.
        if not self._job_waiting(agent, hardware_class):
            return None
        with self._lock:
            try:
                with self.ledger.batch():  # a job's writes go to redis in one round trip
                    return self._next_job(agent, hardware_class)
            finally:
                self.jobs.update_offers()

    def _next_job(self, agent: str, hw: str) -> Job | None:
        if not self._register(hw):
            raise CoordinatorError(f"bad hardware class name {hw!r}")
        if self.jobs.needs_baseline(agent, hw):
            best = self._best_commit(hw)
            return self.jobs.take_repeat(agent, hw, best) or self.jobs.issue(
                "baseline", best, best, hw, None, "baseline (unchanged best)", for_agent=agent)
        return self.jobs.lease(agent, hw)

    def best(self, hardware_class: str) -> Broadcast | None:
        """The latest best of a class (None until its baseline has a sample)."""
        return broadcast.latest(self.r, self.swarm_id, hardware_class)

    def recent(self, hardware_class: str, n: int) -> list[tuple[ExperimentRecord, Decision | None]]:
        """The last n records of a class with their current decisions, oldest first."""
        with self._lock:
            ids = self.order.get(hardware_class, [])[-n:] if n > 0 else []
            return [(self.records[i], self.decisions.get(i)) for i in ids]

    def heartbeat(self, agent: str, status: dict) -> None:
        """Store an agent's status (read by the live view and `swarm status`)."""
        self.r.hset(self.ledger.key("agents"), agent, json.dumps({**status, "ts": time.time()}))

    def fetch(self, commit: str) -> bytes:
        """A git bundle containing `commit`. Raises CoordinatorError for an unknown commit."""
        with self._lock:
            if not self.repo.has_commit(commit):
                raise CoordinatorError(f"unknown commit {commit!r}")
            return self.repo.bundle(commit)

    def status(self) -> dict:
        """Best, its mean val_bpb and samples, and sigma per class; counts of decisions and jobs."""
        with self._lock:
            classes = {}
            for hw in sorted(self.classes):
                best = self._best_commit(hw)
                s = self._ref_samples(hw, best)
                classes[hw] = {"best": best, "val_bpb": s.mean if s.n else None, "samples": s.n,
                               "sigma": self._sigma(hw),
                               "noise_dof": self.noise.get(hw, NoisePool()).dof,
                               "min_dof": self.cfg.min_dof, "margin": self._class_margin(hw)}
            counts: dict[str, int] = {}
            for d in self.decisions.values():
                counts[d.decision] = counts.get(d.decision, 0) + 1
            from coordinator.decide.audit import lost_winners
            lost = [row for hw in sorted(self.classes) for row in lost_winners(self, hw)]
            return {"swarm_id": self.swarm_id, "classes": classes, "decisions": counts,
                    "records": len(self.records), "started": len(self.started),
                    "open_jobs": self.jobs.open_count(), "lost_winners": lost}

    def perf(self) -> dict:
        """The coordinator's own view of its speed, over the last few thousand reports:
        decision latency (a report's arrival here to its decision, durable in redis: queueing
        behind other decisions included, the caller's transport not), how long each batch held
        the decision lock and the capacity that implies, and this process's CPU seconds."""
        with self._stats_lock:
            b, lat = list(self._batches), sorted(self._latency)
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

    def reconcile_dead_agent(self, agent: str) -> list[str]:
        """Record `crash` ("agent died mid-run") for the agent's begun-but-unreported experiments
        and release its job leases. Returns the experiment ids it recorded."""
        with self._lock:
            ids = [i for i, s in self.started.items() if s.agent == agent and i not in self.records]
            begun = [self.started[i] for i in ids]
        # Outside the lock: a report queues like any other (one idempotent by its id, should the
        # agent's own report of the same experiment arrive first).
        for s in begun:
            self.report(ExperimentRecord(
                experiment_id=s.experiment_id, swarm_id=self.swarm_id, kind=s.kind, agent=s.agent,
                program=s.program, hardware_class=s.hardware_class, parent=s.parent,
                commit=s.commit, description=s.description, status="crash",
                reason="agent died mid-run", seed=s.seed, job_id=s.job_id,
                started_at=s.started_at, finished_at=time.time()))
        with self._lock:
            self.jobs.release(agent)
            self.jobs.update_offers()
            return ids

    def snapshot(self) -> Path:
        """Write SWARM_HOME/snapshots/ledger.parquet atomically; returns its path."""
        self.flush_refs()
        with self._lock:
            self._since_snapshot = 0
            self.ledger.flush()
            if self._snap_thread is not None:
                self._snap_thread.join()  # never let an older automatic one land after this
            return self.ledger.write_parquet(self.home / "snapshots" / "ledger.parquet")
