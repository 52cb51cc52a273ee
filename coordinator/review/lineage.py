"""The lineage graph: a networkx DiGraph of commits built from ledger rows and git.

Nodes are commits (key: sha) carrying their record, decision and figures; edges run parent ->
child with `first_parent` True for a commit's first parent (merge commits on best have two
parents). Invalid records have no commit: they stay out of the graph and are counted on their
parent node as `invalid_children`. Every value, delta and count comes from
coordinator/state/figures.py, so the tree, the exports and the report show what status shows.

Node attributes: `val_bpb` and `samples` (the value decisions use for the commit, in its own
hardware class), `delta` (+ = better: for a step of best, the delta of the decision that made it;
else the record's delta against best at its decision), `delta_parent`, `outcome` (baseline,
kept, merged, carried, pending, discarded, unjudged, failed, sample, unrecorded), `decision` (the
decision word), `step` (n of the move that made it best), `generation` (an integer: the
longest path from the root), `on_best` (an ancestor of a best ref), `best_path` (on a best
ref's first-parent chain), `suspect`, `contended`, `is_merge`, `agent` / `program` /
`description` (who made the change: a merge commit is credited to the result it merged; the
root to nobody), `ran_by` (the agent that trained the node's main record).
Graph attributes: `best` (hardware class -> tip), `summary` (counts and best per class).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx

from coordinator.state import figures
from coordinator.state.repo import ResearchRepo

# Which row speaks for a commit that several runs measured (its own experiment first).
_KIND_RANK = {"experiment": 0, "verify": 1, "confirm": 2, "baseline": 3}


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def summary(fig: figures.Figures) -> dict:
    """What a graph export carries about the swarm as a whole (graph attribute `summary`)."""
    c = fig.counts
    return {"experiments": c.experiments, "runs": c.runs, "jobs": c.jobs, "records": c.records,
            "best_moves": fig.best_moves,
            "best": {hw: {"commit": b.commit, "val_bpb": b.val_bpb, "samples": b.samples,
                          "moves": b.moves} for hw, b in fig.best.items()}}


def _outcome(c: str, root: str, main: dict, step, merged_by: dict, is_merge: bool) -> str:
    if c == root:
        return "baseline"
    if step is not None:
        return "merged" if step.decision == "merge" else "kept"
    cand = merged_by.get(c)
    if cand is not None:  # a merge commit the coordinator built for a result
        o = figures.outcome(cand)
        return {"kept": "merged"}.get(o, o)
    o = figures.outcome(main) if main else "unrecorded"
    # a merge commit only verification runs name: no decision holds it any more (merged
    # again onto a newer best, or a pool that did not stack)
    return "discarded" if o == "sample" and is_merge else o


def build_lineage(rows: list[dict], repo_path: Path, fig: figures.Figures | None = None) -> nx.DiGraph:
    """Commits with their records (rows from Ledger.rows or read_parquet_rows) and git parents.
    `fig`: figures.compute over the same rows (and the published best); computed when None."""
    fig = fig or figures.compute(rows)
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
    tips = repo.refs("refs/heads/best/")
    tips = {name.removeprefix("refs/heads/best/"): sha for name, sha in tips.items()}
    on_best = set(repo.git("rev-list", *tips.values()).split()) if tips else set()
    path = set(repo.git("rev-list", "--first-parent", *tips.values()).split()) if tips else set()
    steps = figures.step_index(fig)
    values = figures.commit_values(rows, fig)
    # A merge commit is the coordinator's, made for one result: credit that result.
    merged_by = {r["merge_commit"]: r for r in figures.by_decided(rows)
                 if r.get("merge_commit") and r.get("merge_commit") != r.get("commit")}

    G = nx.DiGraph(best=tips, summary=summary(fig))
    for c in [root, *by_commit]:
        rs = by_commit.get(c, [])
        main = min(rs, key=lambda r: _KIND_RANK.get(r.get("kind"), 9)) if rs else {}
        hw = main.get("hardware_class") or ""
        step = steps.get(c)
        cand = merged_by.get(c)
        credit = cand if cand is not None else ({} if c == root else main)
        # Invariant 5: a node's value is its own class's (the root is run by every class;
        # each class's figure is in val_bpb_by_class).
        by_class = {h: v for (h, x), v in values.items() if x == c}
        v = by_class.get(hw) or figures.CommitValue()
        parents = repo.parents(c)
        dec_row = next((r for r in rs if r.get("best_after") == c), None) or cand or main
        delta = step.delta if step is not None else figures.delta_best(dec_row) if dec_row else None
        G.add_node(c, **{k: _clean(x) for k, x in {
            "val_bpb": v.val_bpb, "samples": v.samples, "value_source": v.source,
            "status": "keep" if step is not None else main.get("status", "baseline" if c == root else "unrecorded"),
            "decision": (step.decision if step is not None else (cand or main).get("decision")),
            "outcome": _outcome(c, root, main, step, merged_by, len(parents) > 1),
            "step": step.n if step else None,
            "agent": credit.get("agent"), "program": credit.get("program") or ("baseline" if c == root else None),
            "ran_by": main.get("agent"), "hardware_class": main.get("hardware_class"),
            "description": credit.get("description", "baseline" if c == root else ""),
            "experiment_id": (dec_row or {}).get("experiment_id"), "kind": main.get("kind", "baseline"),
            "delta": delta, "delta_parent": figures.delta_parent(main) if main else None,
            "decision_samples": (dec_row or {}).get("samples"),
            "decision_samples_best": (dec_row or {}).get("samples_best"),
            "suspect": bool(step.suspect if step is not None else (dec_row or {}).get("suspect")),
            "contended": any(bool(r.get("contended")) for r in rs),
            "simplification": (step.decision if step else main.get("decision")) == "simplification",
            "is_merge": len(parents) > 1, "on_best": c in on_best, "best_path": c in path,
            "started_at": main.get("started_at"), "finished_at": main.get("finished_at"),
            "lines_added": credit.get("lines_added", 0), "lines_removed": credit.get("lines_removed", 0),
            "invalid_children": invalid.get(c, 0),
            "val_bpb_by_class": json.dumps({h: x.val_bpb for h, x in sorted(by_class.items())}),
        }.items()})
    todo = list(G.nodes)
    while todo:
        c = todo.pop()
        for i, p in enumerate(repo.parents(c)):
            if p not in G:
                # A commit no record names (an agent's own kept step): keep the chain connected
                # all the way up, so every node reaches the root.
                G.add_node(p, status="unrecorded", outcome="unrecorded", on_best=p in on_best,
                           best_path=p in path, is_merge=False, val_bpb=None, samples=0,
                           simplification=False, suspect=False, contended=False)
                todo.append(p)
            G.add_edge(p, c, first_parent=(i == 0))
    for n in nx.topological_sort(G):
        G.nodes[n]["generation"] = max((G.nodes[p]["generation"] + 1 for p in G.predecessors(n)), default=0)
    return G


def best_subgraph(G: nx.DiGraph) -> nx.DiGraph:
    """The commits on best (every ancestor of a best ref, merged-in parents too): what `swarm
    lineage` shows without --all."""
    return G.subgraph([n for n, a in G.nodes(data=True) if a.get("on_best")]).copy()
