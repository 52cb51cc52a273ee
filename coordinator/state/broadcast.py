"""The latest best per hardware class, kept in the key `swarm:<id>:best:<hw>` (state/keys.py).

Agents never subscribe to anything: they get the latest best from the coordinator, in the reply
to each report or from best() (which reads this key), at iteration boundaries only.
"""
from __future__ import annotations

import logging

from agents.messages import Broadcast
from coordinator.state import keys

log = logging.getLogger(__name__)


def next_seq(client, swarm_id: str, hw: str) -> int:
    """A strictly increasing sequence number per hardware class (persistent: INCR in redis)."""
    return int(client.incr(keys.best_seq(swarm_id, hw)))


def set_latest(client, b: Broadcast) -> None:
    """Store `b` as its hardware class's latest best."""
    client.set(keys.best(b.swarm_id, b.hardware_class), b.model_dump_json())
    log.info("best[%s] -> %s (seq %d, val_bpb %.4f)", b.hardware_class, b.commit[:10], b.seq, b.val_bpb)


def latest(client, swarm_id: str, hw: str) -> Broadcast | None:
    v = client.get(keys.best(swarm_id, hw))
    return Broadcast.model_validate_json(v) if v else None
