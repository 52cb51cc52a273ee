"""The promotion rule as pure functions: noise (pooled sigma), margin, and the verdict on a candidate.

A candidate is compared with a reference commit (best, or its own parent) by the means of
their samples; the margin is k standard errors of that difference (never below min_delta) plus
a small cost per net added line of train.py. sigma is an estimate: with `dof` degrees of
freedom, k becomes the Student-t quantile of the same one-sided tail (stats.t_multiplier), so
that a few baseline samples cannot shrink the margin to nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from agents.messages import PromotionConfig
from coordinator.decide.stats import t_multiplier


@dataclass
class Samples:
    """Running mean and sum of squared deviations (Welford) of one commit's val_bpb samples."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    confirm: list[float] = field(default_factory=list)

    def add(self, x: float, confirm: float | None = None) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)
        if confirm is not None:
            self.confirm.append(confirm)

    @property
    def confirm_mean(self) -> float | None:
        return sum(self.confirm) / len(self.confirm) if self.confirm else None


class NoisePool:
    """Pooled within-commit variance of one hardware class, updated one sample at a time."""

    def __init__(self) -> None:
        self.m2 = 0.0
        self.dof = 0

    def add(self, s: Samples, x: float, confirm: float | None = None) -> None:
        old_m2, old_dof = s.m2, max(s.n - 1, 0)
        s.add(x, confirm)
        self.m2 += s.m2 - old_m2
        self.dof += max(s.n - 1, 0) - old_dof

    def sigma(self, prior: float) -> float:
        """Pooled std over commits with >= 2 samples; `prior` until there is at least one."""
        if self.dof <= 0:
            return prior
        return math.sqrt(max(self.m2, 0.0) / self.dof)


@dataclass
class Verdict:
    decision: str          # promote | simplification | pending | discard
    reason: str
    delta: float           # reference mean - candidate mean (+ = better)
    margin: float
    se: float
    samples: int


def standard_error(sigma: float, n_cand: int, n_ref: int) -> float:
    return sigma * math.sqrt(1.0 / max(n_cand, 1) + 1.0 / max(n_ref, 1))


def multiplier(cfg: PromotionConfig, dof: int | None) -> float:
    """k, or its Student-t counterpart when sigma is estimated from `dof` degrees of freedom."""
    return cfg.k if dof is None else t_multiplier(cfg.k, dof)


def margin_for(cfg: PromotionConfig, se: float, net_added: int, dof: int | None = None) -> float:
    """What an improvement must clear: max(min_delta, k*se) plus the cost of each net added
    line; k is the Student-t quantile at `dof` when given."""
    return max(cfg.min_delta, multiplier(cfg, dof) * se) + cfg.cost_per_line * max(0, net_added)


def judge(cfg: PromotionConfig, cand: Samples, ref: Samples, sigma: float, net_added: int,
          allow_simplify: bool = True, dof: int | None = None,
          confirm_fraction: float | None = None) -> Verdict:
    """Classify a candidate against a reference by the means of their samples.

    promote: beats ref by the margin. simplification: net removes lines, is worse by at most
    max(min_delta, simplify_tolerance_k*se), and has been confirmed (>= 2 samples; with
    confirm_runs 0, one). pending: a confirmation run can still change the outcome: the
    difference is at least confirm_fraction of the margin (or it is a simplification within
    the tolerance on one sample) and the candidate has fewer than 1+confirm_runs samples.
    Else discard. Each confirmation is one step of a short sequential test: after it the
    means are judged again, at the margin of the new sample sizes.
    """
    se = standard_error(sigma, cand.n, ref.n)
    m = margin_for(cfg, se, net_added, dof)
    diff = ref.mean - cand.mean
    if diff >= m:
        return Verdict("promote", f"beat by {diff:.4f} >= margin {m:.4f} (n={cand.n})", diff, m, se, cand.n)
    can_confirm = cand.n < 1 + cfg.confirm_runs
    tol = max(cfg.min_delta, cfg.simplify_tolerance_k * se)
    if allow_simplify and net_added < 0 and diff >= -tol:
        if cand.n >= 2 or not can_confirm:
            return Verdict("simplification", f"{-net_added} net lines removed, within noise "
                           f"({diff:+.4f} >= -{tol:.4f}, n={cand.n})", diff, m, se, cand.n)
        return Verdict("pending", f"{-net_added} net lines removed, within noise on one run "
                       f"({diff:+.4f}): confirming with another seed", diff, m, se, cand.n)
    frac = cfg.confirm_fraction if confirm_fraction is None else confirm_fraction
    if diff > 0 and diff >= frac * m and can_confirm:
        return Verdict("pending", f"better by {diff:.4f}, inside margin {m:.4f}: confirming "
                       f"with another seed", diff, m, se, cand.n)
    if diff > 0:
        return Verdict("discard", f"better by {diff:.4f} but inside margin {m:.4f} after "
                       f"{cand.n} samples", diff, m, se, cand.n)
    return Verdict("discard", f"not better ({diff:+.4f})", diff, m, se, cand.n)


def is_suspect(cand_confirm: float | None, best_confirm: float | None, margin: float) -> bool:
    """Val improved but the held-out confirm split got worse by more than the margin."""
    if cand_confirm is None or best_confirm is None:
        return False
    return cand_confirm - best_confirm > margin
