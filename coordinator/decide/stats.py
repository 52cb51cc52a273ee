"""Small statistics the promotion rule needs, without scipy: the normal tail and Student-t
quantiles (through the regularized incomplete beta function)."""
from __future__ import annotations

import math
from functools import lru_cache


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-14
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom (t >= 0)."""
    return 0.5 * betainc(dof / 2.0, 0.5, dof / (dof + t * t))


@lru_cache(maxsize=4096)
def t_multiplier(k: float, dof: int) -> float:
    """The Student-t quantile (at `dof` degrees of freedom) with the same upper tail as k
    standard deviations of the normal: what k becomes when sigma itself is an estimate from
    `dof` degrees of freedom. Tends to k as dof grows; inf when dof < 1."""
    if dof < 1:
        return math.inf
    tail = 1.0 - normal_cdf(k)
    if tail <= 0.0:
        return math.inf
    lo, hi = 0.0, max(2.0 * k, 1.0)
    while t_sf(hi, dof) > tail:
        hi *= 2.0
        if hi > 1e7:
            return math.inf
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, dof) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return 0.5 * (lo + hi)
