"""The coordinator's jobs: baseline, confirmation and verification runs it hands to agents, their
leases, and a lock-free answer to "is there anything for me?".

State lives in the ledger's `jobs` hash (mutable lease bookkeeping, not history; a job's creation
is also a stream event); this object is its cache, rebuilt from it on construction. Callers hold
the coordinator's decision lock around every method but `may_have`.
"""
from __future__ import annotations

import random
import time
import uuid

from pydantic import BaseModel, ConfigDict

from agents.messages import ExperimentRecord, Job
from coordinator.state.ledger import Ledger

JOB_MAX_ATTEMPTS = 3  # a job whose run crashes is handed out again this many times
# Which open job an idle agent gets first: repeats of best (its re-measure and the samples
# sigma needs) come before verifications, which come before confirmations: every later
# decision leans on best's mean and on sigma.
PRIORITY = {"baseline": 0, "verify": 1, "confirm": 2}
CHECKS = ("verify", "confirm")   # the jobs only `checks_share` of a class's agents hold at once


class JobState(BaseModel):
    """A job and its lease bookkeeping: the value of one field of the ledger's `jobs` hash."""

    model_config = ConfigDict(extra="forbid")

    job: Job
    agent: str | None = None          # who holds the lease now (None: free)
    for_agent: str | None = None      # a baseline job is issued for one agent
    leased_at: float | None = None    # unix time the lease was taken
    done: bool = False
    attempts: int = 0                 # runs of it that crashed so far
    created: float = 0.0              # unix time; orders the open jobs
    cancelled: str | None = None      # why nobody needs it any more (best moved on)


class JobBoard:
    """Every job's JobState by id, with indexes of the open ones; reads and writes the ledger's
    `jobs` hash."""

    def __init__(self, ledger: Ledger, lease_s: float, checks_share: float = 1.0):
        self.ledger, self.lease_s, self.checks_share = ledger, lease_s, checks_share
        self._rng = random.Random()
        self.jobs: dict[str, JobState] = {job_id: JobState.model_validate(st)
                                          for job_id, st in ledger.jobs().items()}
        # Indexes: open jobs per class, oldest first, and which agents ran their class's baseline.
        self._open: dict[str, dict[str, None]] = {}
        self._baselined: set[tuple[str, str]] = set()
        for job_id, st in sorted(self.jobs.items(), key=lambda kv: kv[1].created):
            if not st.done:
                self._open.setdefault(st.job.hardware_class, {})[job_id] = None
            if st.job.kind == "baseline" and st.for_agent:
                self._baselined.add((st.for_agent, st.job.hardware_class))
        self._offers: dict[str, tuple[int, float, frozenset]] = {}
        self.update_offers()

    def get(self, job_id: str | None) -> JobState | None:
        return self.jobs.get(job_id or "")

    def _save(self, st: JobState) -> None:
        self.ledger.update_job(st.job.job_id, st.model_dump(mode="json"))

    def open_count(self) -> int:
        return sum(len(v) for v in self._open.values())

    def agents_in(self, hw: str) -> int:
        """How many agents ran (or were handed) their baseline in this class."""
        return sum(1 for _, h in self._baselined if h == hw)

    def needs_baseline(self, agent: str, hw: str) -> bool:
        return (agent, hw) not in self._baselined

    def may_have(self, agent: str, hw: str) -> bool:
        """False when lease(agent, hw) would surely find nothing and the agent owes no baseline.
        Read without the lock: the offers are replaced whole (update_offers)."""
        free, expiry, holders = self._offers.get(hw, (0, float("inf"), frozenset()))
        return (self.needs_baseline(agent, hw) or free > 0 or time.time() >= expiry
                or agent in holders)

    def issue(self, kind: str, commit: str, parent: str, hw: str, for_experiment: str | None,
              description: str, for_agent: str | None = None, copies: int = 1) -> Job:
        """A new job (leased at once to `for_agent` if given); when `copies` open confirm/verify
        jobs for the same candidate are there already, the first of them instead of one more."""
        same = [self.jobs[job_id].job for job_id in self._open.get(hw, {})]
        same = [j for j in same if kind != "baseline" and j.kind == kind and j.commit == commit
                and j.for_experiment == for_experiment]
        if same and len(same) >= copies:
            return same[0].model_copy()
        for _ in range(copies - len(same) - 1):  # the copies a likely winner's test asks for at once
            self._new(kind, commit, parent, hw, for_experiment, description, None)
        return self._new(kind, commit, parent, hw, for_experiment, description, for_agent)

    def _new(self, kind: str, commit: str, parent: str, hw: str, for_experiment: str | None,
             description: str, for_agent: str | None) -> Job:
        job = Job(job_id=f"{kind}-{uuid.uuid4().hex[:10]}", kind=kind, commit=commit, parent=parent,
                  hardware_class=hw, seed=self._rng.randrange(1, 2**31 - 1),
                  for_experiment=for_experiment, description=description)
        self.ledger.add_job(job)
        st = JobState(job=job, agent=for_agent, for_agent=for_agent,
                      leased_at=time.time() if for_agent else None, created=time.time())
        self.jobs[job.job_id] = st
        self._open.setdefault(hw, {})[job.job_id] = None
        if kind == "baseline" and for_agent:
            self._baselined.add((for_agent, hw))
        self._save(st)
        return job

    def lease(self, agent: str, hw: str) -> Job | None:
        """The open job of the class this agent may take (the one it holds, else a free one or
        one whose lease ran out, by PRIORITY of its kind, then oldest first; a confirmation or
        verification only while fewer than checks_cap agents of the class hold one)."""
        now = time.time()
        open_ = [self.jobs[j] for j in self._open.get(hw, {})]
        mine = [st for st in open_ if st.agent == agent]
        free = [st for st in open_ if st.agent is None or now - (st.leased_at or 0) > self.lease_s]
        if not mine and free and self._checking(open_, now) >= self.checks_cap(hw):
            free = [st for st in free if st.job.kind not in CHECKS]   # this agent explores instead
        if not mine and not free:
            return None
        st = mine[0] if mine else min(free, key=lambda st: (PRIORITY.get(st.job.kind, 9), st.created))
        st.agent, st.leased_at = agent, now
        self._save(st)
        return st.job.model_copy()

    def checks_cap(self, hw: str) -> int:
        """How many of the class's agents may hold confirmations and verifications at once."""
        return max(1, int(self.agents_in(hw) * self.checks_share + 1e-9))

    def _checking(self, open_: list[JobState], now: float) -> int:
        """Agents holding a live lease on a confirmation or verification."""
        return len({st.agent for st in open_ if st.job.kind in CHECKS and st.agent is not None
                    and now - (st.leased_at or 0) <= self.lease_s})

    def take_repeat(self, agent: str, hw: str, commit: str) -> Job | None:
        """An agent new to the class runs a free repeat of best as its first baseline (rather
        than one more run on top of the repeats sigma still needs), when there is one."""
        for job_id in self._open.get(hw, {}):
            st = self.jobs[job_id]
            if st.job.kind == "baseline" and st.job.commit == commit and st.agent is None:
                st.agent = st.for_agent = agent
                st.leased_at = time.time()
                self._baselined.add((agent, hw))
                self._save(st)
                return st.job.model_copy()
        return None

    def open_jobs(self, hw: str, kind: str | None = None) -> list[JobState]:
        """The open jobs of a class (of one kind), oldest first."""
        return [self.jobs[j] for j in self._open.get(hw, {}) if kind is None or self.jobs[j].job.kind == kind]

    def cancel(self, job_id: str, why: str) -> None:
        """Close an open job nobody needs any more (best moved on). A run of it still in flight
        reports as usual: its record is a sample."""
        st = self.jobs.get(job_id)
        if st is None or st.done:
            return
        st.done, st.cancelled = True, why
        self._open.get(st.job.hardware_class, {}).pop(job_id, None)
        self._save(st)

    def has_open(self, hw: str, for_experiment: str, commit: str) -> bool:
        """An open job for this candidate that trains `commit`."""
        return any(self.jobs[j].job.for_experiment == for_experiment and self.jobs[j].job.commit == commit
                   for j in self._open.get(hw, {}))

    def cancel_for(self, hw: str, for_experiment: str, why: str) -> None:
        """Cancel every open job of one candidate (its test ended: nothing more to measure)."""
        for j in [j for j in self._open.get(hw, {}) if self.jobs[j].job.for_experiment == for_experiment]:
            self.cancel(j, why)

    def finished(self, rec: ExperimentRecord) -> JobState | None:
        """Close the job a record ran (or, when the run died, hand it out again: the run died, not
        the idea). Returns the job's state, None when the record ran no known job."""
        st = self.get(rec.job_id)
        if st is None:
            return None
        if st.done:  # cancelled (or a retried report): nothing left to hand out
            return st
        if rec.status == "ok" or st.attempts + 1 >= JOB_MAX_ATTEMPTS:
            st.done = True
            self._open.get(st.job.hardware_class, {}).pop(st.job.job_id, None)
        else:
            st.attempts += 1
            st.agent, st.leased_at = None, None
        self._save(st)
        return st

    def release(self, agent: str) -> None:
        """Free every lease a dead agent held."""
        for st in self.jobs.values():
            if st.agent == agent and not st.done:
                st.agent, st.leased_at = None, None
                self._save(st)

    def update_offers(self) -> None:
        """Per class: (open jobs nobody holds, earliest lease expiry, agents holding a lease),
        replaced whole so that may_have() reads one consistent tuple without the lock."""
        offers = {}
        for hw, ids in self._open.items():
            free, expiry, holders = 0, float("inf"), set()
            for job_id in ids:
                st = self.jobs[job_id]
                if st.agent is None:
                    free += 1
                else:
                    holders.add(st.agent)
                    expiry = min(expiry, (st.leased_at or 0) + self.lease_s)
            offers[hw] = (free, expiry, frozenset(holders))
        self._offers = offers
