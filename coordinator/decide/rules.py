"""The promotion rule as pure functions: samples, noise (pooled sigma), and the verdict on a
candidate at one look of the sequential test (sequential.py).

A candidate is compared with a reference commit (best, or its own parent) by the means of
their samples; the margin at a look is the test's upper boundary in standard errors of that
difference (on the Student-t scale of sigma's degrees of freedom, never below min_delta), plus
a small cost per net added line of train.py.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from agents.messages import PromotionConfig
from coordinator.decide import sequential


@dataclass
class Cluster:
    """Runs of one train.py that trained at the same time on the same node: they share the
    machine's speed of that moment (bench/drift.py: on a 2-core VM 0.89 of a run's variance), so
    together they are worth less than as many runs at different times."""

    node: str
    start: float
    end: float
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def overlaps(self, node: str, start: float, end: float) -> bool:
        """The same node, and the two windows overlap by more than half of the shorter one."""
        short = min(self.end - self.start, end - start)
        return node == self.node and short > 0 and min(self.end, end) - max(self.start, start) > 0.5 * short


@dataclass
class Samples:
    """Running mean and sum of squared deviations (Welford) of one commit's val_bpb samples;
    with their run windows (`at`), the clusters of concurrent runs among them."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    confirm: list[float] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    w_m2: float = 0.0      # sum over clusters of their m2 (within-cluster sum of squares)
    mm1: int = 0           # sum over clusters of m (m - 1)
    # node -> [(start, index in clusters)] sorted, and the longest window there: a new run is
    # compared only with the clusters whose window can overlap its own (best gathers hundreds of
    # samples in a night; scanning them all on every add was 9% of a decision batch's time)
    _starts: dict[str, list[tuple[float, int]]] = field(default_factory=dict, repr=False)
    _longest: dict[str, float] = field(default_factory=dict, repr=False)

    def add(self, x: float, confirm: float | None = None, at: tuple[str, float, float] | None = None) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)
        if confirm is not None:
            self.confirm.append(confirm)
        c = self._overlapping(at)
        if c is None:
            c = Cluster(*(at or ("", 0.0, 0.0)))
            self.clusters.append(c)
            if c.end > c.start:  # a window of no length overlaps nothing
                bisect.insort(self._starts.setdefault(c.node, []), (c.start, len(self.clusters) - 1))
                self._longest[c.node] = max(self._longest.get(c.node, 0.0), c.end - c.start)
        self.mm1 += 2 * c.n          # m (m - 1) -> (m + 1) m
        c.n += 1
        dc = x - c.mean
        c.mean += dc / c.n
        dm2 = dc * (x - c.mean)
        c.m2 += dm2
        self.w_m2 += dm2

    def _overlapping(self, at: tuple[str, float, float] | None) -> Cluster | None:
        """The first cluster (in the order they were made) that `at` overlaps, or None."""
        if at is None or at[2] <= at[1] or at[0] not in self._starts:
            return None
        node, start, end = at
        starts = self._starts[node]
        # a cluster that overlaps starts after start - (its length) and before end
        lo = bisect.bisect_right(starts, (start - self._longest[node], math.inf))
        hit = None
        for s, i in starts[lo:]:
            if s >= end:
                break
            if (hit is None or i < hit) and self.clusters[i].overlaps(node, start, end):
                hit = i
        return None if hit is None else self.clusters[hit]

    @property
    def confirm_mean(self) -> float | None:
        return sum(self.confirm) / len(self.confirm) if self.confirm else None

    @property
    def within(self) -> tuple[float, int]:
        """(sum of squares within clusters, its degrees of freedom n - clusters)."""
        return self.w_m2, self.n - len(self.clusters)

    @property
    def pairs(self) -> float:
        """sum over clusters of m (m - 1) / n: how much the clusters shrink the expected sum of
        squares, E[m2] = (n - 1) sigma^2 - pairs * tau^2 (tau^2: the shared variance)."""
        return self.mm1 / self.n if self.n else 0.0

    def info(self, rho: float = 0.0) -> float:
        """Independent samples' worth of the mean: n^2 / sum m (1 + (m - 1) rho) over the
        clusters (n when no two runs were concurrent, or rho is 0)."""
        if not self.n or rho <= 0.0:
            return float(self.n)
        return self.n ** 2 / (self.n + rho * self.mm1)   # sum m (1 + (m - 1) rho) = n + rho sum m (m - 1)


class NoisePool:
    """Pooled within-commit variance of one hardware class, updated one sample at a time; with
    the clusters of concurrent runs, the share of it that concurrent runs have in common."""

    def __init__(self) -> None:
        self.m2 = 0.0
        self.dof = 0
        self.pairs = 0.0      # sum over groups of Samples.pairs
        self.w_m2 = 0.0       # within-cluster sum of squares
        self.w_dof = 0        # its degrees of freedom
        self.k_dof = 0        # sum over groups of (clusters - 1)

    def add(self, s: Samples, x: float, confirm: float | None = None,
            at: tuple[str, float, float] | None = None) -> None:
        old = (s.m2, max(s.n - 1, 0), s.pairs, *s.within, max(len(s.clusters) - 1, 0))
        s.add(x, confirm, at)
        new = (s.m2, max(s.n - 1, 0), s.pairs, *s.within, max(len(s.clusters) - 1, 0))
        self.m2 += new[0] - old[0]
        self.dof += new[1] - old[1]
        self.pairs += new[2] - old[2]
        self.w_m2 += new[3] - old[3]
        self.w_dof += new[4] - old[4]
        self.k_dof += new[5] - old[5]

    def sigma(self, prior: float) -> float:
        """Pooled std over commits with >= 2 samples; `prior` until there is at least one."""
        if self.dof <= 0:
            return prior
        return math.sqrt(max(self.m2, 0.0) / self.dof)

    def clustered(self) -> tuple[float, int, float]:
        """(sum of squares, degrees of freedom, rho) with concurrent runs counted as what they
        are worth: E[m2] = dof_all sigma^2 - pairs tau^2 and E[within] = w_dof (sigma^2 - tau^2)
        give sigma^2 and tau^2 (method of moments); rho = tau^2 / sigma^2, clipped to [0, 1] (at 0,
        sigma^2 is the plain pooled m2 / dof: never below it, so shared mode is never less careful
        than the default).
        The degrees of freedom: the clusters' (sum of clusters - 1) plus the within-cluster
        ones weighted by 1 - rho (all of them when concurrent runs share nothing, none when they
        share everything). Without concurrent runs: (m2, dof, 0), as `sigma`. With concurrent
        runs but no two clusters of one code, sigma is not identified: (0, 0, 1)."""
        if self.w_dof <= 0:
            return self.m2, self.dof, 0.0
        omega2 = self.w_m2 / self.w_dof
        if self.dof - self.pairs <= 1e-9 or self.k_dof <= 0:
            return 0.0, 0, 1.0
        sigma2 = (self.m2 - self.pairs * omega2) / (self.dof - self.pairs)
        if sigma2 < omega2:
            # the shared part came out negative: clipped to 0, the runs are independent and the
            # estimate is the plain pooled variance, over all its degrees of freedom (it was the
            # within-cluster variance alone, larger here and from fewer runs: a 2-agent swarm
            # measured sigma 0.0118 over 8 dof and left 0.0143 "over 8 dof" to the next)
            sigma2 = self.m2 / self.dof
        rho = min(1.0, max(0.0, 1.0 - omega2 / sigma2)) if sigma2 > 0 else 0.0
        dof = self.k_dof + int(round((1.0 - rho) * self.w_dof))
        return sigma2 * dof, dof, rho


@dataclass
class Verdict:
    decision: str          # promote | simplification | pending | discard
    reason: str
    delta: float           # reference mean - candidate mean (+ = better)
    margin: float          # what delta had to clear at this look (line cost included)
    se: float
    samples: int
    next: str | None = None  # pending: whose sample comes next, "candidate" or "best"
    looks: tuple[float, ...] = ()  # the test's looks, this one included (store them for the next)


def standard_error(sigma: float, n_cand: int, n_ref: int) -> float:
    return sigma * math.sqrt(1.0 / max(n_cand, 1) + 1.0 / max(n_ref, 1))


def design(cfg: PromotionConfig) -> sequential.Design:
    return sequential.Design(alpha=cfg.alpha, beta=cfg.beta, effect=cfg.effect, rho_alpha=cfg.rho_alpha,
                             rho_beta=cfg.rho_beta, inflation=cfg.inflation)


def margin_for(cfg: PromotionConfig, se: float, net_added: int, dof: int | None = None,
               n_eff: float = 1.0) -> float:
    """What an improvement must clear at the first look of a test with standard error `se` and
    n_eff samples' worth of information (1 / (1/n_c + 1/n_b)): the sequential test's upper
    boundary on the t scale at `dof` (known sigma when None), never below min_delta, plus the
    cost of each net added line."""
    upper, _ = sequential.boundaries((round(n_eff, 3),), design(cfg))[0]
    t = sequential.z_to_t(upper, dof if dof is not None else 10**9)
    return max(cfg.min_delta, t * se) + cfg.cost_per_line * max(0, net_added)


def judge(cfg: PromotionConfig, cand: Samples, ref: Samples, sigma: float, net_added: int,
          allow_simplify: bool = True, dof: int | None = None, sample_ref: bool = True,
          looks: tuple[float, ...] = (), rho: float = 0.0) -> Verdict:
    """One look of the sequential test (sequential.py) of a candidate against a reference.

    promote: the likelihood ratio reached 1/alpha. simplification: net removes lines, is worse
    by at most max(min_delta, simplify_tolerance_k*se), and has been confirmed (>= 2 samples;
    with confirm_runs 0, one). discard: the ratio fell to beta (futility), or the candidate has
    1 + confirm_runs samples and the test did not end. Else pending: one more sample, of the
    reference when it has fewer samples than the candidate (and `sample_ref`: best can be
    re-measured, a parent is not), else of the candidate. (Fewer, not "no more": a 2-agent,
    20-run swarm with noise history moved best in 17 of 24 seeds against 12.) `rho`: the share
    of the noise that concurrent runs have in common (NoisePool.clustered); concurrent samples
    of one side then count as what they are worth (Samples.info).
    """
    diff = ref.mean - cand.mean
    n_c, n_r = cand.info(rho), ref.info(rho)
    looks = sequential.next_looks(tuple(looks), sequential.info_of(n_c, n_r))
    lk = sequential.look(diff, n_c, n_r, sigma, dof if dof is not None else 10**9, design(cfg),
                         looks, min_delta=cfg.min_delta, line_cost=cfg.cost_per_line * max(0, net_added))
    m, se = lk.margin, lk.se

    def v(decision: str, reason: str, nxt: str | None = None) -> Verdict:
        return Verdict(decision, reason, diff, m, se, cand.n, nxt, looks)

    if lk.promote:
        return v("promote", f"beat by {diff:.4f} >= margin {m:.4f} (n={cand.n}, best n={ref.n})")
    can_confirm = cand.n < 1 + cfg.confirm_runs
    tol = max(cfg.min_delta, cfg.simplify_tolerance_k * se)
    if allow_simplify and net_added < 0 and diff >= -tol:
        if cand.n >= 2 or not can_confirm:
            return v("simplification", f"{-net_added} net lines removed, within noise "
                     f"({diff:+.4f} >= -{tol:.4f}, n={cand.n})")
        return v("pending", f"{-net_added} net lines removed, within noise on one run "
                 f"({diff:+.4f}): confirming with another seed", "candidate")
    if lk.futile:
        if diff > 0 and lk.final:
            return v("discard", f"better by {diff:.4f} but inside margin {m:.4f} after {cand.n} "
                     f"samples (best n={ref.n}): the test ends")
        if diff > 0:
            return v("discard", f"better by {diff:.4f} but under the floor {lk.floor:+.4f} of the "
                     f"sequential test (margin {m:.4f}, n={cand.n}, best n={ref.n})")
        return v("discard", f"not better ({diff:+.4f})")
    nxt = "best" if sample_ref and n_r < n_c else "candidate"
    if nxt == "candidate" and not can_confirm:
        return v("discard", f"better by {diff:.4f} but inside margin {m:.4f} after {cand.n} "
                 f"samples (best n={ref.n}): the test ends undecided")
    what = "a new sample of best" if nxt == "best" else "another seed"
    return v("pending", f"better by {diff:.4f}, inside margin {m:.4f} (n={cand.n}, best n={ref.n}): "
             f"looking again after {what}", nxt)


def is_suspect(cand_confirm: float | None, best_confirm: float | None, margin: float) -> bool:
    """Val improved but the held-out confirm split got worse by more than the margin."""
    if cand_confirm is None or best_confirm is None:
        return False
    return cand_confirm - best_confirm > margin
