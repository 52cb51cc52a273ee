"""Per-program statistics for the report: what each research direction cost and bought.

Counts and deltas come from coordinator/state/figures.py (the words are defined there)."""
from __future__ import annotations

import logging
import math

from coordinator.state import figures

log = logging.getLogger(__name__)

COLUMNS = ("program", "experiments", "runs", "keeps", "merged", "carried", "pending", "discarded", "unjudged",
           "failed", "invalid", "largest_step", "gpu_hours", "llm_cost_usd", "gpu_hours_per_keep",
           "cost_per_keep")


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(v) else 0.0


def run_seconds(r: dict) -> float:
    """Accelerator time one record used: the runner's total when known, else training time."""
    return _num(r.get("total_seconds")) or _num(r.get("training_seconds"))


def program_table(rows: list[dict], fig: figures.Figures | None = None) -> list[dict]:
    """One dict per program (COLUMNS keys), sorted by program, plus a final 'all' row.

    experiments and runs as figures.counts defines them; keeps: the experiments whose decision
    moved best (promote, simplification or merge: one per move; `merged` counts the merges
    among them); carried / pending / discarded / unjudged / failed / invalid: the other outcomes of
    experiments; largest_step: the largest delta (+ = better) of the moves this program's
    experiments made. Device-hours count every run, jobs included.
    """
    fig = fig or figures.compute(rows)
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r.get("program") or "?", []).append(r)
    steps = [s for b in fig.best.values() for s in b.steps]
    table = [_stats(p, rs, [s for s in steps if (s.program or "?") == p]) for p, rs in sorted(by.items())]
    table.append(_stats("all", rows, steps))
    return table


def _stats(program: str, rs: list[dict], steps: list) -> dict:
    c = figures.counts(rs)
    o = c.outcomes
    deltas = [s.delta for s in steps if s.delta is not None]
    gpu_h = sum(run_seconds(r) for r in rs) / 3600.0
    cost = sum(_num(r.get("cost_usd")) for r in rs)
    return dict(program=program, experiments=c.experiments, runs=c.runs, keeps=c.keeps,
                merged=o.get("merged", 0), carried=o.get("carried", 0), pending=o.get("pending", 0),
                discarded=o.get("discarded", 0), unjudged=o.get("unjudged", 0), failed=o.get("failed", 0),
                invalid=o.get("invalid", 0),
                largest_step=max(deltas) if deltas else None, gpu_hours=gpu_h, llm_cost_usd=cost,
                gpu_hours_per_keep=gpu_h / c.keeps if c.keeps else None,
                cost_per_keep=cost / c.keeps if c.keeps else None)
