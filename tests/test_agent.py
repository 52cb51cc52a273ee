"""ResearchAgent without Ray: the loop, the ratchet, crash fixes, invalid edits, adoption,
spending cap and recovery after a death, with real git repos and a fast fake runner."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from agents.agent import ResearchAgent
from agents.backends.base import Proposal
from agents.config import AgentConfig
from agents.errors import SpendingCapReached
from agents.messages import Broadcast, StartedExperiment
from trainer.schema import ExperimentResult
from tests.fake_coordinator import (TINY_PROGRAM, FakeCoordinator, fake_runner, git,
                                    make_research_repo)

HW = "test-hw"


class Scripted:
    """A backend answering from lists (propose/fix), counting calls."""
    name = "scripted"

    def __init__(self, proposals, fixes=()):
        self.proposals = list(proposals)
        self.fixes = list(fixes)
        self.fix_calls = []

    def propose(self, ctx):
        item = self.proposals.pop(0) if self.proposals else Proposal(error="out of ideas")
        if isinstance(item, Exception):
            raise item
        return item

    def fix(self, ctx, log_tail):
        self.fix_calls.append(log_tail)
        return self.fixes.pop(0) if self.fixes else Proposal(error="no fix")


def blocks(old, new, desc="change", path="train.py"):
    return Proposal(text=f"DESCRIPTION: {desc}\n{path}\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n")


def cfg(tmp_path, name="a1", **kw):
    base = dict(name=name, program_name="tiny", program_text=TINY_PROGRAM, seed=3,
                swarm_home=tmp_path / "home", hardware_class=HW, budget=1.0, recent_n=5)
    base.update(kw)
    return AgentConfig(**base)


@pytest.fixture
def home(tmp_path):
    baseline = make_research_repo(tmp_path / "home")
    return tmp_path, baseline


def test_mutate_loop_keeps_only_improvements(home):
    tmp_path, baseline = home
    coord = FakeCoordinator(tmp_path / "home" / "repo.git")
    agent = ResearchAgent(cfg(tmp_path), coord, runner=fake_runner())
    summary = agent.run(max_experiments=6)
    assert summary["stop_reason"] == "max_experiments"
    recs = coord.all_records()
    assert recs[0].kind == "baseline" and recs[0].commit == baseline
    exps = [r for r in recs if r.kind == "experiment"]
    assert len(exps) == 6
    wt = agent.wt.path
    for r in exps:
        assert (r.program, r.agent, r.seed, r.hardware_class, r.backend) == ("tiny", "a1", 3, HW, "mutate")
        assert r.status == "ok" and r.result is not None and r.finished_at >= r.started_at
        assert r.delta == pytest.approx(r.parent_val_bpb - r.val_bpb)
        assert r.lines_added >= 1 and r.lines_removed >= 1
        msg = git(wt, "log", "-1", "--format=%B", r.commit)
        assert f"Experiment: {r.experiment_id}" in msg and "Program: tiny" in msg and "Agent: a1" in msg
        assert git(wt, "rev-parse", f"{r.commit}^") == r.parent
    # the branch holds exactly the kept commits, each better than its parent
    kept = [r for r in exps if r.val_bpb < r.parent_val_bpb]
    chain = git(wt, "rev-list", f"{baseline}..agents/a1").split()
    assert set(chain) == {r.commit for r in kept} and len(chain) == summary["kept"]
    vals = {r.commit: r.val_bpb for r in recs}
    for c in chain:
        assert vals[c] < vals[git(wt, "rev-parse", f"{c}^")]
    assert git(wt, "status", "--porcelain") == ""
    # each run trained a copy of its commit in its own run dir
    r = exps[-1]
    assert (tmp_path / "home" / "runs" / r.experiment_id / "train.py").read_text() == \
        git(wt, "show", f"{r.commit}:train.py") + "\n"
    assert coord.beats and coord.beats[-1][1]["phase"] == "stopped"


def test_crashing_edit_gets_two_fixes_then_crash_and_loop_goes_on(home):
    tmp_path, _ = home
    coord = FakeCoordinator()
    crash = blocks("CRASH = False  # raise at start-up", "CRASH = True  # raise at start-up", "try crash")
    still = blocks("DEPTH = 4  # layers", "DEPTH = 5  # layers", "fix attempt")
    still2 = blocks("DEPTH = 5  # layers", "DEPTH = 7  # layers", "fix attempt 2")
    good = blocks("DEPTH = 4  # layers", "DEPTH = 6  # layers", "deeper")
    backend = Scripted([crash, good], fixes=[still, still2])
    calls = []
    runner = fake_runner()

    def counting(*a, **kw):
        calls.append(a[0])
        return runner(*a, **kw)

    agent = ResearchAgent(cfg(tmp_path), coord, runner=counting, backend=backend)
    agent.run(max_experiments=2)
    exps = [r for r in coord.all_records() if r.kind == "experiment"]
    assert [r.status for r in exps] == ["crash", "ok"]
    assert exps[0].fix_attempts == 2 and len(backend.fix_calls) == 2
    assert "RuntimeError: boom" in backend.fix_calls[0]
    assert exps[0].reason and "boom" in exps[0].reason
    # the crashed idea's last attempt is one commit on the parent, never kept
    assert git(agent.wt.path, "rev-parse", f"{exps[0].commit}^") == exps[0].parent
    assert exps[1].parent == exps[0].parent
    assert len(calls) == 1 + 3 + 1     # baseline, crash + two fixes, the good one
    assert agent.wt.is_clean()


def test_fix_that_works_is_one_ok_record(home):
    tmp_path, _ = home
    coord = FakeCoordinator()
    crash = blocks("CRASH = False  # raise at start-up", "CRASH = True  # raise at start-up", "deeper")
    fix = Proposal(text=blocks("CRASH = True  # raise at start-up", "CRASH = False  # raise at start-up").text
                   + blocks("DEPTH = 4  # layers", "DEPTH = 6  # layers").text)
    agent = ResearchAgent(cfg(tmp_path), coord, runner=fake_runner(), backend=Scripted([crash], [fix]))
    agent.run(max_experiments=1)
    (r,) = [r for r in coord.all_records() if r.kind == "experiment"]
    assert r.status == "ok" and r.fix_attempts == 1 and r.delta > 0
    assert git(agent.wt.path, "rev-parse", "HEAD") == r.commit   # kept


def test_edit_of_another_file_is_invalid_and_not_trained(home):
    tmp_path, _ = home
    coord = FakeCoordinator()
    calls = []
    runner = fake_runner()

    def counting(*a, **kw):
        calls.append(kw.get("confirm_below"))
        return runner(*a, **kw)

    bad = [blocks("x = 1", "x = 2", "sneaky", path="prepare.py"),
           Proposal(new_source="x = (", description="broken"),
           Proposal(text="I think we should try a bigger model, but I won't say how.")]
    agent = ResearchAgent(cfg(tmp_path), coord, runner=counting, backend=Scripted(bad))
    agent.run(max_experiments=3)
    exps = [r for r in coord.all_records() if r.kind == "experiment"]
    assert [r.status for r in exps] == ["invalid"] * 3
    assert "prepare.py" in exps[0].reason
    assert "does not compile" in exps[1].reason
    assert "no edit found" in exps[2].reason
    assert all(r.commit is None for r in exps)
    assert calls == [float("inf")]      # only the baseline trained
    assert not coord.started.keys() & {r.experiment_id for r in exps}


def test_adopt_rules(home):
    tmp_path, baseline = home
    wt_tmp = tmp_path / "other"
    wt_tmp.mkdir()
    git(wt_tmp, "clone", "-q", str(tmp_path / "home" / "repo.git"), "c")
    c = wt_tmp / "c"
    git(c, "config", "user.email", "x@y")
    git(c, "config", "user.name", "x")
    (c / "train.py").write_text((c / "train.py").read_text().replace("DEPTH = 4", "DEPTH = 6"))
    git(c, "commit", "-qam", "better")
    git(c, "push", "-q", "origin", "HEAD:refs/heads/best/test-hw")
    better = git(c, "rev-parse", "HEAD")
    for rule, val, expect in [("always", 9.0, better), ("if-better", 9.0, baseline),
                              ("if-better", 1.0, better), ("never", 1.0, baseline)]:
        coord = FakeCoordinator()
        name = f"ad-{rule}-{int(val)}"
        agent = ResearchAgent(cfg(tmp_path, name=name, adopt=rule), coord, runner=fake_runner(),
                              backend=Scripted([]))
        agent.parent_val = 5.0
        coord.bests[HW] = Broadcast(swarm_id="t", hardware_class=HW, commit=better, val_bpb=val, seq=1)
        agent._maybe_adopt(coord.bests[HW])
        assert agent.wt.head() == expect, rule


def test_spending_cap_stops_the_agent_cleanly(home):
    tmp_path, _ = home
    coord = FakeCoordinator()
    backend = Scripted([blocks("DEPTH = 4  # layers", "DEPTH = 6  # layers"),
                        SpendingCapReached("spending cap reached: $1.00 of $1.00 spent")])
    agent = ResearchAgent(cfg(tmp_path, prepare_ahead=False), coord, runner=fake_runner(),
                          backend=backend)
    summary = agent.run(max_experiments=10)
    assert summary["stop_reason"].startswith("spending cap reached")
    assert summary["experiments"] == 1 and summary["phase"] == "stopped"


def test_restart_after_death_records_crash_and_kills_the_leftover(home):
    tmp_path, _ = home
    coord = FakeCoordinator()
    c = cfg(tmp_path)
    agent = ResearchAgent(c, coord, runner=fake_runner(), backend=Scripted([]))
    head = agent.wt.head()
    run_dir = c.runs_dir / "a1-1-dead"
    run_dir.mkdir(parents=True)
    child = subprocess.Popen(["sleep", "300"], cwd=run_dir, start_new_session=True)
    started = StartedExperiment(experiment_id="a1-1-dead", agent="a1", program="tiny",
                                hardware_class=HW, parent=head, commit=head)
    agent.inflight.write(started, run_dir, pgid=child.pid)
    (agent.wt.path / "train.py").write_text("half-written")
    (agent.wt.path / "junk.txt").write_text("left over")
    try:
        again = ResearchAgent(c, coord, runner=fake_runner(), backend=Scripted([]))
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    (r,) = coord.all_records()
    assert (r.experiment_id, r.status, r.reason) == ("a1-1-dead", "crash", "agent died mid-run")
    assert again.wt.is_clean() and again.inflight.read() is None


def test_stop_cancels_the_run_as_crash_stopped(home):
    tmp_path, _ = home
    coord = FakeCoordinator()
    agent = ResearchAgent(cfg(tmp_path), coord, runner=fake_runner(sleep=30), backend=Scripted([]))
    agent.parent_val = 3.0
    import threading
    agent.backend.proposals.append(blocks("DEPTH = 4  # layers", "DEPTH = 6  # layers"))
    t = threading.Thread(target=agent.run, kwargs={"max_experiments": 5})
    t.start()
    deadline = time.time() + 20
    while agent.phase != "train" and time.time() < deadline:
        time.sleep(0.02)
    agent.stop()
    t.join(timeout=20)
    assert not t.is_alive()
    (r,) = coord.all_records()
    assert r.status == "crash" and r.reason == "stopped"
    assert agent.status()["stop_reason"] == "stopped"


def test_coordinator_job_runs_first_unchanged(home):
    from agents.messages import Job
    tmp_path, baseline = home
    job = Job(job_id="j1", kind="baseline", commit=baseline, parent=baseline, hardware_class=HW, seed=42)
    coord = FakeCoordinator(jobs=[job])
    seen = []
    runner = fake_runner()

    def spy(train_py, run_dir, **kw):
        seen.append((open(train_py).read(), kw["seed"], kw["confirm_below"]))
        return runner(train_py, run_dir, **kw)

    agent = ResearchAgent(cfg(tmp_path), coord, runner=spy,
                          backend=Scripted([blocks("DEPTH = 4  # layers", "DEPTH = 6  # layers")]))
    agent.run(max_experiments=1)
    recs = coord.all_records()
    assert [(r.kind, r.job_id, r.commit, r.seed) for r in recs[:1]] == [("baseline", "j1", baseline, 42)]
    assert seen[0] == (git(agent.wt.path, "show", f"{baseline}:train.py") + "\n", 42, float("inf"))
    # the job's score became the parent's: no self-baseline, the experiment asked to confirm near-winners
    assert [r.kind for r in recs] == ["baseline", "experiment"]
    assert seen[1][2] == pytest.approx(recs[0].val_bpb * 1.02)


def test_remote_clone_works_from_bundles(home):
    tmp_path, baseline = home
    coord = FakeCoordinator(tmp_path / "home" / "repo.git")
    reports = []
    orig = coord.report

    def report(rec, bundle=None):
        reports.append((rec, bundle))
        return orig(rec, bundle)

    coord.report = report
    c = cfg(tmp_path, name="far", repo_path=tmp_path / "not-on-this-node.git")
    agent = ResearchAgent(c, coord, runner=fake_runner(),
                          backend=Scripted([blocks("DEPTH = 4  # layers", "DEPTH = 6  # layers")]))
    assert not agent.wt.shared and agent.wt.head() == baseline
    agent.run(max_experiments=1)
    rec, bundle = reports[-1]
    assert rec.kind == "experiment" and bundle
    b = tmp_path / "exp.bundle"
    b.write_bytes(bundle)
    # the bundle applies onto the shared repo, which only has the parent
    repo = tmp_path / "home" / "repo.git"
    git(repo, "fetch", "-q", str(b), "+refs/*:refs/incoming/*")
    assert git(repo, "rev-parse", f"{rec.commit}^") == baseline


def test_timeout_is_recorded_without_fix_attempts(home):
    from trainer.schema import ExperimentResult
    tmp_path, _ = home
    coord = FakeCoordinator()
    inner = fake_runner()

    def runner(train_py, run_dir, **kw):
        if "DEPTH = 9" in open(train_py).read():
            return ExperimentResult(status="timeout", error="killed at the hard limit (10s)",
                                    log_tail="step 3", seed=kw["seed"])
        return inner(train_py, run_dir, **kw)

    backend = Scripted([blocks("DEPTH = 4  # layers", "DEPTH = 9  # layers", "very deep")])
    agent = ResearchAgent(cfg(tmp_path), coord, runner=runner, backend=backend)
    agent.run(max_experiments=1)
    (r,) = [r for r in coord.all_records() if r.kind == "experiment"]
    assert (r.status, r.reason, r.fix_attempts, r.val_bpb) == ("timeout", "killed at the hard limit (10s)", 0, None)
    assert backend.fix_calls == [] and agent.wt.head() == r.parent


def test_progress_is_zero_outside_a_run(home):
    # The live view draws a bar from it: a finished agent must not show a full bar.
    tmp_path, _ = home
    coord = FakeCoordinator(tmp_path / "home" / "repo.git")
    inner = fake_runner()

    def runner(*a, on_event=None, **kw):
        if on_event:
            on_event({"event": "progress", "progress": 1.0})  # the last event of a run
        return inner(*a, on_event=on_event, **kw)

    agent = ResearchAgent(cfg(tmp_path), coord, runner=runner)
    agent.run(max_experiments=1)
    assert agent.status()["phase"] == "stopped" and agent.status()["progress"] == 0.0
    assert coord.beats[-1][1]["progress"] == 0.0


def test_unchanged_code_crashing_in_a_row_makes_the_agent_wait_not_loop(home):
    """A broken machine (the sandbox could not start: every run crashed) must not turn into a
    hot loop of crash records: crashes of code that trained before (the agent's baseline) make
    the agent wait, doubling, before its next run; an experiment's own crash does not."""
    tmp_path, _ = home
    coord = FakeCoordinator()
    waits = []
    runs = []

    def broken(*a, **kw):
        runs.append(1)
        if len(runs) >= 20:  # a hot loop (the code before): end the test
            agent._stop.set()
        return ExperimentResult(status="crash", error="bwrap: Can't find source path")

    agent = ResearchAgent(cfg(tmp_path, backend_wait_s=2.0, backend_wait_max_s=5.0), coord, runner=broken)

    def wait(t=None):
        waits.append(t)
        if len(waits) >= 4:
            agent._stop.set()
        return agent._stop.is_set()

    agent._stop.wait = wait
    agent.run(max_experiments=3)
    recs = coord.all_records()
    assert [r.kind for r in recs] == ["baseline"] * len(recs) and all(r.status == "crash" for r in recs)
    # the first crash may be bad luck; then 2, 4, 5 (capped), 5 seconds
    assert waits == [2.0, 4.0, 5.0, 5.0] and len(recs) == 5
    assert agent.runs.streak == 5 and "source path" in agent.runs.last_error
