"""A randomized run that kills the coordinator, agents and redis at random times; then docs/architecture.md
invariants 1, 3, 4 and 5 are checked (fake_runner.check_invariants)."""
from __future__ import annotations

import random
import threading

from coordinator.decide.core import Coordinator
from fake_runner import FakeAgent, baseline_text, check_invariants, set_constants
from agents.messages import PromotionConfig

CLASSES = {"cpu-fake": 4, "cpu-other": 2}
KNOBS = ["A", "B", "C", "X", "Y", "Z"]


def test_random_kills_keep_invariants(tmp_path, redis_daemon):
    rng = random.Random(7)
    # min_dof 3: the first round of the 4-agent class is enough, so that most of the 70 steps
    # are experiments and moves of best, the decisions whose loss the kills would show
    # (trusting sigma: test_judge_best.py).
    cfg = PromotionConfig(sigma_prior=0.003, min_dof=3)
    home = tmp_path / "home"
    new_coord = lambda: Coordinator(home, redis_daemon.url, cfg, swarm_id="K",
                                    baseline_train_py=baseline_text())
    coord = new_coord()
    agents = [FakeAgent(f"{hw}-{i}", coord.repo.path, tmp_path / "wt", hw=hw, sigma=0.003, seed=i)
              for hw, n in CLASSES.items() for i in range(n)]
    best_seen = {hw: [coord.root] for hw in CLASSES}
    kills = {"coordinator": 0, "coordinator-mid-report": 0, "ref-move-lost": 0, "redis": 0, "agent": 0}

    def note_best():
        for hw in CLASSES:
            b = coord.repo.ref(f"refs/heads/best/{hw}")
            if b is not None and b != best_seen[hw][-1]:  # None: class not seen yet
                best_seen[hw].append(b)

    for step in range(70):
        a = rng.choice(agents)
        job = coord.next_job(a.name, a.hw)
        if job is not None:
            rec = a.record(job.commit, job.parent, kind=job.kind, job=job)
        else:
            # Some agents have not synced yet: their parent is an older best (the merge path).
            parent = rng.choice(best_seen[a.hw][-3:])
            knob = rng.choice(KNOBS)
            text = set_constants(a.text_at(parent), **{knob: rng.choice([0, 1, 2, 3])})
            c = a.commit(parent, text, f"{knob} step {step}")
            rec = a.record(c, parent, description=f"{knob} step {step}")
        coord.begin(a.started(rec))
        event = rng.random()
        # Each kind of kill happens at least once whatever random path the decisions take
        # (a change of the rules changes which jobs exist, hence the draws).
        for at, kind, e in ((20, "agent", 0.05), (30, "redis", 0.15), (40, "coordinator-mid-report", 0.20)):
            if step == at and not kills[kind]:
                event = e
        if event < 0.10:  # the agent dies mid-run: the swarm reconciles it
            kills["agent"] += 1
            coord.reconcile_dead_agent(a.name)
        elif event < 0.18:  # redis is SIGKILLed and comes back from its AOF while we report
            kills["redis"] += 1
            redis_daemon.stop(kill=True)
            t = threading.Timer(0.3, redis_daemon.start)
            t.start()
            coord.report(rec)
            t.join()
        elif event < 0.24:  # the coordinator dies after storing the record, before deciding
            kills["coordinator-mid-report"] += 1
            coord.ledger.add_record(rec)
            coord = new_coord()
            assert rec.experiment_id in coord.decisions
        else:
            ref = f"refs/heads/best/{a.hw}"
            before = coord.repo.ref(ref)
            coord.report(rec)
            # A report can move best through another experiment's decision (a verification run
            # decides its candidate's merge): the move is whatever changed the ref.
            # The first move always loses its ref move (so that it happens whatever path the
            # decision rules take), later ones 30% of the time.
            if (before is not None and coord.repo.ref(ref) != before
                    and (not kills["ref-move-lost"] or rng.random() < 0.3)):
                kills["ref-move-lost"] += 1  # died after the ledger write, before the ref move
                coord.repo.set_ref(ref, before)
                coord = new_coord()
        if rng.random() < 0.08:
            kills["coordinator"] += 1
            coord = new_coord()
        note_best()
        assert coord.report(rec).decision == coord.decisions[rec.experiment_id]  # retries never double

    coord = new_coord()
    note_best()
    print("\nkills:", kills, "decisions:", coord.status()["decisions"])
    assert all(kills.values()), kills  # every kind of failure happened at least once
    moved = [d for d in coord.decisions.values() if d.best_after]
    assert moved, "the run promoted nothing: the invariants would be vacuous"
    check_invariants(coord, best_seen)
