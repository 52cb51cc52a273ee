"""The swarm's shared Optuna studies: journal storage on the swarm's redis, the program's search
space as Optuna distributions, and train.py <-> trial params. Used by the `optuna` backend and
by `swarm report` (its search section). optuna is imported on first use (~0.5 s)."""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

from agents.backends.mutate import Constant, _fmt, find_constants
from agents.errors import ProgramError
from agents.program import ChoiceParam, FloatParam, IntParam, LogParam, Program

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "cmaes")


def journal_prefix(swarm_id: str) -> str:
    """Every study of one swarm lives in one journal under the swarm's own key prefix."""
    return f"swarm:{swarm_id or 'default'}:optuna"


def study_name(program: str, hardware_class: str) -> str:
    """One study per program and hardware class (results of two classes are never compared)."""
    return f"{program}@{hardware_class}"


# --- the search space ----------------------------------------------------------------------

def check_space(program: Program) -> None:
    """Raise ProgramError (one line naming the file and the key) when the program declares no
    search space or an entry Optuna cannot express."""
    if not program.search_space:
        raise ProgramError(f"{program.source}: search_space: the optuna backend needs a declared "
                           "search space (a fenced yaml block with search_space:)")
    for name, p in program.search_space.items():
        if isinstance(p, IntParam) and (p.max - p.min) % p.step:
            raise ProgramError(
                f"{program.source}: search_space.{name}: Optuna's int grid min + k*step cannot "
                f"reach max ({p.max} - {p.min} is not a multiple of step {p.step})")
        if isinstance(p, ChoiceParam) and len(set(map(repr, p.values))) != len(p.values):
            raise ProgramError(f"{program.source}: search_space.{name}.values: a value is listed "
                               "twice (Optuna's categorical choices must be distinct)")
        if isinstance(p, FloatParam) and not (math.isfinite(p.min) and math.isfinite(p.max)):
            raise ProgramError(f"{program.source}: search_space.{name}: bounds must be finite")


def distribution(param, current=None):
    """The Optuna distribution of one search-space entry. A `log` entry whose constant is an
    int in train.py (BATCH_SIZE) is an int on a log scale, so it stays an int."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    if isinstance(param, LogParam):
        if isinstance(current, int) and not isinstance(current, bool):
            lo, hi = math.ceil(param.min), math.floor(param.max)
            if 1 <= lo <= hi:
                return IntDistribution(lo, hi, log=True)
        return FloatDistribution(param.min, param.max, log=True)
    if isinstance(param, FloatParam):
        return FloatDistribution(param.min, param.max)
    if isinstance(param, IntParam):
        # the grid's last point: check_space refuses a range that misses max (swarm run), the
        # backend itself takes what it is given without Optuna's warning on every trial
        high = param.min + (param.max - param.min) // param.step * param.step
        return IntDistribution(param.min, high, step=param.step)
    if isinstance(param, ChoiceParam):
        return CategoricalDistribution(list(param.values))
    raise TypeError(f"unknown parameter type {type(param).__name__}")


def _active(c: Constant, hardware_class: str) -> int | None:
    """Which branch of a device switch `A if CUDA else B` this hardware class runs (None: a
    plain constant, or a condition we cannot read: then every branch takes the value)."""
    if c.cond is None:
        return None
    if c.cond.strip() == "CUDA":
        return 0 if hardware_class.startswith("gpu") else 1
    return None


def _values(source: str, names, hardware_class: str) -> dict[str, Any]:
    """The value each of `names` has in `source` on this hardware class (absent ones left out)."""
    consts = find_constants(source)
    out = {}
    for name in names:
        c = consts.get(name)
        if c is None:
            continue
        i = _active(c, hardware_class)
        out[name] = c.values[-1 if i is None else i]
    return out


def current_values(source: str, program: Program, hardware_class: str) -> dict[str, Any]:
    """The value each search-space constant has in `source` on this hardware class."""
    return _values(source, program.search_space, hardware_class)


def fixed_values(source: str, program: Program, hardware_class: str) -> dict[str, Any]:
    """The value (on this hardware class) of each constant the program's constraints read that is
    not in its search space: what a point is checked against beside its own values."""
    return _values(source, program.constraint_names() - set(program.search_space), hardware_class)


def distributions(source: str, program: Program, hardware_class: str) -> dict:
    """name -> distribution for the search-space constants present in `source`."""
    cur = current_values(source, program, hardware_class)
    return {n: distribution(program.search_space[n], v) for n, v in cur.items()}


def _internal(value, dist):
    """value as the distribution holds it, or None when it lies outside it."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if choice == value and type(choice) is type(value):
                return choice
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(dist, IntDistribution):
        if float(value) != int(value):
            return None
        value = int(value)
    return value if dist._contains(dist.to_internal_repr(value)) else None


def params_of(source: str, program: Program, hardware_class: str) -> tuple[dict, dict]:
    """(params, distributions) of a trained train.py: the search-space constants whose values
    Optuna can hold (a value outside its range is left out)."""
    dists = distributions(source, program, hardware_class)
    cur = current_values(source, program, hardware_class)
    params, kept = {}, {}
    for n, d in dists.items():
        v = _internal(cur[n], d)
        if v is not None:
            params[n], kept[n] = v, d
    return params, kept


def write_params(source: str, params: dict, program: Program,
                 hardware_class: str) -> tuple[str, list[str]]:
    """(new source, ["NAME old -> new", ...]): `params` written into the constants' lines,
    comments and everything else untouched (as mutate writes)."""
    consts = find_constants(source)
    lines = source.split("\n")
    changes = []
    for n in sorted(params, key=lambda n: (consts[n].line, -consts[n].col) if n in consts else (0, 0)):
        c = consts.get(n)
        if c is None:
            continue
        v = params[n]
        if isinstance(c.values[-1], int) and not isinstance(c.values[-1], bool) and isinstance(v, float) \
                and float(v).is_integer():
            v = int(v)
        i = _active(c, hardware_class)
        new = tuple(v if i is None or j == i else old for j, old in enumerate(c.values))
        if all(a == b and type(a) is type(b) for a, b in zip(new, c.values)):
            continue
        ln = lines[c.line]
        lines[c.line] = ln[:c.col] + c.render(new) + ln[c.end_col:]
        changes.append(f"{n} {_fmt(c.values[-1 if i is None else i])} -> {_fmt(v)}")
    return "\n".join(lines), changes


def code_hash(source: str, program: Program) -> str:
    """A digest of train.py with the search-space values blanked: trials with the same hash
    measured the same code at different settings."""
    consts = find_constants(source)
    lines = source.split("\n")
    for n in program.search_space:
        c = consts.get(n)
        if c is not None:
            ln = lines[c.line]
            lines[c.line] = ln[:c.col] + "?" + ln[c.end_col:]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


# --- storage and samplers ------------------------------------------------------------------

def journal_storage(client, swarm_id: str):
    """Optuna's JournalStorage on an existing redis client (the swarm's connection and
    password), under the swarm's key prefix. Every write is one redis command, kept by the AOF."""
    import optuna
    from optuna.storages.journal import JournalRedisBackend

    class _ClientBackend(JournalRedisBackend):
        # JournalRedisBackend opens its own client from a URL; this one reuses ours (one
        # connection setup, and the report's client brought back from the AOF).
        def __init__(self, client, prefix: str) -> None:
            self._url = None
            self._redis = client
            self._use_cluster = False
            self._prefix = prefix

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.JournalStorage(_ClientBackend(client, journal_prefix(swarm_id)))


def make_sampler(kind: str, seed: int, n_startup_trials: int, x0: dict | None = None, *,
                 sigma0: float | None = None, with_margin: bool = True):
    """TPE (constant liar: trials running on other agents count as bad, so 8 agents do not
    pile onto one point) or CMA-ES (its categorical params go to a TPE sampler), x0 its
    starting mean and sigma0 its starting spread (in the unit cube Optuna maps the space to)."""
    import warnings

    import optuna

    tpe = optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True,
                                     n_startup_trials=n_startup_trials)
    if kind == "tpe":
        return tpe
    if kind == "cmaes":
        with warnings.catch_warnings():
            # x0 and sigma0 are deprecated since optuna 4.9 (gone in 6, hence the pin): without
            # them CMA-ES starts at the centre of the box, far from the swarm's tuned train.py,
            # with a sixth of the range as its spread. with_margin keeps int params from
            # collapsing onto one value (experimental).
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.CmaEsSampler(x0=x0 or None, sigma0=sigma0, seed=seed,
                                                n_startup_trials=n_startup_trials,
                                                independent_sampler=tpe, with_margin=with_margin,
                                                warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {kind!r} (known: {', '.join(SAMPLERS)})")


def resume_seed(seed: int, n_trials: int, swarm_id: str = "") -> int:
    """The sampler's seed: the agent's, mixed with how many trials the study already holds, so
    a resumed swarm does not replay the random draws of its first life (it did: a resumed
    agent proposed its first points again, in the same order), and with the swarm's id, so two
    fresh swarms do not search the same points in the same order (every fresh quick start did)."""
    key = f"{seed}/{n_trials}" + (f"/{swarm_id}" if swarm_id else "")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") >> 1


def fail_running(client, swarm_id: str, why: str) -> int:
    """Tell FAIL (user attr `not_run`) every trial still RUNNING in the swarm's studies: once
    every agent has stopped, none of them will be told (a proposal prepared during an agent's
    last run). Returns how many. Used by `swarm run` as it stops."""
    from optuna.trial import TrialState

    storage = journal_storage(client, swarm_id)
    n = 0
    for s in storage.get_all_studies():
        for t in storage.get_all_trials(s._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            storage.set_trial_user_attr(t._trial_id, "not_run", why)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
    return n


def study_sizes(client, swarm_id: str) -> dict[str, tuple[int, int]]:
    """study name -> (trials, of which trained to a value), for each study of a swarm."""
    from optuna.trial import TrialState

    storage = journal_storage(client, swarm_id)
    out = {}
    for s in storage.get_all_studies():
        trials = storage.get_all_trials(s._study_id, deepcopy=False)
        out[s.study_name] = (len(trials), sum(t.state == TrialState.COMPLETE for t in trials))
    return out


@dataclass
class StudyView:
    """What the report shows of one study: trials as plain rows, importances, best params."""
    name: str
    program: str
    hardware_class: str
    rows: list[dict]                 # number, state (or NOT_RUN), value, params, origin, agent
    distributions: dict
    importances: dict[str, float]
    best_params: dict | None
    best_value: float | None


def importances(study) -> dict[str, float]:
    """Optuna's own estimator (PED-ANOVA in optuna 5) over the completed trials; {} when there
    are too few or the trials do not share their params."""
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "too few trials": then all equal
            return dict(optuna.importance.get_param_importances(study))
    except Exception as e:  # fewer than two complete trials, one param...: nothing to say
        log.debug("no importances for %s: %s", study.study_name, e)
        return {}


def study_views(client, swarm_id: str) -> list[StudyView]:
    """Every study of a swarm, for the report. [] when the swarm has none."""
    import optuna
    from optuna.trial import TrialState

    storage = journal_storage(client, swarm_id)
    out = []
    for s in storage.get_all_studies():
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        rows, dists = [], {}
        for t in trials:
            dists.update(t.distributions)
            # a trial that was proposed but never trained is not a failure of its point
            state = "NOT_RUN" if t.user_attrs.get("not_run") else t.state.name
            rows.append({"number": t.number, "state": state, "value": t.value,
                         "params": dict(t.params), "origin": t.user_attrs.get("origin", "?"),
                         "agent": t.user_attrs.get("agent"),
                         "experiment_id": t.user_attrs.get("experiment_id")})
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        best = min(done, key=lambda t: t.value) if done else None
        program, _, hw = s.study_name.partition("@")
        out.append(StudyView(name=s.study_name, program=s.user_attrs.get("program", program),
                             hardware_class=s.user_attrs.get("hardware_class", hw), rows=rows,
                             distributions=dists, importances=importances(study) if done else {},
                             best_params=dict(best.params) if best else None,
                             best_value=best.value if best else None))
    return out
