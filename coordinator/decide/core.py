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
from pathlib import Path

from coordinator.state import broadcast, keys
from coordinator.decide.bestkey import BestKeys
from coordinator.decide.commits import CommitCache
from coordinator.decide.groupcommit import GroupCommit, Slot
from coordinator.decide.jobs import JOB_MAX_ATTEMPTS, JobBoard
from coordinator.decide.judging import DEFAULT_LEASE_S, Judging
from coordinator.decide.pooling import Pooling
from coordinator.state.ledger import Ledger, LedgerError, connect_redis
from coordinator.decide.refwriter import RefWriter
from coordinator.state.repo import RepoError, ResearchRepo
from coordinator.decide.noise import SampleBook
from coordinator.decide.perf import PerfStats
from coordinator.decide.rules import Verdict, is_suspect
from coordinator.decide.snapshots import Snapshots
from coordinator.decide.tried import TriedStates
from agents.messages import (Broadcast, Decision, ExperimentRecord, Job, Lead, NoiseHistorySpec,
                             PromotionConfig, ReportReply, StartedExperiment)
from coordinator.decide.history import NoiseHistory
from coordinator.decide.leads import lead_of
from coordinator.decide.allocation import Allocation, AllocationSpec, ProgramSpec

log = logging.getLogger(__name__)

_HW_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BLOB_RE = re.compile(r"^[0-9a-f]{40}$")


class CoordinatorError(RuntimeError):
    """A request the coordinator cannot serve (unknown commit to fetch, no baseline...)."""


class Coordinator(Judging, Pooling):
    """The agent-facing port (agents.ports.CoordinatorPort: begin, report, next_job, best,
    recent, heartbeat, fetch, flush), plus the admin calls status, perf, reconcile_dead_agent,
    snapshot and flush_refs (decide/actor.py's ADMIN_METHODS). State lives in redis and git; this object is a
    cache rebuilt from them on construction, so it may be killed and re-created at any time."""

    def __init__(self, swarm_home: Path, redis_url: str, promotion: PromotionConfig,
                 swarm_id: str | None = None, baseline_train_py: str | None = None,
                 redis_wait_s: float = 0.0, history: NoiseHistorySpec | None = None):
        self.home = Path(swarm_home)
        self.cfg = promotion
        self.swarm_id = swarm_id or "swarm"
        # Noise measured by earlier swarms of the same class, profile, budget and apparatus
        # (history.py): a prior of bounded weight on sigma; this swarm's own noise written back.
        self.history = (NoiseHistory(history, self.swarm_id, promotion.history_dof_max)
                        if history is not None and promotion.history_dof_max > 0 else None)
        self._lock = threading.RLock()  # the decision lock
        self._group = GroupCommit()
        self._stale = False  # a batch failed to reach redis: rebuild the caches before the next
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
        self.stats = PerfStats()
        # Caches of what redis and git hold, filled by _load(); after a failed ledger write they
        # are thrown away and filled again (_rebuild).
        self.records: dict[str, ExperimentRecord] = {}
        self.decisions: dict[str, Decision] = {}
        self.started: dict[str, StartedExperiment] = {}
        self.order: dict[str, list[str]] = {}            # record ids per hardware class, arrival order
        self.classes: set[str] = set()
        self.commits = CommitCache(self.repo)
        self.book = SampleBook(self.commits, self.cfg.sigma_prior, self.cfg.concurrent)
        self.jobs = JobBoard(self.ledger, self.cfg.job_lease_s or DEFAULT_LEASE_S, self.cfg.checks_share)
        self.best_keys = BestKeys(self.r, self.ledger, self.swarm_id, self.book)
        self._bests: dict[str, str] = {}
        self._chains: dict[str, set[str]] = {}  # per class: best's first-parent history (judging.py)
        self._todo: list[tuple[str, str]] = []  # candidates to judge again (judging.py)
        self._init_pools()
        self.tried = TriedStates()   # train.py contents trained or in flight (tried.py)
        self.snapshots = Snapshots(self.ledger, self.home / "snapshots" / "ledger.parquet")
        self._load()
        # Which program each agent runs (decide/allocation.py): configured by swarm run, kept in
        # redis, so a restarted coordinator allocates as before; None: static.
        self.allocation: Allocation | None = Allocation.restore(self.ledger)

    # -- rebuilding from redis and git ----------------------------------------------------------
    def _rebuild(self) -> None:
        """Throw the caches away and fill them again from redis and git."""
        for cache in (self.records, self.decisions, self.started, self.order, self.classes,
                      self._bests, self._chains, self._todo):
            cache.clear()
        self.commits = CommitCache(self.repo)
        self.book = SampleBook(self.commits, self.cfg.sigma_prior, self.cfg.concurrent)
        self.best_keys = BestKeys(self.r, self.ledger, self.swarm_id, self.book)
        self.jobs = JobBoard(self.ledger, self.cfg.job_lease_s or DEFAULT_LEASE_S, self.cfg.checks_share)
        self.snapshots.reset()
        self.tried.clear()
        self._init_pools()
        self._load()

    def _load(self) -> None:
        """Fill the (empty) caches from the ledger and the repo; decide what was recorded but
        never decided before a restart."""
        self.refwriter.take()  # a failed batch's refs: its decisions never reached redis
        last_move: dict[str, Decision] = {}
        pools: list[Decision] = []
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
                if d.stage == "verify-pool" and d.merge_commit and d.decision == "pending":
                    pools.append(d)
                self._note_move(d)
        self.classes.update(name.removeprefix("refs/heads/best/") for name in self.repo.refs("refs/heads/best/"))
        for hw in self.classes:
            self._load_prior(hw)
        # Samples in stream order: a record's sample counts from its record event (as when it
        # was decided), a best's fresh samples from the decision that moved best to it.
        for typ, id, js in events:
            if typ == "record":
                rec, d = self.records[id], self.decisions.get(id)
                if d is not None and d.decision != "rejected" and rec.status == "ok":
                    self.book.add(rec)
                    self._note_run_length(rec)
                    self.tried.note(rec.hardware_class, self.commits.blob(rec.commit), id)
            elif typ == "decision" and '"best_after":null' not in js:
                d = Decision.model_validate_json(js)
                if d.best_after and d.hardware_class and self.commits.has(d.best_after):
                    self.book.start_fresh(d.hardware_class, d.best_after)
        for d in self.decisions.values():
            self._index_decision(d, moves=False)
        self._pools_from_ledger(pools)
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
            self.best_keys.sync(hw, self.repo.ref(self._ref(hw)))
        if self.history is not None:
            for hw in self.classes:
                self.history.note(hw, *self.book.measured(hw))
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
        """Wait until every bookkeeping ref decided so far is written, and the noise history."""
        self.refwriter.flush()
        if self.history is not None:
            with self._lock:
                self.history.flush()

    def _load_prior(self, hw: str) -> None:
        """This class's noise history (other swarms' measurements), as sigma's prior."""
        if self.history is None:
            return
        m2, dof, measured, swarms = self.history.prior(hw)
        rho, rho_dof = self.history.rho(hw)
        if dof > 0:
            self.book.set_prior(hw, m2, dof, measured, swarms, rho, rho_dof)
            log.info("class %s: noise history sigma %.4f from %d earlier swarm(s) (%d dof, weighed as %d)",
                     hw, (m2 / dof) ** 0.5, swarms, measured, dof)

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

    def _register(self, hw: str) -> bool:
        if hw in self.classes:
            return True
        if not _HW_RE.match(hw):
            return False
        self.repo.update_ref(self._ref(hw), self.root, None)  # CAS create; no-op if it exists
        self.classes.add(hw)
        self._load_prior(hw)
        log.info("new hardware class %s: best starts at the baseline %s", hw, self.root[:10])
        return True

    def _put(self, d: Decision) -> Decision:
        prev = self.decisions.get(d.experiment_id)
        self.ledger.put_decision(d)
        self.decisions[d.experiment_id] = d
        self._index_decision(d)
        if prev is not None and prev.decision == "pending" and d.decision != "pending" and d.hardware_class:
            # Its test ended (a best sample can end it while its confirmation waits): the
            # runs it asked for would only be samples now.
            self.jobs.cancel_for(d.hardware_class, d.experiment_id, f"its test ended: {d.decision}")
        return d

    def _dec(self, rec: ExperimentRecord, decision: str, reason: str, **kw) -> Decision:
        if decision == "rejected":
            log.warning("rejected %s: %s", rec.experiment_id, reason)
            self.tried.release(rec.experiment_id)
        return self._put(Decision(experiment_id=rec.experiment_id, decision=decision, reason=reason,
                                  hardware_class=rec.hardware_class, **kw))

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
            self.tried.release(rec.experiment_id)   # nothing measured: the state may be tried again
            dec = self._dec(rec, rec.status, rec.reason or f"run ended with {rec.status}")
            if st is not None and st.done and st.job.for_experiment and not st.cancelled:
                self._give_up(st.job.for_experiment, st.job, f"its {rec.kind} run failed {JOB_MAX_ATTEMPTS} times")
            return dec
        if not self.commits.has(rec.commit):
            return self._dec(rec, "rejected", f"unknown commit {rec.commit!r} (not in the research "
                             f"repo and no bundle sent)")
        if rec.val_bpb is None:
            return self._dec(rec, "rejected", "status ok but no val_bpb")
        try:
            blob = self.commits.blob(rec.commit)
        except RepoError:
            return self._dec(rec, "rejected", f"commit {rec.commit[:10]} has no train.py")
        dof0, own0 = self.book.dof(hw), self.book.measured(hw)
        self.book.add(rec)
        self._note_run_length(rec)
        self.tried.note(hw, blob, rec.experiment_id)
        own = self.book.measured(hw)
        if self.history is not None and own != own0:
            self.history.note(hw, *own)
        self._sample_added(hw, dof0, rec)
        best = self._best_commit(hw)
        if blob == self.commits.blob(best):
            self.best_keys.refresh(hw, best)
        noise = dict(sigma=self.book.sigma(hw), dof=self.book.dof(hw), samples=self.book.of(hw, rec.commit).n)
        if rec.kind == "baseline":
            return self._dec(rec, "sample", "baseline run: a noise sample", **noise)
        if rec.kind in ("confirm", "verify"):
            orig = st.job.for_experiment if st else None
            if orig is None or orig not in self.records:
                return self._dec(rec, "sample", f"{rec.kind} run: a sample (no candidate to decide)", **noise)
            # The candidate's decision changes; this record stays a sample (a move is counted once).
            od = self._rejudge(orig)
            gone = f" (job cancelled: {st.cancelled})" if st.cancelled else ""
            return self._dec(rec, "sample", f"{rec.kind} run for {orig}{gone}: it is now {od.decision}", **noise)
        return self._judge_experiment(rec)

    def _move_best(self, rec: ExperimentRecord, hw: str, old: str, new: str, v: Verdict, sigma: float,
                   kind: str, merge_commit: str | None = None, reason_prefix: str = "", **fields) -> Decision:
        cs, bs = self.book.ref(hw, new), self.book.ref(hw, old)
        suspect = is_suspect(cs.confirm_mean, bs.confirm_mean, v.margin)
        reason = reason_prefix + v.reason + (" [suspect: confirm split got worse]" if suspect else "")
        fields.update(samples_best=bs.n, best_mean=bs.mean if bs.n else None, mean=cs.mean)
        # Ledger first, then the ref (CAS), then the broadcast: a restart re-applies a lost ref move.
        d = self._dec(rec, kind, reason, delta=v.delta, margin=v.margin, sigma=sigma, samples=v.samples,
                      best_before=old, best_after=new, suspect=suspect, merge_commit=merge_commit, **fields)
        self.ledger.flush()
        self._bests.pop(hw, None)
        if not self.repo.update_ref(self._ref(hw), new, old):
            raise CoordinatorError(f"best[{hw}] moved under the coordinator (expected {old[:10]})")
        self.book.start_fresh(hw, new)
        if hw in self._chains:
            self._chains[hw].add(new)
        self.best_keys.publish(hw, new, rec.experiment_id, kind)
        self._best_moved(hw, old, new, d)
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

    def claim(self, hardware_class: str, blob: str, experiment_id: str) -> str | None:
        """Asked before an agent commits an experiment whose train.py has blob id `blob`: None
        when no run of the class trained it or is training it (the state is now held for
        `experiment_id`), else one line naming that run (the agent does not train it: tried.py).
        Outside the decision lock."""
        if not (_HW_RE.match(hardware_class) and _BLOB_RE.match(blob)):
            return None   # nothing to hold it by: the run goes on and is judged as ever
        held = self.tried.claim(hardware_class, blob, experiment_id)
        if held is None:
            return None
        rec, d, st = self.records.get(held), self.decisions.get(held), self.started.get(held)
        if rec is not None:
            what = "baseline" if rec.kind == "baseline" else f"{rec.kind} {held}"
            return f"{rec.agent}'s {what} trained this train.py ({d.decision if d else 'undecided'})"
        who = f"{st.agent}'s " if st is not None else ""
        return f"{who}experiment {held} is training this train.py"

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> ReportReply:
        """Store a record and decide it. Idempotent: a retried report returns the experiment's
        current decision and appends nothing. `bundle`: git bundle bytes holding record.commit
        (from an agent on another node). Bad records are decided `rejected`, never raised.
        Raises LedgerError when redis stays unreachable past the retry window.

        The reply also says whether next_job would hand the reporting agent a job right now and
        what the latest best of its class is: what the agent asks at its next iteration
        boundary, answered in the same call (through Ray each call costs ~1 ms of CPU on each side).

        Reports that queue up while a decision runs are decided together by the next lock
        holder, in arrival order, and their ledger writes go to redis in one MULTI/EXEC
        (group commit: one fsync for the batch, not one per write)."""
        d = self._submit(Slot(record, bundle))
        hw = record.hardware_class
        # Outside the lock: read the cache, never fill it (a fill racing a publish could put an
        # older best back); before the first publish of this process, ask redis.
        best = self.best_keys.cached(hw)
        return ReportReply(decision=d, job_waiting=self._job_waiting(record.agent, hw),
                           best=best if best is not None else self.best(hw))

    def flush(self) -> int:
        """Nothing to re-send: records reach this object directly, none is ever spooled. Returns 0."""
        return 0

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
            self.stats.report_done(time.perf_counter() - slot.t0)
        # The batch's bookkeeping refs, by the thread that ran it, after the lock is released.
        self.refwriter.write(refs or [])
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run_batch(self) -> list[tuple[str, str]]:
        t0, c0 = time.perf_counter(), time.thread_time()
        batch = self._group.take()
        try:
            if self._stale:
                self._rebuild()
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
                self.stats.batch_done(len(batch), time.perf_counter() - t0, time.thread_time() - c0)
        if not self._stale:
            self.snapshots.maybe_start()
        return self.refwriter.take()

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
        self.snapshots.count()
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

    def lead(self, hardware_class: str) -> Lead | None:
        """The candidate pending on best that an agent whose line is best builds on (leads.py),
        or None (none, or `follow_leads` off)."""
        if not self.cfg.follow_leads:
            return None
        with self._lock:
            try:
                best = self._best_commit(hardware_class)
            except CoordinatorError:   # a class with no best yet
                return None
            return lead_of(hardware_class, best, self.commits.blob(best),
                           self._pending.get((hardware_class, best), ()), self.decisions, self.records,
                           lambda c: self.commits.blob(c) if self.commits.has(c) else None)

    def recent(self, hardware_class: str, n: int) -> list[tuple[ExperimentRecord, Decision | None]]:
        """The last n records of a class with their current decisions, oldest first."""
        with self._lock:
            ids = self.order.get(hardware_class, [])[-n:] if n > 0 else []
            return [(self.records[i], self.decisions.get(i)) for i in ids]

    def heartbeat(self, agent: str, status: dict) -> None:
        """Store an agent's status (read by the live view and `swarm status`)."""
        self.r.hset(keys.agents(self.swarm_id), agent, json.dumps({**status, "ts": time.time()}))

    def fetch(self, commit: str) -> bytes:
        """A git bundle containing `commit`. Raises CoordinatorError for an unknown commit."""
        with self._lock:
            if not self.repo.has_commit(commit):
                raise CoordinatorError(f"unknown commit {commit!r}")
            return self.repo.bundle(commit)

    def status(self) -> dict:
        """Best, its reference mean val_bpb and samples, sigma, its degrees of freedom and the
        margin one new result must clear, per class; `noise_prior` per class: None without noise
        history, else {sigma, dof (its weight, capped at history_dof_max), measured_dof, swarms,
        dropped (this swarm's runs disagreed: it no longer counts)}; counts of decisions and jobs;
        the lost-winner audit (results that beat best by the margin and are not on best, with why)."""
        from coordinator.decide.audit import lost_winners

        with self._lock:
            classes = {}
            for hw in sorted(self.classes):
                best = self._best_commit(hw)
                s = self.book.ref(hw, best)
                prior = self.book.prior(hw)
                classes[hw] = {"best": best, "val_bpb": s.mean if s.n else None, "samples": s.n,
                               "sigma": self.book.sigma(hw), "noise_dof": self.book.dof(hw),
                               "min_dof": self.cfg.min_dof, "margin": self._class_margin(hw),
                               # noise from earlier swarms (history.py): None without; else its
                               # sigma, weight in dof (capped), measured dof, swarms, dropped
                               "noise_prior": None if prior is None else prior.status()}
            counts: dict[str, int] = {}
            for d in self.decisions.values():
                counts[d.decision] = counts.get(d.decision, 0) + 1
            lost = [row for hw in sorted(self.classes) for row in lost_winners(self, hw)]
            return {"swarm_id": self.swarm_id, "classes": classes, "decisions": counts,
                    "records": len(self.records), "started": len(self.started),
                    "open_jobs": self.jobs.open_count(), "lost_winners": lost}

    # -- allocation of agents to programs (decide/allocation.py) ------------------------------
    def configure_allocation(self, spec: AllocationSpec | dict) -> None:
        """Set the allocation's settings and programs (kept in redis for a restart)."""
        spec = spec if isinstance(spec, AllocationSpec) else AllocationSpec.model_validate(spec)
        self.allocation = Allocation.configure(self.ledger, spec)

    def assignment(self, agent: str, program: str, leaving: str | None = None) -> ProgramSpec | None:
        """At an agent's iteration boundary: the program it runs from now on, or None to stay
        (`leaving`: why its backend refused `program`; None then: nowhere to go, it stops)."""
        return self.allocation.assign(agent, program, leaving) if self.allocation is not None else None

    def allocation_status(self) -> list[dict]:
        """Each program's agents, yield and share ([] without an allocation)."""
        return [y.model_dump() for y in self.allocation.yields()] if self.allocation is not None else []

    def perf(self) -> dict:
        """The coordinator's own view of its speed, over the last few thousand reports:
        decision latency (a report's arrival here to its decision, durable in redis: queueing
        behind other decisions included, the caller's transport not), how long each batch held
        the decision lock and the capacity that implies, the work per record and the share of the
        lock time the deciding thread ran (the rest waits for redis, a core or the interpreter
        lock), and this process's CPU seconds."""
        return self.stats.summary()

    def reconcile_dead_agent(self, agent: str) -> list[str]:
        """Record `crash` ("agent died mid-run") for the agent's begun-but-unreported experiments
        and release its job leases. Returns the experiment ids it recorded."""
        with self._lock:
            ids = [i for i, s in self.started.items() if s.agent == agent and i not in self.records]
            begun = [self.started[i] for i in ids]
        # Outside the lock: a report queues like any other (one idempotent by its id, should the
        # agent's own report of the same experiment arrive first).
        for s in begun:
            self._submit(Slot(ExperimentRecord(
                experiment_id=s.experiment_id, swarm_id=self.swarm_id, kind=s.kind, agent=s.agent,
                program=s.program, hardware_class=s.hardware_class, parent=s.parent,
                commit=s.commit, description=s.description, status="crash",
                reason="agent died mid-run", seed=s.seed, job_id=s.job_id,
                started_at=s.started_at, finished_at=time.time())))
        with self._lock:
            self.jobs.release(agent)
            self.jobs.update_offers()
            return ids

    def snapshot(self) -> Path:
        """Write SWARM_HOME/snapshots/ledger.parquet atomically (and the noise history); returns its path."""
        self.flush_refs()
        with self._lock:
            return self.snapshots.write()
