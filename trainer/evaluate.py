"""Locked scoring of one artifact: load its graph with the submitted tensors, score val (and
confirm when asked) with the causality probes on every scored row. Runs in a forked worker of
the evaluator (trainer/evaluator.py), inside the evaluation sandbox; no train.py code runs here,
only the checked graph, op by op, in trainer.artifact's interpreter.

What goes back is statuses and numbers: every failure is one of the fixed reasons of
trainer.specs.EvalError, with at most the name of an allowed op. An exception's text never
leaves (an out-of-range index built from val tokens would be in it)."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from trainer.profiles import PROBES_MIN
from trainer.specs import EvalReply, EvalRequest


class SplitRows:
    """One split's fixed evaluation rows, packed once and kept in memory by the evaluator."""

    def __init__(self, docs, batch: int, seq_len: int, eval_tokens: int):
        from trainer.metric import eval_batches
        self.rows = list(eval_batches(docs, batch, seq_len, eval_tokens))


def score(req: EvalRequest, val: SplitRows, confirm: Callable[[], SplitRows], token_bytes: np.ndarray,
          probes_min: int = PROBES_MIN) -> EvalReply:
    """The reply for one request (its id left empty: the server stamps it); every failure is a
    fixed `error`, never an exception. `probes_min`: the profile's."""
    import torch

    from trainer.artifact import ArtifactError, OpFailed, StateChanged, load_program
    from trainer.metric import MetricError, probes_per_row, score_split

    if req.threads:
        torch.set_num_threads(req.threads)
    out = EvalReply(id="")
    t = time.monotonic()
    try:
        model, out.num_params = load_program(req.graph, req.weights, req.device, shape=val.rows[0][0].shape)
    except ArtifactError:
        out.error = "artifact refused"
        return out
    except Exception:
        out.error = "artifact could not be loaded"
        return out
    out.seconds["load"] = time.monotonic() - t
    if model.shape[0] == 1 and not req.device.startswith("cuda"):
        # one row at a time: a second thread only waits on the first (measured on a loaded
        # 2-core machine: 25 ms a row with one thread, 347 ms with two)
        torch.set_num_threads(1)
    seeds = np.random.SeedSequence(req.probe_seed).spawn(2)
    try:
        k = probes_per_row(sum(len(x) for x, _ in val.rows), val.rows[0][0].shape[1], probes_min)
        out.val_bpb = score_split(model, val.rows, token_bytes, seed=int(seeds[0].generate_state(1)[0]),
                                  device=req.device, seconds=out.seconds, key="val", batch=model.shape[0], k=k)
        if req.confirm_below is not None and out.val_bpb < req.confirm_below:
            out.confirm_bpb = score_split(model, confirm().rows, token_bytes, device=req.device,
                                          seed=int(seeds[1].generate_state(1)[0]), seconds=out.seconds,
                                          key="confirm", batch=model.shape[0], k=1)
    except MetricError as e:
        out.error = str(e)
    except OpFailed as e:
        out.error, out.op = ("out of memory in" if e.oom else "failed in"), e.op
    except StateChanged:
        out.error = "the model changes its own tensors"
    except Exception:
        out.error = "evaluation failed"
    if out.error:
        out.val_bpb = out.confirm_bpb = None
    return out
