"""Locked scoring of one artifact: load it safely with the submitted weights, probe causality at
positions the runner drew, score val (and confirm when asked). Runs in a forked worker of the
evaluator (trainer/evaluator.py), inside the evaluation sandbox; no train.py code runs here,
only the checked graph of its model."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from trainer.specs import EvalReply, EvalRequest


class SplitRows:
    """One split's fixed evaluation rows, packed once and kept in memory by the evaluator."""

    def __init__(self, docs, batch: int, seq_len: int, eval_tokens: int):
        from trainer.metric import eval_batches
        self.rows = list(eval_batches(docs, batch, seq_len, eval_tokens))


def score(req: EvalRequest, val: SplitRows, confirm: Callable[[], SplitRows], token_bytes: np.ndarray) -> EvalReply:
    """The reply for one request; every failure is an `error` line, never an exception."""
    import torch

    from trainer.artifact import ArtifactError, load_model
    from trainer.metric import MetricError, bpb_of_batches, check_causal

    if req.threads:
        torch.set_num_threads(req.threads)
    out = EvalReply(id=req.id)
    t = time.monotonic()
    try:
        model, out.num_params = load_model(req.model, req.weights, req.index, req.device)
    except ArtifactError as e:
        out.error = f"artifact refused: {e}"
        return out
    except Exception as e:
        out.error = f"artifact could not be loaded: {type(e).__name__}"
        return out
    marks = {"load": time.monotonic()}
    try:
        x = torch.from_numpy(val.rows[0][0]).to(req.device)
        first = check_causal(model, x, len(token_bytes), seed=req.probe_seed)
        marks["probe"] = time.monotonic()
        out.val_bpb = bpb_of_batches(model, val.rows, token_bytes, req.device, first_logits=first)
        marks["val"] = time.monotonic()
        if req.confirm_below is not None and out.val_bpb < req.confirm_below:
            out.confirm_bpb = bpb_of_batches(model, confirm().rows, token_bytes, req.device)
            marks["confirm"] = time.monotonic()
    except MetricError as e:
        out.error = str(e)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        out.error = f"evaluation failed: {type(e).__name__}: {msg}"
    prev = t
    for k, v in marks.items():
        out.seconds[k] = v - prev
        prev = v
    if out.error:
        out.val_bpb = out.confirm_bpb = None
    return out
