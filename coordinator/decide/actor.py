"""The coordinator as a named, restartable Ray actor: the one place Coordinator becomes an actor.

Methods are idempotent (reports by experiment id, begin by id), so Ray may retry them after a
restart (max_task_retries=-1); the constructor rebuilds everything from redis and git.
Decisions stay one at a time: Coordinator holds a lock around every decision, so concurrent
calls (max_concurrency) only overlap in cheap reads such as best() and heartbeat().
"""
from __future__ import annotations

import functools
from pathlib import Path

from agents.messages import NoiseHistorySpec, PromotionConfig
from agents.ports import PORT_METHODS
from coordinator.decide.core import Coordinator
from coordinator.decide.perf import GcFreeze

NAMESPACE = "autoresearch-swarm"
# A restarted coordinator waits this long for redis: both may have gone down together (a head
# node's restart, or redis killed first), and Ray does not restart an actor whose constructor
# raised: failing at once would leave the swarm with no coordinator for good.
RESTART_REDIS_WAIT_S = 600.0


ADMIN_METHODS = ("status", "perf", "reconcile_dead_agent", "snapshot", "flush_refs",
                 "configure_allocation", "allocation_status")
"""What `swarm run` (not an agent) asks of the coordinator, besides the agents' port."""


class CoordinatorActor:
    """The Coordinator's public port (agents.ports.PORT_METHODS) plus the admin calls
    (ADMIN_METHODS), and nothing else, as the actor class; the forwarding methods are made
    from those two lists below, so a new port method is declared in the protocol and written
    in Coordinator, nowhere else. Ray wraps every method of an actor class (tracing hooks), so
    making Coordinator itself the actor put a wrapper around each of its internal calls too: a
    few per decision, under the lock."""

    def __init__(self, swarm_home: Path, redis_url: str, promotion: PromotionConfig, swarm_id: str,
                 baseline_train_py: str | None = None, history: NoiseHistorySpec | None = None):
        import ray

        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        # First start: an unreachable redis is a clear error at once (swarm run reports it).
        self.c = Coordinator(swarm_home, redis_url, promotion, swarm_id, baseline_train_py,
                             redis_wait_s=RESTART_REDIS_WAIT_S if restarted else 0.0, history=history)
        # This process is the coordinator's alone: bound its collector's full pauses (every
        # thread waits them out, a decision included), starting with the state just rebuilt.
        GcFreeze.install()


def _forwarder(name: str):
    @functools.wraps(getattr(Coordinator, name))
    def call(self: CoordinatorActor, *args, **kwargs):
        return getattr(self.c, name)(*args, **kwargs)
    call.__qualname__ = f"CoordinatorActor.{name}"
    return call


for _name in PORT_METHODS + ADMIN_METHODS:
    setattr(CoordinatorActor, _name, _forwarder(_name))


def actor_name(swarm_id: str) -> str:
    return f"swarm-coordinator-{swarm_id}"


def coordinator_actor(swarm_home: Path, redis_url: str, promotion: PromotionConfig, swarm_id: str,
                      baseline_train_py: str | None = None, max_concurrency: int = 32,
                      history: NoiseHistorySpec | None = None):
    """Get or create the swarm's coordinator actor (named, restarted forever). Returns its handle.
    `history`: where the noise history of earlier swarms lives (decide/history.py), or None."""
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
    ).remote(Path(swarm_home), redis_url, promotion, swarm_id, baseline_train_py, history)
