"""The latest-best key of each hardware class (state/broadcast.py) as the coordinator writes it,
with this process's copy: only the coordinator writes the key, so it is read from redis once."""
from __future__ import annotations

from agents.messages import Broadcast
from coordinator.decide.noise import SampleBook
from coordinator.state import broadcast, keys
from coordinator.state.ledger import Ledger


class BestKeys:
    """Writes and caches the latest-best key of every class: under the decision lock, except
    cached(), which reads without it."""

    def __init__(self, r, ledger: Ledger, swarm_id: str, book: SampleBook):
        self.r, self.ledger, self.swarm_id, self.book = r, ledger, swarm_id, book
        self._latest: dict[str, Broadcast | None] = {}

    def cached(self, hw: str) -> Broadcast | None:
        """What this process last wrote or read; None when it has not yet (never reads redis)."""
        return self._latest.get(hw)

    def get(self, hw: str) -> Broadcast | None:
        """The key's value, read from redis the first time only."""
        if hw not in self._latest:
            self._latest[hw] = broadcast.latest(self.r, self.swarm_id, hw)
        return self._latest[hw]

    def publish(self, hw: str, commit: str, exp_id: str | None, decision: str | None) -> Broadcast:
        """`commit` is the new best of `hw`: a Broadcast with the next seq and its reference mean."""
        s = self.book.ref(hw, commit)
        b = Broadcast(swarm_id=self.swarm_id, hardware_class=hw, commit=commit,
                      val_bpb=_value(s), samples=s.n,
                      seq=broadcast.next_seq(self.r, self.swarm_id, hw),
                      experiment_id=exp_id, decision=decision)
        broadcast.set_latest(self.r, b)
        self._latest[hw] = b
        return b

    def sync(self, hw: str, cur: str | None) -> None:
        """At start-up: publish the best ref `cur` when the key (in redis) does not hold it yet."""
        key = broadcast.latest(self.r, self.swarm_id, hw)
        if cur is None or self.book.of(hw, cur).n == 0 or (key is not None and key.commit == cur):
            return
        self.publish(hw, cur, None, None)

    def refresh(self, hw: str, best: str) -> None:
        """Best `best` got one more sample: publish it if the key holds another commit, else
        update the value under the same seq (written with the batch)."""
        key = self.get(hw)
        if key is None or key.commit != best:
            self.publish(hw, best, None, None)
        else:
            s = self.book.ref(hw, best)
            self._latest[hw] = key = key.model_copy(update={"val_bpb": _value(s), "samples": s.n})
            self.ledger.set(keys.best(self.swarm_id, hw), key.model_dump_json())


def _value(s) -> float:
    """Best's value in its key: the mean of its samples, NaN when it has none (every run of it
    contended): never the empty book's 0.0."""
    return s.mean if s.n else float("nan")
