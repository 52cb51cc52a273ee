"""The coordinator as the named Ray actor on a local Ray: decisions through Ray, and a ray.kill
restart that rebuilds from redis and git without losing a promotion."""
from __future__ import annotations

import time


from coordinator.decide.actor import NAMESPACE, actor_name, coordinator_actor
from coordinator.decide.core import Coordinator
from fake_runner import FakeAgent, baseline_text, check_invariants, drain_jobs, warm_up
from agents.messages import PromotionConfig

HW = "cpu-fake"


class RayPort:
    """Calls the actor as the agents do: every method through Ray, blocking on the answer."""

    def __init__(self, handle, ray):
        self.h, self.ray = handle, ray

    def __getattr__(self, name):
        return lambda *a, **k: self.ray.get(getattr(self.h, name).remote(*a, **k), timeout=60)


def test_named_actor_decides_and_survives_ray_kill(tmp_path, redis_url, ray_local):
    ray = ray_local
    cfg = PromotionConfig(sigma_prior=0.003, best_remeasures=0)  # re-measuring: test_judge_best.py
    home = tmp_path / "home"
    h = coordinator_actor(home, redis_url, cfg, "R", baseline_train_py=baseline_text())
    port = RayPort(h, ray)
    assert port.status()["classes"] == {}  # no hardware class until an agent asks for work
    same = coordinator_actor(home, redis_url, cfg, "R")  # get_if_exists: the one named actor
    assert ray.get(same.status.remote())["swarm_id"] == "R"
    agents = [FakeAgent(f"a{i}", home / "repo.git", tmp_path / "wt", sigma=0.0005, seed=i) for i in range(3)]
    warm_up(port, agents, hw=HW)  # the first round and the repeats sigma needs
    root = port.best(HW).commit
    r1, d1 = agents[0].experiment(port, root, "A up", A=1)
    r2, d2 = agents[1].experiment(port, root, "B up", B=1)
    assert d1.decision == "promote" and d2.decision == "pending"
    assert port.lead(HW) is None   # through Ray; B is pending against the best before A: no lead
    before = port.status()

    ray.kill(h, no_restart=False)
    deadline = time.monotonic() + 60
    while True:  # the restarted actor answers under the same name once its constructor ran
        try:
            again = ray.get_actor(actor_name("R"), namespace=NAMESPACE)
            after = ray.get(again.status.remote(), timeout=30)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert after == before
    # its process keeps the state it rebuilt frozen: a full collection never scans it again
    # (coordinator/decide/perf.py GcFreeze; tests/test_gc_pauses.py)
    assert ray.get(again.perf.remote())["gc_frozen"] > 10_000
    port = RayPort(again, ray)
    assert port.report(r1).decision == d1  # a retried report after the restart: same answer, no double
    drain_jobs(port, agents)
    final = port.recent(HW, 10)
    by_id = {rec.experiment_id: d for rec, d in final}
    assert by_id[r2.experiment_id].decision == "merge"
    assert port.best(HW).commit == by_id[r2.experiment_id].merge_commit
    bundle = port.fetch(port.best(HW).commit)
    assert bundle.startswith(b"# v2 git bundle")
    port.heartbeat("a0", {"state": "training"})

    ray.kill(again, no_restart=True)
    reader = Coordinator(home, redis_url, cfg, swarm_id="R")
    assert b"training" in reader.r.hget(reader.ledger.key("agents"), "a0")
    check_invariants(reader, {HW: [root, r1.commit]})


def test_the_port_is_declared_once_and_forwarded(tmp_path):
    """The actor's methods are the port's plus the admin calls, made from those lists; every
    port method exists on Coordinator; RayCoordinator forwards the ones it does not override."""
    from agents.ports import PORT_METHODS, CoordinatorPort, RayCoordinator
    from coordinator.decide.actor import ADMIN_METHODS, CoordinatorActor

    assert {"begin", "report", "next_job", "best", "lead", "recent", "heartbeat", "fetch", "assignment", "claim",
            "flush"} == set(PORT_METHODS)
    public = {n for n in dir(CoordinatorActor) if not n.startswith("_")}
    assert public == set(PORT_METHODS) | set(ADMIN_METHODS)
    for name in (*PORT_METHODS, *ADMIN_METHODS):
        assert callable(getattr(Coordinator, name)), name
    rc = RayCoordinator(object(), tmp_path / "spool")
    assert isinstance(rc, CoordinatorPort)
    calls = []
    rc._call = lambda method, *args, **kw: calls.append((method, args)) or b"bundle"
    assert rc.fetch("c0ffee") == b"bundle" and calls == [("fetch", ("c0ffee",))]
    assert rc.flush() == 0 and len(calls) == 1  # flush is RayCoordinator's own: nothing spooled
