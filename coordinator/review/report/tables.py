"""Per-program statistics for the report: what each research direction cost and bought."""
from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

ACCEPTED = ("promote", "simplification", "merge")
COLUMNS = ("program", "experiments", "keeps", "promotions", "best_delta", "gpu_hours",
           "llm_cost_usd", "gpu_hours_per_accept", "cost_per_accept")


def record_status(r: dict) -> str:
    """ok|crash|timeout|invalid. Ledger rows keep it in `run_status` (their `status` is the
    original's TSV word: keep/discard/...); plain ExperimentRecord dumps keep it in `status`."""
    return r.get("run_status") or r.get("status") or "?"


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(v) else 0.0


def run_seconds(r: dict) -> float:
    """Accelerator time one record used: the runner's total when known, else training time."""
    return _num(r.get("total_seconds")) or _num(r.get("training_seconds"))


def program_table(rows: list[dict]) -> list[dict]:
    """One dict per program (COLUMNS keys), sorted by program, plus a final 'all' row.

    experiments: the agents' own ideas (kind experiment); keeps: those that beat their own
    parent (delta_parent > 0, + = better); promotions: those that moved best, each move once
    (a verification run is a sample, the move is its candidate's). GPU-hours count every run,
    jobs included.
    """
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r.get("program") or "?", []).append(r)
    table = [_stats(p, rs) for p, rs in sorted(by.items())]
    table.append(_stats("all", rows))
    return table


def _stats(program: str, rs: list[dict]) -> dict:
    exps = [r for r in rs if (r.get("kind") or "experiment") == "experiment"]
    keeps = [r for r in exps if record_status(r) == "ok"
             and _num(r.get("delta_parent", r.get("delta"))) > 0]
    acc = [r for r in rs if r.get("decision") in ACCEPTED and r.get("best_after")]
    acc = list({r["best_after"]: r for r in acc}.values())  # one per move
    deltas = [_num(r.get("delta_best", r.get("decision_delta"))) for r in acc
              if r.get("delta_best", r.get("decision_delta")) is not None]
    gpu_h = sum(run_seconds(r) for r in rs) / 3600.0
    cost = sum(_num(r.get("cost_usd")) for r in rs)
    return dict(program=program, experiments=len(exps), keeps=len(keeps), promotions=len(acc),
                best_delta=max(deltas) if deltas else None, gpu_hours=gpu_h, llm_cost_usd=cost,
                gpu_hours_per_accept=gpu_h / len(acc) if acc else None,
                cost_per_accept=cost / len(acc) if acc else None)


def noise_by_class(rows: list[dict]) -> dict[str, dict]:
    """hardware_class -> {'sigma', 'margin'}: the latest values the coordinator recorded."""
    out: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: _num(r.get("finished_at"))):
        hw = r.get("hardware_class") or "?"
        d = out.setdefault(hw, {"sigma": None, "margin": None, "dof": None})
        for k in ("sigma", "margin", "dof"):
            v = r.get(k)
            if isinstance(v, (int, float)) and not math.isnan(v):
                d[k] = float(v)
    return out


def status_counts(rows: list[dict]) -> dict[str, int]:
    """How many records ended in each status (ok, crash, timeout, invalid)."""
    out: dict[str, int] = {}
    for r in rows:
        s = record_status(r)
        out[s] = out.get(s, 0) + 1
    return out
