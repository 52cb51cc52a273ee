"""Broadcast: pub/sub reaches a listening agent; the best key lets a late joiner catch up."""
from __future__ import annotations

import threading

import redis

from coordinator.state.broadcast import BroadcastListener, best_key, latest, next_seq, publish
from agents.messages import Broadcast


def test_listener_hears_and_late_joiner_catches_up(redis_url):
    r = redis.Redis.from_url(redis_url)
    heard = threading.Event()
    early = BroadcastListener(r, "B", on_message=lambda b: heard.set())
    try:
        assert early.latest("hw") is None
        b1 = Broadcast(swarm_id="B", hardware_class="hw", commit="c1", val_bpb=2.0, seq=next_seq(r, "B", "hw"))
        publish(r, b1)
        assert heard.wait(5)
        assert early.latest("hw").commit == "c1"
        b2 = Broadcast(swarm_id="B", hardware_class="hw", commit="c2", val_bpb=1.9, seq=next_seq(r, "B", "hw"))
        assert b2.seq > b1.seq
        publish(r, b2)
        late = BroadcastListener(r, "B")  # missed both messages
        try:
            assert late.latest("hw").commit == "c2"
            assert late.latest("other") is None
        finally:
            late.close()
        assert latest(r, "B", "hw") == b2
        # An older broadcast never replaces a newer one in a listener.
        early._keep(b1)
        assert early.latest("hw").seq == b2.seq
        assert r.get(best_key("B", "hw")) is not None
    finally:
        early.close()
