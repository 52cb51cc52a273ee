"""Search that starts where best is (the optuna backend's `start: best`), through the real
backend on a real redis study with the shipped `baseline` program and train.py: early trials
stay near best (few constants, mutate-sized steps) for TPE and CMA-ES, the region narrows after
failures and follows a new best, and a resumed study proposes no point it already holds."""
from __future__ import annotations

import importlib.resources
import itertools
import math

import pytest
import redis

from agents.backends import optuna_study as S
from agents.backends.base import ProposalContext
from agents.backends.optuna import OptunaBackend, OptunaSpec
from agents.backends.optuna_region import point_key
from agents.messages import ExperimentRecord
from agents.program import ChoiceParam, LogParam, load_program
from coordinator.run.config import shipped_programs_dir

HW = "cpu-test-2t"
LIMITS = dict(max_edit_bytes=20_000, max_file_bytes=200_000)
PROGRAM = load_program(shipped_programs_dir() / "baseline.md")
_IDS = itertools.count()
BASE = (importlib.resources.files("trainer") / "baseline" / "train.py").read_text()


def values(src: str) -> dict:
    return S.current_values(src, PROGRAM, HW)


def steps(a, b, param) -> float:
    """How many of the program's steps lie between two values of one constant."""
    if isinstance(param, LogParam):
        return abs(math.log(a / b)) / math.log(param.step)
    if isinstance(param, ChoiceParam):
        return abs(param.values.index(a) - param.values.index(b))
    return abs(a - b) / param.step


def moves(src: str, centre: str) -> dict[str, float]:
    """name -> steps moved, for each constant that differs from the centre's."""
    a, c = values(src), values(centre)
    return {n: steps(a[n], c[n], PROGRAM.search_space[n]) for n in a if a[n] != c[n]}


def tuned(src: str) -> float:
    """A tuned baseline, as the real trainer's: every move away from it costs (0.02 bpb for a
    step, 0.08 for two), so every trial below is a failure."""
    return 2.40 + 0.02 * sum(s * s for s in moves(src, BASE).values())


def backend(url, agent="a0", seed=0, **spec):
    s = OptunaSpec.model_validate({"type": "optuna", "storage_wait_s": 20, **spec})
    return OptunaBackend(s, seed=seed, agent=agent, client=redis.Redis.from_url(url),
                         swarm_id="sw1", hardware_class=HW)


def ctx(source=BASE, base="b" * 40):
    return ProposalContext(program=PROGRAM, source=source, base_commit=base, agent="a")


def record(agent, desc, val, kind="experiment", status="ok"):
    return ExperimentRecord(experiment_id=f"{agent}-{next(_IDS)}", swarm_id="sw1", kind=kind, agent=agent,
                            program="baseline", hardware_class=HW, parent="b" * 40, commit="c" * 40,
                            description=desc, status=status, val_bpb=val if status == "ok" else None,
                            reason=None if status == "ok" else "RuntimeError: boom")


def baseline_samples(b, agent, source=BASE, k=2):
    for i in range(k):
        b.observe(record(agent, "baseline", tuned(source) + 0.004 * (i - 0.5), kind="baseline"), source)


def propose_and_tell(b, agent, source=BASE, score=tuned):
    p = b.propose(ctx(source))
    assert p.error is None, p.error
    new, _ = p.resolve(source, **LIMITS)
    b.observe(record(agent, p.description, score(new)), new)
    return new


def point(src: str) -> tuple:
    return tuple(sorted(values(src).items()))


def points(study) -> list[tuple]:
    """Every trained or crashed point of the study, as train.py holds it."""
    return [point(S.write_params(BASE, t.params, PROGRAM, HW)[0]) for t in study.get_trials(deepcopy=False)
            if t.params and not t.user_attrs.get("not_run")]


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_early_trials_move_one_or_two_constants_by_mutate_sized_steps(redis_url, sampler):
    a, b = backend(redis_url, "a0", seed=1, sampler=sampler), backend(redis_url, "a1", seed=2, sampler=sampler)
    baseline_samples(a, "a0")
    baseline_samples(b, "a1")
    trained = [propose_and_tell(x, x.agent) for _ in range(6) for x in (a, b)]
    for new in trained:
        m = moves(new, BASE)
        assert 1 <= len(m) <= 2, m
        assert all(0.99 <= s <= 2.01 for s in m.values()), m   # at the 4 digits train.py keeps
    # every trial failed: after a few the region narrows to one constant, one step
    assert all(len(moves(new, BASE)) == 1 and max(moves(new, BASE).values()) <= 1.01 for new in trained[-3:])
    # ... and no point was proposed twice
    assert len(set(trained)) == len(trained)


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_the_region_follows_a_new_best(redis_url, sampler):
    a = backend(redis_url, "a0", seed=3, sampler=sampler)
    baseline_samples(a, "a0")
    for _ in range(3):
        propose_and_tell(a, "a0")
    # best moves two steps away in two constants (another agent's promotion): the agent adopts it
    best = BASE.replace("MATRIX_LR = 0.02 ", "MATRIX_LR = 0.0338 ").replace("WARMDOWN_FRAC = 0.5 ",
                                                                            "WARMDOWN_FRAC = 0.7 ")
    assert moves(best, BASE) == pytest.approx({"MATRIX_LR": 2.0, "WARMDOWN_FRAC": 2.0}, abs=0.01)
    baseline_samples(a, "a0", source=best)         # the coordinator's re-measures of the new best
    nearer = lambda src: tuned(src) - 0.05         # noqa: E731  (around best, moves cost less)
    after = [propose_and_tell(a, "a0", source=best, score=nearer) for _ in range(6)]
    for new in after:
        m = moves(new, best)
        # the region is centred on the new best and has grown (best moved): <= 3 constants,
        # <= 4 steps from it, never the old centre's neighbours
        assert 1 <= len(m) <= 3 and max(m.values()) <= 4.01, m
    trials = a.study.get_trials(deepcopy=False)
    assert {t.user_attrs["centre"] for t in trials[-6:]} == {point_key(S.params_of(best, PROGRAM, HW)[0])}


@pytest.mark.parametrize("start,sampler", [("best", "tpe"), ("best", "cmaes"), ("anywhere", "tpe"),
                                           ("anywhere", "cmaes")])
def test_a_resumed_study_proposes_no_point_it_already_holds(redis_url, start, sampler):
    spec = {"start": start, "sampler": sampler}
    first = backend(redis_url, "a0", seed=7, **spec)
    baseline_samples(first, "a0")
    for _ in range(5):
        propose_and_tell(first, "a0")
    first.propose(ctx())                                  # prepared during its last run
    # `swarm stop`: the trials prepared and never run are told FAIL (not_run)
    assert S.fail_running(redis.Redis.from_url(redis_url), "sw1", "the swarm stopped") == 1
    held = set(points(first.study))
    # `swarm run` again: the same agent, the same seed, a new process
    again = backend(redis_url, "a0", seed=7, **spec)
    new = [point(propose_and_tell(again, "a0")) for _ in range(8)]
    assert not held & set(new), "a resumed study proposed a point it already holds"
    assert len(set(new)) == len(new)
    numbers = [t.number for t in again.study.get_trials(deepcopy=False)]
    assert numbers == sorted(numbers) and len(numbers) == 2 + 5 + 1 + 8


def test_a_trial_prepared_around_the_old_best_is_given_up_when_best_moves(redis_url):
    a = backend(redis_url, "a0", seed=4)
    baseline_samples(a, "a0")
    p1 = a.propose(ctx())                                        # trains now
    p2 = a.propose(ProposalContext(program=PROGRAM, source=BASE, base_commit="b" * 40, agent="a",
                                   in_flight=p1.description))   # prepared meanwhile
    new1, _ = p1.resolve(BASE, **LIMITS)
    a.observe(record("a0", p1.description, tuned(new1)), new1)
    best = BASE.replace("WARMDOWN_FRAC = 0.5 ", "WARMDOWN_FRAC = 0.6 ")
    p3 = a.propose(ctx(best, base="e" * 40))                     # best moved before p2 ran
    trials = {t.number: t for t in a.study.get_trials(deepcopy=False)}
    n2, n3 = (int(p.description.split("#")[1].split(":")[0]) for p in (p2, p3))
    assert n3 != n2 and trials[n2].state.name == "FAIL" and trials[n2].user_attrs["not_run"]
    new3, _ = p3.resolve(best, **LIMITS)
    m = moves(new3, best)
    assert 1 <= len(m) <= 3 and max(m.values()) <= 4.01, m


def test_an_agents_own_kept_commit_moves_the_centre_but_does_not_widen_the_region(redis_url):
    """A commit that beat its parent by one noisy sample is the agent's new base, not a new
    best: trials go around it, still 1-2 constants by 1-2 steps (a real swarm widened to 3
    constants and 4 steps after one such keep)."""
    a = backend(redis_url, "a0", seed=5)
    baseline_samples(a, "a0")
    won = lambda src: tuned(src) - 0.2             # noqa: E731  (no failure: the region stays)
    kept = None
    while kept is None or len(moves(kept, BASE)) != 1:   # a one-constant trial around best...
        kept = propose_and_tell(a, "a0", score=won)        # ...that beat it, kept by the agent
    after = [propose_and_tell(a, "a0", source=kept) for _ in range(3)]
    for new in after:
        m = moves(new, kept)
        assert 1 <= len(m) <= 2 and max(m.values()) <= 2.01, m


@pytest.mark.parametrize("program", ["baseline", "architecture"])
def test_while_the_sampler_draws_at_random_a_move_goes_down_as_often_as_up(program):
    """The sampler's first trials are uniform draws over the whole range; projected into the
    region they went the way the range is wider: on the real baseline (DEPTH 4 in 2..12,
    MODEL_DIM 128 in 64..1024) the quick start tried DEPTH 4 -> 6 and MODEL_DIM 128 -> 256 four
    times each and never a smaller model, which is the move that pays on a CPU. Until the
    sampler has learnt something, a move is one of mutate's: each direction alike."""
    import optuna

    from agents.backends.optuna_region import LocalSampler, axes

    prog = load_program(shipped_programs_dir() / f"{program}.md")
    params, dists = S.params_of(BASE, prog, HW)
    ax = axes(prog.search_space, dists)
    up = down = 0
    for seed in range(30):   # a fresh study each: its first trials, as a quick start's
        sampler = LocalSampler(S.make_sampler("tpe", seed, n_startup_trials=10), prog, seed=seed,
                               startup_trials=10)
        study = optuna.create_study(sampler=sampler, direction="minimize")
        for _ in range(6):
            sampler.aim(params, dists)
            t = study.ask(dists)
            study.tell(t, 2.5)
            for n in ("DEPTH", "MODEL_DIM"):
                if n in t.params and t.params[n] != params[n]:
                    up += ax[n].pos(t.params[n]) > ax[n].pos(params[n])
                    down += ax[n].pos(t.params[n]) < ax[n].pos(params[n])
    assert up + down >= 30, (up, down)
    assert 0.3 <= down / (up + down) <= 0.7, (up, down)


def test_two_fresh_swarms_search_differently_and_one_swarm_again_alike(redis_url):
    """The sampler's seed mixes in the swarm's id: every fresh swarm with the shipped config
    (agent seeds 0, 1, ...) proposed the same trials in the same order (five real quick starts:
    `MODEL_DIM 128 -> 256` first, `DEPTH 4 -> 2` always the architecture agent's fourth), so
    swarms on two machines searched the same points. One swarm id again gives the same draws."""
    def first_points(swarm_id, n=4):
        s = OptunaSpec.model_validate({"type": "optuna", "storage_wait_s": 20})
        b = OptunaBackend(s, seed=0, agent="a0", client=redis.Redis.from_url(redis_url),
                          swarm_id=swarm_id, hardware_class=HW)
        baseline_samples(b, "a0")
        return [point(propose_and_tell(b, "a0")) for _ in range(n)]

    runs = {sw: first_points(sw) for sw in ("sw-a", "sw-b", "sw-c")}
    assert len({tuple(v) for v in runs.values()}) > 1, "three fresh swarms proposed the same trials"
    r = redis.Redis.from_url(redis_url)
    r.delete(*r.keys("*sw-a*"))   # sw-a's study gone: the same swarm, fresh again
    assert first_points("sw-a") == runs["sw-a"], "one swarm id, one agent seed: the same draws"


@pytest.mark.parametrize("start", ["best", "anywhere"])
def test_a_study_whose_every_point_is_held_says_so_instead_of_proposing_a_repeat(redis_url, start):
    """A one-knob program (the real landscape's architecture is DEPTH alone) runs out of points:
    every value trained, or held by another agent's run. The sampler then used to hand back a point
    the study held, so its agents trained repeats of settings already measured all night (on the
    research bench, three agents of eight on DEPTH once it sat at its minimum). Now the backend
    says the space is exhausted, as mutate does, and the agent's program is spent until best moves."""
    from agents.program import parse_program

    prog = parse_program("# depth\n\n```yaml\nadopt: if-better\nsearch_space:\n"
                         "  DEPTH: {type: int, min: 3, max: 5, step: 1}\n```\n", "depth")
    a, b = (backend(redis_url, n, seed=9, start=start) for n in ("a0", "a1"))
    baseline_samples(a, "a0")

    def propose(x, in_flight=None):
        return x.propose(ProposalContext(program=prog, source=BASE, base_commit="b" * 40, agent=x.agent,
                                         in_flight=in_flight))

    first = propose(a)
    assert first.error is None, first.error
    new, _ = first.resolve(BASE, **LIMITS)
    a.observe(record("a0", first.description, tuned(new)), new)
    held = propose(b)                       # the last free value: a1 trains it now
    assert held.error is None, held.error
    assert {S.current_values(p.new_source, prog, HW)["DEPTH"] for p in (first, held)} == {3, 5}
    for x, in_flight in ((a, None), (b, held.description)):
        p = propose(x, in_flight)
        assert p.new_source is None and p.error and "exhausted" in p.error, (p.description, p.error)


@pytest.mark.parametrize("start", ["best", "anywhere"])
def test_a_point_measured_on_other_code_is_free_again_once_best_moved_elsewhere(redis_url, start):
    """A study holds points of its program's constants, each measured on one train.py (the trial's
    `code`: train.py with the program's constants blanked). When best moves by a constant outside
    the program (another program's promotion), every point is a new experiment: the space a refusal
    spoke of was the old code's. It used to stay held, so a one-knob program refused again at once
    on the new best and its agents never came back to it. On the same code (best moved along the
    program's own constant) the measured points stay held."""
    from agents.program import parse_program

    prog = parse_program("# depth\n\n```yaml\nadopt: if-better\nsearch_space:\n"
                         "  DEPTH: {type: int, min: 3, max: 5, step: 1}\n```\n", "depth")
    a = backend(redis_url, "a0", seed=9, start=start)
    baseline_samples(a, "a0")

    def propose(source):
        return a.propose(ProposalContext(program=prog, source=source, base_commit="b" * 40, agent="a0"))

    for _ in range(2):                       # DEPTH 3 and 5 on the baseline's code
        p = propose(BASE)
        assert p.error is None, p.error
        new, _ = p.resolve(BASE, **LIMITS)
        a.observe(record("a0", p.description, tuned(new)), new)
    assert "exhausted" in (propose(BASE).error or "")
    # best moves along DEPTH itself (4 -> 3): the same code, every point still measured on it
    along = S.write_params(BASE, {"DEPTH": 3}, prog, HW)[0]
    assert along != BASE and S.code_hash(along, prog) == S.code_hash(BASE, prog)
    baseline_samples(a, "a0", source=along)
    assert "exhausted" in (propose(along).error or "")
    # best moves by a constant the program does not hold: new code, DEPTH 4 and 5 untried on it
    elsewhere = along.replace("MATRIX_LR = 0.02 ", "MATRIX_LR = 0.0338 ")
    assert elsewhere != along and S.code_hash(elsewhere, prog) != S.code_hash(BASE, prog)
    baseline_samples(a, "a0", source=elsewhere)
    p = propose(elsewhere)
    assert p.error is None, p.error
    assert S.current_values(p.new_source, prog, HW)["DEPTH"] in (4, 5)
