"""The lost-winner audit: every result that beat best by more than the margin and is not on
best, with why. In a healthy swarm the list holds only pending work (a verification or
confirmation in flight), results that were verified and did not stack, and results whose change
reached best by another path (carried) (DESIGN.md, invariant 8).
"""
from __future__ import annotations

from typing import Iterable

from agents.messages import Decision, ExperimentRecord

# Recorded reasons for a winner that is not on best.
REASONS = {"pending": "pending", "did-not-stack": "did-not-stack",
           "carried": "its change is in best"}


def lost_winner_rows(records: Iterable[tuple[ExperimentRecord, Decision | None]], on_best) -> list[dict]:
    """Rows for the winners not on best. `on_best(record) -> bool`. A row's `why` is a
    recorded reason, or "LOST" when there is none (a defect: invariant 8)."""
    rows = []
    for rec, d in records:
        if rec.kind != "experiment" or rec.status != "ok" or d is None or not d.beat_best:
            continue
        if d.best_after is not None or on_best(rec):
            continue
        rows.append({"experiment_id": rec.experiment_id, "agent": rec.agent,
                     "description": rec.description, "delta": d.delta, "margin": d.margin,
                     "decision": d.decision, "why": REASONS.get(d.decision, "LOST"),
                     "reason": d.reason})
    return rows


def lost_winners_from_rows(rows: list[dict], on_best) -> list[dict]:
    """The same audit over ledger rows (one per record with its latest decision), for
    `swarm status` and the report. `on_best(commit) -> bool`."""
    out = []
    for r in rows:
        if (r.get("kind") or "experiment") != "experiment" or r.get("run_status") != "ok":
            continue
        if not r.get("beat_best") or r.get("best_after") or on_best(r.get("commit")):
            continue
        out.append({"experiment_id": r.get("experiment_id"), "agent": r.get("agent"),
                    "description": r.get("description"), "delta": r.get("delta_best"),
                    "margin": r.get("margin"), "decision": r.get("decision"),
                    "why": REASONS.get(r.get("decision"), "LOST"), "reason": r.get("decision_reason")})
    return out


def lost_winners(coord, hw: str) -> list[dict]:
    """The audit over a live Coordinator's state for one hardware class (call under no lock:
    it takes the coordinator's)."""
    with coord._lock:
        best = coord._best_commit(hw)
        reachable = set(coord.repo.git("rev-list", best).split())
        blobs = {coord.commits.blob(c) for c in coord.repo.first_parent_history(best)}
        pairs = [(coord.records[i], coord.decisions.get(i)) for i in coord.order.get(hw, [])]

        def on_best(rec: ExperimentRecord) -> bool:
            return rec.commit in reachable or (coord.commits.has(rec.commit)
                                               and coord.commits.blob(rec.commit) in blobs)

        return lost_winner_rows(pairs, on_best)
