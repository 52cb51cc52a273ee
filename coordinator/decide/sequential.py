"""The sequential test that says whether a candidate's train.py beats best: a group-sequential
design whose boundaries come from error spending, at whatever information each look has.

At each look the evidence is the difference of the means D = mean(best) - mean(candidate)
(less the cost of the lines it adds), with standard error se = sigma * sqrt(1/n_c + 1/n_b), so
z = D / se (put on the normal scale through the Student-t at sigma's degrees of freedom: sigma
is an estimate) and the information is I = 1/(1/n_c + 1/n_b) samples' worth (1/se^2 in units of
1/sigma^2). Looks come with every new sample of the candidate or of best; the first look is the
experiment's own run.
- promote when z >= u_k (and D >= min_delta); stop for futility (discard) when z <= l_k; else one
  more sample: of best while it has fewer samples than the candidate (best's samples serve
  every candidate judged against it), else of the candidate.
- u_k spends the false-promotion budget `alpha` along the information fraction t = I / I_max as
  alpha * t^rho_alpha: exactly that much probability of a promotion by look k when nothing is
  better (sigma known), whatever the looks' information turned out to be (Lan-DeMets). rho < 1
  spends early: most big wins are promoted by their first run.
- l_k spends `beta` the same way under an effect of `effect` sigma (binding: a stopped candidate
  is never promoted, which the upper boundary counts on).
- I_max is `inflation` times the information a single test would need (alpha, power 1 - beta at
  `effect`); at or past it the test ends (u = l). confirm_runs caps the candidate's samples too.
The probabilities are computed by the usual recursive numerical integration over the looks
(Jennison & Turnbull, Group Sequential Methods, ch. 19) on a grid of the score S = z * sqrt(I):
a few milliseconds per new schedule of looks, cached. bench/sequential.py measures the error
rate and power by simulation, with sigma estimated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from coordinator.decide.stats import t_sf

_N = NormalDist()
# Above this many degrees of freedom sigma is as good as known: the t scale is the normal one.
_DOF_NORMAL = 10_000
_GRID = 101       # points of the continuation region's density per look
_FAR = 40.0       # "no boundary" on the z scale


@dataclass(frozen=True)
class Design:
    alpha: float          # false-promotion probability over every look of one test (no effect)
    beta: float           # probability of stopping for futility (effect `effect`)
    effect: float         # in sigmas of one run
    rho_alpha: float = 0.7
    rho_beta: float = 1.0
    inflation: float = 1.2

    @property
    def i_max(self) -> float:
        """Information (samples' worth) at which the test ends."""
        z = -_N.inv_cdf(self.alpha) - _N.inv_cdf(self.beta)
        return self.inflation * (z / self.effect) ** 2


@dataclass(frozen=True)
class Look:
    """The evidence at one look and what the test makes of it."""

    diff: float        # best mean - candidate mean - line cost (+ = better)
    se: float          # standard error of diff
    z: float           # diff / se on the normal scale
    upper: float       # z at or above which it promotes
    lower: float       # z at or below which it stops for futility
    margin: float      # the difference of means (line cost included) that would promote now
    floor: float       # the difference of means at or below which it stops now
    info: float        # this look's information (samples' worth)
    final: bool        # the test ends at this look (u == l)
    big_enough: bool = True  # diff >= min_delta: never a promotion below it, whatever z says

    @property
    def promote(self) -> bool:
        return self.z >= self.upper and self.big_enough

    @property
    def futile(self) -> bool:
        return not self.promote and (self.z <= self.lower or self.final)


# --- the normal and t scales -------------------------------------------------------------------
def t_to_z(t: float, dof: float) -> float:
    """The normal quantile with the same tail as t under Student's t with `dof` degrees of freedom."""
    if dof >= _DOF_NORMAL or not math.isfinite(t):
        return t
    if t == 0.0:
        return 0.0
    p = t_sf(abs(t), dof)
    if p <= 0.0:
        return math.copysign(38.0, t)
    return math.copysign(-_N.inv_cdf(p), t)


def _t_pdf(t: float, dof: float) -> float:
    return math.exp(math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
                    - (dof + 1) / 2 * math.log1p(t * t / dof))


@lru_cache(maxsize=65536)
def _z_to_t_pos(z: float, dof: int) -> float:
    tail = _N.cdf(-z)
    # Cornish-Fisher start, then Newton on the tail (a few steps: ~1e-10; bisection took 0.5 ms).
    t = z + (z ** 3 + z) / (4 * dof) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * dof ** 2)
    for _ in range(12):
        step = (t_sf(t, dof) - tail) / _t_pdf(t, dof)
        t += step
        if abs(step) < 1e-10:
            break
    return t


def z_to_t(z: float, dof: int) -> float:
    """The t quantile (at `dof`) with the same tail as the normal quantile z."""
    if dof >= _DOF_NORMAL or not math.isfinite(z) or abs(z) >= _FAR:
        return z
    if dof < 1:
        return math.copysign(math.inf, z)
    if z == 0.0:
        return 0.0
    # Cached by z rounded to 1e-4: boundaries repeat, and the margin is a display figure.
    return math.copysign(_z_to_t_pos(round(abs(z), 4), int(dof)), z)


# --- boundaries by error spending ---------------------------------------------------------------
def _phi(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))


def _cdf(x: np.ndarray) -> np.ndarray:
    """The normal CDF, vectorized (erfc from Abramowitz & Stegun 7.1.26 is not enough in the
    tails; numpy has no erf: W. J. Cody's rational approximation via math.erfc per element
    would cost ~1 ms a call, so a Chebyshev-fitted erfc (Numerical Recipes erfcc, 1.2e-7 relative)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223
                                                                                   + t * 0.17087277)))))))))
    return np.where(x >= 0, 1.0 - 0.5 * r, 0.5 * r)


def _solve(f, df, target: float, lo: float, hi: float, x: float) -> float:
    """The root of f(c) = target in [lo, hi] (f monotone): Newton steps from x, kept inside a
    shrinking bracket (bisection when a step leaves it): ~6 evaluations, not 50."""
    f_lo = f(lo) - target
    for _ in range(60):
        fx = f(x) - target
        if abs(fx) < 1e-12 * max(1.0, target) or hi - lo < 1e-9:
            return x
        if (fx > 0) == (f_lo > 0):
            lo, f_lo = x, fx
        else:
            hi = x
        g = df(x)
        nx = x - fx / g if g != 0 else 0.5 * (lo + hi)
        x = nx if lo < nx < hi else 0.5 * (lo + hi)
    return x


@dataclass(frozen=True)
class _State:
    """The design after some looks: their boundaries, what was spent, the densities (H0, H1)
    of the score S on the continuation region of the last look."""

    bounds: tuple[tuple[float, float], ...]
    a_spent: float
    b_spent: float
    grid: np.ndarray | None
    w0: np.ndarray | None
    w1: np.ndarray | None
    info: float
    ended: bool


@lru_cache(maxsize=8192)
def _state(infos: tuple[float, ...], d: Design) -> _State:
    """Cached by prefix: a test one look longer costs one step, not its whole history."""
    if not infos:
        return _State((), 0.0, 0.0, None, None, None, 0.0, False)
    st = _state(infos[:-1], d)
    if st.ended:
        return st
    info = infos[-1]
    t = min(1.0, info / d.i_max)
    a_k = max(0.0, d.alpha * t ** d.rho_alpha - st.a_spent)
    b_k = max(0.0, d.beta * t ** d.rho_beta - st.b_spent)
    s_i = math.sqrt(info)
    far = _FAR * s_i
    if st.grid is None:
        cu = s_i * -_N.inv_cdf(a_k) if a_k > 0 else far
        cl = d.effect * info + s_i * _N.inv_cdf(b_k) if b_k > 0 else -far
        cl = min(cl, cu)
        a_sp = _N.cdf(-cu / s_i) if cu < far else 0.0
        b_sp = _N.cdf((cl - d.effect * info) / s_i) if cl > -far else 0.0
    else:
        s, w0, w1 = st.grid, st.w0, st.w1
        step = info - st.info
        sd = math.sqrt(step)
        shift = d.effect * step

        def p_up(c: float) -> float:   # P0(S at or above c now, still going before)
            return float(np.dot(w0, 1.0 - _cdf((c - s) / sd)))

        def dp_up(c: float) -> float:
            return -float(np.dot(w0, _phi((c - s) / sd))) / sd

        def p_down(c: float) -> float:  # P1(S at or below c now, still going before)
            return float(np.dot(w1, _cdf((c - s - shift) / sd)))

        def dp_down(c: float) -> float:
            return float(np.dot(w1, _phi((c - s - shift) / sd))) / sd

        top, bottom = float(s[-1]) + 12 * sd, float(s[0]) - 12 * sd + shift
        cu = _solve(p_up, dp_up, a_k, bottom, top, s_i * 3.0) if a_k > 0 else far
        cl = _solve(p_down, dp_down, b_k, bottom, top, d.effect * info) if b_k > 0 else -far
        cl = min(cl, cu)
        a_sp = p_up(cu) if cu < far else 0.0
        b_sp = p_down(cl) if cl > -far else 0.0
    if t >= 1.0:
        cl = cu
    bounds = st.bounds + ((cu / s_i, cl / s_i),)
    if cl >= cu:
        return _State(bounds, st.a_spent + a_sp, st.b_spent + b_sp, None, None, None, info, True)
    grid = np.linspace(cl, cu, _GRID)
    h = grid[1] - grid[0]
    wts = np.full(_GRID, h)
    wts[0] = wts[-1] = h / 2
    if st.grid is None:
        g0 = _phi(grid / s_i) / s_i
        g1 = _phi((grid - d.effect * info) / s_i) / s_i
    else:
        k = _phi((grid[:, None] - s[None, :]) / sd) / sd
        g0 = k @ w0
        g1 = (_phi((grid[:, None] - s[None, :] - shift) / sd) / sd) @ w1
    return _State(bounds, st.a_spent + a_sp, st.b_spent + b_sp, grid, g0 * wts, g1 * wts, info, False)


def boundaries(infos: tuple[float, ...], design: Design) -> tuple[tuple[float, float], ...]:
    """(upper, lower) on the z scale at each look of a test whose looks had these informations
    (increasing). The last look ends the test (u == l) when it reaches the design's I_max."""
    return _state(tuple(infos), design).bounds


def info_of(n_cand: int, n_ref: int) -> float:
    """A look's information: 1 / (1/n_c + 1/n_b) samples' worth."""
    return 1.0 / (1.0 / max(n_cand, 1) + 1.0 / max(n_ref, 1))


def next_looks(looks: tuple[float, ...], info: float) -> tuple[float, ...]:
    """The looks of a test with this one added (a look without new information is the last one
    again: it spends nothing). Rounded so that schedules repeat in the cache."""
    info = round(info, 3)
    if looks and info <= looks[-1] + 1e-9:
        return looks
    return looks + (info,)


def look(diff_raw: float, n_cand: int, n_ref: int, sigma: float, dof: int, design: Design,
         looks: tuple[float, ...], *, min_delta: float, line_cost: float) -> Look:
    """The test at its latest look (`looks`: the informations of every look so far, this one
    last; see next_looks): `diff_raw` = mean(ref) - mean(candidate), `line_cost` the bpb the
    candidate's added lines must buy on top."""
    info = info_of(n_cand, n_ref)
    se = sigma / math.sqrt(info)
    diff = diff_raw - line_cost
    if se <= 0:
        # No noise at all (a deterministic runner): the difference is known exactly. Within
        # half of min_delta of it, one confirmation (as the rule before the sequential test).
        m = min_delta + line_cost
        if diff >= min_delta:
            return Look(diff, 0.0, _FAR, 0.0, 0.0, m, m, info, True)
        again = diff >= 0.5 * min_delta and n_cand == 1
        return Look(diff, 0.0, 0.0, _FAR, -_FAR if again else _FAR, m, m - min_delta / 2, info, not again,
                    big_enough=False)
    if dof < 1 or not looks:
        return Look(diff, se, 0.0, math.inf, -math.inf, math.inf, -math.inf, info, False)
    bounds = boundaries(looks, design)
    upper, lower = bounds[-1] if len(bounds) == len(looks) else (bounds[-1][0], bounds[-1][0])
    final = lower >= upper
    z = t_to_z(diff / se, dof)
    margin = max(min_delta, z_to_t(upper, dof) * se) + line_cost
    floor = z_to_t(lower, dof) * se + line_cost if lower > -_FAR else -math.inf
    return Look(diff, se, z, upper, lower, margin, floor, info, final, big_enough=diff >= min_delta)
