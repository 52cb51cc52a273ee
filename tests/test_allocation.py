"""The allocation decision (coordinator/decide/allocation.py) over a real redis ledger: records
and decisions written as the coordinator writes them, reassignments read back from the ledger."""
from __future__ import annotations

import itertools

import pytest

from agents.messages import Decision, ExperimentRecord
from agents.program import ProgramSpec
from coordinator.decide.allocation import Allocation, AllocationConfig, AllocationError, AllocationSpec
from coordinator.run.live import program_lines
from coordinator.state import keys
from coordinator.state.ledger import Ledger, connect_redis
from trainer.schema import ExperimentResult

_ids = itertools.count()


@pytest.fixture
def ledger(redis_url):
    return Ledger(connect_redis(redis_url), "alloc-test")


def spec(mode="adaptive", pinned=(), weights=None, **cfg) -> AllocationSpec:
    """Thompson's p_best share (the default) unless a test asks for another (most tests here are
    of the rates and the move rule; `share: active` has its own test)."""
    names = ["good", "barren", "third"]
    cfg = {"share": "p_best", "inert_prior": 0.0, "dwell_runs": 6, **cfg}
    return AllocationSpec(config=AllocationConfig(mode=mode, seed=1, **cfg), programs=[
        ProgramSpec(name=n, text=f"# {n}\n", pinned=n in pinned, weight=(weights or {}).get(n, 1.0))
        for n in names])


def run(ledger: Ledger, agent: str, program: str, moved: float | None = None, pooled=(),
        kind: str = "experiment", commit: str = "c", job: str | None = None) -> str:
    """One run of 300 s under `program`; with `moved`, a decision that moved best by that much."""
    eid = f"e{next(_ids)}"
    ledger.add_record(ExperimentRecord(
        experiment_id=eid, kind=kind, agent=agent, program=program, hardware_class="hw", parent="p", commit=commit,
        job_id=job,
        status="ok", val_bpb=1.0, result=ExperimentResult(status="ok", val_bpb=1.0, total_seconds=300.0)))
    if moved is not None:
        ledger.put_decision(Decision(experiment_id=eid, decision="promote", best_after="c2",
                                     delta=moved, pooled=list(pooled)))
    else:
        ledger.put_decision(Decision(experiment_id=eid, decision="discard"))
    return eid


def history(ledger: Ledger) -> list[dict]:
    import json
    return [json.loads(js) for typ, _id, js in ledger.events() if typ == "allocation"]


def test_static_never_moves(ledger):
    a = Allocation.configure(ledger, spec(mode="static"))
    for _ in range(6):
        run(ledger, "a0", "barren")
        run(ledger, "a1", "good", moved=0.01)
        run(ledger, "a2", "barren")
    assert a.assign("a0", "barren") is None
    assert history(ledger) == []


def test_agents_move_to_the_program_that_moves_best_down_to_the_floor(ledger):
    a = Allocation.configure(ledger, spec(min_agents=1, dwell_runs=2))
    agents = {"a0": "barren", "a1": "barren", "a2": "barren", "a3": "good", "a4": "third"}
    for _ in range(8):
        for ag, prog in agents.items():
            run(ledger, ag, prog, moved=0.01 if prog == "good" else None)
    for _ in range(20):  # every agent asks at its boundaries
        for ag in list(agents):
            got = a.assign(ag, agents[ag])
            if got is not None:
                agents[ag] = got.name
                run(ledger, ag, got.name, moved=0.01 if got.name == "good" else None)
                run(ledger, ag, got.name, moved=0.01 if got.name == "good" else None)
    assert list(agents.values()).count("barren") == 1  # the floor: one stays, exploring
    assert list(agents.values()).count("third") == 1
    assert list(agents.values()).count("good") == 3
    moves = history(ledger)
    assert moves and all(m["program"] == "good" and "thompson" in m["reason"] for m in moves)
    ys = {y.program: y for y in a.yields()}
    assert ys["good"].yield_ > ys["barren"].yield_ == 0.0
    assert ys["good"].agents == 3 and ys["barren"].agents == 1
    assert ys["good"].sd > 0


def test_dwell_holds_an_agent_until_its_runs_are_done(ledger):
    a = Allocation.configure(ledger, spec(dwell_runs=5, min_agents=0))
    for _ in range(10):
        run(ledger, "g", "good", moved=0.02)
    for _ in range(4):
        run(ledger, "b0", "barren")
        run(ledger, "b1", "barren")
    assert a.assign("b0", "barren") is None  # 4 runs < 5
    run(ledger, "b0", "barren")
    got = a.assign("b0", "barren")
    assert got is not None and got.name == "good"
    assert a.assign("b0", "good") is None      # just moved: dwell again


def test_the_roots_repeats_are_not_dwell(ledger):
    """An agent's repeats of the unchanged baseline after its first (the noise a fresh swarm
    measures: 7 of the quick start's first 18 runs) are no work on its program: an agent that has
    run only those and its first baseline is not moved (it was after dwell_runs of them, before its
    program had run one experiment). Its first baseline counts, as a re-measure of a later best
    does (a job like any other): on bench/allocation.py, where noise history leaves each agent one
    baseline, leaving that out too came a round later to every move (barren 1.07 times static's
    speed, not 1.13)."""
    a = Allocation.configure(ledger, spec(dwell_runs=3, min_agents=0))
    run(ledger, "b0", "barren", kind="baseline", commit="root", job="baseline-i")   # its first: counts
    for _ in range(5):
        run(ledger, "b0", "barren", kind="baseline", commit="root", job="baseline-j")   # noise: not
    for _ in range(6):
        run(ledger, "g", "good", moved=0.02)
    run(ledger, "b0", "barren", kind="confirm", job="confirm-j")
    assert a.assign("b0", "barren") is None   # two runs of work < 3
    run(ledger, "b0", "barren", kind="baseline", commit="best2", job="baseline-k")   # a re-measure of a new best
    got = a.assign("b0", "barren")
    assert got is not None and got.name == "good"


def test_pinned_programs_are_left_alone(ledger):
    a = Allocation.configure(ledger, spec(pinned=("barren", "good"), dwell_runs=1))
    for _ in range(10):
        run(ledger, "g", "good", moved=0.02)
        run(ledger, "b0", "barren")
        run(ledger, "b1", "barren")
        run(ledger, "t0", "third")
        run(ledger, "t1", "third")
    assert a.assign("b0", "barren") is None    # pinned: never moved out
    for _ in range(20):
        got = a.assign("t1", "third")          # never moved into a pinned program
        assert got is None or not got.pinned


def test_a_starved_program_takes_the_next_free_agent(ledger):
    a = Allocation.configure(ledger, spec(min_agents=1, dwell_runs=1))
    for _ in range(3):
        run(ledger, "a0", "good", moved=0.01)
        run(ledger, "a1", "good")
        run(ledger, "a2", "barren")
    got = a.assign("a1", "good")
    assert got is not None and got.name == "third"
    assert "below the floor" in history(ledger)[-1]["reason"]


def test_a_fractional_floor_time_shares_one_agent_among_the_programs_below_one(ledger):
    """min_agents 0.5: a program may be left with no agent, and gets one back for a visit of
    dwell_runs runs whenever its share of the swarm's last runs falls under half an agent's; a
    floor of 1 would hold an agent on each of barren and third all night."""
    a = Allocation.configure(ledger, spec(min_agents=0.5, dwell_runs=2))
    agents = {"a0": "barren", "a1": "barren", "a2": "good", "a3": "third"}
    seen, runs = [], []
    for _ in range(40):   # rounds: one run per agent, then each asks at its boundary
        for ag in list(agents):
            run(ledger, ag, agents[ag], moved=0.01 if agents[ag] == "good" else None)
            runs.append(agents[ag])
        for ag in list(agents):
            got = a.assign(ag, agents[ag])
            if got is not None:
                agents[ag] = got.name
        seen.append(dict(a._counts()))
    late = seen[10:]
    # the time-share: barren and third are each left with no agent for whole rounds ...
    assert any(c["barren"] == 0 for c in late) and any(c["third"] == 0 for c in late)
    # ... and visited again, so neither goes a long stretch unexplored
    assert all("barren" in runs[i:i + 24] and "third" in runs[i:i + 24] for i in range(40, len(runs) - 24, 4))
    visits = [m for m in history(ledger) if m["program"] in ("barren", "third") and m["previous"] == "good"]
    assert visits and all("floor of 0.5" in m["reason"] for m in visits)
    # over the last 30 rounds each gets at least half the floor's device share (0.5 of 4 agents),
    # and good, the one that moves best, holds more agents than the floor of 1 would leave it (2)
    tail = runs[-120:]
    for prog in ("barren", "third"):
        assert tail.count(prog) / len(tail) >= 0.5 * 0.5 / 4
    assert tail.count("good") / len(tail) > 2 / 4


def _six_programs_two_agents(ledger, rounds: int = 90, **cfg) -> list[str]:
    """Six programs, two agents starting on p0 and p1; p0's runs move best each time. The
    programs each run, in order."""
    names = [f"p{i}" for i in range(6)]
    a = Allocation.configure(ledger, AllocationSpec(
        config=AllocationConfig(mode="adaptive", seed=1, dwell_runs=2, **cfg),
        programs=[ProgramSpec(name=n, text=f"# {n}\n") for n in names]))
    agents = {"a0": "p0", "a1": "p1"}
    ran = []
    for _ in range(rounds):
        for ag in agents:
            run(ledger, ag, agents[ag], moved=0.01 if agents[ag] == "p0" else None)
            ran.append(agents[ag])
        for ag in agents:
            got = a.assign(ag, agents[ag])
            if got is not None:
                agents[ag] = got.name
    return ran


@pytest.mark.parametrize("cfg", [{}, {"min_agents": 0.5}, {"visits": 0}, {"visits": 1}], ids=str)
def test_more_programs_than_agents_take_turns(ledger, cfg):
    """Six programs, two agents: floors of 1 (the default) or 0.5 cannot all be met. By default
    (`visits` 0.5) the programs take turns under a floor of 0.5 x 2 / 6 = 1/6 of an agent each:
    every program gets its floor's share of the runs, and the one that moves best keeps the
    rest; `visits: 0` is the old rule (an agent alone on its program never leaves it: the four
    programs without an agent never run); `visits: 1` gives every agent to the turns (the yields
    decide nothing)."""
    ran = _six_programs_two_agents(ledger, **cfg)
    ys = [{**y.model_dump(), "mode": "adaptive"} for y in Allocation.restore(ledger).yields()]
    header = program_lines(ys)[0]
    if cfg.get("visits") == 0:
        assert "take turns" not in header and not ys[0]["turns"]
    else:   # `swarm status` says so
        assert ys[0]["floor"] == pytest.approx(round(cfg.get("visits", 0.5) * 2 / 6, 4))
        assert header.endswith(f"the programs take turns: {ys[0]['floor']:.2g} of an agent each):"), header
    tail = ran[40:]   # after the first visits
    share = {n: tail.count(n) / len(tail) for n in sorted(set(ran))}
    if cfg.get("visits") == 0:
        assert set(ran) == {"p0", "p1"}
        return
    floor_share = cfg.get("visits", 0.5) / 6      # of the runs: (visits x 2 / 6 agents) / 2 agents
    assert all(share.get(f"p{i}", 0) >= 0.7 * floor_share for i in range(6)), share
    if cfg.get("visits") == 1:
        assert share["p0"] < 0.3, share          # round robin: p0's yield buys it nothing
    else:
        assert share["p0"] > 0.4, share          # 1/6 of an agent visits, the other agent follows p0


def test_static_allocation_never_says_the_programs_take_turns(ledger):
    names = [f"p{i}" for i in range(6)]
    a = Allocation.configure(ledger, AllocationSpec(
        config=AllocationConfig(mode="static", seed=1, dwell_runs=2),
        programs=[ProgramSpec(name=n, text=f"# {n}\n") for n in names]))
    for _ in range(4):
        run(ledger, "a0", "p0")
        run(ledger, "a1", "p1")
    assert a.assign("a0", "p0") is None
    ys = [{**y.model_dump(), "mode": "static"} for y in a.yields()]
    assert not any(y["turns"] for y in ys) and "take turns" not in program_lines(ys)[0]


def test_an_agent_that_leaves_goes_to_the_program_least_visited_as_a_moved_one_does(ledger):
    """Under a fractional floor two programs without an agent are both starved; an agent whose
    backend refused its program goes to the one the swarm ran least of late, as an agent moved at
    its boundary does (it used to take the first by name: p2, visited a moment ago, over p3,
    never run)."""
    names = [f"p{i}" for i in range(4)]
    a = Allocation.configure(ledger, AllocationSpec(
        config=AllocationConfig(mode="adaptive", seed=1, min_agents=0.5, dwell_runs=2),
        programs=[ProgramSpec(name=n, text=f"# {n}\n") for n in names]))
    for prog in ("p2", "p1", "p1", "p1"):   # a1 visited p2, then went back to p1
        run(ledger, "a0", "p0")
        run(ledger, "a1", prog)
    a._follow()
    counts, recent = a._counts(), a._recent_agents()
    assert counts["p2"] == counts["p3"] == 0 and 0 == recent["p3"] < recent["p2"] < 0.5
    got = a.assign("a0", "p0", leaving="mutate: search space exhausted")
    assert got is not None and got.name == "p3", got and got.name
    assert "p3 has 0 agent(s)" in history(ledger)[-1]["reason"]


def test_a_whole_floor_holds_as_before_and_bad_floors_say_why(ledger):
    a = Allocation.configure(ledger, spec(min_agents=1, dwell_runs=1))
    for _ in range(12):
        run(ledger, "g", "good", moved=0.02)
        run(ledger, "b0", "barren")
        run(ledger, "t0", "third")
    for _ in range(10):
        assert a.assign("b0", "barren") is None   # the only agent of barren: never leaves
    with pytest.raises(ValueError, match="min_agents"):
        AllocationConfig(min_agents=-0.5)


def test_a_pool_shares_its_gain_between_programs(ledger):
    a = Allocation.configure(ledger, spec())
    member = run(ledger, "a1", "third")
    run(ledger, "a0", "good", moved=0.02, pooled=[member])
    ys = {y.program: y for y in a.yields()}
    assert ys["good"].credit == pytest.approx(0.01) and ys["third"].credit == pytest.approx(0.01)


def own(ledger: Ledger, eid: str, delta: float, merge: str | None = None) -> None:
    """A pending decision on `eid`: its own delta against best (or a pool's, with `merge`)."""
    ledger.put_decision(Decision(experiment_id=eid, decision="pending", delta=delta, merge_commit=merge))


def test_a_pool_splits_its_gain_by_each_members_own_evidence(ledger):
    # a result whose knobs do nothing joined a pool on its noise: it was measured no better than
    # best, so the pool's gain goes to the member that was (an even split credited it half)
    a = Allocation.configure(ledger, spec())
    lucky = run(ledger, "a1", "barren")
    own(ledger, lucky, -0.002)
    real = run(ledger, "a2", "third")
    own(ledger, real, 0.012)
    leader = run(ledger, "a0", "good")
    own(ledger, leader, 0.004)
    own(ledger, leader, 0.030, merge="m1")   # the pool's verification: not the leader's own
    ledger.put_decision(Decision(experiment_id=leader, decision="merge", best_after="m1", delta=0.032,
                                 merge_commit="m1", pooled=[lucky, real]))
    ys = {y.program: y for y in a.yields()}
    assert ys["barren"].credit == 0.0
    assert ys["third"].credit == pytest.approx(0.024) and ys["good"].credit == pytest.approx(0.008)


def test_each_move_is_in_the_history_once(ledger):
    a = Allocation.configure(ledger, spec(min_agents=0, dwell_runs=1))
    for _ in range(10):
        run(ledger, "g", "good", moved=0.02)
        run(ledger, "b0", "barren")
    got = a.assign("b0", "barren")
    assert got is not None and got.name == "good"
    assert a.assign("g", "good") is None
    assert len(a.history) == len(history(ledger)) == 1
    assert Allocation.restore(ledger).history == a.history


def test_the_allocation_is_rebuilt_from_redis_after_a_restart(ledger):
    a = Allocation.configure(ledger, spec(dwell_runs=1, min_agents=0))
    for _ in range(6):
        run(ledger, "g", "good", moved=0.02)
        run(ledger, "b0", "barren")
        run(ledger, "b1", "barren")
    got = a.assign("b0", "barren")
    assert got is not None and got.name == "good"
    b = Allocation.restore(ledger)                 # a new coordinator: spec and state from redis
    assert b is not None and b.cfg.mode == "adaptive"
    assert b.program_of["b0"] == "good" and b.moved_at["b0"] == a.moved_at["b0"]
    assert [y.model_dump() for y in b.yields()] == [y.model_dump() for y in a.yields()]
    assert ledger.r.hget(keys.allocation(ledger.swarm_id), "b0")


def test_nothing_configured_restores_nothing_and_bad_specs_say_why(ledger):
    assert Allocation.restore(ledger) is None
    with pytest.raises(AllocationError, match="'x' is named twice"):
        Allocation(ledger, AllocationSpec(programs=[ProgramSpec(name="x", text=""), ProgramSpec(name="x", text="")]))


def test_swarm_status_shows_each_programs_agents_yield_and_share(ledger):
    from rich.console import Console

    from coordinator.run import live

    assert live.gather(ledger.r, ledger.swarm_id)["programs"] == []  # nothing configured: no table
    Allocation.configure(ledger, spec())
    run(ledger, "a0", "good", moved=0.02)
    run(ledger, "a1", "barren")
    run(ledger, "a2", "barren")
    data = live.gather(ledger.r, ledger.swarm_id)
    progs = {p["program"]: p for p in data["programs"]}
    assert progs["good"]["agents"] == 1 and progs["barren"]["agents"] == 2
    assert progs["good"]["yield_"] == pytest.approx(0.02 / (300 / 3600))
    assert progs["barren"]["share"] == pytest.approx(2 / 3, abs=1e-3)
    console = Console(width=160, record=True)
    console.print(live.render(data))
    text = console.export_text()
    assert "programs (adaptive allocation" in text
    assert "good: 1 agent, yield 0.2400" in text and "barren: 2 agents, yield 0.0000" in text
    run(ledger, "a1", "good", moved=0.01)   # followed between redraws
    progs = {p["program"]: p for p in live.gather(ledger.r, ledger.swarm_id)["programs"]}
    assert progs["good"]["agents"] == 2 and progs["good"]["credit"] == pytest.approx(0.03)


@pytest.mark.parametrize("allocation,says", [
    ({}, "too few agents for allocation.min_agents 1 each, so the programs take turns: each gets 0.17 of "
         "an agent (allocation.visits 0.5) in visits of 6 runs"),
    ({"min_agents": 0.5}, "too few agents for allocation.min_agents 0.5 each, so the programs take turns"),
    ({"visits": 0}, "under allocation.min_agents 1 and visits 0 no agent leaves a program it is alone on"),
    ({"mode": "static"}, "under static allocation they never run"),
    ({"min_agents": 0.25}, None),
    ({"min_agents": 0}, None),
])
def test_swarm_run_says_at_start_which_programs_have_no_agent(tmp_path, monkeypatch, allocation, says):
    """The shipped six programs on the quick start's 2 agents: four start with no agent. By default
    (a floor of 1 the agents cannot meet, visits 0.5) they take turns; with visits 0 they never
    get one (tests above: an agent alone on its program never leaves it), nor under static
    allocation. `swarm run` says which in a line at start; nothing when a floor the agents meet
    (6 x 0.25 <= 2) or none lets agents go to them."""
    import yaml
    from types import SimpleNamespace

    from coordinator.run.swarm import plan

    monkeypatch.setattr("coordinator.run.swarm.usable_cpus", lambda: 8)  # six agents need six cores
    (tmp_path / "swarm.yaml").write_text(yaml.safe_dump({"allocation": allocation} if allocation else {}))
    args = SimpleNamespace(config=str(tmp_path / "swarm.yaml"), budget=None, seed=None, profile="cpu",
                           gpus=None, address=None, agents=2, redis_url=None, hours=None,
                           swarm_home=str(tmp_path / "h"), max_experiments=1, plain=True, verbose=False)
    p = plan(args)
    line = p.unstaffed_line()
    if says is None:
        assert line is None
        return
    assert line.startswith("programs: 4 of 6 start with no agent (2 agents): optimizer, schedule, simplify, "
                           "explore; ") and says in line and "\n" not in line
    args.agents = 6
    assert plan(args).unstaffed_line() is None   # one agent each


def test_swarm_yaml_allocation_becomes_the_coordinators_spec(tmp_path):
    """`allocation:` and `pin:` in swarm.yaml reach the spec swarm run configures: every
    program with its text, backend as its agents got it (resolved for one without agents in
    adaptive mode), adopt rule, weight and pin; a typo in `allocation:` is a one-line error."""
    from coordinator.run.config import ConfigError, parse_config, resolve_program
    from coordinator.run.swarm import _allocation_spec

    data = {"backend": {"type": "mutate"}, "allocation": {"mode": "adaptive", "min_agents": 0.5, "inert_prior": 0.5},
            "programs": [{"name": "optimizer", "weight": 2}, {"name": "architecture", "pin": True},
                         {"name": "explore", "adopt": "always"}]}
    cfg = parse_config(data, "swarm.yaml", env={})
    paths = [resolve_program(e, tmp_path) for e in cfg.programs]
    specs = [{"program_name": "optimizer", "backend": {"type": "mutate"}}]
    got = AllocationSpec.model_validate(_allocation_spec(cfg, paths, specs, None))
    assert got.config.mode == "adaptive" and got.config.min_agents == 0.5 and got.config.inert_prior == 0.5
    by = {p.name: p for p in got.programs}
    assert by["optimizer"].weight == 2 and by["architecture"].pinned and by["explore"].adopt == "always"
    assert by["explore"].backend["type"] == "mutate" and by["optimizer"].text == paths[0].read_text()
    with pytest.raises(ConfigError, match="allocation.mode"):
        parse_config({**data, "allocation": {"mode": "greedy"}}, "swarm.yaml", env={})
    with pytest.raises(ConfigError, match="inert_prior"):
        parse_config({**data, "allocation": {"inert_prior": 1.0}}, "swarm.yaml", env={})
    got = parse_config({**data, "allocation": {}}, "swarm.yaml", env={}).allocation   # the defaults
    assert (got.share, got.inert_prior, got.dwell_runs, got.inert_dwell_runs) == ("p_best", 0.5, 6, 1)
    with pytest.raises(ConfigError, match="share 'active' .*inert_prior") as e:
        parse_config({**data, "allocation": {"share": "active", "inert_prior": 0}}, "swarm.yaml", env={})
    assert "\n" not in str(e.value)


def test_an_agent_whose_backend_refused_its_program_leaves_it_at_once_until_best_moves(ledger):
    """A program that cannot propose any more for an agent (mutate: its search space exhausted;
    an LLM that refuses) releases the agent to another program at once, dwell and floor
    notwithstanding (it used to stop the agent: a GPU idle until morning); the program is spent:
    no agent is moved into it, by its floor or its share, until best moves (new ground: mutate's
    nearby states of the new best are new, a knob's effect may have changed), when its floor
    pulls an agent back in (it used to stay spent all night); restored from the ledger."""
    a = Allocation.configure(ledger, spec(min_agents=1, dwell_runs=6))
    run(ledger, "b0", "barren")                # one run: dwell not over, and barren's only agent
    run(ledger, "g0", "good", moved=0.02)
    run(ledger, "t0", "third")
    got = a.assign("b0", "barren", leaving="mutate: search space exhausted")
    assert got is not None and got.name != "barren"
    ev = history(ledger)[-1]
    assert (ev["agent"], ev["previous"], ev["left"]) == ("b0", "barren", True)
    assert "search space exhausted" in ev["reason"]
    # barren is below its floor now, but it no longer pulls agents in: b0 and the others stay out
    for ag, prog in (("b0", got.name), ("g0", "good"), ("t0", "third")):
        for _ in range(6):
            run(ledger, ag, prog)
        moved = a.assign(ag, prog)
        assert moved is None or moved.name != "barren", (ag, moved)
    again = Allocation.restore(ledger)          # a restarted coordinator knows it too
    assert again.spent == {"barren"}
    assert {y.program: y.spent for y in again.yields()} == {"good": False, "barren": True, "third": False}
    from coordinator.run.live import program_lines
    assert any(line.startswith("  barren (spent): ") for line in program_lines(
        [{**y.model_dump(), "mode": "adaptive"} for y in again.yields()]))
    # best moves (a result of another program): barren is new ground again, and below its floor
    run(ledger, "g0", "good", moved=0.01)
    donor = max(("b0", "g0", "t0"), key=lambda ag: (a._counts()[a.program_of[ag]], ag == "b0"))
    for _ in range(6):
        run(ledger, donor, a.program_of[donor])
    back = a.assign(donor, a.program_of[donor])     # its program has two agents: one can go
    assert back is not None and back.name == "barren" and a.spent == set()
    assert "below the floor" in history(ledger)[-1]["reason"]
    assert Allocation.restore(ledger).spent == set()
    assert {y.program: y.spent for y in a.yields()} == {"good": False, "barren": False, "third": False}
    # refused again on the new best: spent again, until the next move
    assert a.assign(donor, "barren", leaving="mutate: search space exhausted").name != "barren"
    assert a.spent == {"barren"} and Allocation.restore(ledger).spent == {"barren"}
    # a program every other program also refused: nowhere to go, the agent stops as before
    last = Allocation.configure(ledger, spec(mode="adaptive"))
    last.spent |= {"good", "third"}
    assert last.assign("z", "barren", leaving="refused") is None


def test_static_mode_and_pins_do_not_move_a_refused_agent(ledger):
    a = Allocation.configure(ledger, spec(mode="static"))
    run(ledger, "b0", "barren")
    assert a.assign("b0", "barren", leaving="refused") is None
    a = Allocation.configure(ledger, spec(pinned=("barren",)))
    assert a.assign("b0", "barren", leaving="refused") is None
    assert a.assign("g0", "good", leaving="refused") is not None


def test_without_evidence_agents_do_not_trade_places(ledger):
    """Programs that nothing tells apart keep their agents: 2, 2, 1 agents on three programs
    with no credit are as close to equal shares (1.67 each) as whole agents get. The rule
    "over + under by more than one agent together" moved one of the two-agent programs' agents
    whenever the draws' noise put the one-agent program a hair higher, and the next question
    moved it back (bench/allocation.py, barren seed 18: 31 moves, each costing an agent its line)."""
    a = Allocation.configure(ledger, spec(min_agents=1, dwell_runs=1))
    agents = {"a0": "good", "a1": "good", "a2": "barren", "a3": "barren", "a4": "third"}
    for _ in range(3):
        for ag, prog in agents.items():
            run(ledger, ag, prog)
    for _ in range(30):
        for ag in agents:
            assert a.assign(ag, agents[ag]) is None
    assert history(ledger) == []


def test_programs_nothing_tells_apart_even_out_once(ledger):
    """Three agents on one program and one on another with the same yield (shares of 2 and
    2): one move evens them out, and then nobody moves."""
    a = Allocation.configure(ledger, spec(min_agents=1, dwell_runs=1))
    agents = {"g0": "good", "g1": "good", "g2": "good", "t0": "third", "b0": "barren"}
    paying = ("good", "third")   # every run of theirs moves best by the same: the same yield
    for _ in range(4):
        for ag, prog in agents.items():
            run(ledger, ag, prog, moved=0.01 if prog in paying else None)
    for _ in range(10):
        for ag in agents:
            got = a.assign(ag, agents[ag])
            if got is not None:
                agents[ag] = got.name
            run(ledger, ag, agents[ag], moved=0.01 if agents[ag] in paying else None)
    assert sorted(agents.values()).count("good") == 2 and sorted(agents.values()).count("third") == 2
    assert [(m["previous"], m["program"]) for m in history(ledger)] == [("good", "third")]


def pending(ledger: Ledger, agent: str, program: str, delta: float) -> str:
    """One run under `program` whose candidate is pending in its sequential test, `delta` better."""
    eid = run(ledger, agent, program)
    ledger.put_decision(Decision(experiment_id=eid, decision="pending", delta=delta, stage="confirm"))
    return eid


def test_pending_candidates_count_as_early_evidence_until_decided(ledger):
    """pending_weight > 0: a program whose candidates are still in their sequential test with
    positive deltas draws agents before any of them is verified; once a candidate is decided
    its provisional credit goes (its real credit, or none, replaces it)."""
    a = Allocation.configure(ledger, spec(min_agents=1, dwell_runs=1, pending_weight=1.0))
    ids = [pending(ledger, "g0", "good", 0.02) for _ in range(3)]
    for _ in range(3):
        run(ledger, "b0", "barren")
        run(ledger, "b1", "barren")
        run(ledger, "t0", "third")
    ys = {y.program: y for y in a.yields()}
    assert ys["good"].credit == 0.0   # the yield shows verified credit only
    got = a.assign("b1", "barren")
    assert got is not None and got.name == "good"
    for eid in ids:  # all three discarded in the end: no credit left, early or not
        ledger.put_decision(Decision(experiment_id=eid, decision="discard", delta=-0.001))
    a.assign("b0", "barren")
    assert a._early() == ({"good": 0.0, "barren": 0.0, "third": 0.0}, 0.0)
    # with the default (verified moves only) the same pending candidates move nobody
    b = Allocation.configure(Ledger(ledger.r, "alloc-test-2"), spec(min_agents=1, dwell_runs=1))
    for _ in range(3):
        pending(b.ledger, "g0", "good", 0.02)
        run(b.ledger, "b0", "barren")
        run(b.ledger, "b1", "barren")
        run(b.ledger, "t0", "third")
    assert b.assign("b1", "barren") is None


def measured(ledger: Ledger, agent: str, program: str, z: float, sigma: float = 0.01) -> str:
    """One run under `program` whose change moved val_bpb by `z` sds of its measurement (one
    sample against best's 8), discarded or pending as the coordinator would write it."""
    eid = run(ledger, agent, program)
    delta = z * sigma * (1 + 1 / 8) ** 0.5
    ledger.put_decision(Decision(experiment_id=eid, decision="pending" if delta > 0 else "discard",
                                 delta=delta, delta_parent=delta, sigma=sigma, dof=8, samples=1,
                                 samples_best=8))
    return eid


def test_a_program_whose_changes_do_nothing_gives_its_agents_away_before_any_move(ledger):
    """No move of best yet, so no rate tells the programs apart; but every change of `barren`
    left val_bpb within the noise, while `good` and `third` changed it by 3-4 sds (for the
    worse, too: a change that hurts shows the knob matters). The agent above barren's floor
    moves; with inert_prior 0 (the rule before) it stays, as nothing tells the programs apart."""
    for prior, moves in ((0.5, True), (0.0, False)):
        lg = Ledger(ledger.r, f"alloc-inert-{prior}")
        a = Allocation.configure(lg, spec(min_agents=1, dwell_runs=2, inert_prior=prior))
        for z_good, z_third, z_barren in ((3.5, -4.0, 0.4), (-3.0, 3.2, -0.7)):
            measured(lg, "g0", "good", z_good)
            measured(lg, "t0", "third", z_third)
            measured(lg, "b0", "barren", z_barren)
            measured(lg, "b1", "barren", -z_barren / 2)
        ys = {y.program: y for y in a.yields()}
        got = a.assign("b1", "barren")
        if not moves:
            assert got is None and ys["barren"].inert == 0.0
            continue
        assert ys["barren"].inert > 0.95, ys
        from coordinator.run.live import program_lines
        shown = "\n".join(program_lines([y.model_dump() for y in a.yields()]))
        inert_lines = [ln for ln in shown.splitlines() if "P inert" in ln]
        assert len(inert_lines) == 1 and inert_lines[0].startswith("  barren: ")
        assert "its changes left val_bpb within the noise (P inert 0.9" in inert_lines[0]
        assert ys["good"].inert < 0.01 and ys["third"].inert < 0.01
        assert got is not None and got.name in ("good", "third")
        assert a.assign("b0", "barren") is None          # the floor: one stays, exploring
        # changes of barren's that move val_bpb by 4 sds: one makes it doubtful, two active again
        measured(lg, "b0", "barren", 4.0)
        assert 0.05 < {y.program: y for y in a.yields()}["barren"].inert < 0.3
        measured(lg, "b0", "barren", -4.0)
        assert {y.program: y for y in a.yields()}["barren"].inert < 0.001


def test_an_agent_leaves_a_program_probably_inert_before_its_dwell_is_over(ledger):
    """inert_dwell_runs: every change of `barren` left val_bpb within the noise (P inert above 0.8),
    while `good` and `third` changed it by 3-4 sds. An agent with two runs on barren, under a
    dwell of 6, may leave it at once; with `inert_dwell_runs: null` (dwell_runs for every program,
    the rule before) it waits out the 6; an agent with as few runs on `third` (active) waits in
    either case. On bench/allocation.py the short dwell was what made the inert evidence count:
    barren 1.13 times static's speed where the dwell of 6 for all gave 0.98."""
    for short, moves in ((1, True), (None, False)):
        lg = Ledger(ledger.r, f"alloc-inert-dwell-{short}")
        a = Allocation.configure(lg, spec(min_agents=1, dwell_runs=6, inert_prior=0.5, inert_dwell_runs=short))
        for z_good, z_third, z_barren in ((3.5, -4.0, 0.4), (-3.0, 3.2, -0.7)):
            measured(lg, "g0", "good", z_good)
            measured(lg, "t0", "third", z_third)
            measured(lg, "t1", "third", -z_third)
            measured(lg, "b0", "barren", z_barren)
            measured(lg, "b1", "barren", -z_barren / 2)
        assert {y.program: y for y in a.yields()}["barren"].inert > 0.8
        assert a.assign("t1", "third") is None            # active: 2 runs of its dwell of 6
        got = a.assign("b1", "barren")
        if moves:
            assert got is not None and got.name == "good", got
            assert a.assign("b0", "barren") is None      # the floor: one stays, exploring
        else:
            assert got is None
        assert a.assign("t0", "third") is None


def test_status_says_a_program_is_inert_only_on_evidence(ledger):
    """With inert_prior 0.5 (the default) a program that has run only baselines, or one change,
    has P(inert) at or near its prior: `swarm status` must not say its changes left val_bpb within
    the noise (it said so of every program of a fresh swarm at 0.50). It says so from P(inert) 0.8,
    where the allocation acts on it (the short dwell)."""
    a = Allocation.configure(ledger, spec(min_agents=1, dwell_runs=6, inert_prior=0.5))
    run(ledger, "g0", "good", kind="baseline", commit="root", job="baseline-1")
    run(ledger, "b0", "barren", kind="baseline", commit="root", job="baseline-2")
    measured(ledger, "t0", "third", 0.3)

    def said() -> str:
        return "\n".join(program_lines([y.model_dump() for y in a.yields()]))

    assert "P inert" not in said(), said()
    for z in (0.4, -0.6, 0.2):
        measured(ledger, "b0", "barren", z)
    lines = [ln for ln in said().splitlines() if "P inert" in ln]
    assert len(lines) == 1 and lines[0].startswith("  barren: "), said()


def test_the_effect_of_a_change_is_read_from_its_own_decision_fields(ledger):
    """_effect uses the delta against the candidate's parent, never against best (a candidate
    made on an older best carries best's other changes), and nothing before sigma has 2 dof."""
    from coordinator.decide.allocation import _effect
    d = Decision(experiment_id="x", decision="discard", delta=0.05, delta_parent=0.01, sigma=0.01,
                 dof=8, samples=1, samples_best=1)
    assert _effect(d) == pytest.approx(0.01 / (0.01 * 2 ** 0.5))
    assert _effect(d.model_copy(update={"delta_parent": None})) is None
    assert _effect(d.model_copy(update={"dof": 1})) is None
    assert _effect(d.model_copy(update={"samples": 0})) is None
    assert _effect(d.model_copy(update={"merge_commit": "m"})) is None


def test_active_share_splits_the_agents_above_the_floors_evenly_among_the_programs_that_pay(ledger):
    """share: active. `good` moved best three times by 0.05, `third` once by 0.005, and every
    change of `barren` left val_bpb within the noise. Thompson's P(best) gives good nearly all
    the agents above the floors and third keeps its one; active shares them evenly between the
    two programs that can move best (3 and 3), barren keeps its floor, and each move says why.
    On bench/allocation.py an even split of the paying programs' agents was 3-4 rounds faster
    than all of them on either one (see Allocation._targets)."""
    ends = {}
    for share, prior in (("p_best", 0.0), ("active", 0.5)):
        lg = Ledger(ledger.r, f"alloc-share-{share}")
        a = Allocation.configure(lg, spec(min_agents=1, dwell_runs=1, inert_prior=prior, share=share))
        agents = {"g0": "good", "g1": "good", "g2": "good", "g3": "good", "t0": "third", "b0": "barren",
                  "b1": "barren"}
        for delta in (0.05, 0.05, 0.05):
            run(lg, "g0", "good", moved=delta)
        run(lg, "t0", "third", moved=0.005)
        for z in (0.3, -0.5, 0.2, -0.1):
            measured(lg, "b0", "barren", z)
            measured(lg, "b1", "barren", -z)
        for ag in ("g1", "g2", "g3"):
            run(lg, ag, "good")
        for _ in range(4):
            for ag in agents:
                got = a.assign(ag, agents[ag])
                if got is not None:
                    agents[ag] = got.name
                run(lg, ag, agents[ag])
        ends[share] = {n: list(agents.values()).count(n) for n in ("good", "third", "barren")}
        if share == "active":
            assert all(m["reason"].startswith("active: P(inert) third 0.00") for m in history(lg)), history(lg)
    assert ends["active"] == {"good": 3, "third": 3, "barren": 1}, ends
    assert ends["p_best"]["third"] == 1 and ends["p_best"]["good"] >= 5, ends
