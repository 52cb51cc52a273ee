"""The swarm's wire types: every part of the swarm imports these, none re-declares them.

An agent wraps the runner's ExperimentResult (trainer.schema, the apparatus) in an
ExperimentRecord and reports it; the coordinator answers with a ReportReply (a Decision plus
what the agent would ask next), hands out Jobs (baseline, confirm, verify runs) and publishes a
Broadcast when a `best` ref moves. All are plain pydantic models so they cross Ray, redis
(JSON) and parquet unchanged.
"""
from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trainer.schema import ExperimentResult

RecordStatus = Literal["ok", "crash", "timeout", "invalid"]
RecordKind = Literal["experiment", "baseline", "confirm", "verify"]
"""experiment: an agent's own idea. baseline: the unchanged baseline (first round, seeds sigma).
confirm: the same commit again with another seed. verify: a merge candidate built by the coordinator."""
# The reason of an invalid record whose train.py another run trained or was training (the agent
# asked the coordinator first: coordinator/decide/tried.py); what follows names that run.
ALREADY_TRIED = "already tried: "

DecisionKind = Literal[
    "discard",        # judged against best (and its parent) and not better by enough
    "promote",        # parent was best and it cleared the margin: best fast-forwarded
    "simplification", # removed more lines than it added and stayed within the noise of best
    "merge",          # off best: its change (or, after a conflict, itself) put onto best, verified
    "did-not-stack",  # put onto best, but the verification run did not beat best
    "conflict",       # beat its parent, its change does not apply onto best, alone it does not beat best
    "pending",        # positive but inside the margin: waiting for a confirmation run
    "sample",         # a baseline/confirm run: adds a noise sample, moves nothing by itself
    "crash", "timeout", "invalid",
    "rejected",       # the record itself is bad (unknown commit, unknown hardware class...)
    "unjudged",       # never compared with best (its job gave up, best had no samples...)
    "carried",        # reached best inside another result's verified merge or pool (not a move of its own)
]


def new_experiment_id(agent: str) -> str:
    """Globally unique, sortable-ish experiment id: `<agent>-<unix ms>-<random>`."""
    return f"{agent}-{int(time.time() * 1000)}-{uuid.uuid4().hex[:6]}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExperimentRecord(_Model):
    """One started experiment, whatever happened to it. Exactly one per experiment_id."""

    experiment_id: str
    swarm_id: str = ""
    kind: RecordKind = "experiment"
    agent: str
    program: str
    backend: str = ""
    seed: int = 0
    hardware_class: str
    parent: str                           # commit the edit was made on
    commit: str | None = None             # None only for invalid edits (nothing committed)
    description: str = ""
    status: RecordStatus
    reason: str | None = None             # why invalid / crash, one line
    val_bpb: float | None = None
    confirm_bpb: float | None = None
    parent_val_bpb: float | None = None   # the agent's belief of its parent's score
    delta: float | None = None            # parent_val_bpb - val_bpb (positive = better)
    lines_added: int = 0
    lines_removed: int = 0
    fix_attempts: int = 0
    result: ExperimentResult | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    started_at: float = Field(default_factory=time.time)
    finished_at: float = Field(default_factory=time.time)
    job_id: str | None = None             # set when the run was a coordinator job


class StartedExperiment(_Model):
    """Sent before training starts, so a run whose actor dies still gets its one record."""

    experiment_id: str
    agent: str
    program: str
    hardware_class: str
    parent: str
    commit: str | None = None
    kind: RecordKind = "experiment"
    seed: int = 0
    description: str = ""
    job_id: str | None = None
    started_at: float = Field(default_factory=time.time)


class Decision(_Model):
    """The coordinator's verdict on one record."""

    experiment_id: str
    decision: DecisionKind
    reason: str = ""
    hardware_class: str = ""
    best_before: str | None = None
    best_after: str | None = None          # new best commit when it moved
    delta: float | None = None             # best mean - mean of the decided commit (the candidate,
                                           # or merge_commit once verified), + = better
    margin: float | None = None            # what it had to clear
    sigma: float | None = None
    samples: int = 0                       # samples of the candidate behind the decision
    suspect: bool = False                  # val improved but the confirm split got worse
    merge_commit: str | None = None
    decided_at: float = Field(default_factory=time.time)
    # delta above is always against best (+ = better); this one against the record's parent.
    delta_parent: float | None = None      # parent mean - candidate mean, + = better
    mean: float | None = None              # the candidate's mean val_bpb over its samples
    dof: int = 0                           # degrees of freedom behind sigma
    samples_best: int = 0                  # samples of best behind the decision
    best_mean: float | None = None         # best_before's mean over those samples: what `delta` was
                                           # taken from (a move's `mean` is the new best's own)
    beat_best: bool = False                # the candidate itself beat best by the margin
    beat_parent: bool = False              # the candidate beat its own parent by the margin
    stage: str | None = None               # pending on: sigma | confirm | contended | verify |
                                           # verify-alone | verify-pool
    waits: str | None = None               # pending in the sequential test: whose sample it waits
                                           # for, "candidate" (or the merge) or "best"
    looks: list[float] = Field(default_factory=list)        # the sequential test against best_before:
                                           # the information (samples' worth) of each look so far
    merge_looks: list[float] = Field(default_factory=list)  # the same for merge_commit's verification
    merge_samples: int = 0                 # samples of merge_commit when its verification was asked
    pooled: list[str] = Field(default_factory=list)  # experiments whose changes went into merge_commit
                                           # with this one's (a pool: decide/pooling.py)


class Job(_Model):
    """A run the coordinator asks an idle agent to do instead of its own research."""

    job_id: str
    kind: Literal["baseline", "confirm", "verify"]
    commit: str                            # what to train, unchanged
    parent: str                            # for verify: the best it must beat
    hardware_class: str
    seed: int
    for_experiment: str | None = None      # the candidate this job confirms / verifies
    description: str = ""


class Broadcast(_Model):
    """A new baseline for one hardware class. The latest is also kept in a key for late joiners."""

    # val_bpb is NaN for a best with no sample yet: written as NaN, not null, so it reads back
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    swarm_id: str
    hardware_class: str
    commit: str
    val_bpb: float
    seq: int                               # strictly increasing per hardware class
    samples: int = 0                       # how many samples val_bpb (best's reference mean) rests on
    experiment_id: str | None = None
    decision: DecisionKind | None = None
    published_at: float = Field(default_factory=time.time)


class Lead(_Model):
    """A candidate pending on best, measured better than best, that other agents may build on
    while its confirmation runs (coordinator/decide/leads.py)."""

    hardware_class: str
    commit: str
    experiment_id: str
    best: str                              # the best it is pending against
    best_blob: str                         # best's train.py (git blob id): an agent whose train.py
                                           # it is has best as its line, whatever its commit
    val_bpb: float                         # its mean over its samples so far
    samples: int = 0
    delta: float = 0.0                     # best's mean - its mean (+ = better), bpb
    margin: float | None = None            # what its test has to see


class ReportReply(_Model):
    """What an agent gets back for a report: the decision, plus what it would ask next at its
    iteration boundary, so that in the common case it need not ask (one call, not three)."""

    decision: Decision
    job_waiting: bool = True               # False: next_job would answer None right now
    best: Broadcast | None = None          # the latest best of the record's class


class PromotionConfig(_Model):
    """How the coordinator decides that a result is a real improvement, not noise: a truncated
    sequential probability ratio test per candidate (coordinator/decide/sequential.py)."""

    min_delta: float = Field(0.001, ge=0, description="smallest val_bpb improvement that ever counts (bpb)")
    alpha: float = Field(0.005, gt=0, lt=0.5, description="a candidate with no real effect is promoted with "
                         "probability alpha over all the looks of its sequential test (error spending, "
                         "sigma known; measured with sigma estimated, pools and verifications included: "
                         "bench/sequential.py, bench/research.py's null arm)")
    beta: float = Field(0.05, gt=0, lt=0.5, description="a candidate better by `effect` sigma is stopped for "
                        "futility (discarded) with probability beta: lower keeps more candidates for "
                        "another look (more power, more runs)")
    effect: float = Field(2.0, gt=0, description="the improvement, in sigmas of one run, the test is "
                          "designed to detect with power 1 - beta; smaller ones reach best too, less often")
    rho_alpha: float = Field(0.5, gt=0, description="alpha is spent along the information fraction t as "
                             "alpha * t^rho_alpha: below 1, early (most big wins promote on their first run)")
    rho_beta: float = Field(0.5, gt=0, description="beta is spent as beta * t^rho_beta: below 1, early "
                            "(a candidate that will not make it stops sooner)")
    inflation: float = Field(1.2, ge=1, description="the test ends at this many times the information a "
                             "single test of alpha and power 1 - beta at `effect` would need")
    sigma_prior: float = Field(0.005, gt=0, description="val_bpb std of one commit, used until a hardware "
                               "class has a commit with >= 2 samples (bpb)")
    cost_per_line: float = Field(2e-5, ge=0, description="extra improvement each net added line of "
                                 "train.py must buy (bpb per line)")
    simplify_tolerance_k: float = Field(1.0, ge=0, description="a change that removes more lines than it "
                                        "adds is a win when it is worse than best by at most this many "
                                        "standard errors (or min_delta)")
    confirm_runs: int = Field(15, ge=0, description="at most this many confirmation runs (new seeds) of one "
                              "candidate: where the sequential test is truncated (undecided: discard)")
    confirm_parallel: int = Field(2, ge=1, description="a candidate measured better than half its margin "
                                  "gets this many confirmation runs at a time (a swarm's agents run them "
                                  "at once: its test decides in fewer rounds; one agent runs them one "
                                  "after the other and a run its test no longer needs is cancelled)")
    follow_leads: bool = Field(True, description="an agent whose line is best runs its next idea on top "
                               "of the candidate pending on best that is measured best so far (the lead), "
                               "as one agent does on its own pending line, and goes back to best when "
                               "the lead is decided against; an idea on it measured no better than it is "
                               "discarded (research bench, bowls, 48 seeds: the swarm's runs to half the "
                               "gain 93.0 -> 77.2, 1.12 -> 0.93 times one agent's)")
    checks_share: float = Field(1.0, gt=0, le=1, description="at most this share of a hardware "
                                "class's agents (at least one) run confirmations and verifications at "
                                "a time; the others go on with their own research. 1.0 (every agent "
                                "takes them): 0.5 cost the 8-agent research bench (bowls, 6 seeds) its "
                                "speed-up, 6.10 -> 4.69, and the real quick start's replay gained nothing")
    concurrent: Literal["independent", "shared", "auto"] = Field(
        "auto", description="how runs of one train.py that trained at the same time on one node "
        "count: independent (each run one sample), shared (their common part, the machine's speed of "
        "that moment, is estimated from the runs: concurrent runs count as what they are worth in the "
        "comparisons and in sigma's degrees of freedom; bench/drift.py measures it), or auto (shared "
        "once earlier swarms of the hardware class measured concurrent runs sharing more than half "
        "their noise: the noise history; independent before)")
    min_dof: int = Field(8, ge=1, description="no promotion before sigma has this many degrees of freedom "
                         "(the coordinator schedules repeats of the baseline until then; noise history "
                         "counts): with fewer, even the Student-t margin rests on a sigma that is often "
                         "half the true one")
    contended_remeasures: int = Field(8, ge=0, description="a train.py with this many contended runs "
                                      "(the machine much slower than its class's norm: such a run counts "
                                      "nowhere) is not measured again: best gets no more repeats, a "
                                      "candidate or a verification stays unjudged. Bounds what a machine "
                                      "loaded for hours costs in runs")
    best_remeasures: int = Field(4, ge=0, description="top-priority runs (new seeds) of each new best until "
                                 "it has this many samples besides the experiment run that made it a "
                                 "winner (that one is left out of best's mean: it was selected for being low)")
    history_dof_max: int = Field(24, ge=0, description="noise measured by earlier swarms of the same "
                                 "hardware class, profile, budget and apparatus counts as a prior of at "
                                 "most this many degrees of freedom (0: no history)")
    pool_max: int = Field(4, ge=1, description="results inside the margin (judged against the current or the "
                          "previous best) are merged together onto best, up to this many, and the "
                          "combination verified like a merge: gains too small to confirm one by one add "
                          "up (decide/pooling.py); 1: never pool")
    pool_fraction: float = Field(0.25, ge=0, le=1, description="a result joins a pool when its effect (over "
                                 "best, or over its own parent when that is not best) is at least this "
                                 "share of the margin")
    pool_open_max: int = Field(3, ge=1, description="at most this many pools of one best are being "
                               "verified at a time (each costs a run)")
    job_lease_s: float | None = Field(None, gt=0, description="a job handed out but not reported within "
                                      "this many seconds is handed out again; null: derived from the "
                                      "runs (1.5 x the longest run, start-up and evaluation included, "
                                      "+ 60 s; 900 s before the first run)")


class NoiseHistorySpec(_Model):
    """Where the coordinator reads and writes the noise measured by swarms on the same hardware
    class, and what must match for a measurement to count: profile, budget and the apparatus
    (a fingerprint of the locked trainer code and of the prepared data). Built by `swarm run`
    (coordinator/decide/history.py: history_spec)."""

    path: str                              # the JSON file, beside the prepared data
    profile: str
    budget: float
    apparatus: str

