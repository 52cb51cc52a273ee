"""The coordinator as a named, restartable Ray actor: the one place Coordinator becomes an actor.

Methods are idempotent (reports by experiment id, begin by id), so Ray may retry them after a
restart (max_task_retries=-1); the constructor rebuilds everything from redis and git.
Decisions stay one at a time: Coordinator holds a lock around every decision, so concurrent
calls (max_concurrency) only overlap in cheap reads such as best() and heartbeat().
"""
from __future__ import annotations

from pathlib import Path

from coordinator.decide.core import Coordinator
from agents.messages import (Broadcast, Decision, ExperimentRecord, Job, PromotionConfig,
                             ReportReply, StartedExperiment)

NAMESPACE = "autoresearch-swarm"
# A restarted coordinator waits this long for redis: both may have gone down together (a head
# node's restart, or redis killed first), and Ray does not restart an actor whose constructor
# raised: failing at once would leave the swarm with no coordinator for good.
RESTART_REDIS_WAIT_S = 600.0


class CoordinatorActor:
    """The Coordinator's public port, and nothing else, as the actor class. Ray wraps every
    method of an actor class (tracing hooks), so making Coordinator itself the actor put a
    wrapper around each of its internal calls too: a few per decision, under the lock."""

    def __init__(self, swarm_home: Path, redis_url: str, promotion: PromotionConfig, swarm_id: str,
                 baseline_train_py: str | None = None):
        import ray

        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        # First start: an unreachable redis is a clear error at once (swarm run reports it).
        self.c = Coordinator(swarm_home, redis_url, promotion, swarm_id, baseline_train_py,
                             redis_wait_s=RESTART_REDIS_WAIT_S if restarted else 0.0)

    def begin(self, started: StartedExperiment) -> None:
        return self.c.begin(started)

    def report(self, record: ExperimentRecord, bundle: bytes | None = None) -> Decision:
        return self.c.report(record, bundle)

    def report_sync(self, record: ExperimentRecord, bundle: bytes | None = None) -> ReportReply:
        return self.c.report_sync(record, bundle)

    def next_job(self, agent: str, hardware_class: str) -> Job | None:
        return self.c.next_job(agent, hardware_class)

    def best(self, hardware_class: str) -> Broadcast | None:
        return self.c.best(hardware_class)

    def recent(self, hardware_class: str, n: int) -> list:
        return self.c.recent(hardware_class, n)

    def heartbeat(self, agent: str, status: dict) -> None:
        return self.c.heartbeat(agent, status)

    def fetch(self, commit: str) -> bytes:
        return self.c.fetch(commit)

    def status(self) -> dict:
        return self.c.status()

    def perf(self) -> dict:
        return self.c.perf()

    def reconcile_dead_agent(self, agent: str) -> list[str]:
        return self.c.reconcile_dead_agent(agent)

    def snapshot(self) -> Path:
        return self.c.snapshot()

    def flush_refs(self) -> None:
        return self.c.flush_refs()


def actor_name(swarm_id: str) -> str:
    return f"swarm-coordinator-{swarm_id}"


def coordinator_actor(swarm_home: Path, redis_url: str, promotion: PromotionConfig, swarm_id: str,
                      baseline_train_py: str | None = None, max_concurrency: int = 32):
    """Get or create the swarm's coordinator actor (named, restarted forever). Returns its handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: SWARM_HOME (the research repo) and the embedded redis, which
    # listens on loopback only, live there (the head node of a cluster).
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(CoordinatorActor).options(
        scheduling_strategy=here,
        name=actor_name(swarm_id), namespace=NAMESPACE, get_if_exists=True,
        max_restarts=-1, max_task_retries=-1, max_concurrency=max_concurrency,
        # It decides, it does not train: it must never take an agent's CPU or GPU slot.
        num_cpus=0,
    ).remote(Path(swarm_home), redis_url, promotion, swarm_id, baseline_train_py)
