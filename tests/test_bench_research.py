"""bench/research.py in a reduced configuration: the swarm on the synthetic landscape loses no
winner, and on the null landscape (every effect zero) at most 1% of experiments move best.
Real Coordinator, redis and git, real ResearchAgent loop; a run is reproducible by its seeds."""
from __future__ import annotations

import re

import pytest

from bench.research import Config, run_bench

LINE = re.compile(r"^agents=8 swarm_gain=[-\d.]+ independent_gain=[-\d.na]+ single_gain=[-\d.na]+ "
                  r"speedup=[-\d.na]+ lost_winners=\d+ capture=[-\d.na]+ recall=[-\d.na]+ "
                  r"false_promotions=[\d.]+$")


def test_reduced_bench_loses_no_winner_and_rarely_promotes_noise(tmp_path, redis_url):
    conf = Config(agents=8, runs=96, seeds=1, null_runs=120, null_seeds=3)
    out: list[str] = []
    res = run_bench(conf, tmp_path, redis_url, {}, arms=("swarm", "null"), out=out.append)
    print("\n".join(out))
    assert LINE.match(out[-1]), out[-1]
    swarm = res["arms"]["swarm"]
    assert swarm["lost"] == 0, [r.lost for r in swarm["results"]]
    null = res["arms"]["null"]
    # enough decisions to mean something (trained experiments: the invalid edits are never judged;
    # with agents building on the lead, 104 null runs a seed trained 144 of them, 120 about 160)
    assert sum(r.experiments for r in null["results"]) >= 150
    assert res["false_promotions"] <= 0.01


def test_the_independent_arm_pays_the_baseline_once_and_shares_only_the_noise(tmp_path, redis_url):
    """Fair arms: the first independent agent measures sigma as the swarm does and leaves it in
    a noise history; the others start from it (one baseline run each, no repeats for sigma)."""
    from agents.messages import PromotionConfig
    from bench.landscape import Bowls
    from bench.research import _independent

    conf = Config(agents=3, runs=36, seeds=1, null_runs=0, null_seeds=0)
    cfg = PromotionConfig()
    res = _independent(conf, 0, 36, tmp_path, redis_url, Bowls(), cfg, {})
    assert res.runs >= 36
    # agent 0: min_dof + 1 runs of the root; agents 1 and 2: their first baseline, and the runs
    # of the root their own sequential tests ask for (at most a handful), never min_dof + 1.
    assert res.baseline_root < 3 * (cfg.min_dof + 1) - cfg.min_dof, res


def test_the_real_landscape_is_asked_for_by_name_and_missing_is_one_clear_line(capsys):
    import importlib.util

    from bench.research import main

    if importlib.util.find_spec("bench.real_landscape") is not None:
        pytest.skip("bench/real_landscape.py exists: the bench takes it")
    assert main(["--landscape", "real", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "real_landscape" in err[0] and err[0].startswith("error: --landscape real")


def test_the_swarm_arm_runs_under_the_allocation_swarm_run_configures(tmp_path, redis_url):
    """Fair arms: the bench's swarm is the product's, so its allocation is `swarm run`'s default
    (adaptive) over its programs; an agent whose program has no untried nearby state left moves
    to another program instead of stopping (under static it stops or idles on it, as the bench's
    swarm's agents used to)."""
    from agents.messages import PromotionConfig
    from bench.landscape import Bowls, program_text
    from bench.research import _allocate
    from bench.swarmsim import ArmResult, Swarm
    from coordinator.decide.allocation import AllocationConfig

    assert Config().allocation == AllocationConfig().mode == "adaptive"

    class TwoPrograms(Bowls):   # "tiny": one switch, two states; it runs out after one idea
        def program_text(self, name, adopt=None):
            if name == "tiny":
                return ("# tiny\nOne switch.\n\n```yaml\nsearch_space:\n"
                        "  QK_NORM: {type: int, min: 0, max: 1, step: 1}\n```\n")
            return program_text(name, adopt)

    got = {}
    for mode in ("adaptive", "static"):
        s = Swarm(tmp_path / mode, redis_url, f"alloc-{mode}", TwoPrograms(), ["tiny", "explore"], 0,
                  PromotionConfig(min_dof=2), {"*": "mutate"})
        _allocate(s, mode, 0, {"*": "mutate"}, None)
        r = ArmResult(mode)
        s.play(40, None, r)
        got[mode] = (s.agents[0].program.name, s.agents[0]._stop.is_set())
        s.finish(r)
    assert got["adaptive"] == ("explore", False), got
    assert got["static"][0] == "tiny", got     # static: no agent ever changes program


def test_backend_auto_is_what_swarm_run_makes_of_it_offline_whatever_keys_are_set(tmp_path, redis_url,
                                                                                   monkeypatch):
    """`--backend auto` gives each program the backend `swarm run` gives it on one node without an
    LLM key (optuna where Optuna can express the program's space, mutate for explore on the
    landscape from the real trainer). It used to resolve against the environment, with no program:
    mutate everywhere, and with a key set a bench would have called a paid model."""
    from agents.messages import PromotionConfig
    from bench.research import _allocate, make_landscape
    from bench.swarmsim import Swarm

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-key")
    land = make_landscape("real")
    s = Swarm(tmp_path / "auto", redis_url, "auto-0", land, land.programs_for(8), 0, PromotionConfig(),
              {"*": "auto"})
    got = {a.program.name: a.backend.name for a in s.agents}
    assert got == {"baseline": "optuna", "architecture": "optuna", "optimizer": "optuna",
                   "schedule": "optuna", "simplify": "optuna", "explore": "mutate"}, got
    _allocate(s, "adaptive", 0, {"*": "auto"}, None)     # what a moved agent takes with its program
    specs = {p.name: p.backend for p in s.coord.allocation.spec.programs}
    assert {n: b["type"] for n, b in specs.items()} == got, specs


def test_an_arm_ends_when_its_agents_stop_not_at_the_first_round_that_trained_nothing(tmp_path, redis_url):
    """Fair arms: one agent alone (an independent agent, the single arm) whose proposal is refused
    once (mutate finds no untried point near best) goes on, as it would in `swarm run`, until its
    program is spent (the same refusal SAME_FAILURE_STOP times: it then waits for a best it cannot
    move, and the arm ends after IDLE_ROUNDS rounds without a run) or the runs are used. The bench
    ended such an arm at the first round without a run: on the real landscape the independent arm
    trained 237 of its 320 runs and the single arm 250 on some seeds."""
    from agents.messages import PromotionConfig
    from bench.research import make_landscape
    from bench.swarmsim import IDLE_ROUNDS, ArmResult, Swarm

    land = make_landscape("real")
    s = Swarm(tmp_path / "one", redis_url, "one-0", land, ["schedule"], 0, PromotionConfig(min_dof=2),
              {"*": "mutate"})
    r = ArmResult("independent")
    s.play(200, None, r)
    agent = s.agents[0]
    refusals = [rec for rec in s.coord.records.values() if rec.status == "invalid"]
    s.finish(r)
    assert r.runs >= 200 or agent._spent is not None, (r.runs, len(refusals), agent.phase)
    assert r.runs >= 200 or agent.health.counts["refused"] >= 1, (r.runs, agent.health.counts)
    assert not refusals, [rec.reason for rec in refusals]   # nothing left to propose is no record
    assert r.runs >= 200 or r.rounds >= r.runs + IDLE_ROUNDS, (r.runs, r.rounds)


def test_a_swarm_goes_on_with_the_agents_that_have_not_stopped(tmp_path, redis_url):
    """Two agents, static: the one on a one-knob program stops itself when the program is spent
    (spent_wait_runs 0: it does not wait for best to move); the rounds go on with the other (each
    agent's gate in the round is keyed by its index among all the swarm's agents: a round of the
    live ones alone once waited forever for the stopped)."""
    import threading

    from agents.messages import PromotionConfig
    from bench.research import make_landscape
    from bench.swarmsim import ArmResult, Swarm

    land = make_landscape("real")
    s = Swarm(tmp_path / "two", redis_url, "two-0", land, ["schedule", "baseline"], 0,
              PromotionConfig(min_dof=2), {"*": "mutate"})
    s.agents[0].cfg = s.agents[0].cfg.model_copy(update={"spent_wait_runs": 0})
    r = ArmResult("swarm")
    t = threading.Thread(target=s.play, args=(160, None, r), daemon=True)
    t.start()
    t.join(timeout=300)
    assert not t.is_alive(), "the rounds hung once an agent had stopped"
    first, second = s.agents
    assert first._stop.is_set() and not second._stop.is_set(), (first.stop_reason, second.stop_reason)
    stopped_at = max(i for i, (agent, *_) in enumerate(s.log.runs) if agent == "a0")
    assert any(agent == "a1" for agent, *_ in s.log.runs[stopped_at + 1:]), r.runs
    s.finish(r)


def test_a_round_that_cannot_finish_is_an_error_naming_the_agents_not_a_hang():
    """A bench bug that leaves an agent waiting in its round (e.g. a gate keyed wrongly, as
    3e57d9b's was) ends the arm with one line naming the agents still in the round, after the
    round's time limit, instead of waiting forever."""
    import random
    import threading
    import time

    from bench.swarmsim import Rounds

    class Stuck:
        def __init__(self, release: threading.Event):
            self.release = release

        def _iteration(self):
            self.release.wait(30)

    class Quick:
        def _iteration(self):
            pass

    release = threading.Event()
    rounds = Rounds(random.Random(0))
    rounds.timeout = 1.0
    t0 = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=r"round 0 did not finish .*agent\(s\) \[1\]"):
            rounds.play([Quick(), Stuck(release), Quick()])
    finally:
        release.set()
    assert time.monotonic() - t0 < 20


def test_staggered_agents_end_their_runs_in_turn(tmp_path, redis_url):
    """bench/swarmsim.py's Staggered (research.py --stagger): agent k of N ends each run k/N of a
    budget after agent 0, so the runs end in the agents' order, once each per round (the first
    round only starts them; lock-step Rounds end them in a random order); the wall clock to the
    report that reached the target is that round's start plus k/N; the threads end with the swarm."""
    from agents.messages import PromotionConfig
    from bench.landscape import Bowls
    from bench.swarmsim import ArmResult, Staggered, Swarm

    land = Bowls()
    s = Swarm(tmp_path / "stag", redis_url, "stag-0", land, land.programs_for(3), 0, PromotionConfig(),
              {"*": "mutate"}, stagger=True)
    assert isinstance(s.rounds, Staggered)
    r = ArmResult("swarm")
    s.play(60, land.max_gain * 0.3, r)
    order = [int(agent[1:]) for agent, *_ in s.log.runs]
    assert len(order) >= 30, order
    wraps = sum(1 for a, b in zip(order, order[1:]) if b <= a)
    assert wraps == r.rounds - 2, (wraps, r.rounds, order)   # round 0 ends nothing; then one cycle a round
    assert r.wall_to_report is not None, "the target was not reached"
    assert r.rounds_to_target - 1 <= r.wall_to_report < r.rounds_to_target
    assert round((r.wall_to_report % 1) * 3, 9) in (0, 1, 2)
    s.finish(r)
    for t in s.rounds.threads.values():
        t.join(5)
    assert not any(t.is_alive() for t in s.rounds.threads.values())
