"""A swarm history made by the real Coordinator (real redis, real git) from scripted fake
agents: baseline round, a promotion, a merge of a result made on the old best, a suspect
promotion, discards, a crash, an invalid edit, a contended run, best's re-measures and one
result left pending. For the tests that check every view against the coordinator, and the
report screenshot (bench/report_shot.py). No Ray, no training.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from agents.messages import ExperimentRecord, PromotionConfig
from coordinator.decide.core import Coordinator
from coordinator.state.home import SwarmHome
from fake_runner import NAMES, FakeAgent, baseline_text, constants, drain_jobs, warm_up
from trainer.schema import ExperimentResult

log = logging.getLogger(__name__)

HW = "cpu-fake"


@dataclass
class Scripted:
    home: SwarmHome
    coord: Coordinator
    info: dict
    pending_id: str
    contended_id: str


def _result(rec: ExperimentRecord, contended: bool = False) -> ExperimentRecord:
    """What a real agent sends: the runner's result inside the record."""
    res = ExperimentResult(status=rec.status, val_bpb=rec.val_bpb, confirm_bpb=rec.confirm_bpb,
                           training_seconds=30.0, total_seconds=42.0, steps=120, tokens=61440,
                           hardware_class=rec.hardware_class, contention=0.6 if contended else 0.02,
                           contended=contended)
    return rec.model_copy(update={"result": res})


def _exp(coord, agent: FakeAgent, parent: str, description: str, contended: bool = False, **values):
    """One experiment with a result like the runner's: (record, decision)."""
    from fake_runner import set_constants

    c = agent.commit(parent, set_constants(agent.text_at(parent), **values), description)
    rec = _result(agent.record(c, parent, description=description), contended)
    coord.begin(agent.started(rec))
    return rec, coord.report(rec).decision


def scripted_swarm(root: Path, redis_url: str, rounds: int = 0, seed: int = 0) -> Scripted:
    """Build SWARM_HOME at `root` with the history above; the coordinator stays usable.
    `rounds`: then that many rounds of random one-constant edits by the three agents, each on
    its own line or on best (more moves, merges, discards and carried results)."""
    home = SwarmHome(root)
    info, _ = home.create_or_resume(redis_url, profile="cpu", budget=30.0)
    coord = Coordinator(home.root, redis_url, PromotionConfig(sigma_prior=0.003, best_remeasures=2),
                        swarm_id=info["swarm_id"], baseline_train_py=baseline_text())
    agents = [FakeAgent(f"a{i}", coord.repo.path, root / "wt", sigma=0.0005, seed=i, program=p)
              for i, p in enumerate(("optimizer", "schedule", "architecture"))]
    warm_up(coord, agents)
    root_c = coord.root
    r1, d1 = _exp(coord, agents[0], root_c, "A 0 -> 1", A=1)            # promote
    assert d1.decision == "promote", d1
    r2, d2 = _exp(coord, agents[1], root_c, "B 0 -> 1", B=1)            # off best now: a merge
    drain_jobs(coord, agents)
    assert coord.decisions[r2.experiment_id].decision == "merge", coord.decisions[r2.experiment_id]
    best = coord.best(HW).commit
    _exp(coord, agents[0], best, "C 0 -> -3", C=-3)                       # worse: discard
    r4, d4 = _exp(coord, agents[2], best, "Y 0 -> 2", Y=2)                # better on val, worse on confirm
    drain_jobs(coord, agents)
    assert coord.decisions[r4.experiment_id].decision == "promote", coord.decisions[r4.experiment_id]
    best = coord.best(HW).commit
    rc, _ = _exp(coord, agents[1], best, "Z 0 -> 1 (slow machine)", contended=True, Z=1)
    crash = agents[0].record(best, best, description="DEPTH 4 -> 40")
    crash = crash.model_copy(update={"commit": agents[0].commit(best, agents[0].text_at(best) + "# boom\n",
                                                                "DEPTH 4 -> 40"),
                                     "status": "crash", "val_bpb": None, "confirm_bpb": None,
                                     "reason": "RuntimeError: out of memory"})
    coord.begin(agents[0].started(crash))
    coord.report(crash)
    bad = ExperimentRecord(experiment_id="a2-invalid-1", agent="a2", program="architecture",
                           hardware_class=HW, parent=best, commit=None, status="invalid",
                           description="touch prepare.py", reason="edit touches prepare.py")
    coord.begin(agents[2].started(bad))
    coord.report(bad)
    drain_jobs(coord, agents)
    _random_rounds(coord, agents, rounds, seed)
    best = coord.best(HW).commit
    # last: a small gain inside the margin, its confirmation never run (the swarm stopped)
    c0 = constants(agents[2].text_at(best)).get("C", 0.0)
    rp, dp = _exp(coord, agents[2], best, f"C {c0:g} -> {c0 + 0.35:g}", C=c0 + 0.35)
    assert dp.decision == "pending", dp
    coord.flush_refs()
    return Scripted(home=home, coord=coord, info=info, pending_id=rp.experiment_id,
                    contended_id=rc.experiment_id)


def _random_rounds(coord, agents: list[FakeAgent], rounds: int, seed: int) -> None:
    import random

    rng = random.Random(seed)
    head = {a.name: coord.best(HW).commit for a in agents}
    for _ in range(rounds):
        for a in agents:
            parent = head[a.name] if rng.random() < 0.7 else coord.best(HW).commit
            name = rng.choice(NAMES)
            old = constants(a.text_at(parent)).get(name, 0.0)
            new = round(old + rng.choice((-1.0, -0.5, 0.5, 1.0)), 2)
            rec, d = _exp(coord, a, parent, f"{name} {old:g} -> {new:g}", **{name: new})
            if d.decision in ("promote", "merge", "simplification", "pending") or d.beat_parent:
                head[a.name] = rec.commit
            elif rng.random() < 0.4:
                head[a.name] = coord.best(HW).commit
        drain_jobs(coord, agents)
