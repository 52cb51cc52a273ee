"""Typed contracts that cross a process boundary inside the apparatus: what the caller asks of
the runner (RunRequest), what the runner hands the training harness (HarnessSpec) and the
evaluator (EvalRequest / EvalReply)."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRequest(_Spec):
    """One run of one train.py, as run_experiment takes it."""
    train_py: Path
    run_dir: Path
    budget: float | None = Field(None, gt=0)   # seconds of training (default: the profile's)
    seed: int = 0
    profile: str | None = None                 # cpu or gpu (default: detected)
    device: str = "auto"
    cuda_visible_devices: str | None = None
    data_dir: Path | None = None
    max_steps: int | None = Field(None, gt=0)  # deterministic mode: real batches, not seconds
    hard_limit: float | None = Field(None, gt=0)
    confirm_below: float | None = None         # score confirm only when val_bpb is below this
    threads: int | None = Field(None, gt=0)
    standby: bool = False                      # start the next run's sandbox when this one ends
    swarm_home: Path | None = None             # the swarm's home as set (default SWARM_HOME, ./.swarm)


class HarnessSpec(_Spec):
    """What trainer.harness reads inside the training sandbox. Paths are inside its scratch;
    nothing here points at data: batches come over data_fd."""
    train_py: str
    scratch: str
    tokenizer: str
    event_fd: int
    data_fd: int
    budget: float
    max_steps: int | None
    seed: int
    device: str
    threads: int | None
    profile: str
    max_seq_len: int
    vocab_size: int
    eval_batch: int
    warmup_batches: int


class EvalRequest(_Spec):
    """One evaluation, sent to the evaluator on its stdin as one JSON line."""
    id: str                       # a nonce: the reply must carry it
    model: str                    # model.pt2 (graph), a parent-made copy
    weights: str                  # weights.bin (the tensors as submitted), a parent-made copy
    index: list[dict]             # [{name, dtype, shape, offset, nbytes}] of weights.bin
    probe_seed: int               # the causality probe positions, drawn by the runner
    confirm_below: float | None = None
    threads: int | None = None
    device: str = "cpu"


class EvalReply(_Spec):
    """The evaluator's answer, one JSON line on its stdout."""
    id: str
    val_bpb: float | None = None
    confirm_bpb: float | None = None
    num_params: int | None = None
    error: str | None = None
    seconds: dict[str, float] = Field(default_factory=dict)  # load, probe, val, confirm
