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


def test_a_best_published_before_it_has_a_sample_can_be_read_back(redis_url):
    """publish() writes val_bpb NaN for a best with no sample yet (a contended first round): the
    key was written as `"val_bpb": null`, which no reader could parse, so a coordinator or agent
    started then (a resumed swarm) failed with `float_type`."""
    import math

    r = redis.Redis.from_url(redis_url)
    set_latest(r, Broadcast(swarm_id="N", hardware_class="hw", commit="c0", val_bpb=float("nan"), seq=1))
    b = latest(r, "N", "hw")
    assert b is not None and b.commit == "c0" and math.isnan(b.val_bpb)
