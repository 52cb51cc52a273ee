"""The real trainer's landscape: a surrogate fitted to runs of the real runner (bench/data/), with
the research bench's landscape interface (bench/landscape.py), so that defaults are chosen on the
real problem and not only on invented bowls.

The data: bench/collect_landscape.py trained the baseline train.py at a designed set of points
of the `baseline` program's search space (six knobs) under the real runner, sandbox and evaluator
(CPU profile, 30 s budget, 1 thread), with at least 20 repeats of the unchanged baseline for the
noise. `<data>.meta.json` says how and when, on which machine and at which code version.

The surrogate: a Gaussian process (scikit-learn's GaussianProcessRegressor: a Matern-5/2 kernel
with one length scale per knob plus a white-noise term, on the knobs scaled to [0, 1], log scale
for rates). Why a GP: ~130 points in six dimensions is its home ground, it separates the
run-to-run noise (the white term) from the smooth effect of the knobs, and a fit with a fixed
seed is deterministic, so the landscape is rebuilt from the data on every load: nothing fitted
is stored, and sampling is reproducible from the data alone. scikit-learn is well kept and the
standard for this (surrogate benchmarks such as HPOBench use it). Its held-out error (k-fold,
printed by `python bench/real_landscape.py`) is reported next to the measured sigma.

A run on the landscape: the GP's mean at the run's knobs plus Gaussian noise of the measured
sigma (the baseline's repeats), or a crash where the real trainer crashed (the nearest measured
point, in the scaled space, crashed). Knobs a program may move but the data never moved
(e.g. SCALAR_LR) are not in the landscape's programs: their search spaces are cut to the six
measured knobs, with the real programs' step sizes.

    python bench/real_landscape.py [--data bench/data/real-cpu-b30-t1.jsonl]   # the fit and its figures
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import random
import statistics
import sys
import threading
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402

from agents.backends.mutate import find_constants, step_value  # noqa: E402
from agents.program import (ChoiceParam, FloatParam, IntParam, LogParam, Param,  # noqa: E402
                            load_program)
from pydantic import TypeAdapter  # noqa: E402

DATA = _HERE / "data" / "real-cpu-b30-t1.jsonl"
PROGRAMS_DIR = _HERE.parent / "programs"


def _shipped_program_order() -> tuple[str, ...]:
    """The programs of the swarm's mix in the order the shipped default config lists them (the
    order decides which programs get an agent first, and a second one)."""
    import yaml

    cfg = yaml.safe_load((_HERE.parent / "coordinator" / "run" / "swarm.default.yaml").read_text())
    return tuple(p["name"] for p in cfg["programs"])


# ... cut to the measured knobs; a program with none of them is left out.
PROGRAM_ORDER = _shipped_program_order()
_SPACE = TypeAdapter(dict[str, Param])


def load_runs(path: Path = DATA) -> tuple[dict, list[dict]]:
    """The metadata and the rows of a collection (bench/collect_landscape.py's output)."""
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return meta, rows


class Scaler:
    """Knob values <-> [0, 1]^d (log scale for `log` parameters)."""

    def __init__(self, space: dict):
        self.names = list(space)
        self.space = space

    def one(self, name: str, v) -> float:
        p = self.space[name]
        if isinstance(p, LogParam):
            return (math.log(v) - math.log(p.min)) / (math.log(p.max) - math.log(p.min))
        if isinstance(p, (IntParam, FloatParam)):
            return (float(v) - p.min) / ((p.max - p.min) or 1.0)
        if isinstance(p, ChoiceParam):
            return p.values.index(v) / max(1, len(p.values) - 1)
        raise TypeError(type(p).__name__)

    def __call__(self, point: dict) -> list[float]:
        return [self.one(n, point[n]) for n in self.names]


class RealLandscape:
    """The research bench's landscape interface over the fitted surrogate."""

    hardware_class = "bench-real"

    def __init__(self, data: Path | str = DATA, null: bool = False, sigma: float | None = None):
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        self.data = Path(data)
        self.meta, self.rows = load_runs(self.data)
        self.null = null
        self.space = _SPACE.validate_python(self.meta["search_space"])
        self.scale = Scaler(self.space)
        self.base_point = dict(self.meta["baseline"])
        ok = [r for r in self.rows if r["status"] == "ok" and r["val_bpb"] is not None]
        self.crashed = [r for r in self.rows if r["status"] != "ok"]
        base_vals = [r["val_bpb"] for r in ok if r["part"] == "baseline"]
        if len(base_vals) < 2:
            raise ValueError(f"{self.data}: fewer than 2 baseline repeats")
        self.measured_sigma = statistics.stdev(base_vals)
        self.sigma = float(sigma if sigma is not None else self.measured_sigma)
        self.seconds_per_run = statistics.median(r["total_seconds"] for r in ok)
        X = np.array([self.scale(r["point"]) for r in ok])
        y = np.array([r["val_bpb"] for r in ok])
        d = X.shape[1]
        # normalize_y: the kernel sees y in units of its std, so the noise term starts at the
        # baseline repeats' variance in those units.
        noise0 = (self.measured_sigma / float(np.std(y))) ** 2
        kernel = (ConstantKernel(1.0, (1e-3, 1e2)) * Matern([0.3] * d, (0.02, 20.0), nu=2.5)
                  + WhiteKernel(noise0, (1e-5, 1.0)))
        self.gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=4, random_state=0)
        _quiet_fit(self.gp, X, y)
        self._X, self._y = X, y
        self._parts = [r["part"] for r in ok]
        self._all_X = np.array([self.scale(r["point"]) for r in self.rows])
        self._cache: dict[tuple, float] = {}
        self._lock = threading.Lock()
        self._base_text = _baseline_source()
        self.baseline = self._predict(self.base_point)
        self.optimum, self.optimum_point = self._find_optimum()
        if null:
            self.optimum = self.baseline
        self.max_gain = self.baseline - self.optimum

    # -- the surrogate ------------------------------------------------------------------------
    def _predict(self, point: dict) -> float:
        key = tuple(point[n] for n in self.scale.names)
        with self._lock:
            v = self._cache.get(key)
        if v is None:
            # Inside the measured box only: a point outside is read at its edge, never extrapolated.
            x = np.clip(np.array([self.scale(point)]), 0.0, 1.0)
            v = float(self.gp.predict(x)[0])
            with self._lock:
                self._cache[key] = v
        return v

    def _find_optimum(self) -> tuple[float, dict]:
        """The lowest GP mean over the search space's grid reachable by its steps from the
        baseline (the points a program's search can name), searched by random restarts and
        coordinate descent in step units."""
        rng = random.Random(0)
        best_v, best_p = self._predict(self.base_point), dict(self.base_point)
        starts = [dict(self.base_point)] + [self._random_point(rng) for _ in range(40)]
        for p in starts:
            v = self._predict(p)
            improved = True
            while improved:
                improved = False
                for n in self.scale.names:
                    for k in (-1, 1):
                        q = dict(p)
                        q[n] = step_value(p[n], self.space[n], rng, k)
                        if q[n] == p[n]:
                            continue
                        w = self._predict(q)
                        if w < v - 1e-9:
                            p, v, improved = q, w, True
            if v < best_v:
                best_v, best_p = v, p
        return best_v, best_p

    def _random_point(self, rng: random.Random) -> dict:
        p = dict(self.base_point)
        for n in self.scale.names:
            p[n] = step_value(self.base_point[n], self.space[n], rng, rng.randint(-6, 6))
        return p

    def point_of(self, text: str) -> dict:
        """The measured knobs' values in a train.py (the CPU branch of a device switch)."""
        consts = find_constants(text)
        p = dict(self.base_point)
        for n in self.scale.names:
            c = consts.get(n)
            if c is not None:
                v = c.values[-1]
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    p[n] = v
        return p

    # -- the landscape interface (bench/landscape.py) ---------------------------------------
    def baseline_text(self) -> str:
        return self._base_text

    def true_bpb(self, text: str) -> float:
        if self.null:
            return self.baseline
        return self._predict(self.point_of(text))

    def gain(self, text: str) -> float:
        return self.baseline - self.true_bpb(text)

    def crashes(self, text: str) -> bool:
        """Where the real trainer crashed: the nearest measured point (scaled space) crashed."""
        if not self.crashed or self.null:
            return False
        x = np.array(self.scale(self.point_of(text)))
        i = int(np.argmin(((self._all_X - x) ** 2).sum(axis=1)))
        return self.rows[i]["status"] != "ok"

    def sample(self, text: str, rng: random.Random) -> tuple[str, float | None]:
        """One run: ("crash", None) where the trainer crashed, else ("ok", true + noise)."""
        if self.crashes(text):
            return "crash", None
        return "ok", self.true_bpb(text) + rng.gauss(0.0, self.sigma)

    def program_space(self, name: str) -> dict:
        """A shipped program's search space cut to the measured knobs and to their measured
        ranges (its own step sizes): outside the measured box the GP only extrapolates (the
        shipped `explore` program's DEPTH 1 and MATRIX_LR 0.5 read as gains no run showed)."""
        prog = load_program(PROGRAMS_DIR / f"{name}.md")
        out = {}
        for k, v in prog.search_space.items():
            m = self.space.get(k)
            if m is None:
                continue
            if isinstance(v, ChoiceParam):
                lo, hi = (m.values[0], m.values[-1]) if isinstance(m, ChoiceParam) else (m.min, m.max)
                vals = [x for x in v.values if isinstance(x, (int, float)) and lo <= x <= hi]
                if len(vals) >= 2:
                    out[k] = v.model_copy(update={"values": vals})
            elif not isinstance(m, ChoiceParam):
                out[k] = v.model_copy(update={"min": max(v.min, m.min), "max": min(v.max, m.max)})
        return out

    @functools.cached_property
    def program_names(self) -> list[str]:
        return [n for n in PROGRAM_ORDER if self.program_space(n)]

    def program_text(self, name: str, adopt: str | None = None) -> str:
        prog = load_program(PROGRAMS_DIR / f"{name}.md")
        space = self.program_space(name)
        lines = [f"  {k}: {json.dumps(v.model_dump())}" for k, v in space.items()]
        head = f"adopt: {adopt or prog.adopt or 'if-better'}\n"
        body = prog.text.split("```yaml")[0].rstrip()
        return f"{body}\n\n```yaml\n{head}search_space:\n" + "\n".join(lines) + "\n```\n"

    def programs_for(self, n: int) -> list[str]:
        names = self.program_names
        return [names[i % len(names)] for i in range(n)]

    single_program = "baseline"

    # -- figures ------------------------------------------------------------------------------
    def cross_validation(self, folds: int = 10) -> dict:
        """k-fold held-out error of the GP mean against the measured values (same kernel
        hyperparameters refitted per fold)."""
        from sklearn.base import clone
        idx = np.arange(len(self._y))
        np.random.default_rng(0).shuffle(idx)
        err = np.empty(len(idx))
        for f in range(folds):
            test = idx[f::folds]
            train = np.setdiff1d(idx, test)
            gp = _quiet_fit(clone(self.gp), self._X[train], self._y[train])
            err[test] = gp.predict(self._X[test]) - self._y[test]
        rmse = float(np.sqrt(np.mean(err ** 2)))
        by_part: dict[str, float] = {}
        for part in sorted(set(self._parts)):
            m = np.array([p == part for p in self._parts])
            by_part[part] = float(np.sqrt(np.mean(err[m] ** 2)))
        return {"rmse": rmse, "mae": float(np.mean(np.abs(err))), "by_part": by_part,
                "model_error": math.sqrt(max(0.0, rmse ** 2 - self.measured_sigma ** 2)), "n": len(idx)}

    @property
    def gp_noise(self) -> float:
        """The GP's white-noise term in bpb (its own estimate of the run-to-run sigma)."""
        return math.sqrt(self.gp.kernel_.k2.noise_level) * float(np.std(self._y))


def _quiet_fit(gp, X, y):
    # A length scale at its bound (a knob with no effect) is an answer, not a problem to warn about.
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gp.fit(X, y)


@functools.lru_cache(maxsize=1)
def _baseline_source() -> str:
    from trainer import baseline_path
    return Path(baseline_path()).read_text(encoding="utf-8")


def describe(land: RealLandscape) -> None:
    m = land.meta
    parts: dict[str, int] = {}
    for r in land.rows:
        parts[r["part"]] = parts.get(r["part"], 0) + 1
    print(f"data: {land.data.name}: {len(land.rows)} runs ({', '.join(f'{k} {v}' for k, v in parts.items())}), "
          f"{len(land.crashed)} crashed; {m['profile']} profile, budget {m['budget']:g} s, {m['threads']} thread(s), "
          f"{m['machine']['cpu']}, code {m['code_version']}, started {m['started']}")
    base = [r for r in land.rows if r["part"] == "baseline" and r["status"] == "ok"]
    vals = [r["val_bpb"] for r in base]
    steps = [r["steps"] for r in base]
    half = len(vals) // 2
    print(f"baseline repeats: n={len(vals)} mean {statistics.mean(vals):.4f} sigma {statistics.stdev(vals):.4f} "
          f"(first half {statistics.mean(vals[:half]):.4f}, second half {statistics.mean(vals[half:]):.4f}); "
          f"steps {min(steps)}-{max(steps)}")
    reps: dict[str, list[float]] = {}
    for r in land.rows:
        if r["part"] in ("replicate", "local") and r["status"] == "ok":
            reps.setdefault(json.dumps(r["point"], sort_keys=True), []).append(r["val_bpb"])
    rs = [statistics.stdev(v) for v in reps.values() if len(v) >= 3]
    if rs:
        print(f"replicated points away from the baseline: sigma {', '.join(f'{x:.4f}' for x in rs)}")
    print(f"GP kernel: {land.gp.kernel_}")
    cv = land.cross_validation()
    print(f"held-out (10-fold) RMSE {cv['rmse']:.4f}, MAE {cv['mae']:.4f} over {cv['n']} runs; measured sigma "
          f"{land.measured_sigma:.4f} (the GP's noise term {land.gp_noise:.4f}); model error beyond the noise "
          f"~{cv['model_error']:.4f}")
    print("  RMSE by part: " + ", ".join(f"{k} {v:.4f}" for k, v in cv["by_part"].items()))
    # How much of the baseline's spread is the machine's speed (steps per budget), not the seed.
    st = np.array([r["steps"] for r in base], dtype=float)
    slope, icpt = np.polyfit(st, vals, 1)
    resid = np.array(vals) - (slope * st + icpt)
    print(f"baseline val_bpb against steps: {slope * 10:+.4f} bpb per 10 steps; sigma with the steps "
          f"regressed out {float(np.std(resid, ddof=2)):.4f} (the seed's share)")
    print(f"baseline (GP mean) {land.baseline:.4f}; optimum on the step grid {land.optimum:.4f} "
          f"(max gain {land.max_gain:.4f} = {land.max_gain / land.sigma:.1f} sigma) at {land.optimum_point}")
    print("one step from the baseline (gain in sigma, + = better):")
    rng = random.Random(0)
    for n in land.scale.names:
        cells = []
        for k in (-2, -1, 1, 2):
            p = dict(land.base_point)
            p[n] = step_value(p[n], land.space[n], rng, k)
            cells.append(f"{k:+d}: {p[n]!s:>7} {(land.baseline - land._predict(p)) / land.sigma:+5.1f}")
        print(f"  {n:<14} " + "   ".join(cells))
    print("programs (measured knobs): " + "; ".join(f"{p}: {', '.join(land.program_space(p))}"
                                                   for p in land.program_names))
    print(f"seconds per run (median total): {land.seconds_per_run:.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fit the real trainer's landscape and print its figures.")
    ap.add_argument("--data", default=str(DATA))
    a = ap.parse_args(argv)
    describe(RealLandscape(a.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
