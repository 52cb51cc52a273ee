"""An in-process coordinator for agent tests: keeps best per hardware class, decides
discard/promote by val_bpb, remembers every record; plus helpers for a research repo."""
from __future__ import annotations

import subprocess
import tempfile
import threading
from pathlib import Path

from agents.backends.base import Proposal
from agents.messages import Broadcast, Decision, ExperimentRecord, Job, ReportReply, StartedExperiment
from coordinator.decide.tried import TriedStates

TINY_TRAIN = '''"""A tiny stand-in train.py: the fake runner reads its constants."""
LEARNING_RATE = 0.04  # per step
WEIGHT_DECAY = 0.1  # fraction
DEPTH = 4  # layers
WINDOW = "SL"  # pattern
CRASH = False  # raise at start-up


def main():
    if CRASH:
        raise RuntimeError("boom")


if __name__ == "__main__":
    main()
'''

TINY_PROGRAM = '''# tiny program
Tune the learning rate and depth.

```yaml
search_space:
  LEARNING_RATE: {type: log, min: 0.001, max: 0.5, step: 1.5}
  DEPTH: {type: int, min: 1, max: 12, step: 1}
  WINDOW: {type: choice, values: ["L", "SL", "SSSL"]}
```
'''


def set_lr(old: str, new: str, desc: str) -> Proposal:
    """A model's answer setting TINY_TRAIN's LEARNING_RATE from `old` to `new`."""
    return Proposal(text=f"DESCRIPTION: {desc}\ntrain.py\n<<<<<<< SEARCH\nLEARNING_RATE = {old}  # per step\n"
                         f"=======\nLEARNING_RATE = {new}  # per step\n>>>>>>> REPLACE\n")


class Scripted:
    """A backend answering with the given proposals in turn, then refusing."""
    name = "scripted"

    def __init__(self, proposals):
        self.proposals = list(proposals)

    def propose(self, ctx):
        return self.proposals.pop(0) if self.proposals else Proposal(error="out of ideas")

    def fix(self, ctx, log_tail):
        return Proposal(error="no fix")


def git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_research_repo(swarm_home: Path, train_py: str = TINY_TRAIN) -> str:
    """A bare repo at swarm_home/repo.git holding one baseline commit; returns its sha."""
    swarm_home.mkdir(parents=True, exist_ok=True)
    bare = swarm_home / "repo.git"
    git(swarm_home, "init", "-q", "--bare", "-b", "main", str(bare))
    with tempfile.TemporaryDirectory() as d:
        git(d, "init", "-q", "-b", "main")
        git(d, "config", "user.name", "t")
        git(d, "config", "user.email", "t@localhost")
        Path(d, "train.py").write_text(train_py)
        git(d, "add", "train.py")
        git(d, "commit", "-q", "-m", "baseline")
        git(d, "push", "-q", str(bare), "main")
        return git(d, "rev-parse", "HEAD")


class FakeCoordinator:
    """Plausible coordinator: baseline records seed `best`; an ok experiment whose parent is
    best and whose val_bpb beats best is promoted; everything else is discarded."""

    def __init__(self, repo: Path | None = None, jobs: list[Job] | None = None):
        self.repo = Path(repo) if repo else None
        self.started: dict[str, StartedExperiment] = {}
        self.records: dict[str, ExperimentRecord] = {}
        self.decisions: dict[str, Decision] = {}
        self.reports = 0                      # calls, to check idempotence
        self.bests: dict[str, Broadcast] = {}
        self.jobs: list[Job] = list(jobs or [])
        self.beats: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self.tried = TriedStates()   # the real rule (tests/test_tried.py), not a copy of it

    def claim(self, hardware_class: str, blob: str, experiment_id: str) -> str | None:
        """As the real coordinator: None when no run of the class trained or is training this
        train.py (held now for `experiment_id`), else a line naming the run that holds it."""
        held = self.tried.claim(hardware_class, blob, experiment_id)
        if held is None:
            return None
        rec, d = self.records.get(held), self.decisions.get(held)
        if rec is None:
            return f"experiment {held} is training this train.py"
        return f"{rec.agent}'s {rec.kind} {held} trained this train.py ({d.decision if d else 'undecided'})"

    def begin(self, started: StartedExperiment) -> None:
        self.started[started.experiment_id] = started

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> ReportReply:
        d = self._decide(record)
        with self._lock:
            waiting = any(j.hardware_class == record.hardware_class for j in self.jobs)
            return ReportReply(decision=d, job_waiting=waiting, best=self.bests.get(record.hardware_class))

    def _decide(self, record: ExperimentRecord) -> Decision:
        with self._lock:
            self.reports += 1
            if record.experiment_id in self.decisions:
                return self.decisions[record.experiment_id]
            self.records[record.experiment_id] = record
            hw = record.hardware_class
            best = self.bests.get(hw)
            if record.status != "ok":
                self.tried.release(record.experiment_id)   # nothing measured: it may be tried again
                kind = record.status
            elif record.kind != "experiment":
                kind = "sample"
                if best is None and record.kind == "baseline":
                    self._move(record, hw, None)
            elif best is not None and record.parent == best.commit and record.val_bpb < best.val_bpb:
                kind = "promote"
                self._move(record, hw, best)
            else:
                kind = "discard"
            d = Decision(experiment_id=record.experiment_id, decision=kind, hardware_class=hw,
                         best_before=best.commit if best else None,
                         best_after=self.bests[hw].commit if kind == "promote" else None)
            self.decisions[record.experiment_id] = d
            return d

    def _move(self, record: ExperimentRecord, hw: str, old: Broadcast | None) -> None:
        self.bests[hw] = Broadcast(swarm_id="test", hardware_class=hw, commit=record.commit,
                                   val_bpb=record.val_bpb, seq=(old.seq + 1) if old else 1,
                                   experiment_id=record.experiment_id)

    def next_job(self, agent: str, hardware_class: str) -> Job | None:
        with self._lock:
            for i, j in enumerate(self.jobs):
                if j.hardware_class == hardware_class:
                    return self.jobs.pop(i)
        return None

    def best(self, hardware_class: str) -> Broadcast | None:
        return self.bests.get(hardware_class)

    def recent(self, hardware_class: str, n: int):
        recs = [r for r in self.records.values() if r.hardware_class == hardware_class][-n:]
        return [(r, self.decisions.get(r.experiment_id)) for r in recs]

    def heartbeat(self, agent: str, status: dict) -> None:
        self.beats.append((agent, status))

    def flush(self) -> int:
        return 0

    def fetch(self, commit: str) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "b.bundle"
            git(self.repo, "update-ref", "refs/fetch/tmp", commit)
            git(self.repo, "bundle", "create", "-q", str(out), "refs/fetch/tmp")
            return out.read_bytes()

    # for assertions through Ray
    def all_records(self) -> list[ExperimentRecord]:
        return list(self.records.values())

    def all_decisions(self) -> dict[str, Decision]:
        return dict(self.decisions)

    def all_started(self) -> list[StartedExperiment]:
        return list(self.started.values())

    def report_calls(self) -> int:
        return self.reports


def fake_runner(score=None, sleep: float = 0.0):
    """The fake runner of agent tests; it lives in tests/fake_runner.py with the other fakes
    (and sends only what the real runner sends: tests/test_runner_contract.py)."""
    from tests.fake_runner import fake_run_experiment
    return fake_run_experiment(score=score, sleep=sleep)


class FlakyCoordinator(FakeCoordinator):
    """A FakeCoordinator whose report() fails while `down` (a coordinator restarting)."""

    def __init__(self, repo: Path | None = None):
        super().__init__(repo)
        self.down = False

    def set_down(self, down: bool) -> None:
        self.down = down

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> ReportReply:
        if self.down:
            raise ConnectionError("coordinator is restarting")
        return super().report(record, bundle)


class CountingCoordinator(FakeCoordinator):
    """A FakeCoordinator that counts the report, next_job and best calls an agent makes."""

    def __init__(self, repo: Path | None = None, jobs: list[Job] | None = None):
        super().__init__(repo, jobs)
        self.calls = {"next_job": 0, "best": 0, "report": 0}

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> ReportReply:
        self.calls["report"] += 1
        return super().report(record, bundle)

    def next_job(self, agent: str, hardware_class: str) -> Job | None:
        self.calls["next_job"] += 1
        return super().next_job(agent, hardware_class)

    def best(self, hardware_class: str) -> Broadcast | None:
        self.calls["best"] += 1
        return super().best(hardware_class)

    def add_job(self, job: Job) -> None:
        with self._lock:
            self.jobs.append(job)

    def call_counts(self) -> dict[str, int]:
        return dict(self.calls)
