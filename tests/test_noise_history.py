"""Noise knowledge that carries over (issue 20, coordinator/decide/history.py): a swarm writes
the noise it measures beside the prepared data; the next swarm of the same hardware class,
profile, budget and apparatus starts from it (bounded weight), needs no repeats of the
baseline and can promote from its first experiments; anything else matches nothing. Through
the real Coordinator with a real redis-server and a real bare git repo."""
from __future__ import annotations

import json

import pytest

from agents.messages import NoiseHistorySpec, PromotionConfig
from coordinator.decide.core import Coordinator
from coordinator.decide.history import NoiseHistory, apparatus_fingerprint, describe
from coordinator.run import live
from fake_runner import FakeAgent, baseline_text, drain_jobs

HW = "cpu-fake"


def spec(tmp_path, **kw) -> NoiseHistorySpec:
    base = dict(path=str(tmp_path / "data" / "noise-history.json"), profile="cpu", budget=30.0,
                apparatus="abc123")
    return NoiseHistorySpec(**{**base, **kw})


def swarm(tmp_path, redis_url, sid, history, cfg=None, n=2, sigma=0.002):
    coord = Coordinator(tmp_path / sid, redis_url, cfg or PromotionConfig(), swarm_id=sid,
                        baseline_train_py=baseline_text(), history=history)
    agents = [FakeAgent(f"a{i}", coord.repo.path, tmp_path / f"wt-{sid}", hw=HW, sigma=sigma, seed=i)
              for i in range(n)]
    return coord, agents


def baselines(done) -> int:
    return sum(1 for j, _ in done if j.kind == "baseline")


def test_a_second_swarm_starts_from_the_first_ones_noise(tmp_path, redis_url):
    h = spec(tmp_path)
    c1, a1 = swarm(tmp_path, redis_url, "first", h)
    n1 = baselines(drain_jobs(c1, a1, HW))
    assert n1 == c1.cfg.min_dof + 1  # no history: sigma measured from scratch, as before
    c1.flush_refs()
    data = json.loads((tmp_path / "data" / "noise-history.json").read_text())
    (entry,) = data["entries"].values()
    assert entry["swarms"]["first"]["dof"] == c1.cfg.min_dof
    # A second swarm of the same class, profile, budget and apparatus: one baseline per agent.
    c2, a2 = swarm(tmp_path, redis_url, "second", h)
    n2 = baselines(drain_jobs(c2, a2, HW))
    assert n2 == len(a2) <= 2
    st = c2.status()["classes"][HW]
    assert st["noise_prior"]["dof"] == c1.cfg.min_dof and st["noise_dof"] >= c2.cfg.min_dof
    # ... and it can promote from its first experiment (A is worth 0.05: far past the margin).
    rec, d = a2[0].experiment(c2, c2.root, "A up", A=1)
    assert d.decision == "promote", d
    c2.flush_refs()  # the second swarm left its own line too
    assert "from 2 earlier swarms" in describe(h, HW, "third")


def test_a_swarm_never_counts_itself_and_resuming_rewrites_its_own_line(tmp_path, redis_url):
    h = spec(tmp_path)
    c1, a1 = swarm(tmp_path, redis_url, "s1", h)
    drain_jobs(c1, a1, HW)
    c1.flush_refs()
    again = Coordinator(tmp_path / "s1", redis_url, PromotionConfig(), swarm_id="s1",
                        baseline_train_py=baseline_text(), history=h)  # the same swarm, restarted
    assert again.book.prior(HW) is None and again.book.dof(HW) == c1.cfg.min_dof
    again.flush_refs()
    data = json.loads((tmp_path / "data" / "noise-history.json").read_text())
    assert list(next(iter(data["entries"].values()))["swarms"]) == ["s1"]


def test_the_start_line_and_the_end_of_run_summary_say_where_sigma_came_from(tmp_path, redis_url):
    """`swarm run` says at start whether noise history was found (its dof, from how many swarms);
    the end-of-run summary reads it from the coordinator's status()["classes"][hw]["noise_prior"]."""
    h = spec(tmp_path)
    assert "noise history: none for cpu-fake" in describe(h, HW, "s1")
    assert "noise history: none for profile cpu" in describe(h, None, "s1")
    c1, a1 = swarm(tmp_path, redis_url, "s1", h)
    drain_jobs(c1, a1, HW)
    assert c1.status()["classes"][HW]["noise_prior"] is None
    assert live.noise_history(c1.status()) == {}
    c1.flush_refs()
    line = describe(h, HW, "s2", min_dof=8)
    assert line.startswith("noise history: sigma ") and "from 1 earlier swarm (8 degrees of freedom" in line
    assert "one baseline run per agent first" in line
    assert describe(h, None, "s2", min_dof=8) == line  # GPUs elsewhere: every class the file holds
    c2, a2 = swarm(tmp_path, redis_url, "s2", h)
    drain_jobs(c2, a2, HW)
    p = c2.status()["classes"][HW]["noise_prior"]
    assert (p["dof"], p["measured_dof"], p["swarms"], p["dropped"]) == (8, 8, 1, False)
    assert p["sigma"] == pytest.approx(c1.book.sigma(HW))
    said = live.noise_history(c2.status())[HW]
    assert said == f"sigma {p['sigma']:.4f} over 8 dof from 1 earlier swarm"


def test_a_resumed_swarm_says_it_goes_on_with_the_noise_it_measured(tmp_path, redis_url):
    """`swarm run` again in the same folder resumes the swarm, whose own noise is in its ledger
    (it never counts its own line of the history file): its start line said "none ... this swarm
    measures sigma: 9 baseline runs first" (the quick start resumed 2026-12-06 16:34), which it
    does not do."""
    h = spec(tmp_path)
    c1, a1 = swarm(tmp_path, redis_url, "s1", h)
    drain_jobs(c1, a1, HW)
    c1.flush_refs()
    line = describe(h, HW, "s1", min_dof=8)
    assert "baseline runs first" not in line, line
    assert line == (f"noise history: none from other swarms for {HW}, budget 30 s, apparatus abc123; this swarm "
                    f"goes on with the sigma it measured itself ({c1.cfg.min_dof} degrees of freedom)")
    assert "baseline runs first" not in describe(h, None, "s1", min_dof=8)
    # The degrees of freedom it goes on with are its coordinator's, counted from the ledger (the
    # file's own line counts concurrent runs as what they are worth to other swarms: a resumed
    # quick start said 6 where its last screen had said 8).
    n = c1.status()["classes"][HW]["noise_dof"]
    assert describe(h, HW, "s1", min_dof=8, own_dof={HW: n + 3}).endswith(f"itself ({n + 3} degrees of freedom)")
    assert describe(h, None, "s1", min_dof=8, own_dof={HW: n + 3}).endswith(f"({HW}: {n + 3} degrees of freedom)")
    assert describe(h, HW, "s1", min_dof=8, own_dof={HW: 0}) == line   # none counted: the file's
    # another swarm in the same history finds what s1 left (not its own: it has none)
    other = describe(h, HW, "s2", min_dof=8)
    assert f"from 1 earlier swarm ({c1.cfg.min_dof} degrees of freedom" in other, other
    assert other.endswith("one baseline run per agent first"), other


@pytest.mark.parametrize("other", [dict(budget=60.0), dict(profile="gpu"), dict(apparatus="zzz999")])
def test_another_budget_profile_or_apparatus_matches_nothing(tmp_path, redis_url, other):
    c1, a1 = swarm(tmp_path, redis_url, "s1", spec(tmp_path))
    drain_jobs(c1, a1, HW)
    c1.flush_refs()
    assert "none for" in describe(spec(tmp_path, **other), HW, "s2")
    assert "from 1 earlier swarm" in describe(spec(tmp_path), HW, "s2")
    c2, a2 = swarm(tmp_path, redis_url, "s2", spec(tmp_path, **other))
    assert baselines(drain_jobs(c2, a2, HW)) == c2.cfg.min_dof + 1
    assert c2.status()["classes"][HW]["noise_prior"] is None


def test_the_weight_of_history_is_capped(tmp_path):
    h = spec(tmp_path)
    path = tmp_path / "data" / "noise-history.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "entries": {f"{HW}|cpu|30|abc123": {"swarms": {
        "a": {"m2": 0.01 ** 2 * 100, "dof": 100}, "b": {"m2": 0.01 ** 2 * 60, "dof": 60}}}}}))
    m2, dof, measured, swarms = NoiseHistory(h, "new", dof_max=24).prior(HW)
    assert (dof, measured, swarms) == (24, 160, 2)
    assert (m2 / dof) ** 0.5 == pytest.approx(0.01)  # sigma kept, only its weight capped
    assert NoiseHistory(h, "new", dof_max=0).prior(HW)[1] == 0


def test_a_history_the_swarms_own_runs_disagree_with_is_dropped(tmp_path, redis_url):
    h = spec(tmp_path)
    path = tmp_path / "data" / "noise-history.json"
    path.parent.mkdir(parents=True)
    # History says sigma 0.0002; this machine's runs have sigma 0.004 (20x): dropped.
    path.write_text(json.dumps({"version": 1, "entries": {f"{HW}|cpu|30|abc123": {"swarms": {
        "old": {"m2": 0.0002 ** 2 * 24, "dof": 24}}}}}))
    c, agents = swarm(tmp_path, redis_url, "s", h, n=3, sigma=0.004)
    drain_jobs(c, agents, HW)  # the first round: one baseline each
    assert c.book.prior(HW) is not None and c.status()["classes"][HW]["noise_prior"]["dof"] == 24
    for _ in range(6):
        for ag in agents:  # repeats of best, as a coordinator asks for (more than it needs now)
            rec = ag.record(c.root, c.root, kind="baseline")
            c.report(rec)
    st = c.status()["classes"][HW]
    assert st["noise_prior"]["dropped"] is True
    assert live.noise_history(c.status()) == {}  # the summary: sigma measured by this swarm's runs
    assert 0.002 < st["sigma"] < 0.008


def test_the_apparatus_fingerprint_follows_the_data(tmp_path, prepared_data_dir):
    fp = apparatus_fingerprint(prepared_data_dir, "cpu")
    assert len(fp) == 12 and fp == apparatus_fingerprint(prepared_data_dir, "cpu")
    import shutil
    other = tmp_path / "other"
    shutil.copytree(prepared_data_dir, other)
    (tok,) = list(other.glob("*/tok*/val.tokens.npy"))
    tok.write_bytes(tok.read_bytes()[:-2] + b"\x00\x01")
    assert apparatus_fingerprint(other, "cpu") != fp


def test_the_same_data_prepared_again_keeps_its_history(tmp_path, prepared_data_dir):
    """The same corpus prepared again (another data folder, `swarm prepare` on another node, the
    quick start with its own SWARM_DATA_DIR) is the same apparatus: the history carries over.
    meta.json records how long the preparation took, which differs every time: the fingerprint
    hashed it, so a second preparation matched no history."""
    import json

    from trainer.prepare import prepare

    again = tmp_path / "again"
    prepare("bundled", ["cpu"], data_dir=again)
    (m1,) = list(prepared_data_dir.glob("*/tok*/meta.json"))
    (m2,) = list(again.glob("*/tok*/meta.json"))
    a, b = json.loads(m1.read_text()), json.loads(m2.read_text())
    a.pop("seconds"), b.pop("seconds")
    assert a == b   # the same data: only the time it took may differ
    m2.write_text(json.dumps({**json.loads(m2.read_text()), "seconds": 123.45}))
    assert apparatus_fingerprint(again, "cpu") == apparatus_fingerprint(prepared_data_dir, "cpu")
    # what the data is still counts: another vocabulary's token count is another apparatus
    meta = json.loads(m2.read_text())
    m2.write_text(json.dumps({**meta, "tokens": {**meta["tokens"], "val": meta["tokens"]["val"] + 1}}))
    assert apparatus_fingerprint(again, "cpu") != apparatus_fingerprint(prepared_data_dir, "cpu")


def test_swarm_run_names_the_history_of_its_own_hardware_class(tmp_path):
    """The start line of `swarm run` (Supervisor._history_line) looks up the class its CPU agents
    will report (profile, cpu model, threads per agent): found, with its dof and swarms."""
    from coordinator.run.config import SwarmConfig
    from coordinator.run.plan import Plan
    from coordinator.run.supervise import Supervisor
    from trainer.profiles import hardware_class

    cfg = SwarmConfig()
    plan = Plan(cfg=cfg, home=tmp_path / "home", profile="cpu", n_agents=2, gpus_per_agent=0, agent_specs=[],
                redis_url=None, address=None, max_experiments=1, deadline=None, plain=True, verbose=False)
    sup = Supervisor(plan)
    sup.info, sup.history = {"swarm_id": "new"}, spec(tmp_path)
    hw = hardware_class("cpu", "cpu", cfg.agents.cpus_per_agent)
    assert sup._history_line().startswith(f"noise history: none for {hw},")
    path = tmp_path / "data" / "noise-history.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "entries": {f"{hw}|cpu|30|abc123": {"swarms": {
        "a": {"m2": 0.01 ** 2 * 10, "dof": 10}, "b": {"m2": 0.01 ** 2 * 6, "dof": 6}}}}}))
    line = sup._history_line()
    assert line.startswith(f"noise history: sigma 0.0100 for {hw},") and "from 2 earlier swarms (16 " in line


def test_a_min_dof_set_low_is_said_at_start_with_what_it_costs():
    """`promotion.min_dof` 1-3 makes the first decisions' margin the Student t quantile at that
    many degrees of freedom: said at start, with its ratio to the default's (t at alpha 0.005:
    63.66 at 1 dof, 9.92 at 2, 3.36 at 8); nothing from 4 up."""
    from coordinator.decide.history import min_dof_note

    one, two = min_dof_note(1, 0.005), min_dof_note(2, 0.005)
    assert one.startswith("promotion.min_dof 1:") and "margin 19.0 x what 8 give" in one
    assert "margin 3.0 x" in two and "best moves only on large gains" in two
    assert min_dof_note(4, 0.005) is None and min_dof_note(8, 0.005) is None
