"""Locked metric: bits per byte of a model's own logits on a prepared split; the causality probe."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainer.dataloader import TokenDocs, batches


class MetricError(Exception):
    """The model's outputs cannot be scored (wrong shape, NaN, looks at the future)."""


def eval_batches(docs: TokenDocs, batch: int, seq_len: int, eval_tokens: int):
    """The fixed evaluation rows: documents in order, packed best-fit, at most eval_tokens."""
    n = max(1, eval_tokens // (batch * seq_len))
    for i, (x, y) in enumerate(batches(docs, batch, seq_len, seed=None, epochs=1)):
        if i >= n:
            break
        yield x, y


def bpb_of_batches(model: Callable[[torch.Tensor], torch.Tensor], rows, token_bytes: np.ndarray,
                   device: str = "cpu", first_logits: torch.Tensor | None = None) -> float:
    """Bits per byte over fixed (x, y) batches: the cross entropy computed here from
    model(x) -> logits (B, T, >=vocab), summed over targets that are not special tokens,
    divided by their UTF-8 bytes. first_logits: the model's logits for the first batch, when
    already computed (by the causality probe, on the same rows)."""
    tb = torch.as_tensor(np.asarray(token_bytes), dtype=torch.int64, device=device)
    vocab = len(tb)
    nats = 0.0
    nbytes = 0
    with torch.no_grad():
        for i, (x, y) in enumerate(rows):
            x = torch.from_numpy(x).to(device)
            y = torch.from_numpy(y).to(device)
            logits = first_logits if (i == 0 and first_logits is not None) else model(x)
            if not isinstance(logits, torch.Tensor) or logits.shape[:2] != x.shape or logits.shape[-1] < vocab:
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise MetricError(f"model(idx) must return logits (B, T, vocab>={vocab}), got {shape}")
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            b = tb[y.reshape(-1)]
            mask = b > 0
            nats += float(loss[mask].double().sum())
            nbytes += int(b.sum())
    if nbytes == 0:
        raise MetricError("evaluation split has no scorable tokens")
    bpb = nats / (math.log(2) * nbytes)
    if not math.isfinite(bpb):
        raise MetricError(f"val_bpb is {bpb}")
    return bpb


def evaluate_bpb(model: Callable[[torch.Tensor], torch.Tensor], docs: TokenDocs,
                 token_bytes: np.ndarray, *, batch: int, seq_len: int, eval_tokens: int,
                 device: str = "cpu") -> float:
    """Bits per byte of `model` on the fixed evaluation rows of `docs` (see bpb_of_batches)."""
    return bpb_of_batches(model, eval_batches(docs, batch, seq_len, eval_tokens), token_bytes, device)


# Causality probe. Each probe is one (row, position j) with j drawn uniformly from 1..T-1 by
# the trusted side, fresh for every evaluation: row r's tokens from j on are replaced by random
# ones and its logits before j must not change. A probe at j catches a model that looks ahead
# from position j-1 (and any earlier position that reads past j). With PROBES independent
# positions, a model that looks ahead at a fraction f of positions passes with (1-f)^PROBES:
# f = 5% -> caught with probability 96.3%, f = 10% -> 99.8%, f >= 20% -> 1 - 6e-7. Below 5% of
# positions, looking ahead buys at most that fraction of the tokens' loss. Every row of a pass
# is probed at its own position, so 64 probes cost ceil(64 / batch) + 1 forward passes.
PROBES = 64


@torch.no_grad()
def check_causal(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, vocab: int,
                 seed: int = 0, probes: int = PROBES) -> torch.Tensor:
    """Changing tokens at positions >= j must leave logits before j unchanged, at `probes`
    random (row, j) pairs drawn from `seed` (the runner draws it at random per evaluation).
    Returns model(x), which the val pass reuses for its first batch."""
    g = torch.Generator().manual_seed(seed)
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.shape[:2] != x.shape:
        return logits  # bpb_of_batches names the wrong shape
    base = logits.float()
    B, T = x.shape
    done = 0
    while done < probes:
        js = torch.randint(1, T, (B,), generator=g)
        x2 = x.clone()
        noise = torch.randint(0, vocab, x.shape, generator=g).to(x.device)
        future = torch.arange(T)[None, :] >= js[:, None]
        x2[future.to(x.device)] = noise[future.to(x.device)]
        out = model(x2).float()
        past = (~future).to(out.device)
        diff = (base - out).abs().amax(dim=-1)          # (B, T)
        tol = 1e-3 + 1e-3 * base.abs().amax(dim=-1)
        if bool(((diff > tol) & past).any()):
            raise MetricError("model looks at future tokens (logits before a position change "
                              "when later tokens change)")
        done += B
    return logits


def unigram_bpb(train: TokenDocs, val: TokenDocs, token_bytes: np.ndarray, *, batch: int,
                seq_len: int, eval_tokens: int) -> float:
    """The best context-free model (train token frequencies, add-one) scored by evaluate_bpb."""
    counts = np.bincount(np.asarray(train.tokens), minlength=len(token_bytes)).astype(np.float64)
    counts[np.asarray(token_bytes) == 0] = 0  # special tokens are never targets that count
    logp = torch.from_numpy(np.log((counts + 1) / (counts + 1).sum())).float()

    def model(x: torch.Tensor) -> torch.Tensor:
        return logp.expand(x.shape[0], x.shape[1], -1)

    return evaluate_bpb(model, val, token_bytes, batch=batch, seq_len=seq_len, eval_tokens=eval_tokens)
