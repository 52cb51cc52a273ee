"""What a tracker logs for one ledger record (TrackedRun), built from its ledger row (the record
with its latest decision) and the research repo: params, metrics, tags and two text artifacts.

- params: every UPPER_CASE constant of the record's train.py (each program's search space is
  drawn from them, so one column means the same in every program's runs), and `program`;
- metrics: val_bpb, confirm_bpb, training_seconds, steps, tokens, and the decision's labelled
  deltas delta_best / delta_parent (+ = better), each only when known;
- tags: agent, program, hardware class, kind, decision and its reason, commit, parent, ...;
- artifacts: `train.py.diff` (against the record's parent) and `run.log.tail`.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

METRICS = ("val_bpb", "confirm_bpb", "training_seconds", "steps", "tokens", "delta_best", "delta_parent")
TAGS = ("experiment_id", "swarm_id", "kind", "agent", "program", "backend", "hardware_class",
        "decision", "decision_reason", "status", "run_status", "reason", "commit", "parent",
        "merge_commit", "suspect", "description")
FAILED = ("crash", "timeout", "invalid")
MAX_TAG_CHARS = 5000       # MLflow keeps at most 8,000 characters of a tag
MAX_PARAM_CHARS = 500      # a constant's value (MLflow keeps 6,000)
LOG_TAIL_LINES = 40


class TrackedRun(BaseModel):
    """One record as a tracker run. `digest()` changes exactly when something logged changes,
    so a follower that restarts, or a decision that changes nothing logged, costs no call."""
    model_config = ConfigDict(extra="forbid")

    experiment_id: str
    name: str
    failed: bool
    started_at: float
    finished_at: float
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    diff: str = ""
    log_tail: str = ""

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:20]


def constants_of(source: str, hardware_class: str) -> dict[str, str]:
    """Every module-level UPPER_CASE literal constant of a train.py, as text; a device switch
    (`A if CUDA else B`) gives the branch this hardware class runs."""
    from agents.backends.mutate import find_constants

    out = {}
    for name, c in find_constants(source).items():
        if c.cond is None:
            v = c.values[0]
        elif c.cond.strip() == "CUDA":
            v = c.values[0] if hardware_class.startswith("gpu") else c.values[1]
        else:
            v = c.render(c.values)   # a condition we cannot read: the expression itself
        out[name] = str(v)[:MAX_PARAM_CHARS]
    return out


def _tag(v) -> str | None:
    if v is None or v == "":
        return None
    return " ".join(str(v).split())[:MAX_TAG_CHARS]


def build_runs(rows: list[dict], repo_path: Path | None, swarm_home: Path | None,
               log_tails: dict[str, str] | None = None) -> list[TrackedRun]:
    """TrackedRuns for ledger rows (coordinator.state.ledger.ROW_COLUMNS). train.py texts come
    from one cat-file round trip and the diffs from one git process; `log_tails` (experiment id
    -> the record's own log tail) wins over SWARM_HOME/runs/<id>/run.log."""
    from coordinator.review.report.gitdata import GitDataError, log_tail, train_py_diffs
    from coordinator.state.repo import ResearchRepo

    log_tails = log_tails or {}
    texts: dict[str, str] = {}
    diffs: dict[tuple[str, str], str] = {}
    if repo_path is not None and (Path(repo_path) / "HEAD").exists():
        repo = ResearchRepo(Path(repo_path))
        try:
            commits = sorted({r["commit"] for r in rows if r.get("commit")})
            for c, (_, _, blob) in zip(commits, repo.commit_files(commits)):
                if blob is not None:
                    texts[c] = blob.decode("utf-8", "replace")
            pairs = sorted({(r["parent"], r["commit"]) for r in rows
                            if r.get("commit") and r.get("parent") and r["parent"] != r["commit"]})
            try:
                diffs = train_py_diffs(Path(repo_path), pairs)
            except GitDataError as e:
                log.warning("tracking: no diffs (%s)", e)
        finally:
            repo.close()
    out = []
    for r in rows:
        exp = r["experiment_id"]
        hw = r.get("hardware_class") or ""
        params = constants_of(texts[r["commit"]], hw) if r.get("commit") in texts else {}
        params["program"] = str(r.get("program") or "")
        metrics = {k: float(r[k]) for k in METRICS if r.get(k) is not None}
        tags = {k: t for k in TAGS if (t := _tag(r.get(k))) is not None}
        tail = log_tails.get(exp)
        if tail is None and swarm_home is not None:
            tail = log_tail(Path(swarm_home), r, LOG_TAIL_LINES)
        diff = diffs.get((r.get("parent"), r.get("commit")), "")
        label = " ".join(str(r.get("description") or r.get("kind") or "").split())[:80]
        out.append(TrackedRun(
            experiment_id=exp, name=f"{r.get('agent')}: {label}" if label else str(r.get("agent")),
            failed=r.get("run_status") in FAILED, started_at=float(r.get("started_at") or 0),
            finished_at=float(r.get("finished_at") or r.get("started_at") or 0),
            params=params, metrics=metrics, tags=tags, diff=diff,
            log_tail="\n".join((tail or "").splitlines()[-LOG_TAIL_LINES:])))
    return out
