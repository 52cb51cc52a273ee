"""Chaos through real processes, while agents work concurrently: the coordinator's Ray actor is
SIGKILLed at random moments (mid-decision included), redis is SIGKILLed and brought back from its
AOF (sometimes with the coordinator killed while redis is still down), and agents die mid-run.
Then docs/architecture.md invariants 1, 3, 4 and 5 are checked (fake_runner.check_invariants), and every
experiment an agent started has exactly one record.

The agents are threads that talk to the actor through agents.ports.RayCoordinator, the adapter
real agents use (retries, then a spool re-sent at the next boundary); a dead agent is
reconciled the way `swarm run` does it (reconcile_dead_agent) and, restarted under its name,
reports its in-flight run as a crash the way agents/inflight.py makes a real one do.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter

from agents.ports import RayCoordinator
from coordinator.decide.actor import coordinator_actor
from coordinator.decide.core import Coordinator
from coordinator.state.repo import ResearchRepo
from fake_runner import FakeAgent, baseline_text, check_invariants, set_constants
from agents.messages import PromotionConfig

CLASSES = {"cpu-fake": 3, "cpu-other": 2}
KNOBS = ["A", "B", "C", "X", "Y", "Z"]


class Chaos:
    def __init__(self, handle, ray, daemon, seed: int):
        self.h, self.ray, self.daemon = handle, ray, daemon
        self.rng = random.Random(seed)
        self.kills: Counter = Counter()
        self.lock = threading.Lock()  # one death at a time, and none while the agents settle

    def coordinator_pid(self) -> int | None:
        try:
            return self.ray.get(self.h.__ray_call__.remote(lambda _self: os.getpid()), timeout=60)
        except Exception:
            return None

    def kill_redis(self) -> None:
        pid = self.daemon.pid
        os.kill(pid, signal.SIGKILL)
        while self.daemon.running():
            time.sleep(0.01)

    def plan(self) -> list[str]:
        """The deaths to inflict, in a random order: a fixed count of each kind, so that a
        slow machine runs all of them too (it only takes longer)."""
        kinds = ["coordinator"] * 4 + ["redis"] * 5 + ["coordinator-while-redis-down"] * 2
        self.rng.shuffle(kinds)
        return kinds

    def one(self, kind: str) -> None:
        with self.lock:
            if kind == "coordinator":
                pid = self.coordinator_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    self.kills["coordinator"] += 1
            elif kind == "redis":
                self.kill_redis()
                time.sleep(self.rng.uniform(0.1, 1.5))
                assert self.daemon.revive()
                self.kills["redis"] += 1
            else:
                pid = self.coordinator_pid()
                self.kill_redis()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)  # it restarts while redis is down, and must wait
                    self.kills["coordinator-while-redis-down"] += 1
                time.sleep(self.rng.uniform(0.5, 2.0))
                assert self.daemon.revive()


def test_random_process_kills_under_load_keep_invariants(tmp_path, redis_daemon, ray_local):
    ray = ray_local
    cfg = PromotionConfig(sigma_prior=0.003)
    home = tmp_path / "home"
    h = coordinator_actor(home, redis_daemon.url, cfg, "chaos", baseline_train_py=baseline_text())
    ray.get(h.status.remote(), timeout=60)
    repo = ResearchRepo(home / "repo.git")
    agents = [FakeAgent(f"{hw}-{i}", repo.path, tmp_path / "wt", hw=hw, sigma=0.003, seed=i)
              for hw, n in CLASSES.items() for i in range(n)]
    best_seen = {hw: [repo.root()] for hw in CLASSES}
    started: dict[str, list[str]] = {a.name: [] for a in agents}
    deaths: Counter = Counter()
    errors: list[str] = []
    stop = threading.Event()
    chaos = Chaos(h, ray, redis_daemon, seed=11)

    def watch_best():  # best must only ever move forward: sample the refs as they move
        while not stop.is_set():
            for hw in CLASSES:
                b = repo.ref(f"refs/heads/best/{hw}")
                if b is not None and b != best_seen[hw][-1]:
                    best_seen[hw].append(b)
            time.sleep(0.02)

    def supervisor_call(method: str, *args):
        while True:  # swarm run waits for the coordinator to come back
            try:
                return ray.get(getattr(h, method).remote(*args), timeout=60)
            except ray.exceptions.GetTimeoutError:
                continue

    def agent_loop(a: FakeAgent, seed: int):
        rng = random.Random(seed)
        port = RayCoordinator(h, tmp_path / "spool" / a.name, timeout_s=20, retries=4, retry_delay_s=0.2)
        try:
            while not stop.is_set():
                port.flush()
                job = port.next_job(a.name, a.hw)
                if job is not None:
                    rec = a.record(job.commit, job.parent, kind=job.kind, job=job)
                else:
                    b = port.best(a.hw)
                    if b is None:  # no baseline sample yet, or the coordinator is restarting
                        time.sleep(0.1)
                        continue
                    # Now and then an agent has not synced yet: its parent is an older best.
                    olds = [c for c in best_seen[a.hw][-3:] if repo.is_ancestor(c, b.commit)]
                    parent = rng.choice(olds) if olds and rng.random() < 0.3 else b.commit
                    knob = rng.choice(KNOBS)
                    text = set_constants(a.text_at(parent), **{knob: rng.choice([0, 1, 2, 3])})
                    c = a.commit(parent, text, f"{knob} by {a.name}")
                    rec = a.record(c, parent, description=f"{knob} by {a.name}")
                started[a.name].append(rec.experiment_id)
                port.begin(a.started(rec))
                time.sleep(rng.uniform(0.05, 0.3))  # "training"
                if rng.random() < 0.06:  # the agent dies mid-run
                    with chaos.lock:
                        deaths[a.name] += 1
                        supervisor_call("reconcile_dead_agent", a.name)
                    # restarted under its name, it finds its inflight.json and reports the crash
                    port.report(rec.model_copy(update={"status": "crash", "val_bpb": None,
                                                       "confirm_bpb": None,
                                                       "reason": "agent died mid-run"}))
                    continue
                port.report(rec)
        except Exception as e:  # a test thread must not die silently
            errors.append(f"{a.name}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=watch_best, daemon=True)]
    threads += [threading.Thread(target=agent_loop, args=(a, i), daemon=True) for i, a in enumerate(agents)]
    for t in threads:
        t.start()
    for kind in chaos.plan():
        time.sleep(chaos.rng.uniform(0.8, 2.0))
        chaos.one(kind)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "an agent thread hung"
    assert not errors, errors
    # The last boundary: every spooled report is delivered (the coordinator is up again).
    supervisor_call("status")
    for a in agents:
        port = RayCoordinator(h, tmp_path / "spool" / a.name, timeout_s=60)
        port.flush()
        assert not list((tmp_path / "spool" / a.name).glob("*.json")), a.name
    supervisor_call("flush_refs")
    ray.kill(h, no_restart=True)

    reader = Coordinator(home, redis_daemon.url, cfg, swarm_id="chaos")
    for hw in CLASSES:
        b = repo.ref(f"refs/heads/best/{hw}")
        if b != best_seen[hw][-1]:
            best_seen[hw].append(b)
    print(f"\nkills: {dict(chaos.kills)}, agent deaths: {sum(deaths.values())}, "
          f"decisions: {reader.status()['decisions']}")
    assert chaos.kills["coordinator"] >= 3 and chaos.kills["redis"] == 5
    assert chaos.kills["coordinator-while-redis-down"] >= 1
    assert sum(deaths.values()), "no agent died: the run did not test that"
    assert any(d.best_after for d in reader.decisions.values()), "nothing promoted: vacuous invariants"
    # 3, from the agents' side: everything they started has one record, whatever happened.
    ids = [i for v in started.values() for i in v]
    record_events = [id for typ, id, _ in reader.ledger.events() if typ == "record"]
    assert len(record_events) == len(set(record_events))
    missing = set(ids) - set(record_events)
    assert not missing, f"{len(missing)} started experiments have no record"
    check_invariants(reader, best_seen)
