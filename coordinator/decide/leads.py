"""The lead: which candidate the agents whose line is best should build their next idea on.

One agent keeps its own pending candidate as its line and runs its next ideas on top of it while
the candidate's confirmation runs; in a swarm the other agents used to go on proposing from a
best about to move, and those ideas, made on the old best, came back to be merged onto the new
one and verified, or were overtaken by it (research bench, bowls: the swarm spent 29.5-37.3
experiments and 7-8 verifications to half the gain where one agent spent 20-22 and 1). The lead
is the candidate an agent on best builds on instead (agents/agent.py `_follow_lead`).

Which candidate: pending in its sequential test against the current best (stage `confirm`: its
own confirmation or a repeat of best is what it waits for), made directly on best (its parent is
best, or has best's train.py: its change is itself), measured better than best so far; of those,
the one measured best. Nothing is promoted or verified on that account: a result made on the lead
is judged by its own samples against best's (one that beats best carries the lead with it), except
that one measured no better than the lead is discarded (judging.py): all it showed better than best
is the lead's change, whose own test goes on. Without that rule the copies of the lead that agents
of a program whose changes do nothing made were confirmed one by one, crowding out research
(bench/allocation.py, barren, static: 11.92 -> 15.25 rounds to the target; with it 11.67). A lead
decided against (discarded, pooled into a verification) is no lead: the agents on it go back to
best at their next boundary.
"""
from __future__ import annotations

from typing import Callable, Iterable

from agents.messages import Decision, ExperimentRecord, Lead


def lead_of(hw: str, best: str, best_blob: str, pending: Iterable[str], decisions: dict[str, Decision],
            records: dict[str, ExperimentRecord], blob_of: Callable[[str], str | None]) -> Lead | None:
    """The lead among `pending` (ids of the results pending against `best`, whose train.py has
    the blob id `best_blob`), or None. `blob_of(commit)`: its train.py's blob id (None: unknown)."""
    top: tuple[Decision, ExperimentRecord] | None = None
    for i in pending:
        d, rec = decisions.get(i), records.get(i)
        if (d is None or rec is None or rec.commit is None or d.decision != "pending"
                or d.stage != "confirm" or d.best_before != best or d.delta is None or d.delta <= 0
                or d.mean is None):
            continue
        if not (rec.parent == best or blob_of(rec.parent) == best_blob):
            continue
        if top is None or (d.delta, i) > (top[0].delta, top[0].experiment_id):
            top = (d, rec)
    if top is None:
        return None
    d, rec = top
    return Lead(hardware_class=hw, commit=rec.commit, experiment_id=rec.experiment_id, best=best, best_blob=best_blob,
                val_bpb=d.mean, samples=d.samples, delta=d.delta, margin=d.margin)
