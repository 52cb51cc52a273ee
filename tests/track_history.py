"""A small swarm history for the tracker tests: a real bare research repo (ResearchRepo) and the
real ledger on a real redis, holding a baseline sample, a pending result (later merged), a
discard, a crash with a log tail and an invalid edit."""
from __future__ import annotations

import json
from pathlib import Path

from agents.messages import Decision, ExperimentRecord
from coordinator.state.ledger import Ledger
from coordinator.state.repo import ResearchRepo
from tests.fake_coordinator import TINY_TRAIN
from trainer.schema import ExperimentResult

HW = "cpu-test"
SWARM = "sw-track-test"


def _result(val: float | None, status: str = "ok", tail: str = "") -> ExperimentResult:
    return ExperimentResult(status=status, val_bpb=val, training_seconds=5.0 if val else None,
                            steps=40 if val else None, tokens=40 * 512 if val else None,
                            total_seconds=9.0, log_tail=tail, hardware_class=HW)


class History:
    """`home`: SWARM_HOME with repo.git and swarm.json; `ledger`: the swarm's ledger."""

    def __init__(self, home: Path, client):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "swarm.json").write_text(json.dumps(
            {"swarm_id": SWARM, "created_at": 1.7e9, "runs": 1, "profile": "cpu", "budget": 5.0}))
        self.repo = ResearchRepo(self.home / "repo.git")
        self.root = self.repo.create(TINY_TRAIN)
        self.ledger = Ledger(client, SWARM)
        self.t = 1.7e9

    def info(self) -> dict:
        return json.loads((self.home / "swarm.json").read_text())

    def commit(self, old: str, new: str, parent: str | None = None) -> str:
        parent = parent or self.root
        return self.repo.commit_tree(self.repo.show(parent).replace(old, new), [parent], new, base=parent)

    def record(self, exp: str, *, kind="experiment", commit, status="ok", val=None, tail="",
               description="", reason=None, agent="a0-baseline") -> ExperimentRecord:
        self.t += 60
        rec = ExperimentRecord(
            experiment_id=exp, swarm_id=SWARM, kind=kind, agent=agent, program="baseline",
            backend="mutate", hardware_class=HW, parent=self.root, commit=commit, status=status,
            val_bpb=val, description=description, reason=reason, started_at=self.t - 10,
            finished_at=self.t, result=None if status == "invalid" else _result(val, status, tail))
        self.ledger.add_record(rec)
        return rec

    def decide(self, exp: str, decision: str, reason: str = "", **kw) -> None:
        self.ledger.put_decision(Decision(experiment_id=exp, decision=decision, reason=reason,
                                          hardware_class=HW, **kw))

    def build(self) -> dict[str, str]:
        """The history; returns experiment id -> what the test expects it to become."""
        self.record("base-0", kind="baseline", commit=self.root, val=2.50, description="baseline")
        self.decide("base-0", "sample", "a baseline sample")
        deep = self.commit("DEPTH = 4", "DEPTH = 6")
        self.record("exp-1", commit=deep, val=2.40, description="deeper", tail="step 40 loss 2.1\nval_bpb 2.40")
        self.decide("exp-1", "pending", "inside the margin: a confirmation run", delta=0.1, delta_parent=0.1)
        lr = self.commit("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.5")
        self.record("exp-2", commit=lr, val=2.70, description="higher lr")
        self.decide("exp-2", "discard", "not better than best", delta=-0.2, delta_parent=-0.2)
        boom = self.commit("CRASH = False", "CRASH = True")
        self.record("exp-3", commit=boom, status="crash", reason="RuntimeError: boom",
                    description="crash it", tail="Traceback (most recent call last):\nRuntimeError: boom")
        self.decide("exp-3", "crash", "RuntimeError: boom")
        self.record("exp-4", commit=None, status="invalid", reason="SEARCH text not in train.py",
                    description="bad edit")
        self.decide("exp-4", "invalid", "SEARCH text not in train.py")
        return {"base-0": "sample", "exp-1": "pending", "exp-2": "discard", "exp-3": "crash", "exp-4": "invalid"}
