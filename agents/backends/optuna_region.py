"""Search that starts where best is, for the optuna backend: a trust region around the agent's
train.py (its copy of best), measured in the program's own steps, that grows each time the
centre moves (best moved) and shrinks after failures (TuRBO-like), and the rule that a study
never proposes a point it already holds.

The sampler (TPE or CMA-ES) still chooses the direction; `LocalSampler` wraps it the way
optuna's PartialFixedSampler does and projects its point into the region: of the constants it
moved, the `changes` it moved furthest (as a share of each one's range) move, each by at least
one and at most `steps` of the program's `step` (what `mutate` uses: `log` multiplies by step,
`int`/`float` add it, `choice` moves along the list), rounded as train.py is written. The
trial holds the projected point, so the sampler learns from what was trained.

The region is replayed from the study's own trials (user attribute `centre` on each trial
proposed here), so every agent of the program sees the same region and a resumed swarm goes
on where it stopped. optuna is not imported here: this module is loaded with the backend
registry by every agent.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import random
from dataclasses import dataclass
from typing import Any

from agents.program import ChoiceParam, IntParam, LogParam, Program

log = logging.getLogger(__name__)

# Where a study starts: mutate's moves (1-2 constants, 1-2 steps each; bench/search.py).
FIRST_STEPS = 2.0
FIRST_CHANGES = 2
# Each move of the centre doubles the steps and allows one more constant; this many failures
# in a row (a trial no better than the mean of its centre's samples, or a crash) halve them.
FAILS_TO_SHRINK = 4
MAX_STEPS = 64.0         # past every shipped range: the sampler's own point, unprojected
_TRIES = 200             # random local moves tried before widening, when a point is taken


def canon(value):
    """A parameter value as train.py holds it (numbers at the 4 significant digits the writer
    keeps; 0 and 0.0 alike), so two points that train the same file compare equal."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(f"{value:.4g}")
    return value


def point_key(params: dict) -> str:
    return json.dumps({n: canon(v) for n, v in sorted(params.items())}, sort_keys=True)


# --- one constant's axis in step units ----------------------------------------------------------

class Axis:
    """One search-space constant: positions in its program's steps, and back to a value that
    lies in the Optuna distribution (on its grid, rounded as train.py is written)."""

    def __init__(self, param, dist):
        self.param, self.dist = param, dist
        self.lo, self.hi = self._bounds()

    def _bounds(self) -> tuple[float, float]:
        if isinstance(self.param, ChoiceParam):
            return 0.0, float(len(self.dist.choices) - 1)
        return self.pos(self.dist.low), self.pos(self.dist.high)

    @property
    def span(self) -> float:
        return max(self.hi - self.lo, 1.0)

    def pos(self, value) -> float:
        p = self.param
        if isinstance(p, ChoiceParam):
            for i, c in enumerate(self.dist.choices):
                if c == value and type(c) is type(value):
                    return float(i)
            return 0.0
        if isinstance(p, LogParam):
            return math.log(max(float(value), 1e-300)) / math.log(p.step)
        if isinstance(p, IntParam):
            return (float(value) - self.dist.low) / p.step
        return float(value) / p.step                       # FloatParam

    def value(self, pos: float):
        pos = min(self.hi, max(self.lo, pos))
        p, d = self.param, self.dist
        if isinstance(p, ChoiceParam):
            return d.choices[int(round(pos))]
        if isinstance(p, IntParam):
            return int(min(d.high, max(d.low, d.low + round(pos) * p.step)))
        raw = math.exp(pos * math.log(p.step)) if isinstance(p, LogParam) else pos * p.step
        from optuna.distributions import IntDistribution

        if isinstance(d, IntDistribution):               # a `log` entry on an int constant
            return int(min(d.high, max(d.low, round(raw))))
        return min(d.high, max(d.low, canon(float(raw))))

    def grid(self, centre, limit: int) -> list | None:
        """Every value a move from `centre` can reach (whole steps of the program's, and the range's
        ends); None when there are more than `limit`."""
        c = self.pos(centre)
        lo, hi = math.ceil(self.lo - c - 1e-9), math.floor(self.hi - c + 1e-9)
        if hi - lo + 1 > limit:
            return None
        out = {}
        for v in [self.value(c + k) for k in range(lo, hi + 1)] + [self.value(self.lo), self.value(self.hi)]:
            out.setdefault(repr(canon(v)), v)
        return list(out.values())


def axes(space: dict, dists: dict) -> dict[str, Axis]:
    return {n: Axis(space[n], d) for n, d in dists.items() if n in space}


def clamp_into(values: dict, ax: dict[str, Axis]) -> dict:
    """The centre: each current value, moved into its range when it lies outside."""
    out = {}
    for n, a in ax.items():
        v = values.get(n)
        if v is None:
            continue
        out[n] = a.value(a.pos(v)) if not _inside(v, a) else v
    return out


def _inside(v, a: Axis) -> bool:
    if isinstance(a.param, ChoiceParam):
        return any(c == v and type(c) is type(v) for c in a.dist.choices)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and a.dist.low <= v <= a.dist.high


# --- the region -----------------------------------------------------------------------------------

@dataclass
class Region:
    """How far a proposal may move from the centre: at most `changes` constants, each by at
    most `steps` steps."""
    steps: float = FIRST_STEPS
    changes: int = FIRST_CHANGES
    fails: int = 0
    moves: int = 0             # times the centre moved

    def grow(self, n: int) -> None:
        self.steps = min(MAX_STEPS, self.steps * 2)
        self.changes = min(max(n, 1), self.changes + 1)
        self.fails = 0
        self.moves += 1

    def fail(self) -> None:
        self.fails += 1
        if self.fails >= FAILS_TO_SHRINK:
            self.steps = max(1.0, self.steps / 2)
            self.changes = max(1, self.changes - 1)
            self.fails = 0

    def wider(self, n: int) -> "Region":
        return Region(min(MAX_STEPS, self.steps * 2), min(max(n, 1), self.changes + 1))

    def whole(self, n: int) -> bool:
        return self.steps >= MAX_STEPS and self.changes >= n

    def describe(self) -> str:
        return f"<= {self.changes} constants, <= {self.steps:g} steps"


# Samples the coordinator asks of best itself: its re-measures (baseline jobs, "repeat of best")
# and the verification of a merge onto it. A centre with one of them is a best.
BEST_ORIGINS = ("baseline", "verify")


def replay(trials, n_params: int) -> Region:
    """The region a study's trials have earned. A success: best moved, i.e. a new centre (one no
    earlier trial was centred on) that the study knows as a best (a sample of BEST_ORIGINS
    there). An agent's own kept commit is a centre too, but not a success: in a real swarm on
    the tuned baseline, one noisy keep widened the region to 3 constants and 4 steps. A
    failure: a trial no better than the mean of its centre's samples (same code), or a crash.
    A trial better than that mean resets the failure count."""
    from optuna.trial import TrialState

    samples: dict[tuple, list[float]] = {}
    bests: set[tuple] = set()
    for t in trials:
        if t.state == TrialState.COMPLETE and t.value is not None:
            key = (point_key(t.params), t.user_attrs.get("code"))
            samples.setdefault(key, []).append(t.value)
            if t.user_attrs.get("origin") in BEST_ORIGINS:
                bests.add(key)
    region, seen = Region(), set()
    for t in sorted(trials, key=lambda t: t.number):
        c = t.user_attrs.get("centre")
        if c is None or t.user_attrs.get("not_run"):
            continue
        ck, code = point_key(json.loads(c)), t.user_attrs.get("code")
        if (ck, code) in bests and ck not in seen:
            if seen:
                region.grow(n_params)
            seen.add(ck)
        if t.state == TrialState.FAIL:
            region.fail()
        elif t.state == TrialState.COMPLETE:
            ref = samples.get((ck, code))
            if not ref:
                continue
            if t.value < sum(ref) / len(ref):
                region.fails = 0
            else:
                region.fail()
    return region


def project(centre: dict, point: dict, region: Region, ax: dict[str, Axis]) -> dict | None:
    """`point` brought into the region around `centre`: the `changes` constants it moved
    furthest (share of each range) move towards it by 1..`steps` steps; None when none moves."""
    d = {n: ax[n].pos(point[n]) - ax[n].pos(centre[n]) for n in ax if n in point and n in centre}
    moved = sorted((n for n in d if abs(d[n]) > 1e-9), key=lambda n: (-abs(d[n]) / ax[n].span, n))
    out = dict(centre)
    for n in moved:
        if sum(out[m] != centre[m] for m in out) >= region.changes:
            break
        size = min(max(abs(d[n]), 1.0), region.steps)
        v = ax[n].value(ax[n].pos(centre[n]) + math.copysign(size, d[n]))
        if v != centre[n]:
            out[n] = v
    return out if out != centre else None


def local_move(centre: dict, region: Region, ax: dict[str, Axis], rng: random.Random) -> dict | None:
    """A random point of the region, as mutate moves: 1..changes constants, 1..steps steps."""
    names = sorted(n for n in ax if n in centre)
    if not names:
        return None
    out = dict(centre)
    k = rng.randint(1, min(region.changes, len(names)))
    for n in rng.sample(names, k):
        size = rng.randint(1, max(1, int(region.steps)))
        out[n] = ax[n].value(ax[n].pos(centre[n]) + rng.choice((-1, 1)) * size)
    return out if out != centre else None


# --- the sampler ------------------------------------------------------------------------------

class LocalSampler:
    """An Optuna sampler (duck-typed, as optuna's PartialFixedSampler wraps its base) around
    TPE or CMA-ES: `aim(centre, dists)` before each `study.ask(dists)`; every parameter is then
    sampled here at once, projected into the region (None: the whole space, `start: anywhere`)
    and checked against every point the study holds."""

    def __init__(self, inner, program: Program, seed: int, local: bool = True, startup_trials: int = 0):
        self.inner, self.program, self.local = inner, program, local
        # While the study has fewer complete trials than this, the inner sampler draws uniformly
        # over the whole range (its start-up): projected into the region, such a draw goes the
        # way the range is wider (DEPTH 4 in 2..12 went up 47 times in 49), so a move is then
        # one of mutate's, each direction alike. Past it, the sampler's point shows the way.
        self.startup_trials = startup_trials
        self.rng = random.Random(seed)
        self._centre: dict | None = None
        self._dists: dict = {}
        self._code: str | None = None
        self._fixed: dict = {}
        self.region: Region | None = None     # of the last ask (for the trial's attributes)
        # The last ask found every point of the space held by the study (trained, training or
        # crashed): its point is a repeat, and the backend says the space is exhausted.
        self.exhausted = False

    def aim(self, centre: dict | None, dists: dict, code: str | None = None, fixed: dict | None = None) -> None:
        """The next ask's centre (best's values), distributions and code (train.py with the
        program's constants blanked: a point is held only if it was measured on this code), and
        `fixed`: the values of the constants outside the search space that the program's
        constraints read (train.py's, on this hardware class)."""
        self._centre, self._dists, self._code = centre, dict(dists), code
        self._fixed = dict(fixed or {})

    def _allowed(self, point: dict) -> bool:
        return self.program.violated({**self._fixed, **point}) is None

    # BaseSampler's interface
    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def infer_relative_search_space(self, study, trial) -> dict:
        return dict(self._dists)

    def sample_independent(self, study, trial, name, dist):
        return self.inner.sample_independent(study, trial, name, dist)

    def sample_relative(self, study, trial, search_space: dict) -> dict[str, Any]:
        from optuna.trial import TrialState

        self.exhausted = False
        if not search_space:
            return {}
        inner_space = self.inner.infer_relative_search_space(study, trial)
        inner_space = {n: d for n, d in inner_space.items() if search_space.get(n) == d}
        point = dict(self.inner.sample_relative(study, trial, inner_space)) if inner_space else {}
        for n, d in search_space.items():
            if n not in point:
                point[n] = self.inner.sample_independent(study, trial, n, d)
        ax = axes(self.program.search_space, search_space)
        point = {n: (ax[n].value(ax[n].pos(v)) if n in ax else v) for n, v in point.items()}
        taken = _taken(study, trial, self._code)
        centre = {n: v for n, v in (self._centre or {}).items() if n in search_space}
        if len(centre) == len(search_space):
            taken.add(point_key(centre))   # the current train.py: nothing to train, held or not
        def free(p: dict) -> bool:
            # a point the program's constraints rule out is as good as held: never proposed
            return point_key(p) not in taken and self._allowed(p)

        def full_space() -> bool:
            return _full(search_space, ax, taken, centre, ok=self._allowed)

        if not self.local or len(centre) < len(ax):
            self.region = None
            if not free(point):
                cand = self._anywhere(search_space, ax, free)
                self.exhausted = cand is None and full_space()
                point = cand or point
            return point
        trials = study.get_trials(deepcopy=False)
        self.region = region = replay(trials, len(ax))
        informed = sum(t.state == TrialState.COMPLETE for t in trials) >= self.startup_trials
        full = {**point, **centre}
        for _ in range(8):
            cand = project(centre, point, region, ax) if informed else None
            if cand is not None and free({**full, **cand}):
                return {**full, **cand}
            for _ in range(_TRIES):
                cand = local_move(centre, region, ax, self.rng)
                if cand is not None and free({**full, **cand}):
                    return {**full, **cand}
            if region.whole(len(ax)):
                break
            region = region.wider(len(ax))   # every nearby point is taken: look further
            log.info("every point within %s of the centre is taken: widening", region.describe())
        self.exhausted = not free(point) and full_space()
        return point

    def _anywhere(self, space: dict, ax: dict[str, Axis], free) -> dict | None:
        for _ in range(_TRIES):
            cand = {n: ax[n].value(self.rng.uniform(ax[n].lo, ax[n].hi)) for n in space if n in ax}
            if free(cand):
                return cand
        return None


def _full(space: dict, ax: dict[str, Axis], taken: set[str], centre: dict, limit: int = 10_000,
          ok=lambda p: True) -> bool:
    """Whether the study holds every point a move from `centre` can reach that `ok` allows (the
    program's constraints) (Axis.grid: each constant in whole steps; a space of more than `limit`
    such points never counts as full)."""
    grids = []
    for n in space:
        a = ax.get(n)
        if a is None:
            return False
        g = a.grid(centre[n] if n in centre else a.value(a.lo), limit)
        if g is None:
            return False
        grids.append([(n, v) for v in g])
    if math.prod(len(g) for g in grids) > limit:
        return False
    return all(point_key(dict(c)) in taken or not ok(dict(c)) for c in itertools.product(*grids))


def _taken(study, trial, code: str | None = None) -> set[str]:
    """Every point the study holds (trained, training or crashed) on `code` (the trial's `code`
    attribute; None: on any code), but points that were prepared and never ran (`not_run`):
    proposing one of those again is not a repeat. A point measured on other code (best has
    since moved by a constant outside the program) is a new experiment on this one."""
    return {point_key(t.params) for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and t.params and not t.user_attrs.get("not_run")
            and (code is None or t.user_attrs.get("code", code) == code)}
