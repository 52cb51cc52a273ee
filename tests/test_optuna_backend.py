"""The `optuna` backend against a real redis-server: one study shared by two agents (finished
trials and pending points), FAIL for crashes, baseline samples as trials, a redis SIGKILL and
restart from its AOF, the mixed LLM mode against the scripted LLM server, the agent's observe
hook, and the config errors."""
from __future__ import annotations

import re

import pytest
import redis

from agents.backends import optuna_study as S
from agents.backends.base import ProposalContext, make_backend
from agents.backends.mutate import find_constants
from agents.backends.optuna import OptunaBackend, OptunaSpec, trial_number
from agents.errors import ProgramError
from agents.messages import ExperimentRecord
from agents.program import load_program, parse_program
from coordinator.run.config import ConfigError, parse_config, shipped_programs_dir
from tests.fake_coordinator import TINY_PROGRAM, TINY_TRAIN
from tests.fake_llm_server import FakeLLMServer

HW = "cpu-test-2t"
LIMITS = dict(max_edit_bytes=20_000, max_file_bytes=200_000)
PROGRAM = parse_program(TINY_PROGRAM, "tiny")


def backend(url, agent="a0", seed=0, client=None, **spec):
    s = OptunaSpec.model_validate({"type": "optuna", "storage_wait_s": 20, **spec})
    return OptunaBackend(s, seed=seed, agent=agent, client=client or redis.Redis.from_url(url),
                         swarm_id="sw1", hardware_class=HW)


def ctx(source=TINY_TRAIN, in_flight=None, base="b" * 40):
    return ProposalContext(program=PROGRAM, source=source, base_commit=base, agent="a",
                           in_flight=in_flight)


def score(src: str) -> float:
    c = {k: v.value for k, v in find_constants(src).items()}
    import math
    return 2.0 + math.log(c["LEARNING_RATE"] / 0.02) ** 2 * 0.05 + (c["DEPTH"] - 6) ** 2 * 0.01 \
        + {"L": 0.02, "SL": 0.0, "SSSL": 0.01}[c["WINDOW"]]


def record(p, agent="a0", status="ok", val=None, kind="experiment", commit="c" * 40, src=None):
    if val is None and status == "ok":
        val = score(src if src is not None else p.new_source)
    return ExperimentRecord(experiment_id=f"{agent}-{id(p)}", swarm_id="sw1", kind=kind, agent=agent,
                            program="tiny", hardware_class=HW, parent="b" * 40, commit=commit,
                            description=p.description if p is not None else kind, status=status,
                            val_bpb=val if status == "ok" else None,
                            reason=None if status == "ok" else "RuntimeError: boom")


def run_one(b, agent="a0", **kw):
    p = b.propose(ctx())
    new, desc = p.resolve(TINY_TRAIN, **LIMITS)
    b.observe(record(p, agent=agent, **kw), new)
    return p


def states(b):
    return [t.state.name for t in b.study.get_trials(deepcopy=False)]


# --- search space and config --------------------------------------------------------------

def test_search_space_maps_onto_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    d = S.distributions(TINY_TRAIN, PROGRAM, HW)
    assert d["LEARNING_RATE"] == FloatDistribution(0.001, 0.5, log=True)
    assert d["DEPTH"] == IntDistribution(1, 12, step=1)
    assert d["WINDOW"] == CategoricalDistribution(["L", "SL", "SSSL"])
    # a log entry on an int constant stays an int, on a log scale
    prog = parse_program("```yaml\nsearch_space:\n  BATCH: {type: log, min: 4, max: 256}\n```", "p")
    assert S.distributions("BATCH = 8 if CUDA else 4\n", prog, "cpu-x") == {
        "BATCH": IntDistribution(4, 256, log=True)}
    # a device switch: only the branch of this hardware class moves
    new, ch = S.write_params("BATCH = 8 if CUDA else 4\n", {"BATCH": 16}, prog, "cpu-x")
    assert new == "BATCH = 8 if CUDA else 16\n" and ch == ["BATCH 4 -> 16"]
    new, _ = S.write_params("BATCH = 8 if CUDA else 4\n", {"BATCH": 32}, prog, "gpu-h100")
    assert new == "BATCH = 32 if CUDA else 4\n"


def test_shipped_programs_that_optuna_can_and_cannot_express():
    for name in ("baseline", "optimizer", "schedule", "architecture"):
        S.check_space(load_program(shipped_programs_dir() / f"{name}.md"))
    with pytest.raises(ProgramError, match=r"explore.md: search_space.MODEL_DIM: .*multiple of step 192") as e:
        S.check_space(load_program(shipped_programs_dir() / "explore.md"))
    assert "\n" not in str(e.value)
    with pytest.raises(ProgramError, match="search_space: the optuna backend needs"):
        S.check_space(parse_program("no yaml", "p"))


@pytest.mark.parametrize("backend_yaml,msg", [
    ({"type": "optuna", "sampler": "gp"}, r"backend.sampler: Input should be 'tpe' or 'cmaes'"),
    ({"type": "optuna", "start": "centre"}, r"backend.start: Input should be 'best' or 'anywhere'"),
    ({"type": "optuna", "llm_share": 1.5, "llm": {"type": "litellm", "model": "m", "api_key_env": "K"}},
     r"backend.llm_share: Input should be less than or equal to 1"),
    ({"type": "optuna", "llm_share": -0.1}, r"backend.llm_share: Input should be greater than or equal to 0"),
    ({"type": "optuna", "llm_share": 0.3}, r"llm_share: there is no llm backend"),
    ({"type": "optuna", "llm": {"type": "litellm", "model": "m"}}, r"backend.llm: .*api_key_env: the LLM has no key"),
    ({"type": "optuna", "llm": {"type": "mutate"}}, r"backend.llm: .*'mutate' is not an LLM backend"),
    ({"type": "optuna", "samplr": "tpe"}, r"backend.samplr: unknown key"),
])
def test_config_errors_are_one_line_naming_the_key(backend_yaml, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        parse_config({"backend": backend_yaml, "programs": [{"name": "baseline"}]}, "swarm.yaml", env={})
    assert "\n" not in str(e.value) and str(e.value).startswith("swarm.yaml: ")


@pytest.mark.parametrize("yaml_text,error,msg", [
    ("backend: {type: optuna}\nprograms: [{name: explore}]\n", ProgramError,
     r"explore.md: search_space.MODEL_DIM: Optuna's int grid"),
    ("backend: {type: optuna, llm: {type: litellm, model: m, api_key_env: NOPE_KEY_X}}\n"
     "programs: [{name: baseline}]\n", ConfigError,
     r"backend.llm.api_key_env: environment variable NOPE_KEY_X is not set"),
])
def test_swarm_run_refuses_what_optuna_cannot_use_before_creating_anything(tmp_path, monkeypatch,
                                                                          yaml_text, error, msg):
    from types import SimpleNamespace

    from coordinator.run.swarm import plan

    monkeypatch.delenv("NOPE_KEY_X", raising=False)
    (tmp_path / "swarm.yaml").write_text(yaml_text)
    args = SimpleNamespace(config=str(tmp_path / "swarm.yaml"), budget=None, seed=None, profile="cpu",
                           gpus=None, address=None, agents=1, redis_url=None, hours=None,
                           swarm_home=str(tmp_path / "h"), max_experiments=1, plain=True, verbose=False)
    with pytest.raises(error, match=msg) as e:
        plan(args)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "h").exists()


# --- one study, many agents ------------------------------------------------------------------

def test_two_agents_share_one_study_finished_trials_and_pending_points(redis_url):
    a, b = backend(redis_url, "a0", seed=1), backend(redis_url, "a1", seed=2)
    pa = a.propose(ctx())
    na = trial_number(pa.description)
    assert na is not None and pa.new_source != TINY_TRAIN
    pb = b.propose(ctx())
    # b's sampler saw a's pending trial, with its point
    running = {t.number: t for t in b.study.get_trials(states=(S_RUNNING(),))}
    assert set(running) == {na, trial_number(pb.description)}
    assert running[na].user_attrs["agent"] == "a0"
    new_a, _ = pa.resolve(TINY_TRAIN, **LIMITS)
    assert S.write_params(TINY_TRAIN, running[na].params, PROGRAM, HW)[0] == new_a
    # a's result reaches b; b's result reaches a
    a.observe(record(pa, agent="a0"), new_a)
    b.observe(record(pb, agent="a1"), pb.new_source)
    for x in (a, b):
        done = {t.number: t.value for t in x.study.get_trials(states=(S_COMPLETE(),))}
        assert done == {na: score(pa.new_source), trial_number(pb.description): score(pb.new_source)}


def S_RUNNING():
    from optuna.trial import TrialState
    return TrialState.RUNNING


def S_COMPLETE():
    from optuna.trial import TrialState
    return TrialState.COMPLETE


def test_constant_liar_keeps_a_second_agent_off_a_pending_point(redis_url, redis_daemon):
    """Same seed, same finished trials: without the pending trial b would pick a's point
    exactly (c shows it); with it, b goes elsewhere (TPE's constant liar; the study also never
    proposes a point it holds). `start: anywhere`: the sampler's own points, unprojected."""
    import optuna

    seed_study = backend(redis_url, "s", seed=5, n_startup_trials=4, start="anywhere")
    for _ in range(12):
        run_one(seed_study, agent="s")
    finished = seed_study.study.get_trials(deepcopy=False)
    a = backend(redis_url, "a", seed=9, n_startup_trials=4, start="anywhere")
    b = backend(redis_url, "b", seed=9, n_startup_trials=4, start="anywhere")
    # both bound to the study as it is now: samplers seeded alike (seed 9, 12 trials held)
    for x in (a, b):
        x._program = PROGRAM
        x._bind(TINY_TRAIN)
    pa = a.propose(ctx())
    pb = b.propose(ctx())
    # c: a copy of the finished trials in the same swarm's study on another redis database
    # (the swarm's id is part of the sampler's seed), nothing pending
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/1")
    client.delete(*client.keys("*sw1*") or ["-"])
    other = optuna.create_study(study_name=S.study_name("tiny", HW), direction="minimize",
                                storage=S.journal_storage(client, "sw1"))
    for t in finished:
        other.add_trial(t)
    c = OptunaBackend(OptunaSpec(n_startup_trials=4, start="anywhere"), seed=9, agent="c",
                      client=client, swarm_id="sw1", hardware_class=HW)
    pc = c.propose(ctx())
    strip = lambda p: re.sub(r"^optuna #\d+: ", "", p.description)  # noqa: E731
    assert strip(pc) == strip(pa)
    assert strip(pb) != strip(pa)
    client.delete(*client.keys("*sw1*") or ["-"])
    inner = a.study.sampler.inner
    assert isinstance(inner, optuna.samplers.TPESampler) and inner._constant_liar


def test_crash_timeout_and_invalid_are_fail_and_ok_is_its_value(redis_url):
    b = backend(redis_url)
    ok = run_one(b)
    crash = run_one(b, status="crash")
    p = b.propose(ctx())
    b.observe(record(p, status="invalid", commit=None), None)
    trials = {t.number: t for t in b.study.get_trials()}
    assert trials[trial_number(ok.description)].value == pytest.approx(score(ok.new_source))
    t = trials[trial_number(crash.description)]
    assert t.state.name == "FAIL" and t.user_attrs["status"] == "crash" and "boom" in t.user_attrs["reason"]
    assert trials[trial_number(p.description)].state.name == "FAIL"
    assert b.fix(ctx(in_flight=crash.description), "Traceback").error


def test_baseline_and_confirmation_runs_are_samples_of_known_points(redis_url):
    b = backend(redis_url)
    b.observe(record(None, kind="baseline", src=TINY_TRAIN), TINY_TRAIN)
    # the program is learned at the first proposal: the sample waits until then
    p = b.propose(ctx())
    b.observe(record(p, kind="confirm", commit="d" * 40, src=p.new_source), p.new_source)
    by = {t.user_attrs["origin"]: t for t in b.study.get_trials() if t.state.name == "COMPLETE"}
    assert by["baseline"].params == {"LEARNING_RATE": 0.04, "DEPTH": 4, "WINDOW": "SL"}
    assert by["baseline"].value == pytest.approx(score(TINY_TRAIN))
    assert by["confirm"].params == S.params_of(p.new_source, PROGRAM, HW)[0]


def test_an_unrun_prepared_trial_moves_to_the_new_base_and_a_restart_fails_leftovers(redis_url):
    b = backend(redis_url, "a0")
    p1 = b.propose(ctx())                               # trained right now
    p2 = b.propose(ctx(in_flight=p1.description))       # prepared meanwhile
    b.observe(record(p1), p1.new_source)
    # the base moved: the agent drops p2 and asks again with nothing in flight
    moved = TINY_TRAIN.replace("CRASH = False", "CRASH = False  # moved")
    p3 = b.propose(ctx(source=moved, base="e" * 40))
    assert trial_number(p3.description) == trial_number(p2.description)
    assert S.params_of(p3.new_source, PROGRAM, HW)[0] == S.params_of(p2.new_source, PROGRAM, HW)[0]
    # a new life of the same agent: what the old one left running is FAIL
    again = backend(redis_url, "a0")
    again.propose(ctx())
    t = again.study.get_trials()[trial_number(p3.description)]
    assert t.state.name == "FAIL" and "restarted" in t.user_attrs["not_run"]


def test_a_stopped_swarm_fails_the_trials_that_never_ran(redis_url):
    a, b = backend(redis_url, "a0"), backend(redis_url, "a1")
    done = run_one(a)
    left = [a.propose(ctx()), b.propose(ctx())]
    assert S.fail_running(redis.Redis.from_url(redis_url), "sw1", "the swarm stopped") == 2
    trials = {t.number: t for t in a.study.get_trials()}
    assert trials[trial_number(done.description)].state.name == "COMPLETE"
    for p in left:
        t = trials[trial_number(p.description)]
        assert t.state.name == "FAIL" and t.user_attrs["not_run"] == "the swarm stopped"
    assert S.fail_running(redis.Redis.from_url(redis_url), "sw1", "again") == 0
    # the report counts them apart from failures: their points were never trained
    from coordinator.review.report.search import load_studies, search_html
    (view,) = load_studies(redis.Redis.from_url(redis_url), "sw1")
    assert sorted(r["state"] for r in view.rows) == ["COMPLETE", "NOT_RUN", "NOT_RUN"]
    assert "(complete 1, not run 2)" in search_html([view])


def test_cmaes_sampler_proposes_inside_the_space(redis_url):
    import optuna

    b = backend(redis_url, sampler="cmaes", n_startup_trials=2)
    for _ in range(8):
        p = run_one(b)
        c = find_constants(p.new_source)
        assert 0.001 <= c["LEARNING_RATE"].value <= 0.5 and 1 <= c["DEPTH"].value <= 12
    assert isinstance(b.study.sampler.inner, optuna.samplers.CmaEsSampler)
    assert states(b).count("COMPLETE") == 8


def test_study_survives_a_redis_sigkill_and_restart_from_its_aof(redis_daemon):
    from coordinator.state.redisd import RedisDaemon

    url = redis_daemon.url
    b = backend(url)
    done = [run_one(b) for _ in range(5)]
    pending = b.propose(ctx())
    redis_daemon.stop(kill=True)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url).ping()
    RedisDaemon(redis_daemon.dir).start()             # same port and password, from the AOF
    # a fresh reader sees every trial; the old handle goes on where it stopped
    fresh = backend(url, "reader")
    fresh.propose(ctx())
    got = {t.number: t.state.name for t in fresh.study.get_trials()}
    for p in done:
        assert got[trial_number(p.description)] == "COMPLETE"
    assert got[trial_number(pending.description)] == "RUNNING"
    b.observe(record(pending), pending.new_source)
    assert run_one(b).new_source
    assert states(b).count("COMPLETE") == 7
    redis_daemon.pid = RedisDaemon(redis_daemon.dir).start().pid   # the fixture stops it


def test_results_told_while_redis_is_down_wait_for_it(redis_daemon):
    from coordinator.state.redisd import RedisDaemon

    b = backend(redis_daemon.url, storage_wait_s=0.5)
    p = b.propose(ctx())
    redis_daemon.stop(kill=True)
    b.observe(record(p), p.new_source)                # cannot be told now: kept
    assert b.propose(ctx()).error.startswith("optuna: the study's redis is unreachable")
    redis_daemon.pid = RedisDaemon(redis_daemon.dir).start().pid
    b.propose(ctx())                                  # tells what waited first
    t = b.study.get_trials()[trial_number(p.description)]
    assert t.state.name == "COMPLETE" and t.value == pytest.approx(score(p.new_source))


# --- mixed mode ------------------------------------------------------------------------------

def _llm_answer():
    return ("DESCRIPTION: deeper\ntrain.py\n<<<<<<< SEARCH\nDEPTH = 4  # layers\n=======\n"
            "DEPTH = 7  # layers\n>>>>>>> REPLACE\n")


def test_mixed_mode_asks_the_llm_for_about_its_share_with_the_study_in_its_prompt(redis_url, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    with FakeLLMServer([("ok", _llm_answer())]) as srv:
        llm = {"type": "litellm", "model": "openai/fake", "api_base": srv.url,
               "api_key_env": "FAKE_KEY", "max_retries": 0}
        b = make_backend({"type": "optuna", "llm": llm, "llm_share": 0.3, "n_startup_trials": 3},
                         seed=4, agent="m0")
        b._client, b._where = redis.Redis.from_url(redis_url), ("sw1", HW)
        n = 60
        origins = []
        for _ in range(n):
            p = b.propose(ctx())
            new, desc = p.resolve(TINY_TRAIN, **LIMITS)
            origins.append("llm" if desc.startswith("llm: ") else "optuna")
            b.observe(record(p, agent="m0", src=new), new)
        k = origins.count("llm")
        assert len(srv.requests) == k and 0.15 * n <= k <= 0.45 * n
        # the later prompts carry the study's best params and importances
        prompt = srv.requests[-1]["messages"][-1]["content"]
        assert "Best so far: val_bpb" in prompt and "Parameter importances" in prompt
        assert "DEPTH=" in prompt
    # the LLM's edit moved a search-space constant: a trial with origin llm, at DEPTH 7
    llm_trials = [t for t in b.study.get_trials() if t.user_attrs.get("origin") == "llm"]
    assert len(llm_trials) == k and all(t.params["DEPTH"] == 7 for t in llm_trials)
    assert all(t.value == pytest.approx(score(TINY_TRAIN.replace("DEPTH = 4", "DEPTH = 7")))
               for t in llm_trials)


def test_mixed_mode_code_only_edits_are_not_trials_and_llm_crashes_go_to_the_llm(redis_url, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    code_only = ("DESCRIPTION: comment\ntrain.py\n<<<<<<< SEARCH\ndef main():\n=======\n"
                 "def main():  # entry\n>>>>>>> REPLACE\n")
    with FakeLLMServer([("ok", code_only), ("ok", _llm_answer())]) as srv:
        llm = {"type": "litellm", "model": "openai/fake", "api_base": srv.url,
               "api_key_env": "FAKE_KEY", "max_retries": 0}
        b = make_backend({"type": "optuna", "llm": llm, "llm_share": 1.0}, seed=0, agent="m1")
        b._client, b._where = redis.Redis.from_url(redis_url), ("sw1", HW)
        p = b.propose(ctx())
        new, desc = p.resolve(TINY_TRAIN, **LIMITS)
        assert desc == "llm: comment"
        b.observe(record(p, agent="m1", src=new), new)
        assert b.study.get_trials() == []
        fix = b.fix(ctx(in_flight=desc), "Traceback")
        assert len(srv.requests) == 2 and not fix.error


# --- through the agent -----------------------------------------------------------------------

def test_agent_tells_the_study_every_run(tmp_path, redis_url, monkeypatch):
    from agents.agent import ResearchAgent
    from agents.config import AgentConfig
    from tests.fake_coordinator import FakeCoordinator, fake_runner, make_research_repo

    monkeypatch.setenv("SWARM_REDIS_URL", redis_url)
    make_research_repo(tmp_path / "home")
    cfg = AgentConfig(name="ag", program_name="tiny", program_text=TINY_PROGRAM, seed=3,
                      swarm_id="swx", swarm_home=tmp_path / "home", hardware_class=HW, budget=1.0,
                      backend={"type": "optuna", "n_startup_trials": 2})
    coord = FakeCoordinator(tmp_path / "home" / "repo.git")
    agent = ResearchAgent(cfg, coord, runner=fake_runner())
    agent.run(max_experiments=6)
    recs = sorted(coord.records.values(), key=lambda r: r.finished_at)
    assert recs[0].kind == "baseline" and len(recs) == 7
    study = agent.backend.study
    assert study.study_name == "tiny@" + HW
    done = study.get_trials(states=(S_COMPLETE(),))
    by_eid = {t.user_attrs["experiment_id"]: t for t in done}
    for r in recs:
        if r.status == "ok":
            assert by_eid[r.experiment_id].value == pytest.approx(r.val_bpb)
    assert by_eid[recs[0].experiment_id].user_attrs["origin"] == "baseline"


# --- the report's search section ---------------------------------------------------------------

def test_report_has_a_search_section_per_study(tmp_path, redis_url):
    from coordinator.review.report import build_report
    from coordinator.review.report.search import load_studies
    from tests.synthetic import lineage_graph, make_swarm

    client = redis.Redis.from_url(redis_url)
    assert load_studies(client, "sw1") == []          # no study: no section, optuna not needed
    b = backend(redis_url, n_startup_trials=3)
    b.observe(record(None, kind="baseline", src=TINY_TRAIN), TINY_TRAIN)
    for i in range(14):
        run_one(b, status="crash" if i == 5 else "ok")
    (view,) = load_studies(client, "sw1")
    assert view.program == "tiny" and view.hardware_class == HW
    assert set(view.importances) == {"LEARNING_RATE", "DEPTH", "WINDOW"}
    assert abs(sum(view.importances.values()) - 1) < 1e-6
    best = min((r for r in view.rows if r["state"] == "COMPLETE"), key=lambda r: r["value"])
    assert view.best_params == best["params"] and view.best_value == best["value"]
    sw = make_swarm(tmp_path / "home", experiments=10, agents=2, hardware_classes=("h100",), seed=1)
    page = build_report(sw.rows, lineage_graph(sw), repo_path=sw.repo_path, swarm_home=tmp_path / "home",
                        out_dir=tmp_path / "out", studies=[view]).read_text()
    section = page[page.index("<h2 id='search'>"):]
    assert "tiny on " + HW in section and "failed 1" not in section and "fail 1" in section
    for n in view.importances:
        assert f"<td>{n}</td>" in section
    assert "class='stats best-params'" in section and "class='search-scatter'" in section
    assert f"lowest trial val_bpb: <b>{view.best_value:.4f}</b> (one run" in section
    page_without = build_report(sw.rows, lineage_graph(sw), repo_path=sw.repo_path,
                                swarm_home=tmp_path / "home", out_dir=tmp_path / "out2").read_text()
    assert "id='search'" not in page_without


def test_agent_in_mixed_mode_records_llm_edits_and_tells_their_constants(tmp_path, redis_url, monkeypatch):
    from agents.agent import ResearchAgent
    from agents.config import AgentConfig
    from tests.fake_coordinator import FakeCoordinator, fake_runner, make_research_repo

    monkeypatch.setenv("SWARM_REDIS_URL", redis_url)
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    make_research_repo(tmp_path / "home")
    with FakeLLMServer([("ok", _llm_answer())]) as srv:
        llm = {"type": "litellm", "model": "openai/fake", "api_base": srv.url, "api_key_env": "FAKE_KEY",
               "max_retries": 0}
        cfg = AgentConfig(name="mx", program_name="tiny", program_text=TINY_PROGRAM, seed=1,
                          swarm_id="swm", swarm_home=tmp_path / "home", hardware_class=HW, budget=1.0,
                          backend={"type": "optuna", "llm": llm, "llm_share": 0.5, "n_startup_trials": 2})
        coord = FakeCoordinator(tmp_path / "home" / "repo.git")
        agent = ResearchAgent(cfg, coord, runner=fake_runner())
        agent.run(max_experiments=8)
        asked = len(srv.requests)
    exps = [r for r in coord.records.values() if r.kind == "experiment"]
    from_llm = [r for r in exps if r.description.startswith("llm: ")]
    assert len(exps) == 8 and all(r.backend == "optuna" for r in exps)
    assert from_llm and len(from_llm) <= asked          # prepared-ahead answers may go unused
    trials = {t.user_attrs.get("experiment_id"): t for t in agent.backend.study.get_trials()}
    trained = [r for r in from_llm if r.status == "ok"]
    assert trained
    for r in from_llm:
        # DEPTH 4 -> 7 became a trial at DEPTH 7; once a kept edit has DEPTH 7 the LLM's
        # SEARCH no longer applies: an invalid record, nothing trained, nothing told
        t = trials.get(r.experiment_id)
        if r.status == "ok":
            assert t.params["DEPTH"] == 7 and t.user_attrs["origin"] == "llm"
            assert t.value == pytest.approx(r.val_bpb)
        else:
            assert r.status == "invalid" and t is None


# --- the default backend -------------------------------------------------------------------------

def test_auto_without_a_key_is_optuna_where_optuna_can_express_the_program(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from agents.backends.auto import resolve_auto
    from coordinator.run.swarm import plan

    base = load_program(shipped_programs_dir() / "baseline.md")
    explore = load_program(shipped_programs_dir() / "explore.md")
    assert resolve_auto({}, base) == {"type": "optuna"}
    assert resolve_auto({}, explore) == {"type": "mutate"}         # MODEL_DIM's grid
    assert resolve_auto({}, base, local=False) == {"type": "mutate"}  # other nodes lack the URL
    assert resolve_auto({}) == {"type": "mutate"}                   # built directly: no program
    assert resolve_auto({"ANTHROPIC_API_KEY": "k"}, base)["type"] == "litellm"
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "swarm.yaml").write_text("programs: [{name: baseline}, {name: explore}]\n")
    args = SimpleNamespace(config=str(tmp_path / "swarm.yaml"), budget=None, seed=None, profile="cpu",
                           gpus=None, address=None, agents=2, redis_url=None, hours=None,
                           swarm_home=str(tmp_path / "h"), max_experiments=1, plain=True, verbose=False)
    specs = {s["program_name"]: s["backend"] for s in plan(args).agent_specs}
    assert specs == {"baseline": {"type": "optuna"}, "explore": {"type": "mutate"}}
