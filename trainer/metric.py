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


@torch.no_grad()
def evaluate_bpb(model: Callable[[torch.Tensor], torch.Tensor], docs: TokenDocs,
                 token_bytes: np.ndarray, *, batch: int, seq_len: int, eval_tokens: int,
                 device: str = "cpu") -> float:
    """Bits per byte: the cross entropy computed here from model(x) -> logits (B, T, >=vocab),
    summed over targets that are not special tokens, divided by their UTF-8 bytes."""
    tb = torch.as_tensor(np.asarray(token_bytes), dtype=torch.int64, device=device)
    vocab = len(tb)
    nats = 0.0
    nbytes = 0
    for x, y in eval_batches(docs, batch, seq_len, eval_tokens):
        x = torch.from_numpy(x).to(device)
        y = torch.from_numpy(y).to(device)
        logits = model(x)
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


@torch.no_grad()
def check_causal(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, vocab: int,
                 seed: int = 0) -> None:
    """Changing tokens at positions >= j must leave logits before j unchanged."""
    g = torch.Generator().manual_seed(seed)
    base = model(x).float()
    T = x.shape[1]
    for j in (1, T // 2, T - 1):
        x2 = x.clone()
        x2[:, j:] = torch.randint(0, vocab, x2[:, j:].shape, generator=g).to(x.device)
        out = model(x2).float()
        if not torch.allclose(base[:, :j], out[:, :j], atol=1e-3, rtol=1e-3):
            raise MetricError("model looks at future tokens (logits before a position change "
                              "when later tokens change)")


def unigram_bpb(train: TokenDocs, val: TokenDocs, token_bytes: np.ndarray, *, batch: int,
                seq_len: int, eval_tokens: int) -> float:
    """The best context-free model (train token frequencies, add-one) scored by evaluate_bpb."""
    counts = np.bincount(np.asarray(train.tokens), minlength=len(token_bytes)).astype(np.float64)
    counts[np.asarray(token_bytes) == 0] = 0  # special tokens are never targets that count
    logp = torch.from_numpy(np.log((counts + 1) / (counts + 1).sum())).float()

    def model(x: torch.Tensor) -> torch.Tensor:
        return logp.expand(x.shape[0], x.shape[1], -1)

    return evaluate_bpb(model, val, token_bytes, batch=batch, seq_len=seq_len, eval_tokens=eval_tokens)
