"""The sequential test's boundaries (coordinator/decide/sequential.py): error spending spends
exactly what it says, a simulation of the whole test finds that false-promotion rate, and the
t and normal scales map onto each other."""
from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.decide import sequential
from coordinator.decide.sequential import Design, boundaries, t_to_z, z_to_t
from coordinator.decide.stats import t_sf


def test_spending_is_exact_at_every_look():
    d = Design(alpha=0.005, beta=0.05, effect=2.0, rho_alpha=0.5, rho_beta=0.5)
    infos = tuple(round(1 / (1 / c + 1 / 9), 3) for c in range(1, 8))
    for k in range(1, len(infos) + 1):
        st = sequential._state(infos[:k], d)
        t = min(1.0, infos[k - 1] / d.i_max)
        assert st.a_spent == pytest.approx(d.alpha * t ** d.rho_alpha, rel=1e-4)
        assert st.b_spent == pytest.approx(d.beta * t ** d.rho_beta, rel=1e-3)
    b = boundaries(infos, d)
    assert all(lo < up for up, lo in b)
    assert [lo for _, lo in b] == sorted(lo for _, lo in b)  # futility rises with information


def test_a_simulated_test_promotes_nothing_at_alpha():
    """Brownian paths with no effect, looked at where the boundaries say, by the same rule the
    coordinator applies: the share promoted is alpha (200k paths: +-0.0005 at 3 sigma)."""
    d = Design(alpha=0.01, beta=0.05, effect=2.0, rho_alpha=0.5, rho_beta=0.5)
    n_b = 6
    infos = tuple(round(1 / (1 / c + 1 / n_b), 3) for c in range(1, 40))
    infos = tuple(i for i in infos if i <= d.i_max) + (round(d.i_max + 0.01, 3),)
    b = boundaries(infos, d)
    rng = np.random.default_rng(3)
    m = 200_000
    s = np.zeros(m)
    alive = np.ones(m, bool)
    promoted = np.zeros(m, bool)
    prev = 0.0
    for info, (up, lo) in zip(infos, b):
        s = s + rng.normal(0.0, math.sqrt(info - prev), m)
        prev = info
        z = s / math.sqrt(info)
        promoted |= alive & (z >= up)
        alive &= (z < up) & (z > lo)
        if up == lo:
            break
    assert abs(promoted.mean() - d.alpha) < 0.0006, promoted.mean()
    assert not alive.any()


def test_t_and_normal_scales_are_inverse():
    for z in (-2.0, 0.5, 2.9, 3.5):
        for dof in (3, 8, 30):
            t = z_to_t(z, dof)
            assert abs(t) > abs(z)
            assert t_to_z(t, dof) == pytest.approx(z, abs=1e-6)
            assert t_sf(abs(t), dof) == pytest.approx(0.5 * math.erfc(abs(z) / math.sqrt(2)), rel=1e-5)
    assert z_to_t(2.0, 10**6) == 2.0 and t_to_z(2.0, 10**6) == 2.0
