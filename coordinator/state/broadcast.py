"""Broadcast of a new best: redis pub/sub on `swarm:<id>:broadcast` plus the latest per class in a key.

The key `swarm:<id>:best:<hw>` lets an agent that joined late or missed a message catch up;
agents act on what they hear at iteration boundaries only (BroadcastListener.latest()).
"""
from __future__ import annotations

import logging
import threading

from agents.messages import Broadcast

log = logging.getLogger(__name__)


def channel(swarm_id: str) -> str:
    return f"swarm:{swarm_id}:broadcast"


def best_key(swarm_id: str, hw: str) -> str:
    return f"swarm:{swarm_id}:best:{hw}"


def next_seq(client, swarm_id: str, hw: str) -> int:
    """A strictly increasing sequence number per hardware class (persistent: INCR in redis)."""
    return int(client.incr(f"swarm:{swarm_id}:bestseq:{hw}"))


def publish(client, b: Broadcast) -> None:
    """Set the latest-best key, then publish (a subscriber that misses the message reads the key)."""
    payload = b.model_dump_json()
    pipe = client.pipeline(transaction=True)
    pipe.set(best_key(b.swarm_id, b.hardware_class), payload)
    pipe.publish(channel(b.swarm_id), payload)
    pipe.execute()
    log.info("best[%s] -> %s (seq %d, val_bpb %.4f)", b.hardware_class, b.commit[:10], b.seq, b.val_bpb)


def latest(client, swarm_id: str, hw: str) -> Broadcast | None:
    v = client.get(best_key(swarm_id, hw))
    return Broadcast.model_validate_json(v) if v else None


class BroadcastListener:
    """Keeps the newest Broadcast per hardware class heard on the channel, in a background thread.

    `latest(hw)` is what an agent reads at an iteration boundary: the newest of what it heard
    and what the key holds, so a missed message (or a late join) costs nothing.
    """

    def __init__(self, client, swarm_id: str, on_message=None):
        self.client = client
        self.swarm_id = swarm_id
        self._best: dict[str, Broadcast] = {}
        self._lock = threading.Lock()
        self._on_message = on_message
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(**{channel(swarm_id): self._handle})
        # get_message returns as soon as a message arrives; sleep_time only bounds how fast
        # close() is noticed, and a short one wakes every idle listener many times a second.
        self._thread = self._pubsub.run_in_thread(sleep_time=0.5, daemon=True)

    def _handle(self, msg) -> None:
        try:
            b = Broadcast.model_validate_json(msg["data"])
        except ValueError:
            log.warning("ignored a malformed broadcast on %s", channel(self.swarm_id))
            return
        self._keep(b)
        if self._on_message is not None:
            self._on_message(b)

    def _keep(self, b: Broadcast) -> None:
        with self._lock:
            cur = self._best.get(b.hardware_class)
            if cur is None or b.seq > cur.seq:
                self._best[b.hardware_class] = b

    def latest(self, hw: str) -> Broadcast | None:
        b = latest(self.client, self.swarm_id, hw)
        if b is not None:
            self._keep(b)
        with self._lock:
            return self._best.get(hw)

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(timeout=2)
        self._pubsub.close()
