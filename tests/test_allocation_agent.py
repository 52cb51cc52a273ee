"""Adaptive allocation through the real Coordinator (real redis, real bare repo) and the real
ResearchAgent loop (mutate backend over each program's search space); only the runner is the
research bench's fake one (bench/landscape.py: a landscape sample per run, no training)."""
from __future__ import annotations

import json
import random
import time

import pytest

from agents.agent import ResearchAgent
from agents.config import AgentConfig
from agents.messages import ExperimentRecord, PromotionConfig
from agents.program import ProgramSpec
from bench.landscape import PROGRAM_KNOBS, Bowls, constants, fake_runner, program_text
from coordinator.decide.allocation import AllocationConfig, AllocationSpec
from coordinator.decide.core import Coordinator

LAND = Bowls()


def _spec(pinned=(), dwell_runs=2) -> AllocationSpec:
    return AllocationSpec(config=AllocationConfig(mode="adaptive", min_agents=1, dwell_runs=dwell_runs, seed=3),
                          programs=[ProgramSpec(name=n, text=program_text(n), pinned=n in pinned)
                                    for n in ("optimizer", "architecture")])


def _coord(home, redis_url) -> Coordinator:
    return Coordinator(home, redis_url, PromotionConfig(min_dof=2), swarm_id="alloc",
                       baseline_train_py=LAND.baseline_text())


def _agent(home, coord, i: int, program: str = "optimizer") -> ResearchAgent:
    cfg = AgentConfig(name=f"a{i}", program_name=program, program_text=program_text(program),
                      seed=i, swarm_id="alloc", swarm_home=home, hardware_class=LAND.hardware_class,
                      budget=LAND.seconds_per_run, recent_n=0, heartbeat_s=1e9, prepare_ahead=False)
    return ResearchAgent(cfg, coord, runner=fake_runner(LAND, random.Random(i)),
                         hardware_class=LAND.hardware_class)


def _events(coord) -> list[tuple[str, str, dict]]:
    return [(t, id, json.loads(js)) for t, id, js in coord.ledger.events()]


def _until_moved(agents, most: int = 20) -> None:
    """Each agent runs its baseline, then the first runs alone until it has moved (dwell counts
    runs of work, not the baseline round's)."""
    for a in agents:
        a._iteration()
    for _ in range(most):
        agents[0]._iteration()
        if agents[0].moves:
            return
    raise AssertionError(f"{agents[0].cfg.name} did not move in {most} runs")


def test_an_agent_moves_at_a_boundary_takes_the_program_and_adopts_best(tmp_path, redis_url):
    home = tmp_path / "home"
    coord = _coord(home, redis_url)
    coord.configure_allocation(_spec(dwell_runs=1))
    agents = [_agent(home, coord, i) for i in range(2)]
    for a in agents:
        a._iteration()
    a0 = agents[0]
    assert a0.program.name == "optimizer"
    a0._maybe_move()  # dwell over; architecture is below its floor of one agent
    assert a0.program.name == "architecture" and a0.moves == 1
    best = coord.best(LAND.hardware_class)
    assert best is not None and a0.wt.head() == best.commit   # it adopted best
    a1 = agents[1]
    a1._maybe_move()  # optimizer would fall below its floor: a1 stays
    assert a1.program.name == "optimizer"
    moved_at = a0.experiments
    for _ in range(30):  # a0 alone (with two agents the one asking first takes every job) until
        a0._iteration()  # it has run 2 experiments of its own after the jobs it owed
        if a0.experiments >= moved_at + 2:
            break

    evs = _events(coord)
    moves = [(k, e) for k, (t, _id, e) in enumerate(evs) if t == "allocation"]
    assert [(e["agent"], e["previous"], e["program"]) for _, e in moves] == [("a0", "optimizer", "architecture")]
    assert "below the floor" in moves[0][1]["reason"]
    at = moves[0][0]
    # at a boundary: every run a0 began before the move was recorded before it
    began = {id for t, id, e in evs[:at] if t == "started" and e["agent"] == "a0"}
    recorded = {id for t, id, e in evs[:at] if t == "record" and e["agent"] == "a0"}
    assert began and began <= recorded
    recs = [ExperimentRecord.model_validate(e) for t, _id, e in evs if t == "record" and e["agent"] == "a0"]
    before = [r for r in recs if r.experiment_id in recorded]
    after = [r for r in recs if r.experiment_id not in recorded]
    assert {r.program for r in before} == {"optimizer"} and after
    assert {r.program for r in after} == {"architecture"}   # its records name the new program
    # its experiments change only the new program's knobs (its backend took the new search space)
    tried = [r for r in after if r.kind == "experiment" and r.commit]
    assert tried
    for r in tried:
        old, new = constants(coord.repo.show(r.parent)), constants(coord.repo.show(r.commit))
        changed = {k for k in new if new[k] != old.get(k)}
        assert changed and changed <= set(PROGRAM_KNOBS["architecture"]), changed
    ys = {y["program"]: y for y in coord.allocation_status()}
    assert ys["architecture"]["agents"] == 1 and ys["optimizer"]["agents"] == 1
    assert ys["architecture"]["hours"] > 0
    # the report's section: each program's contribution, the allocation over time, the moves
    from coordinator.review.report.allocation import allocation_html, load_allocation
    data = load_allocation(coord.r, "alloc")
    assert [(a, p) for _t, a, p in data["timeline"]] == [("a0", "optimizer"), ("a1", "optimizer"),
                                                         ("a0", "architecture")]
    # the plot runs to the last record's end, where the agents are still on their programs
    from coordinator.review.report.allocation import timeline_steps
    last = max(e["finished_at"] for t, _id, e in evs if t == "record")
    assert data["end"] == last
    unit, xs, ys = timeline_steps(data["timeline"], data["end"])
    assert unit == "minutes" and xs[-1] == pytest.approx((last - data["timeline"][0][0]) / 60.0)
    assert ys["architecture"][-1] == 1 and ys["optimizer"][-1] == 1
    page = allocation_html(data, {})
    assert "<h2>Allocation (adaptive)</h2>" in page and "<img" in page
    assert "1 reassignment</p>" in page and "a0: optimizer → architecture" in page


def test_pinned_programs_keep_their_agents(tmp_path, redis_url):
    home = tmp_path / "home"
    coord = _coord(home, redis_url)
    coord.configure_allocation(_spec(pinned=("optimizer",)))
    agents = [_agent(home, coord, i) for i in range(2)]
    for _ in range(5):
        for a in agents:
            a._iteration()
    assert [a.program.name for a in agents] == ["optimizer", "optimizer"]
    assert not [e for e in _events(coord) if e[0] == "allocation"]


def test_static_allocation_moves_nobody(tmp_path, redis_url):
    home = tmp_path / "home"
    coord = _coord(home, redis_url)
    spec = _spec()
    spec.config.mode = "static"
    coord.configure_allocation(spec)
    agents = [_agent(home, coord, i) for i in range(2)]
    for _ in range(4):
        for a in agents:
            a._iteration()
    assert [a.program.name for a in agents] == ["optimizer", "optimizer"]


def test_the_allocation_survives_a_coordinator_kill_and_a_swarm_run_restart(tmp_path, redis_url):
    home = tmp_path / "home"
    coord = _coord(home, redis_url)
    coord.configure_allocation(_spec())
    agents = [_agent(home, coord, i) for i in range(2)]
    _until_moved(agents)
    assert agents[0].program.name == "architecture"
    n_moves = sum(1 for e in _events(coord) if e[0] == "allocation")
    # the coordinator dies: a new one finds the allocation in redis (nobody configures it again)
    coord2 = _coord(home, redis_url)
    assert coord2.allocation is not None and coord2.allocation.cfg.mode == "adaptive"
    for a in agents:
        a.port = coord2
    for _ in range(2):
        for a in agents:
            a._iteration()
    assert [a.program.name for a in agents] == ["architecture", "optimizer"]
    # `swarm run` restarts: configures the same spec, and builds each agent on its static program
    coord3 = _coord(home, redis_url)
    coord3.configure_allocation(_spec())
    again = _agent(home, coord3, 0, "optimizer")
    again._iteration()
    assert again.program.name == "architecture"   # it resumes the program it was moved to
    assert sum(1 for e in _events(coord3) if e[0] == "allocation") == n_moves  # no new move
    ys = {y["program"]: y["agents"] for y in coord3.allocation_status()}
    assert ys == {"optimizer": 1, "architecture": 1}


@pytest.mark.parametrize("kind", ["optuna"])
def test_a_moved_agent_gets_the_new_programs_own_backend(tmp_path, redis_url, monkeypatch, kind):
    """optuna studies are per program: a moved agent's backend is a new one, bound to the new
    program's study, and a move back takes the first one up again."""
    monkeypatch.setenv("SWARM_REDIS_URL", redis_url)
    home = tmp_path / "home"
    coord = _coord(home, redis_url)
    spec = _spec()
    for p in spec.programs:
        p.backend = {"type": kind}
    coord.configure_allocation(spec)
    cfg = dict(name="a0", program_name="optimizer", program_text=program_text("optimizer"),
               backend={"type": kind}, swarm_id="alloc", swarm_home=home,
               hardware_class=LAND.hardware_class, budget=LAND.seconds_per_run, recent_n=0,
               heartbeat_s=1e9, prepare_ahead=False)
    agents = [ResearchAgent(AgentConfig(**{**cfg, "name": f"a{i}", "seed": i}), coord,
                            runner=fake_runner(LAND, random.Random(i)), hardware_class=LAND.hardware_class)
              for i in range(2)]
    first = agents[0].backend
    _until_moved(agents)
    a0 = agents[0]
    assert a0.program.name == "architecture"
    assert a0.backend is not first and a0.backend.name == kind
    assert a0._backends["optimizer"] is first


TINY = ("# tiny\nOne switch of the synthetic train.py.\n\n```yaml\nsearch_space:\n"
        "  QK_NORM: {type: int, min: 0, max: 1, step: 1}\n```\n")


def _tiny_swarm(home, redis_url, mode: str, spent_wait_runs: float = 12.0, budget: float | None = LAND.seconds_per_run):
    """A coordinator whose programs are `tiny` (one switch) and `optimizer`, and an agent a0 on
    tiny (a spent wait checks best every 10 ms)."""
    coord = _coord(home, redis_url)
    coord.configure_allocation(AllocationSpec(
        config=AllocationConfig(mode=mode, min_agents=1, dwell_runs=100, seed=3),
        programs=[ProgramSpec(name="tiny", text=TINY), ProgramSpec(name="optimizer", text=program_text("optimizer"))]))
    a = ResearchAgent(AgentConfig(name="a0", program_name="tiny", program_text=TINY, seed=0, swarm_id="alloc",
                                  swarm_home=home, hardware_class=LAND.hardware_class, budget=budget,
                                  recent_n=0, heartbeat_s=1e9, prepare_ahead=False, backend_wait_s=0.01,
                                  spent_wait_runs=spent_wait_runs),
                      coord, runner=fake_runner(LAND, random.Random(0)), hardware_class=LAND.hardware_class)
    return coord, a


@pytest.mark.parametrize("mode", ["adaptive", "static"])
def test_an_agent_whose_program_is_exhausted_moves_on_instead_of_stopping(tmp_path, redis_url, mode):
    """mutate over a one-switch space runs out of states after one idea; its backend refuses
    (the same failure five times). Adaptive: the agent leaves for another program at once (a
    ledger event with the reason) and goes on researching there; static with spent_wait_runs 0:
    it stops, as it did before agents waited for best to move (next test)."""
    coord, a = _tiny_swarm(tmp_path / "home", redis_url, mode, spent_wait_runs=0)
    for _ in range(30):
        if a._stop.is_set() or a.program.name != "tiny":
            break
        a._iteration()
    moves = [e for t, _id, e in _events(coord) if t == "allocation"]
    if mode == "static":
        assert a._stop.is_set() and a.stop_reason.startswith("backend refused") and moves == []
        return
    assert not a._stop.is_set() and a.stop_reason is None and a.program.name == "optimizer"
    assert [(e["agent"], e["previous"], e["program"], e["left"]) for e in moves] == [("a0", "tiny", "optimizer", True)]
    assert "exhausted" in moves[0]["reason"]
    for _ in range(4):
        a._iteration()
    recs = [e for t, _id, e in _events(coord) if t == "record" and e["agent"] == "a0" and e["kind"] == "experiment"]
    assert recs[-1]["program"] == "optimizer" and not a._stop.is_set()
    # the refusals are no experiments (next test): the move is the ledger's trace of them
    assert not [r for r in recs if r["status"] == "invalid"], [(r["program"], r["reason"]) for r in recs]


def test_a_backend_with_nothing_left_to_propose_makes_no_experiment(tmp_path, redis_url):
    """mutate over a one-switch space has one idea, then nothing left to propose from best. That
    answer is no idea: no record, no experiment counted, no invalid edit (a `swarm run` of a
    one-knob program ended "7 experiments and 11 runs ... 5 invalid edit(s) never trained"
    where 2 were trained: its five refusals in 0.2 s). The agent asks again at once and, at the
    fifth answer alike, waits for best to move: all in the iteration that met the first one."""
    home = tmp_path / "home"
    coord, a = _tiny_swarm(home, redis_url, "static")
    for _ in range(30):
        trained_before = [r for r in coord.records.values() if r.agent == "a0" and r.kind == "experiment"]
        a._iteration()
        if a._spent is not None:
            break
    assert a._spent is not None and a.phase == "spent"
    mine = [r for r in coord.records.values() if r.agent == "a0" and r.kind == "experiment"]
    assert mine and all(r.status == "ok" for r in mine), [(r.status, r.reason) for r in mine]
    assert len(mine) == len(trained_before)   # the spending iteration trained and recorded nothing
    st = a.status()
    assert st["experiments"] == len(mine) and "invalid" not in st["statuses"], st
    # the backend's event log keeps the refusal, once, with its reason
    events = [json.loads(ln) for ln in (home / "logs" / "backend-a0.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["refused"] and "exhausted" in events[0]["reason"], events


def test_a_static_agent_whose_program_is_exhausted_waits_for_best_and_proposes_from_it(tmp_path, redis_url):
    """Static mode (nowhere to move): the agent whose backend has nothing left to propose does
    not stop for the night (a one-knob program's agents did: the allocation bench's static arm on
    the real trainer's landscape lost 4-6 of its 8 agents). It trains no experiment while best
    stays where it was, runs the coordinator's jobs meanwhile, and once another agent's result
    moves best it adopts the new best and proposes from it."""
    coord, a = _tiny_swarm(tmp_path / "home", redis_url, "static")
    b = _agent(tmp_path / "home", coord, 1, "optimizer")
    for _ in range(30):
        a._iteration()
        if a._spent is not None:
            break
    assert a._spent is not None and not a._stop.is_set() and a.phase == "spent"
    st = a.status()
    assert st["backend_state"] == "spent" and "exhausted" in st["backend_reason"], st
    root = coord.root
    spent_records = len(coord.records)
    for _ in range(200):
        if coord.best(LAND.hardware_class).commit != root:
            break
        a._iteration()
        b._iteration()
    new_best = coord.best(LAND.hardware_class).commit
    assert new_best != root, "best never moved"
    mine = [r for r in list(coord.records.values())[spent_records:] if r.agent == "a0"]
    assert mine and all(r.kind != "experiment" for r in mine), [(r.kind, r.status) for r in mine]
    assert not a._stop.is_set()
    for _ in range(3):
        a._iteration()
    exps = [r for r in list(coord.records.values())[spent_records:] if r.agent == "a0" and r.kind == "experiment"]
    assert exps and exps[0].parent == new_best and exps[0].program == "tiny", [(r.parent, r.status) for r in exps]
    # one switch has one idea on the new best too: spent again, on the new best (asked five times
    # at once, so within the iteration after that idea)
    assert a._spent is None or a._spent[0] == new_best, (a._spent, new_best)


@pytest.mark.parametrize("wait_runs,budget", [(1e-9, LAND.seconds_per_run), (12.0, None)])
def test_a_spent_agent_stops_once_best_did_not_move_for_its_wait(tmp_path, redis_url, wait_runs, budget):
    """The wait is bounded (spent_wait_runs budgets): a swarm whose agents are all spent would
    otherwise idle until its deadline. The stop reason says why. With no budget configured (the
    profile's, which only the trainer knows) a budget is the agent's longest run."""
    coord, a = _tiny_swarm(tmp_path / "home", redis_url, "static", spent_wait_runs=wait_runs, budget=budget)
    deadline = time.time() + 60
    while not a._stop.is_set() and time.time() < deadline:
        a._iteration()
    assert a._stop.is_set() and "best did not move" in a.stop_reason and "exhausted" in a.stop_reason
    # the heartbeat says how long it waited as a figure (the run's end reads it, not the reason's words)
    st = a.status()
    assert st["backend_state"] == "spent" and st["spent_waited_s"] is not None and st["spent_waited_s"] >= 0


def test_a_move_at_a_boundary_ends_the_old_programs_run_of_refusals(tmp_path, redis_url):
    """Four alike failures on one program, then a move at an iteration boundary: the new
    program's first failure alike (the same backend type words its errors alike) is its first,
    not a fifth that would call the new program spent."""
    from agents.health import SAME_FAILURE_STOP

    home = tmp_path / "home"
    coord = _coord(home, redis_url)
    coord.configure_allocation(_spec())
    a = _agent(home, coord, 0, "architecture")
    error = "mutate: search space exhausted (every nearby state already tried)"
    for _ in range(SAME_FAILURE_STOP - 1):
        assert not a.health.same_failure(error)
    assert a._take(ProgramSpec(name="optimizer", text=program_text("optimizer")))
    assert not any(a.health.same_failure(error) for _ in range(SAME_FAILURE_STOP - 1))
    assert a.health.same_failure(error)


def _llm(url: str, timeout_s: float) -> dict:
    """A litellm backend spec for a FakeLLMServer at `url`, its key in ALLOC_LLM_KEY."""
    return {"type": "litellm", "model": "openai/fake-model", "api_base": url, "api_key_env": "ALLOC_LLM_KEY",
            "timeout_s": timeout_s, "max_retries": 0, "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 1.0}


def test_a_refusal_that_quotes_the_key_leaves_it_out_of_the_ledger(tmp_path, redis_url, monkeypatch):
    """The refusal's reason goes into the ledger with the move: a provider (or a proxy) that
    quotes the key in its 401 body must not put it there."""
    from tests.fake_llm_server import FakeLLMServer

    secret = "sk-alloc-do-not-leak-0987654321"
    monkeypatch.setenv("ALLOC_LLM_KEY", secret)
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {secret}", "type": "invalid_request_error",
                                 "code": "invalid_api_key"}})
    with FakeLLMServer([("raw", 401, "application/json", body)]) as srv:
        llm = _llm(srv.url, timeout_s=3)
        home = tmp_path / "home"
        coord = _coord(home, redis_url)
        coord.configure_allocation(AllocationSpec(
            config=AllocationConfig(mode="adaptive", min_agents=1, dwell_runs=100, seed=3),
            programs=[ProgramSpec(name="llm", text=program_text("optimizer"), backend=llm),
                      ProgramSpec(name="optimizer", text=program_text("optimizer"))]))
        a = ResearchAgent(AgentConfig(name="a0", program_name="llm", program_text=program_text("optimizer"),
                                      backend=llm, seed=0, swarm_id="alloc", swarm_home=home,
                                      hardware_class=LAND.hardware_class, budget=LAND.seconds_per_run,
                                      recent_n=0, heartbeat_s=1e9, prepare_ahead=False),
                          coord, runner=fake_runner(LAND, random.Random(0)), hardware_class=LAND.hardware_class)
        for _ in range(6):
            if a.program.name != "llm" or a._stop.is_set():
                break
            a._iteration()
    moves = [e for t, _id, e in _events(coord) if t == "allocation"]
    assert [(e["previous"], e["program"]) for e in moves] == [("llm", "optimizer")], moves
    assert "refused llm" in moves[0]["reason"], moves[0]["reason"]
    dumped = "".join(js for _t, _id, js in coord.ledger.events())
    assert secret not in dumped


def test_an_agent_moved_into_a_program_with_an_llm_backend_proposes_with_that_model(tmp_path, redis_url,
                                                                                    monkeypatch):
    """Adaptive allocation with every backend: an agent on a `mutate` program moved (a floor) to a
    program whose backend is an LLM (litellm against an OpenAI-compatible server on 127.0.0.1)
    asks that model, with that program's text, and its records name the program."""
    from tests.fake_llm_server import FakeLLMServer

    monkeypatch.setenv("ALLOC_LLM_KEY", "sk-alloc-test")
    with FakeLLMServer([("follow",)]) as srv:
        llm = _llm(srv.url, timeout_s=10)
        home = tmp_path / "home"
        coord = _coord(home, redis_url)
        coord.configure_allocation(AllocationSpec(
            config=AllocationConfig(mode="adaptive", min_agents=1, dwell_runs=2, seed=3),
            programs=[ProgramSpec(name="optimizer", text=program_text("optimizer")),
                      ProgramSpec(name="architecture", text=program_text("architecture"), backend=llm)]))
        agents = [_agent(home, coord, i, "optimizer") for i in range(2)]
        _until_moved(agents)
        a0 = agents[0]
        assert a0.program.name == "architecture" and srv.requests == []
        for _ in range(12):     # the coordinator's jobs (confirmations) come first
            a0._iteration()
            if srv.requests:
                a0._iteration()
                break
        assert srv.requests, "the moved agent never asked the new program's model"
        prompt = " ".join(m["content"] for m in srv.requests[-1]["messages"])
        assert "# architecture" in prompt
    recs = [e for t, _id, e in _events(coord) if t == "record" and e["agent"] == "a0" and e["kind"] == "experiment"]
    moved_at = max(i for i, r in enumerate(recs) if r["program"] == "optimizer")
    after = recs[moved_at + 1:]
    assert after and all(r["program"] == "architecture" for r in after)
    assert any(r["status"] == "ok" for r in after), [(r["status"], r.get("reason")) for r in after]
