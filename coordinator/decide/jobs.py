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

from coordinator.state.ledger import Ledger
from agents.messages import ExperimentRecord, Job

JOB_MAX_ATTEMPTS = 3  # a job whose run crashes is handed out again this many times
# Which open job an idle agent gets first: repeats of best (its re-measure and the samples
# sigma needs) come before verifications, which come before confirmations: every later
# decision leans on best's mean and on sigma.
PRIORITY = {"baseline": 0, "verify": 1, "confirm": 2}


class JobBoard:
    def __init__(self, ledger: Ledger, lease_s: float):
        self.ledger, self.lease_s = ledger, lease_s
        self._rng = random.Random()
        self.jobs: dict[str, dict] = ledger.jobs()
        # Indexes: open jobs per class, oldest first, and which agents ran their class's baseline.
        self._open: dict[str, dict[str, None]] = {}
        self._baselined: set[tuple[str, str]] = set()
        for job_id, st in sorted(self.jobs.items(), key=lambda kv: kv[1].get("created", 0)):
            if not st["done"]:
                self._open.setdefault(st["job"]["hardware_class"], {})[job_id] = None
            if st["job"]["kind"] == "baseline" and st.get("for_agent"):
                self._baselined.add((st["for_agent"], st["job"]["hardware_class"]))
        self._offers: dict[str, tuple[int, float, frozenset]] = {}
        self.update_offers()

    def get(self, job_id: str | None) -> dict | None:
        """A job's state: {"job", "agent", "for_agent", "leased_at", "done", "attempts", "created"}."""
        return self.jobs.get(job_id or "")

    def open_count(self) -> int:
        return sum(len(v) for v in self._open.values())

    def needs_baseline(self, agent: str, hw: str) -> bool:
        return (agent, hw) not in self._baselined

    def may_have(self, agent: str, hw: str) -> bool:
        """False when lease(agent, hw) would surely find nothing and the agent owes no baseline.
        Read without the lock: the offers are replaced whole (update_offers)."""
        free, expiry, holders = self._offers.get(hw, (0, float("inf"), frozenset()))
        return (self.needs_baseline(agent, hw) or free > 0 or time.time() >= expiry
                or agent in holders)

    def issue(self, kind: str, commit: str, parent: str, hw: str, for_experiment: str | None,
              description: str, for_agent: str | None = None) -> Job:
        """A new job (leased at once to `for_agent` if given); an open confirm/verify job for the
        same candidate is returned instead of a second one."""
        for job_id in self._open.get(hw, {}):
            j = self.jobs[job_id]["job"]
            if (kind != "baseline" and j["kind"] == kind and j["commit"] == commit
                    and j["for_experiment"] == for_experiment):
                return Job.model_validate(j)
        job = Job(job_id=f"{kind}-{uuid.uuid4().hex[:10]}", kind=kind, commit=commit, parent=parent,
                  hardware_class=hw, seed=self._rng.randrange(1, 2**31 - 1),
                  for_experiment=for_experiment, description=description)
        self.ledger.add_job(job)
        st = {"job": job.model_dump(), "agent": for_agent, "for_agent": for_agent,
              "leased_at": time.time() if for_agent else None, "done": False, "attempts": 0,
              "created": time.time()}
        self.jobs[job.job_id] = st
        self._open.setdefault(hw, {})[job.job_id] = None
        if kind == "baseline" and for_agent:
            self._baselined.add((for_agent, hw))
        self.ledger.update_job(job.job_id, st)
        return job

    def lease(self, agent: str, hw: str) -> Job | None:
        """The open job of the class this agent may take (its own lease, a free one, or one whose
        lease ran out), by PRIORITY of its kind, then oldest first."""
        now = time.time()
        mine = [j for j in self._open.get(hw, {}) if self.jobs[j]["agent"] == agent]
        if mine:  # the job it holds (it asked again after a restart)
            job_id = mine[0]
        else:
            free = [j for j in self._open.get(hw, {}) if self.jobs[j]["agent"] is None
                    or now - (self.jobs[j]["leased_at"] or 0) > self.lease_s]
            if not free:
                return None
            job_id = min(free, key=lambda j: (PRIORITY.get(self.jobs[j]["job"]["kind"], 9),
                                              self.jobs[j].get("created", 0)))
        st = self.jobs[job_id]
        st["agent"], st["leased_at"] = agent, now
        self.ledger.update_job(job_id, st)
        return Job.model_validate(st["job"])

    def take_repeat(self, agent: str, hw: str, commit: str) -> Job | None:
        """An agent new to the class runs an open repeat of best as its first baseline (rather
        than one more run on top of the repeats sigma still needs), when one is free."""
        for job_id in self._open.get(hw, {}):
            st = self.jobs[job_id]
            j = st["job"]
            if j["kind"] == "baseline" and j["commit"] == commit and st["agent"] is None:
                st["agent"] = st["for_agent"] = agent
                st["leased_at"] = time.time()
                self._baselined.add((agent, hw))
                self.ledger.update_job(job_id, st)
                return Job.model_validate(j)
        return None

    def open_jobs(self, hw: str, kind: str | None = None) -> list[dict]:
        """The open jobs' states of a class (of one kind), oldest first."""
        return [self.jobs[j] for j in self._open.get(hw, {})
                if kind is None or self.jobs[j]["job"]["kind"] == kind]

    def cancel(self, job_id: str, why: str) -> None:
        """Close an open job nobody needs any more (best moved on). A run of it still in flight
        reports as usual: its record is a sample."""
        st = self.jobs.get(job_id)
        if st is None or st["done"]:
            return
        st["done"], st["cancelled"] = True, why
        self._open.get(st["job"]["hardware_class"], {}).pop(job_id, None)
        self.ledger.update_job(job_id, st)

    def finished(self, rec: ExperimentRecord) -> dict | None:
        """Close the job a record ran (or, when the run died, hand it out again: the run died, not
        the idea). Returns the job's state, None when the record ran no known job."""
        st = self.get(rec.job_id)
        if st is None:
            return None
        if rec.status == "ok" or st["attempts"] + 1 >= JOB_MAX_ATTEMPTS:
            st["done"] = True
            self._open.get(st["job"]["hardware_class"], {}).pop(rec.job_id, None)
        else:
            st["attempts"] += 1
            st["agent"], st["leased_at"] = None, None
        self.ledger.update_job(rec.job_id, st)
        return st

    def release(self, agent: str) -> None:
        """Free every lease a dead agent held."""
        for job_id, st in self.jobs.items():
            if st["agent"] == agent and not st["done"]:
                st["agent"], st["leased_at"] = None, None
                self.ledger.update_job(job_id, st)

    def update_offers(self) -> None:
        """Per class: (open jobs nobody holds, earliest lease expiry, agents holding a lease),
        replaced whole so that may_have() reads one consistent tuple without the lock."""
        offers = {}
        for hw, ids in self._open.items():
            free, expiry, holders = 0, float("inf"), set()
            for job_id in ids:
                st = self.jobs[job_id]
                if st["agent"] is None:
                    free += 1
                else:
                    holders.add(st["agent"])
                    expiry = min(expiry, (st["leased_at"] or 0) + self.lease_s)
            offers[hw] = (free, expiry, frozenset(holders))
        self._offers = offers
