"""Locked metric: bits per byte of a model's own logits on a prepared split, and the causality
probes that every scored row of a submitted model goes through (see "Causality" below)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from trainer import profiles
from trainer.dataloader import TokenDocs, batches


class MetricError(Exception):
    """The model's outputs cannot be scored. The message is one of the fixed REASONS: nothing
    built from the outputs (i.e. from val) ever goes into it."""


SHAPE = "the model output is not (batch, seq, vocab) logits"
NONFINITE = "the model output is not finite"
FUTURE = "the model looks at future tokens"
EMPTY = "no scorable tokens"
REASONS = (SHAPE, NONFINITE, FUTURE, EMPTY)


def eval_batches(docs: TokenDocs, batch: int, seq_len: int, eval_tokens: int):
    """The fixed evaluation rows: documents in order, packed best-fit, at most eval_tokens."""
    n = max(1, eval_tokens // (batch * seq_len))
    for i, (x, y) in enumerate(batches(docs, batch, seq_len, seed=None, epochs=1)):
        if i >= n:
            break
        yield x, y


def target_logprobs(logits: object, y: torch.Tensor, vocab: int) -> torch.Tensor:
    """log p(y) under the model's logits, float64 (B, T). The logits must be exactly (B, T, vocab):
    an extra column (at -1e6, say) is not a place to hide anything."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() \
            or tuple(logits.shape) != (*y.shape, vocab):
        raise MetricError(SHAPE)
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    if not bool(torch.isfinite(lp).all()):
        raise MetricError(NONFINITE)
    return lp.double()


def bpb_of_batches(model: Callable[[torch.Tensor], torch.Tensor], rows, token_bytes: np.ndarray,
                   device: str = "cpu") -> float:
    """Bits per byte over fixed (x, y) batches: the cross entropy computed here from
    model(x) -> logits (B, T, vocab), summed over targets that are not special tokens,
    divided by their UTF-8 bytes. No causality probe: for trusted models (unigram_bpb);
    a submitted model is scored by score_split."""
    return _score_rows(model, list(rows), token_bytes, device)[0]


def evaluate_bpb(model: Callable[[torch.Tensor], torch.Tensor], docs: TokenDocs,
                 token_bytes: np.ndarray, *, batch: int, seq_len: int, eval_tokens: int,
                 device: str = "cpu") -> float:
    """Bits per byte of `model` on the fixed evaluation rows of `docs` (see bpb_of_batches)."""
    return bpb_of_batches(model, eval_batches(docs, batch, seq_len, eval_tokens), token_bytes, device)


def _score_rows(model, rows: list, token_bytes: np.ndarray, device: str) -> tuple[float, list[torch.Tensor]]:
    tb = torch.as_tensor(np.asarray(token_bytes), dtype=torch.int64, device=device)
    vocab = len(tb)
    nats, nbytes, lps = 0.0, 0, []
    with torch.no_grad():
        for x, y in rows:
            y = torch.from_numpy(y).to(device)
            lp = target_logprobs(model(torch.tensor(x, device=device)), y, vocab)  # a fresh input each call
            b = tb[y]
            nats -= float(lp[b > 0].sum())
            nbytes += int(b.sum())
            lps.append(lp.cpu())
    if nbytes == 0:
        raise MetricError(EMPTY)
    bpb = nats / (math.log(2) * nbytes)
    if not math.isfinite(bpb):
        raise MetricError(NONFINITE)
    return bpb, lps


# --- Causality ----------------------------------------------------------------------------------
# A probe is one scored row with a cut j: its tokens from j on are replaced by uniform random
# ones, and the model's log-probability of every true target before j must stay what it was when
# the row was scored, within PROBE_TOL nats (log-softmax values, floored at LOGP_FLOOR: a huge
# logit shifts nothing, and a peek that hides under the tolerance gains at most PROBE_TOL nats a
# token, 6e-5 bpb at 2.5 bytes a token). Honest models give bit-identical values: a position's
# logits are computed from the same prefix by the same kernels on the same shapes (checked on CPU
# for the baseline; on GPU the same holds for deterministic kernels, not yet measured here).
#
# Every scored row is probed K times, in batches of rows drawn at random across the split (rows
# of one scored batch do not meet again, so reading another row shows as well), after all rows
# were scored, with cuts and tokens the runner's random seed picks. The graph is a pure function
# (no state: artifact.Program), so telling a probe from a scored batch buys nothing: what is
# compared was computed before, from the true row.
#
# Cuts are spread: every position of a row is cut at least once per evaluation (K x rows >=
# T - 1), so a model that peeks at fixed positions is always caught. A model that peeks where the
# content says (the next token is in a set D) is caught by a probe at a peeked position and also
# when the random token falls in D; with its own calibrated predictions p(D) and u = |D|/V, its
# gain per probe that would catch it is at most p log(uV/p) / (p + u), at most 4.4 nats for
# V=1024 (6.2 for 8192), i.e. G = 2.5 bpb at 2.5 bytes a token. Its expected gain over N probes
# is then at most max_f f G (1-f)^N = G / (e N): 0.0021 bpb for N = 448 (the cpu profile, 224
# rows x 2), under a quarter of the 0.011 sigma of 30 s runs; 1e-4 bpb on the gpu profile (10240
# rows x 1). Each re-measure of a candidate draws its probes again. Confirm rows (scored for
# near-winners only, as a guard) are probed once each: a pure graph cannot tell which split a row
# comes from, so the val probes already bound what it gains on rows drawn like them.
PROBE_TOL = 1e-4
LOGP_FLOOR = -100.0
PROBES_MIN = profiles.PROBES_MIN


def probes_per_row(rows: int, seq_len: int, probes_min: int = PROBES_MIN) -> int:
    """K: enough probes for the bound above (`probes_min`: the profile's), and every position cut
    at least once."""
    return max(1, math.ceil(max(probes_min, seq_len - 1) / rows))


def regroup(rows: list, batch: int) -> list:
    """The same rows, in batches of `batch` rows (the input the graph was recorded on)."""
    if rows[0][0].shape[0] == batch:
        return rows
    x, y = np.concatenate([x for x, _ in rows]), np.concatenate([y for _, y in rows])
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x) - batch + 1, batch)]


def score_split(model: Callable[[torch.Tensor], torch.Tensor], rows: list, token_bytes: np.ndarray, *,
                seed: int, device: str = "cpu", seconds: dict | None = None, key: str = "val",
                batch: int | None = None, k: int | None = None) -> float:
    """Bits per byte of `model` on `rows` (see bpb_of_batches), then the causality probes above
    on every scored row, `k` times each (default: probes_per_row). `batch`: the rows the model
    takes at once (default: as `rows` come). Raises MetricError with one of REASONS."""
    if batch:
        rows = regroup(rows, batch)
    t = time.monotonic()
    bpb, lps = _score_rows(model, rows, token_bytes, device)
    if seconds is not None:
        seconds[key] = time.monotonic() - t
    t = time.monotonic()
    check_probes(model, rows, torch.cat(lps), len(token_bytes), seed=seed, device=device, k=k)
    if seconds is not None:
        seconds[f"{key}_probe"] = time.monotonic() - t
    return bpb


def check_probes(model, rows: list, lp: torch.Tensor, vocab: int, *, seed: int, device: str = "cpu",
                 k: int | None = None) -> None:
    """Raise MetricError(FUTURE) unless every probe of every row keeps its targets' log-probs
    before the cut (see above). `lp`: the scored log-probs, (rows, T)."""
    x_all = np.concatenate([x for x, _ in rows])
    y_all = torch.from_numpy(np.concatenate([y for _, y in rows])).to(device)
    R, T = x_all.shape
    B = rows[0][0].shape[0]
    k = k or probes_per_row(R, T)
    g = np.random.default_rng(seed)
    n = k * R
    cuts = np.concatenate([g.permutation(np.arange(1, T)) for _ in range(math.ceil(n / (T - 1)))])[:n]
    cuts = cuts.reshape(k, R)
    ref = lp.clamp(min=LOGP_FLOOR)
    pos = torch.arange(T)
    with torch.no_grad():
        for rnd in range(k):
            order = g.permutation(R)
            for start in range(0, R, B):
                idx = order[start:start + B]
                j = cuts[rnd, idx]
                xb = x_all[idx].copy()
                noise = g.integers(0, vocab, xb.shape, dtype=np.int64)
                future = np.arange(T)[None, :] >= j[:, None]
                xb[future] = noise[future]
                out = target_logprobs(model(torch.from_numpy(xb).to(device)), y_all[idx], vocab).cpu()
                past = pos[None, :] < torch.from_numpy(j)[:, None]
                diff = (out.clamp(min=LOGP_FLOOR) - ref[idx]).abs()
                if bool((diff > PROBE_TOL)[past].any()):
                    raise MetricError(FUTURE)


def check_causal(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, vocab: int,
                 seed: int = 0, k: int = 4) -> None:
    """The probes of score_split on one batch `x` alone, each target being the next token."""
    x = x.cpu().numpy()
    y = np.concatenate([x[:, 1:], x[:, :1]], axis=1)
    with torch.no_grad():
        lp = target_logprobs(model(torch.from_numpy(x)), torch.from_numpy(y), vocab)
    check_probes(model, [(x, y)], lp, vocab, seed=seed, k=k)


def unigram_bpb(train: TokenDocs, val: TokenDocs, token_bytes: np.ndarray, *, batch: int,
                seq_len: int, eval_tokens: int) -> float:
    """The best context-free model (train token frequencies, add-one) scored by evaluate_bpb."""
    counts = np.bincount(np.asarray(train.tokens), minlength=len(token_bytes)).astype(np.float64)
    counts[np.asarray(token_bytes) == 0] = 0  # special tokens are never targets that count
    logp = torch.from_numpy(np.log((counts + 1) / (counts + 1).sum())).float()

    def model(x: torch.Tensor) -> torch.Tensor:
        return logp.expand(x.shape[0], x.shape[1], -1)

    return evaluate_bpb(model, val, token_bytes, batch=batch, seq_len=seq_len, eval_tokens=eval_tokens)
