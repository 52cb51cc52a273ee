"""Typed contracts that cross a process boundary inside the apparatus: what the caller asks of
the runner (RunRequest), what the runner hands the training harness (HarnessSpec) and the
evaluator (EvalRequest / EvalReply)."""
from __future__ import annotations

from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    id: str                       # a nonce: the reply must carry it (the worker never sees it)
    graph: str                    # graph.json (the graph and its tensor table), a parent-made copy
    weights: str                  # weights.bin (the tensors as submitted), a parent-made copy
    probe_seed: int               # the causality probes' cuts and tokens, drawn by the runner
    confirm_below: float | None = None
    threads: int | None = None
    device: str = "cpu"


# Everything an evaluation can say went wrong. Fixed text only: an exception's message may be
# built from val tokens (an out-of-range index), so it never crosses back; "failed in" and
# "out of memory in" name the allowed op (EvalReply.op) where it happened.
EvalError = Literal[
    "artifact refused", "artifact could not be loaded",
    "the model output is not (batch, seq, vocab) logits", "the model output is not finite",
    "the model looks at future tokens", "the model changes its own tensors", "no scorable tokens",
    "failed in", "out of memory in", "evaluation failed", "evaluation crashed"]
EvalPhase = Literal["load", "val", "val_probe", "confirm", "confirm_probe"]


class EvalReply(_Spec):
    """The evaluator's answer, one JSON line on its stdout: statuses and numbers only."""
    id: str
    val_bpb: float | None = Field(None, gt=0, lt=1e6, allow_inf_nan=False)
    confirm_bpb: float | None = Field(None, gt=0, lt=1e6, allow_inf_nan=False)
    num_params: int | None = Field(None, ge=0)
    error: EvalError | None = None
    op: str | None = None         # with "failed in" / "out of memory in": one of artifact.ALLOWED_OPS
    seconds: dict[EvalPhase, float] = Field(default_factory=dict)

    @field_validator("op")
    @classmethod
    def _allowed_op(cls, v: str | None) -> str | None:
        from trainer.artifact import ALLOWED_OPS
        if v is not None and v not in ALLOWED_OPS:
            raise ValueError("not an allowed op")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EvalReply:
        if (self.error is None) == (self.val_bpb is None) and self.id:
            raise ValueError("a reply has a score or an error, not both or neither")
        return self

    def error_text(self) -> str:
        """The reason, as it goes into a result's error."""
        return f"evaluation: {self.error}" + (f" {self.op}" if self.op else "")
