"""The benches' headline ratios (speed-up, runs to the target, static over adaptive) are ratios of
two means over the same seeds; this says how far the seeds leave each one open.

`paired_ratio(a, b)`: mean(a) / mean(b) with a percentile interval from a paired bootstrap over the
seeds (each resample draws whole seeds, both arms together, so the arms' shared luck cancels as
it does in the ratio itself). Deterministic: the resamples come from a fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000


@dataclass(frozen=True)
class Ratio:
    value: float
    low: float
    high: float
    level: float

    def __str__(self) -> str:
        return f"{self.value:.2f} ({self.level:.0%} CI {self.low:.2f}-{self.high:.2f})"


def paired_ratio(a: list[float], b: list[float], level: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = 0) -> Ratio:
    """mean(a) / mean(b) and its bootstrap interval; `a` and `b` are per seed, in the same order."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_ratio: {len(a)} and {len(b)} values: need the same seeds, at least one")
    x, y = np.asarray(a, float), np.asarray(b, float)
    value = float(x.mean() / y.mean())
    if len(x) < 2:
        return Ratio(value, float("nan"), float("nan"), level)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = x[idx].mean(axis=1) / y[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.nanquantile(boot, [tail, 1.0 - tail])
    return Ratio(value, float(low), float(high), level)
