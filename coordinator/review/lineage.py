"""The lineage graph: a networkx DiGraph of commits built from ledger rows and git.

Nodes are commits (key: sha) carrying their record and decision; edges run parent -> child with
`first_parent` True for a commit's first parent (merge commits on best have two parents).
Invalid records have no commit: they stay out of the graph and are counted on their parent
node as `invalid_children`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx

from coordinator.state.repo import ResearchRepo

# Which row speaks for a commit that several runs measured (its own experiment first).
_KIND_RANK = {"experiment": 0, "verify": 1, "confirm": 2, "baseline": 3}


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def build_lineage(rows: list[dict], repo_path: Path) -> nx.DiGraph:
    """Commits with their records (rows from Ledger.rows or read_parquet_rows) and git parents."""
    repo = ResearchRepo(Path(repo_path))
    root = repo.root()
    by_commit: dict[str, list[dict]] = {}
    invalid: dict[str, int] = {}
    for r in rows:
        c = r.get("commit")
        if not c:
            invalid[r.get("parent") or ""] = invalid.get(r.get("parent") or "", 0) + 1
        elif repo.has_commit(c):
            by_commit.setdefault(c, []).append(r)
    best_refs = list(repo.refs("refs/heads/best/").values())
    on_best = set(repo.git("rev-list", *best_refs).split()) if best_refs else set()

    # The decision that put a commit on best (a merge commit's record is its verification run,
    # a sample: the move belongs to the candidate's decision, counted once).
    moved = {r["best_after"]: r for r in rows if r.get("best_after")}
    G = nx.DiGraph()
    for c in [root, *by_commit]:
        rs = by_commit.get(c, [])
        main = min(rs, key=lambda r: _KIND_RANK.get(r.get("kind"), 9)) if rs else {}
        # Invariant 5: a node's score pools only runs of its main record's hardware class (the
        # root is run by every class; each class's figure is in val_bpb_by_class).
        by_class: dict[str, list[float]] = {}
        for r in rs:
            if r.get("run_status") == "ok" and r.get("val_bpb") is not None:
                by_class.setdefault(r.get("hardware_class") or "", []).append(r["val_bpb"])
        vals = by_class.get(main.get("hardware_class") or "", [])
        parents = repo.parents(c)
        G.add_node(c, **{k: _clean(v) for k, v in {
            "val_bpb": sum(vals) / len(vals) if vals else None, "samples": len(vals),
            "status": "keep" if c in moved else main.get("status", "baseline" if c == root else "unrecorded"),
            "decision": moved[c].get("decision") if c in moved else main.get("decision"), "agent": main.get("agent"),
            "program": main.get("program"), "hardware_class": main.get("hardware_class"),
            "description": main.get("description", "baseline" if c == root else ""),
            "experiment_id": main.get("experiment_id"), "kind": main.get("kind", "baseline"),
            "delta": main.get("decision_delta"), "suspect": bool(main.get("suspect")),
            "simplification": main.get("decision") == "simplification",
            "is_merge": len(parents) > 1, "on_best": c in on_best,
            "started_at": main.get("started_at"), "finished_at": main.get("finished_at"),
            "lines_added": main.get("lines_added", 0), "lines_removed": main.get("lines_removed", 0),
            "invalid_children": invalid.get(c, 0),
            "val_bpb_by_class": json.dumps({k: sum(v) / len(v) for k, v in sorted(by_class.items())}),
        }.items()})
    todo = list(G.nodes)
    while todo:
        c = todo.pop()
        for i, p in enumerate(repo.parents(c)):
            if p not in G:
                # A commit no record names (an agent's own kept step): keep the chain connected
                # all the way up, so every node reaches the root.
                G.add_node(p, status="unrecorded", on_best=p in on_best, is_merge=False,
                           val_bpb=None, samples=0, simplification=False, suspect=False)
                todo.append(p)
            G.add_edge(p, c, first_parent=(i == 0))
    return G

