"""The latest best per class lives in one key (state/keys.py): a late joiner reads it; nothing
is published on pub/sub (agents get best from the coordinator's replies and best())."""
from __future__ import annotations

import redis

from agents.messages import Broadcast
from coordinator.state import keys
from coordinator.state.broadcast import latest, next_seq, set_latest


def test_latest_best_key_holds_the_newest_and_nothing_is_published(redis_url):
    r = redis.Redis.from_url(redis_url)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("*")
    try:
        assert latest(r, "B", "hw") is None
        b1 = Broadcast(swarm_id="B", hardware_class="hw", commit="c1", val_bpb=2.0, seq=next_seq(r, "B", "hw"))
        set_latest(r, b1)
        b2 = Broadcast(swarm_id="B", hardware_class="hw", commit="c2", val_bpb=1.9, seq=next_seq(r, "B", "hw"))
        assert b2.seq > b1.seq
        set_latest(r, b2)
        late = redis.Redis.from_url(redis_url)  # a late joiner, on its own connection
        assert latest(late, "B", "hw") == b2
        assert latest(late, "B", "other") is None
        assert Broadcast.model_validate_json(r.get(keys.best("B", "hw"))) == b2
        assert sub.get_message(timeout=0.5) is None
    finally:
        sub.close()
