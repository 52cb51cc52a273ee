"""Every figure a person reads about a swarm, computed once: counts, best per hardware class,
deltas, rates, keeps and moves. Pure functions over the ledger's rows (one per record with its
latest decision: state/ledger.py's row schema) and, when redis is there, the latest-best key the
coordinator publishes. The live view, `swarm status`, `swarm lineage`, `swarm report`,
`swarm export` and the trackers all call this module; none counts on its own.

The words, defined once:

- **record**: one entry of the ledger, for one started experiment or job, whatever happened.
- **experiment**: an agent's own idea (record kind `experiment`): trained, crashed, timed out,
  or an invalid edit (an idea too, but never trained).
- **job**: a run the coordinator asked for: `baseline` (the unchanged best: the first round's
  noise samples and each new best's re-measures), `confirm` (another seed of a result inside
  the margin), `verify` (a result merged onto best, trained to see that it still wins).
- **run**: a record that trained: every record but invalid edits (trained experiments + jobs).
- **move** (of best): a decision that set a hardware class's `best` to a new commit, counted
  once: `promote`, `simplification` or `merge` (a merge's verification run is a sample, not a
  second move). **keep**: the experiment whose decision made a move (the TSV's `keep`); one per
  move. **carried**: an experiment whose change reached best inside another one's merge.
- **delta**, always `+ = better` (lower val_bpb): `delta_best` is best's mean minus the
  candidate's at its decision; `delta_parent` the same against the record's parent. A step of
  best is shown with the delta of the decision that made it.
- **best's value**: the mean the coordinator compares new results with, and how many samples it
  rests on: what it publishes in the latest-best key (read by every agent); without redis, the
  value recorded by the last decision judged against that best. Other commits: the mean their
  own decision used, else the mean of their samples (contended runs left out).
- **rates**: per hour of running: from the first record's start to the last one's end, less the
  pauses (a stretch with no run going that is longer than PAUSE_S and three of the longest runs:
  the swarm was stopped and resumed later; a night between two `swarm run`s used to halve a
  resumed swarm's experiments per hour).
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterable

from pydantic import BaseModel, Field

from agents.messages import ALREADY_TRIED

log = logging.getLogger(__name__)

MOVES = ("promote", "simplification", "merge")
JOB_KINDS = ("baseline", "confirm", "verify")
# An experiment's decision, in the words every view uses.
OUTCOMES = {"promote": "kept", "simplification": "kept", "merge": "merged", "carried": "carried",
            "pending": "pending", "discard": "discarded", "did-not-stack": "discarded",
            "conflict": "discarded", "unjudged": "unjudged", "crash": "failed", "timeout": "failed",
            "invalid": "invalid", "rejected": "rejected", "sample": "sample"}
OUTCOME_ORDER = ("kept", "merged", "carried", "pending", "discarded", "unjudged", "failed", "invalid",
                 "rejected", "undecided")
MIN_RATE_SPAN_S = 60.0   # below a minute, a rate per hour says nothing
# A stretch with no run going that is longer than this (and than PAUSE_RUNS of the longest runs)
# is a pause: the swarm was stopped and resumed (`swarm run` again), not running. While a swarm
# runs, some agent is always in a run: a record's start is taken before its proposal, and a
# spent agent runs the coordinator's jobs. Only a swarm whose every agent waits that long (for
# a backend that is down, or, spent, for best to move with no job to run) has such a stretch
# while running: no run going, it is left out of the rates too.
PAUSE_S = 1800.0
PAUSE_RUNS = 3


# --- one record ------------------------------------------------------------------------------
def kind(r: dict) -> str:
    return r.get("kind") or "experiment"


def record_status(r: dict) -> str:
    """ok|crash|timeout|invalid. Ledger rows keep it in `run_status` (their `status` is the
    original's TSV word: keep/discard/...); plain ExperimentRecord dumps keep it in `status`."""
    return r.get("run_status") or r.get("status") or "?"


def is_experiment(r: dict) -> bool:
    return kind(r) == "experiment"


def contended_out(r: dict) -> bool:
    """An experiment `promotion.contended_remeasures` left unjudged: its runs (or its
    verification's) stayed contended. decide/judging.py words every such decision
    "never judged: ... contended"."""
    reason = r.get("decision_reason") or ""
    return (is_experiment(r) and r.get("decision") == "unjudged" and reason.startswith("never judged:")
            and "contended" in reason)


def trained(r: dict) -> bool:
    return record_status(r) != "invalid"


def already_tried(r: dict) -> bool:
    """An invalid edit refused because another run trained (or was training) the same train.py
    (coordinator/decide/tried.py): the agent's next proposal replaced it at once."""
    return record_status(r) == "invalid" and (r.get("reason") or "").startswith(ALREADY_TRIED)


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return None if math.isnan(v) or math.isinf(v) else float(v)


def is_sample(r: dict) -> bool:
    """A val_bpb sample the coordinator counted (ok, scored, not rejected, not contended)."""
    return (record_status(r) == "ok" and _num(r.get("val_bpb")) is not None
            and r.get("decision") != "rejected" and not r.get("contended"))


def outcome(r: dict) -> str:
    """What became of a record, in one word (OUTCOMES); `undecided` before its decision."""
    d = r.get("decision")
    if d is None:
        return "invalid" if record_status(r) == "invalid" else "undecided"
    return OUTCOMES.get(d, d)


def delta_best(r: dict) -> float | None:
    v = r.get("delta_best")
    return _num(v if v is not None else r.get("decision_delta"))


def compared_best(r: dict) -> tuple[float, int] | None:
    """Best as this decision compared a result with it: (best_before's mean, its samples). The
    decision's `best_mean`; in a ledger from before decisions recorded it, mean + delta of a
    decision that left best where it was (a move's `mean` is the new best's own). None when the
    decision compared nothing with best."""
    n = int(r.get("samples_best") or 0)
    if not r.get("best_before") or n <= 0:
        return None
    bm = _num(r.get("best_mean"))
    if bm is not None:
        return bm, n
    m, d, a = _num(r.get("mean")), delta_best(r), r.get("best_after")
    if (a and a != r["best_before"]) or m is None or d is None:
        return None
    return m + d, n


def delta_parent(r: dict) -> float | None:
    return _num(r.get("delta_parent"))


# --- the models every view shows ---------------------------------------------------------------
class Counts(BaseModel):
    """How many of each (the module docstring defines the words)."""

    records: int = 0
    experiments: int = 0
    trained_experiments: int = 0
    jobs: int = 0
    jobs_by_kind: dict[str, int] = Field(default_factory=dict)
    runs: int = 0
    outcomes: dict[str, int] = Field(default_factory=dict, description="experiments by outcome")
    keeps: int = 0
    contended: int = 0


class Step(BaseModel):
    """One move of best: what changed, by how much, verified how."""

    hardware_class: str
    n: int                                  # 1 for the first move of this class
    commit: str                             # best after the move
    before: str | None = None               # best before it
    candidate: str | None = None            # the experiment's own commit
    experiment_id: str | None = None
    decision: str
    delta: float | None = None              # best before minus the new best, + = better
    margin: float | None = None
    sigma: float | None = None
    samples: int = 0                        # samples of the new best behind the decision
    samples_best: int = 0                   # samples of the old best behind it
    suspect: bool = False
    contended: bool = False
    agent: str | None = None
    program: str | None = None
    description: str = ""
    lines_added: int = 0
    lines_removed: int = 0
    decided_at: float | None = None
    verified: str = ""


class Best(BaseModel):
    """One hardware class's best, its value as the coordinator uses it, and how it got there."""

    hardware_class: str
    commit: str | None = None
    val_bpb: float | None = None
    samples: int = 0
    source: str = ""                        # published | last decision | samples
    baseline: str | None = None             # the commit the class started from
    baseline_val_bpb: float | None = None
    baseline_samples: int = 0
    gain: float | None = None               # baseline value minus best's, + = better
    moves: int = 0
    steps: list[Step] = Field(default_factory=list)
    sigma: float | None = None
    dof: int | None = None
    margin: float | None = None             # the margin of the class's last judged decision


class Rates(BaseModel):
    start: float | None = None
    end: float | None = None
    hours: float = 0.0                      # of running: start to end less the pauses
    span_hours: float = 0.0                 # start to end
    pauses: int = 0                         # stretches with no run going left out (stop, resume)
    experiments_per_hour: float | None = None
    runs_per_hour: float | None = None


class Figures(BaseModel):
    """Everything above for one swarm, JSON-able (`swarm status --json` prints it)."""

    counts: Counts = Field(default_factory=Counts)
    best: dict[str, Best] = Field(default_factory=dict)
    best_moves: int = 0
    rates: Rates = Field(default_factory=Rates)
    suspect: list[str] = Field(default_factory=list, description="experiments whose move is suspect")
    contended: list[str] = Field(default_factory=list, description="records of contended runs")


# --- counts and rates ---------------------------------------------------------------------------
def counts(rows: list[dict]) -> Counts:
    c = Counts(records=len(rows))
    for r in rows:
        if r.get("contended"):
            c.contended += 1
        if is_experiment(r):
            c.experiments += 1
            c.trained_experiments += trained(r)
            o = outcome(r)
            c.outcomes[o] = c.outcomes.get(o, 0) + 1
            c.keeps += r.get("decision") in MOVES and bool(r.get("best_after"))
        else:
            c.jobs += 1
            c.jobs_by_kind[kind(r)] = c.jobs_by_kind.get(kind(r), 0) + 1
        c.runs += trained(r)
    c.outcomes = {k: c.outcomes[k] for k in (*OUTCOME_ORDER, *sorted(c.outcomes)) if k in c.outcomes}
    return c


def rates(rows: list[dict], cts: Counts | None = None) -> Rates:
    """Per hour of running: from the first record's start to the last one's end, less the pauses
    (see PAUSE_S)."""
    cts = cts or counts(rows)
    times = [(_num(r.get("started_at")), _num(r.get("finished_at"))) for r in rows]
    starts = [a for a, _ in times if a is not None]
    ends = [b for _, b in times if b is not None]
    if not starts or not ends:
        return Rates()
    start, end = min(starts), max(ends)
    span = max(end - start, 0.0)
    paused, pauses = _pauses(sorted((a, b) for a, b in times if a is not None and b is not None and b >= a))
    running = max(span - paused, 0.0)
    out = Rates(start=start, end=end, hours=running / 3600.0, span_hours=span / 3600.0, pauses=pauses)
    if running >= MIN_RATE_SPAN_S:
        out.experiments_per_hour = cts.experiments / out.hours
        out.runs_per_hour = cts.runs / out.hours
    return out


def _pauses(spans: list[tuple[float, float]]) -> tuple[float, int]:
    """Seconds and count of the pauses: the gaps between the records' [start, end] spans (sorted),
    merged, longer than PAUSE_S and PAUSE_RUNS of the longest record."""
    if not spans:
        return 0.0, 0
    gap_min = max(PAUSE_S, PAUSE_RUNS * max(b - a for a, b in spans))
    paused, pauses, reach = 0.0, 0, spans[0][1]
    for a, b in spans[1:]:
        if a - reach > gap_min:
            paused, pauses = paused + (a - reach), pauses + 1
        reach = max(reach, b)
    return paused, pauses


# --- samples, values and moves ------------------------------------------------------------------
def samples_of(rows: Iterable[dict], hw: str, commit: str | None) -> list[float]:
    """val_bpb samples of `commit` in class `hw` (ok, counted, not contended), in ledger order."""
    return [float(r["val_bpb"]) for r in rows if commit and r.get("commit") == commit
            and (r.get("hardware_class") or "") == hw and is_sample(r)]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def by_decided(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: _num(r.get("decided_at")) or _num(r.get("finished_at")) or 0.0)


def plural(k: int, word: str) -> str:
    """`1 sample`, `3 samples`: a count in words, as every view writes it."""
    return f"{k} {word}{'s' if k != 1 else ''}"


def _verified(r: dict) -> str:
    """How a move was verified, in words: with the two means it compared (best's, and the
    candidate's runs' = best's less the delta) where the decision recorded best's."""
    d, n, nb = r.get("decision"), int(r.get("samples") or 0), int(r.get("samples_best") or 0)
    m, cb, delta = _num(r.get("margin")), compared_best(r), delta_best(r)
    best = f"best ({plural(nb, 'sample')})" if nb else "best"
    own = ""
    if cb is not None:   # a move's record says best's mean only as best_mean
        best = f"best {cb[0]:.4f} ({plural(nb, 'sample')})"
        own = f" ({cb[0] - delta:.4f})" if delta is not None else ""
    by = f" by more than the margin {m:.4f}" if m is not None else ""
    if d == "merge":
        if r.get("merge_commit") and r.get("merge_commit") != r.get("commit"):
            return f"merged onto best; {plural(n, 'verification run')} of the merged commit{own} beat {best}{by}"
        return f"its own train.py put onto best; {plural(n, 'run')} of it{own} beat {best}{by}"
    if d == "simplification":
        return f"removes lines and stays within the noise of {best}: {plural(n, 'run')}{own}"
    return f"{plural(n, 'run')} of its own{own} beat {best}{by}"


def steps(rows: list[dict], hw: str | None = None) -> list[Step]:
    """Every move of best (of class `hw`, or all), each once, in the order they were decided."""
    seen: set[tuple[str, str]] = set()
    out: list[Step] = []
    count: dict[str, int] = {}
    for r in by_decided(rows):
        c, h = r.get("best_after"), r.get("hardware_class") or ""
        if not c or (hw is not None and h != hw) or (h, c) in seen:
            continue
        seen.add((h, c))
        count[h] = count.get(h, 0) + 1
        out.append(Step(
            hardware_class=h, n=count[h], commit=c, before=r.get("best_before"),
            candidate=r.get("commit"), experiment_id=r.get("experiment_id"),
            decision=r.get("decision") or "?", delta=delta_best(r), margin=_num(r.get("margin")),
            sigma=_num(r.get("sigma")), samples=int(r.get("samples") or 0),
            samples_best=int(r.get("samples_best") or 0), suspect=bool(r.get("suspect")),
            contended=bool(r.get("contended")), agent=r.get("agent"), program=r.get("program"),
            description=(r.get("description") or "").splitlines()[0] if r.get("description") else "",
            lines_added=int(r.get("lines_added") or 0), lines_removed=int(r.get("lines_removed") or 0),
            decided_at=_num(r.get("decided_at")), verified=_verified(r)))
    return out


def classes(rows: list[dict]) -> list[str]:
    return sorted({r.get("hardware_class") or "" for r in rows if r.get("hardware_class")})


def _root(rows: list[dict], hw: str, st: list[Step]) -> str | None:
    if st and st[0].before:
        return st[0].before
    for r in rows:  # the first baseline run of the class trained the commit it started from
        if (r.get("hardware_class") or "") == hw and kind(r) == "baseline" and r.get("commit"):
            return r["commit"]
    return None


class Index:
    """What the decisions recorded about each commit as best, read in one pass over the rows
    in decision order (the views ask it once per commit)."""

    def __init__(self, rows: list[dict]):
        self.rows = by_decided(rows)
        self.as_best: dict[tuple[str, str], tuple[float, int]] = {}
        self.moved_to: dict[tuple[str, str], tuple[float, int]] = {}
        for r in self.rows:
            hw = r.get("hardware_class") or ""
            b, a = r.get("best_before"), r.get("best_after")
            m = _num(r.get("mean"))
            # Best as the decision with the most of its samples compared it (the latest of those):
            # a `carried` decision, written when best moves, repeats its pending one's older figures.
            v = compared_best(r)
            if v is not None and v[1] >= self.as_best.get((hw, b), (0.0, 0))[1]:
                self.as_best[(hw, b)] = v
            if a and m is not None and r.get("samples"):
                self.moved_to[(hw, a)] = (m, int(r["samples"]))

    def value_at_decisions(self, hw: str, commit: str | None) -> tuple[float, int] | None:
        """`commit`'s value as the last decision that compared a result with it (as best)
        recorded: (mean, samples); None when no decision did."""
        return self.as_best.get((hw, commit or ""))

    def move_value(self, hw: str, commit: str | None) -> tuple[float, int] | None:
        """The new best's own mean as the decision that moved best to it recorded."""
        return self.moved_to.get((hw, commit or ""))


def best_value(rows: list[dict], hw: str, commit: str | None, published: dict | None = None,
               index: Index | None = None) -> tuple[float | None, int, str]:
    """(value, samples, source) of best `commit` of class `hw` (module docstring)."""
    if commit is None:
        return None, 0, ""
    if published and published.get("commit") == commit and _num(published.get("val_bpb")) is not None:
        n = published.get("samples")
        if not n:
            n = len(samples_of(rows, hw, commit))
        return float(published["val_bpb"]), int(n), "published"
    ix = index or Index(rows)
    v = ix.value_at_decisions(hw, commit) or ix.move_value(hw, commit)
    if v is not None:
        return v[0], v[1], "last decision"
    xs = samples_of(rows, hw, commit)
    return _mean(xs), len(xs), "samples"


def noise(rows: list[dict], hw: str) -> tuple[float | None, int | None, float | None]:
    """(sigma, dof, margin): the latest the coordinator recorded in the class; the margin is
    that of its last judged decision (a margin depends on the candidate's samples and lines)."""
    sigma = dof = margin = None
    for r in by_decided(rows):
        if (r.get("hardware_class") or "") != hw:
            continue
        if _num(r.get("sigma")) is not None:
            sigma, dof = _num(r.get("sigma")), r.get("dof")
        if _num(r.get("margin")) is not None:
            margin = _num(r.get("margin"))
    return sigma, (int(dof) if _num(dof) is not None else None), margin


def best_of_class(rows: list[dict], hw: str, published: dict | None = None,
                  index: Index | None = None) -> Best:
    cls = [r for r in rows if (r.get("hardware_class") or "") == hw]
    ix = index or Index(cls)
    st = steps(cls, hw)
    root = _root(cls, hw, st)
    commit = st[-1].commit if st else root
    if commit is None and published:
        commit = published.get("commit")
    v, n, src = best_value(cls, hw, commit, published, ix)
    if st:
        # (the first move's own record cannot say it: see Index)
        base_v, base_n = ix.value_at_decisions(hw, root) or (None, 0)
    else:
        base_v, base_n = v, n
    if base_v is None and root:
        xs = samples_of(cls, hw, root)
        base_v, base_n = _mean(xs), len(xs)
    sigma, dof, margin = noise(ix.rows, hw)
    return Best(hardware_class=hw, commit=commit, val_bpb=v, samples=n, source=src, baseline=root,
                baseline_val_bpb=base_v, baseline_samples=base_n,
                gain=(base_v - v) if base_v is not None and v is not None else None,
                moves=len(st), steps=st, sigma=sigma, dof=dof, margin=margin)


def compute(rows: list[dict], published: dict[str, dict] | None = None) -> Figures:
    """All figures of a swarm. `published`: hardware class -> the latest-best key's value
    ({'commit', 'val_bpb', 'samples'}), when redis is there."""
    published = published or {}
    cts = counts(rows)
    ix = Index(rows)
    best = {hw: best_of_class(rows, hw, published.get(hw), ix)
            for hw in sorted(set(classes(rows)) | set(published))}
    suspect = [s.experiment_id for b in best.values() for s in b.steps if s.suspect and s.experiment_id]
    return Figures(counts=cts, best=best, best_moves=sum(b.moves for b in best.values()),
                   rates=rates(rows, cts), suspect=suspect,
                   contended=[r.get("experiment_id") for r in rows if r.get("contended")])


# --- per commit (lineage, report, export) -------------------------------------------------------
class CommitValue(BaseModel):
    val_bpb: float | None = None
    samples: int = 0
    source: str = ""


def commit_values(rows: list[dict], fig: Figures, index: Index | None = None) -> dict[tuple[str, str], CommitValue]:
    """(hardware class, commit) -> the value decisions used for it: best's value for a class's
    best; for a former best, its value at the last decision against it; else the mean its own
    latest decision recorded; else the mean of its samples."""
    ix = index or Index(rows)
    out: dict[tuple[str, str], CommitValue] = {}
    by: dict[tuple[str, str], list[dict]] = {}
    for r in ix.rows:  # decision order: each commit's rows in it
        if r.get("commit"):
            by.setdefault((r.get("hardware_class") or "", r["commit"]), []).append(r)
    former = {(s.hardware_class, s.before) for b in fig.best.values() for s in b.steps if s.before}
    former |= {(s.hardware_class, s.commit) for b in fig.best.values() for s in b.steps}
    for (hw, c), rs in by.items():
        b = fig.best.get(hw)
        if b is not None and b.commit == c:
            out[(hw, c)] = CommitValue(val_bpb=b.val_bpb, samples=b.samples, source=b.source)
            continue
        if (hw, c) in former:
            v = ix.value_at_decisions(hw, c) or ix.move_value(hw, c)
            if v is not None:
                out[(hw, c)] = CommitValue(val_bpb=v[0], samples=v[1], source="last decision")
                continue
        own = [r for r in rs if _num(r.get("mean")) is not None]
        if own:
            # a discard records best's samples, not the candidate's: count its runs then
            n = int(own[-1].get("samples") or 0) or sum(1 for r in rs if record_status(r) == "ok"
                                                         and _num(r.get("val_bpb")) is not None)
            out[(hw, c)] = CommitValue(val_bpb=_num(own[-1]["mean"]), samples=max(n, 1),
                                       source="its decision")
            continue
        xs = [float(r["val_bpb"]) for r in rs if is_sample(r)]
        out[(hw, c)] = CommitValue(val_bpb=_mean(xs), samples=len(xs), source="samples" if xs else "")
    return out


def step_index(fig: Figures) -> dict[str, Step]:
    """Commit -> the step that made it best (a merge commit for a merge: its candidate's own
    commit is not a step)."""
    out: dict[str, Step] = {}
    for b in fig.best.values():
        for s in b.steps:
            out[s.commit] = s
    return out


def export_columns(rows: list[dict], fig: Figures,
                   on_best: Callable[[str | None], bool] = lambda c: False) -> list[dict]:
    """The derived columns `swarm export` appends to each row, in row order: `outcome`,
    `on_best`, `best_step` (n of the move this record's decision made), `commit_val_bpb` and
    `commit_samples` (the value decisions use for the record's commit)."""
    vals = commit_values(rows, fig)
    step_of = {s.experiment_id: s.n for b in fig.best.values() for s in b.steps}
    out = []
    for r in rows:
        cv = vals.get((r.get("hardware_class") or "", r.get("commit") or ""))
        out.append({"outcome": outcome(r), "on_best": bool(r.get("commit")) and on_best(r.get("commit")),
                    "best_step": step_of.get(r.get("experiment_id")),
                    "commit_val_bpb": cv.val_bpb if cv else None,
                    "commit_samples": cv.samples if cv else None})
    return out


