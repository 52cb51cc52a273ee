"""Tried states: the train.py contents a swarm has trained or has in flight, per hardware class,
so that an agent's proposal identical to one of them is refused before it spends a run.

One agent never proposes a file state twice (mutate keeps every state it tried; a model sees its
own results). Eight agents do: each knows only its own, and agents of one program (or of two whose
search spaces overlap) propose the same change on the same best. On the research bench (bowls, 8
agents on 4 programs, mutate, seeds 0..3) 55 of 481 experiments, 17 of the 179 run before the
target was reached, trained a train.py another agent had trained or was training: runs a single
agent never spends. A re-run of a tried state is no new idea; the coordinator asks for repeats of
a candidate itself (confirm and verify jobs), where the evidence needs them.

The narrow interface: `claim(hw, blob, experiment_id)` (the agent, before it commits an
experiment: None, go; else the experiment that holds the state), `note(hw, blob, id)` (every ok
record the coordinator decides: baselines, jobs and experiments alike, so a proposal that puts
back an earlier best is refused too) and `release(id)` (a claim whose run failed, was stopped or
was rejected: the state may be tried again). The coordinator rebuilds it from the ledger's records
on start; claims in flight are not in the ledger and a restart forgets them (at worst one run
is spent twice).
"""
from __future__ import annotations

import threading


class TriedStates:
    """(hardware class, train.py blob id) -> the experiment id that trained or claimed it first."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], str] = {}
        self._key: dict[str, tuple[str, str]] = {}   # experiment id -> the state it holds
        self._lock = threading.Lock()   # claims come outside the decision lock

    def claim(self, hw: str, blob: str, experiment_id: str) -> str | None:
        """Hold `blob` for `experiment_id`; returns None when it may train, else the id that
        holds it already (trained it, or is training it now). Idempotent for the holder."""
        with self._lock:
            held = self._by.get((hw, blob))
            if held is not None and held != experiment_id:
                return held
            self._by[(hw, blob)] = experiment_id
            self._key[experiment_id] = (hw, blob)
            return None

    def note(self, hw: str, blob: str, experiment_id: str) -> None:
        """A run of `blob` was decided ok: the state is tried (the first holder keeps it)."""
        with self._lock:
            self._by.setdefault((hw, blob), experiment_id)
            if self._by[(hw, blob)] == experiment_id:
                self._key[experiment_id] = (hw, blob)

    def release(self, experiment_id: str) -> None:
        """`experiment_id` did not measure its state (crash, timeout, stopped, rejected): free it."""
        with self._lock:
            key = self._key.pop(experiment_id, None)
            if key is not None and self._by.get(key) == experiment_id:
                del self._by[key]

    def clear(self) -> None:
        with self._lock:
            self._by.clear()
            self._key.clear()
