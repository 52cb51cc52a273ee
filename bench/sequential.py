"""The sequential test alone, by simulation: its false-promotion rate under no effect, its power
at 1, 2, 2.5 and 3 sigma, and the runs it spends per decision.

    python bench/sequential.py [--trials 4000] [--promotion KEY=VALUE ...]

Each trial is one candidate tested with the coordinator's own rule (coordinator/decide/rules.py
judge(), one call per look, the looks carried from one to the next as the coordinator does):
best starts with n_b runs (and sigma with the degrees of freedom those give, plus a noise
history when the scenario has one); the candidate's first run is the first look; while the
test goes on, each look adds the run it asks for (of best, or of the candidate), and those runs
feed sigma as they do in the coordinator (repeats of best, and confirmations). Run noise is
N(0, 1): effects are in sigmas of one run. Sigma is estimated, never known.

Scenarios: no history (best measured by the first round: 9 runs, 8 degrees of freedom), with
history (24 degrees of freedom of prior; best has 2 runs: the 2-agent start), and a
well-measured best (20 runs, history). Ends with one line:
  false_promotions=X power_1=X power_2=X power_2.5=X power_3=X runs_null=X runs_2=X
(the figures of the no-history scenario: the hardest; the table above has the others).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from agents.messages import PromotionConfig  # noqa: E402
from coordinator.decide.rules import NoisePool, Samples, judge  # noqa: E402

EFFECTS = (0.0, 1.0, 2.0, 2.25, 2.5, 3.0, 4.0)
# (name, best's runs at the first look, prior dof from a noise history)
SCENARIOS = (("no history, best 9 runs", 9, 0), ("history 24 dof, best 2 runs", 2, 24),
             ("history 24 dof, best 20 runs", 20, 24))


def trial(cfg: PromotionConfig, effect: float, n_best: int, prior_dof: int, rng: random.Random) -> tuple[bool, int]:
    """One candidate's whole test: (promoted, runs after its first)."""
    pool = NoisePool()
    best, best_group = Samples(), Samples()
    for _ in range(n_best):
        x = rng.gauss(0.0, 1.0)
        best.add(x)
        pool.add(best_group, x)
    prior_m2 = sum(rng.gauss(0.0, 1.0) ** 2 for _ in range(prior_dof))  # chi2(prior_dof): honest
    cand, cand_confirms = Samples(), Samples()
    cand.add(rng.gauss(-effect, 1.0))
    looks: tuple[float, ...] = ()
    runs = 0
    for _ in range(200):
        dof = pool.dof + prior_dof
        if dof < 1:
            return False, runs
        sigma = ((pool.m2 + prior_m2) / dof) ** 0.5
        v = judge(cfg, cand, best, sigma, 0, allow_simplify=False, dof=dof, looks=looks)
        looks = v.looks
        if v.decision == "promote":
            return True, runs
        if v.decision != "pending":
            return False, runs
        runs += 1
        if v.next == "best":
            x = rng.gauss(0.0, 1.0)
            best.add(x)
            pool.add(best_group, x)
        else:
            x = rng.gauss(-effect, 1.0)
            cand.add(x)
            pool.add(cand_confirms, x)  # confirmations feed sigma; the first run does not
    return False, runs


def run(cfg: PromotionConfig, trials: int, seed: int = 0, out=print) -> dict:
    results = {}
    out(f"sequential test: alpha {cfg.alpha}, beta {cfg.beta} at {cfg.effect} sigma, rho_alpha "
        f"{cfg.rho_alpha}, rho_beta {cfg.rho_beta}, inflation {cfg.inflation}, at most "
        f"{1 + cfg.confirm_runs} runs of a candidate; {trials} trials per cell")
    out(f"{'scenario':<30} " + " ".join(f"{f'{e:g} sigma':>15}" for e in EFFECTS))
    out(f"{'':<30} " + " ".join(f"{'P(promote) runs':>15}" for _ in EFFECTS))
    for name, n_best, prior in SCENARIOS:
        row = []
        for e in EFFECTS:
            rng = random.Random(f"{seed}/{name}/{e}")
            n = hits = runs = 0
            for _ in range(trials if e else trials * 4):  # the null rate needs more trials
                p, r = trial(cfg, e, n_best, prior, rng)
                n += 1
                hits += p
                runs += r
            results[(name, e)] = (hits / n, runs / n)
            row.append(f"{hits / n:>8.4f} {runs / n:>6.2f}")
        out(f"{name:<30} " + " ".join(row))
    first = SCENARIOS[0][0]
    line = (f"false_promotions={results[(first, 0.0)][0]:.4f} power_1={results[(first, 1.0)][0]:.3f} "
            f"power_2={results[(first, 2.0)][0]:.3f} power_2.5={results[(first, 2.5)][0]:.3f} "
            f"power_3={results[(first, 3.0)][0]:.3f} runs_null={results[(first, 0.0)][1]:.2f} "
            f"runs_2={results[(first, 2.0)][1]:.2f}")
    out(line)
    return {"line": line, "cells": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--promotion", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    cfg = PromotionConfig(**dict(kv.split("=", 1) for kv in a.promotion))
    t0 = time.time()
    run(cfg, a.trials, a.seed)
    print(f"[{time.time() - t0:.0f}s]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
