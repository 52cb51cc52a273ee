"""What the locked apparatus returns: the result of one run of one train.py (ExperimentResult),
and which files an experiment may change. The swarm's own wire types (records, decisions, jobs,
broadcasts) are not apparatus: they live in agents/messages.py."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

EDITABLE_FILES: tuple[str, ...] = ("train.py",)
"""The only files an experiment may change. Everything else is locked apparatus."""

RunStatus = Literal["ok", "crash", "timeout"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExperimentResult(_Model):
    """What the locked runner measured for one run of one train.py. Nothing here comes from
    train.py's own output: val_bpb is computed by locked evaluation code in a separate process
    and the clock is the runner's."""

    status: RunStatus
    error: str | None = None            # one line, when status != ok
    log_tail: str = ""                  # last lines of run.log (crash context for a fix attempt)
    log_path: str | None = None
    val_bpb: float | None = None
    confirm_bpb: float | None = None    # held-out split; only when asked (confirm_below)
    unigram_bpb: float | None = None    # context-free reference on val, from prepare time
    training_seconds: float | None = None
    total_seconds: float = 0.0
    startup_seconds: float | None = None
    eval_seconds: float | None = None
    peak_memory_mb: float | None = None
    mfu_percent: float | None = None    # GPU only
    tokens: int | None = None           # real training tokens the runner served
    steps: int | None = None            # real batches the runner served (micro-batches, not optimizer steps)
    num_params: int | None = None
    seed: int = 0
    budget: float = 0.0                 # seconds of training the run was allowed
    profile: str = ""
    hardware_class: str = ""
    bad_events: int = 0                 # messages from train.py the runner could not use (ignored)
    sandboxed: bool = True              # False only under --unsafe-no-sandbox
    timings: dict[str, float] = {}      # seconds per phase (spawn_to_ready, training, export, eval_val...)
    # The machine's own speed during the run, measured by the trusted runner (never from
    # train.py's step count): the share of the run's CPU demand lost to other load (0 = quiet).
    # A run trained on a machine much slower than its class's norm is `contended`: it cannot
    # move best until it is re-measured (the budget is wall clock; load buys fewer steps).
    contention: float | None = None
    contended: bool = False
    # The machine the run trained on (the runner's host name): runs of one node at the same time
    # share its speed of that moment (coordinator/decide/rules.py Cluster).
    node: str | None = None
