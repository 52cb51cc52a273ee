"""Coordinator decisions with a real redis-server, a real bare git repo and fake in-process agents."""
from __future__ import annotations

import subprocess
import time

import pytest

from coordinator.decide.core import Coordinator, CoordinatorError
from coordinator.state.ledger import LedgerError
from coordinator.state.redisd import free_port
from fake_runner import FakeAgent, baseline_text, drain_jobs, drop_pads, set_constants
from agents.messages import ExperimentRecord, PromotionConfig, StartedExperiment

HW = "cpu-fake"


@pytest.fixture
def cfg():
    # A new best is not re-measured here, so that each test sees only the jobs it is about
    # (re-measuring: test_judge_best.py).
    return PromotionConfig(sigma_prior=0.003, best_remeasures=0)


@pytest.fixture
def coord(tmp_path, redis_url, cfg):
    return Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())


def make_agents(coord, tmp_path, n=3, hw=HW, sigma=0.0005):
    # Small run noise against a fixed baseline spread (run_baselines) keeps each decision
    # certain; the statistics of the rule are tested in test_rules_null.py.
    return [FakeAgent(f"a{i}", coord.repo.path, tmp_path / "wt", hw=hw, sigma=sigma, seed=i) for i in range(n)]


def run_baselines(coord, agents, vals=(2.000, 2.002, 1.998), hw=HW):
    """First round: each agent gets a baseline job and runs it; then the repeats of the
    baseline the coordinator schedules until sigma has min_dof degrees of freedom (explicit
    values, when given, are used in turn)."""
    n = 0
    for _ in range(20):
        got = False
        for a in agents:
            job = coord.next_job(a.name, hw)
            if job is None:
                continue
            assert job.kind == "baseline" and job.commit == coord.root
            got = True
            rec = a.record(job.commit, job.parent, kind="baseline", job=job,
                           val=None if vals is None else vals[n % len(vals)])
            coord.begin(a.started(rec))
            assert coord.report(rec).decision.decision == "sample"
            n += 1
        if not got:
            assert coord.status()["classes"][hw]["noise_dof"] >= coord.cfg.min_dof
            return n
    raise AssertionError("baseline jobs never stopped")


def best(coord, hw=HW):
    return coord.repo.ref(f"refs/heads/best/{hw}")


def test_first_round_is_baseline_then_promote(coord, tmp_path):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    assert coord.next_job("a0", HW) is None  # baseline done, nothing else to do
    b = coord.best(HW)
    assert b.commit == coord.root and abs(b.val_bpb - 2.0) < 0.01
    rec, d = agents[0].experiment(coord, coord.root, "A up", A=1)
    assert d.decision == "promote" and d.best_after == rec.commit and d.samples == 1
    assert d.delta > d.margin > 0 and d.sigma > 0
    assert best(coord) == rec.commit
    b2 = coord.best(HW)
    assert b2.commit == rec.commit and b2.seq > b.seq
    coord.flush_refs()  # bookkeeping refs are written off the decision path
    assert coord.repo.ref(f"refs/experiments/{rec.experiment_id}") == rec.commit


def test_two_winners_different_lines_merge_after_verification(coord, tmp_path):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    r1, d1 = agents[0].experiment(coord, coord.root, "A up", A=1)
    r2, d2 = agents[1].experiment(coord, coord.root, "B up", B=1)
    assert d1.decision == "promote"
    assert d2.decision == "pending" and d2.merge_commit and d2.best_before == r1.commit
    assert best(coord) == r1.commit  # nothing moves before the verification run
    done = drain_jobs(coord, agents)
    assert [j.kind for j, _ in done] == ["verify"]
    job, vd = done[0]
    assert job.commit == d2.merge_commit and job.parent == r1.commit
    final = coord.decisions[r2.experiment_id]
    # The verification run is a sample; the move is the candidate's decision (counted once).
    assert final.decision == "merge" and vd.decision == "sample"
    M = best(coord)
    assert M == d2.merge_commit == final.best_after
    assert coord.repo.parents(M) == [r1.commit, r2.commit]
    text = coord.repo.show(M)
    assert "A = 1" in text and "B = 1" in text


def test_same_lines_conflict(coord, tmp_path):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    r1, d1 = agents[0].experiment(coord, coord.root, "A up", A=1)
    # Beats its parent, conflicts with best's change to the same line, and alone does not
    # beat best (A=2 would: test_judge_best.py puts such a candidate onto best by itself).
    r2, d2 = agents[1].experiment(coord, coord.root, "A half", A=0.5)
    assert d1.decision == "promote"
    assert d2.decision == "conflict" and best(coord) == r1.commit
    assert drain_jobs(coord, agents) == []


def test_wins_that_do_not_add_up_did_not_stack(coord, tmp_path):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    r1, d1 = agents[0].experiment(coord, coord.root, "X on", X=1)
    r2, d2 = agents[1].experiment(coord, coord.root, "Y on", Y=1)
    assert d1.decision == "promote" and d2.decision == "pending"
    drain_jobs(coord, agents)
    final = coord.decisions[r2.experiment_id]
    assert final.decision in ("did-not-stack",), final
    assert best(coord) == r1.commit


def test_inside_margin_gets_confirmation_then_mean_decides(coord, tmp_path):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents, vals=[2.000, 2.002, 1.998])
    text = set_constants(agents[0].text_at(coord.root), Z=1)
    c = agents[0].commit(coord.root, text, "Z on")
    rec = agents[0].record(c, coord.root, description="Z on", val=1.995)
    d = coord.report(rec).decision
    assert d.decision == "pending" and 0 < d.delta < d.margin
    job = coord.next_job("a1", HW)
    assert job.kind == "confirm" and job.commit == c and job.seed != rec.seed
    conf = agents[1].record(job.commit, job.parent, kind="confirm", job=job, val=1.992)
    assert coord.report(conf).decision.decision == "sample"
    final = coord.decisions[rec.experiment_id]
    assert final.decision == "promote" and final.samples == 2 and best(coord) == c


def test_positive_inside_margin_whose_confirmations_say_no_is_discarded(coord, tmp_path):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents, vals=[2.000, 2.002, 1.998])
    c = agents[0].commit(coord.root, set_constants(agents[0].text_at(coord.root), Z=1), "Z on")
    rec = agents[0].record(c, coord.root, val=1.996)
    assert coord.report(rec).decision.decision == "pending"
    runs = 0
    while coord.decisions[rec.experiment_id].decision == "pending":
        job = coord.next_job("a1", HW)
        assert job is not None and job.kind in ("confirm", "baseline"), job
        coord.report(agents[1].record(job.commit, job.parent, kind=job.kind, job=job, val=2.001))
        runs += 1
    assert coord.decisions[rec.experiment_id].decision == "discard"
    assert runs <= 1 + coord.cfg.confirm_runs + 8
    assert best(coord) == coord.root and coord.next_job("a2", HW) is None


def test_simplification_and_suspect(coord, tmp_path):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents, vals=[2.000, 2.002, 1.998])
    c = agents[0].commit(coord.root, drop_pads(agents[0].text_at(coord.root)), "drop pads")
    rec = agents[0].record(c, coord.root, val=2.0005)
    d = coord.report(rec).decision
    assert d.decision == "pending" and best(coord) == coord.root  # a deletion is confirmed too
    job = coord.next_job("a1", HW)
    assert job.kind == "confirm" and job.commit == c
    coord.report(agents[1].record(job.commit, job.parent, kind="confirm", job=job, val=2.0))
    d = coord.decisions[rec.experiment_id]
    assert d.decision == "simplification" and best(coord) == c and d.delta < 0
    r2, d2 = agents[1].experiment(coord, c, "Y overfits", Y=2)
    assert d2.decision == "promote" and d2.suspect and "suspect" in d2.reason
    # An added line must buy its cost: the margin grows with net added lines.
    assert coord.cfg.cost_per_line > 0


def test_hardware_classes_never_compared(coord, tmp_path):
    agents = make_agents(coord, tmp_path, n=2)
    run_baselines(coord, agents, vals=[2.0, 2.001])
    big = make_agents(coord, tmp_path / "g", n=2, hw="gpu-slow")
    for a in big:
        a.name = "g" + a.name
    run_baselines(coord, big, vals=[3.0, 3.001], hw="gpu-slow")
    r, d = big[0].experiment(coord, coord.root, "A up", A=1)
    # Its val (~1.95) is measured on gpu-slow: it beats gpu-slow's 3.0, not cpu-fake's 2.0.
    assert d.decision == "promote" and d.hardware_class == "gpu-slow"
    assert d.delta > 1.0
    assert best(coord, "gpu-slow") == r.commit and best(coord, HW) == coord.root
    assert coord.best(HW).commit == coord.root


def test_bad_inputs_are_rejected_and_kept(coord, tmp_path):
    agents = make_agents(coord, tmp_path, n=2)
    run_baselines(coord, agents)
    before = coord.ledger.counts()
    unknown = ExperimentRecord(experiment_id="x-1", agent="a0", program="p", hardware_class=HW,
                               parent=coord.root, commit="ab" * 20, status="ok", val_bpb=1.0)
    d = coord.report(unknown).decision
    assert d.decision == "rejected" and "unknown commit" in d.reason
    rec, _ = agents[0].experiment(coord, coord.root, "A up", A=1)
    other = rec.model_copy(update={"experiment_id": "x-2", "hardware_class": "tpu-nobody"})
    d = coord.report(other).decision
    assert d.decision == "rejected" and "unknown hardware class" in d.reason
    n_stream = coord.r.xlen(coord.ledger.key("ledger"))
    again = coord.report(rec).decision  # a retried report: same answer, nothing appended
    assert again == coord.decisions[rec.experiment_id]
    assert coord.r.xlen(coord.ledger.key("ledger")) == n_stream
    after = coord.ledger.counts()
    assert after["records"] == before["records"] + 3
    assert coord.ledger.record("x-1") is not None and coord.ledger.record("x-2") is not None


def test_wrong_password_and_redis_down(tmp_path, redis_daemon, cfg):
    bad = redis_daemon.url.replace(redis_daemon.password, "wrong-password-123")
    with pytest.raises(LedgerError) as e:
        Coordinator(tmp_path / "h", bad, cfg, swarm_id="t", baseline_train_py=baseline_text())
    msg = str(e.value)
    assert "refused the password" in msg and f"127.0.0.1:{redis_daemon.port}" in msg
    assert "wrong-password-123" not in msg and "\n" not in msg
    down = f"redis://:pw@127.0.0.1:{free_port()}/0"
    with pytest.raises(LedgerError, match="cannot reach redis"):
        Coordinator(tmp_path / "h", down, cfg, swarm_id="t", baseline_train_py=baseline_text())


def test_restart_rebuilds_from_redis_and_git(coord, tmp_path, redis_url, cfg):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    r1, d1 = agents[0].experiment(coord, coord.root, "A up", A=1)
    r2, d2 = agents[1].experiment(coord, coord.root, "B up", B=1)
    status = coord.status()
    c2 = Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t")
    assert c2.status() == status
    assert c2.report(r1).decision == d1  # idempotent across a restart
    # The pending verification survives the restart and completes on the new object.
    drain_jobs(c2, agents)
    assert c2.decisions[r2.experiment_id].decision == "merge"


def test_lost_ref_move_is_reapplied(coord, tmp_path, redis_url, cfg):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    r1, d1 = agents[0].experiment(coord, coord.root, "A up", A=1)
    # Simulate a crash after the ledger write but before the ref moved.
    coord.repo.set_ref(f"refs/heads/best/{HW}", coord.root)
    c2 = Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t")
    assert best(c2) == r1.commit


def test_experiment_refs_lost_in_a_crash_are_restored(coord, tmp_path, redis_url, cfg):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    r1, _ = agents[0].experiment(coord, coord.root, "A up", A=1)
    r2, _ = agents[1].experiment(coord, coord.root, "B down", B=-1)
    coord.flush_refs()
    # A crash after the decisions but before their ref writes: the files are not there.
    for r in (r1, r2):
        (coord.repo.path / "refs" / "experiments" / r.experiment_id).unlink()
        assert coord.repo.ref(f"refs/experiments/{r.experiment_id}") is None
    c2 = Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t")
    c2.flush_refs()
    for r in (r1, r2):
        assert c2.repo.ref(f"refs/experiments/{r.experiment_id}") == r.commit


def test_dead_agent_gets_crash_record_and_jobs_are_released(coord, tmp_path, cfg):
    agents = make_agents(coord, tmp_path, n=2)
    run_baselines(coord, agents)
    s = StartedExperiment(experiment_id="a0-dead-1", agent="a0", program="p", hardware_class=HW,
                          parent=coord.root)
    coord.begin(s)
    coord.begin(s)  # idempotent
    assert coord.reconcile_dead_agent("a0") == ["a0-dead-1"]
    assert coord.decisions["a0-dead-1"].decision == "crash"
    assert coord.records["a0-dead-1"].reason == "agent died mid-run"
    assert coord.reconcile_dead_agent("a0") == []


def test_job_lease_expires_and_job_is_handed_out_again(tmp_path, redis_url):
    cfg = PromotionConfig(sigma_prior=0.003, job_lease_s=0.2)
    coord = Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents, vals=[2.0, 2.002, 1.998])
    c = agents[0].commit(coord.root, set_constants(agents[0].text_at(coord.root), Z=1), "Z")
    coord.report(agents[0].record(c, coord.root, val=1.995))
    job = coord.next_job("a1", HW)
    assert job.kind == "confirm"
    assert coord.next_job("a2", HW) is None  # leased to a1
    time.sleep(0.3)
    assert coord.next_job("a2", HW).job_id == job.job_id


def test_fetch_and_report_with_bundle_from_another_node(coord, tmp_path):
    agents = make_agents(coord, tmp_path, n=2)
    run_baselines(coord, agents)
    clone = tmp_path / "node2"
    clone.mkdir()
    (tmp_path / "b.bundle").write_bytes(coord.fetch(coord.root))
    g = lambda *a: subprocess.run(["git", *a], cwd=clone, check=True, capture_output=True, text=True).stdout.strip()
    g("init", "-q")
    g("fetch", "-q", str(tmp_path / "b.bundle"), "+refs/*:refs/remotes/coord/*")
    g("checkout", "-q", "--detach", coord.root)
    (clone / "train.py").write_text(set_constants((clone / "train.py").read_text(), A=1))
    g("commit", "-qam", "A up on node2")
    head = g("rev-parse", "HEAD")
    g("update-ref", "refs/heads/exp", head)
    g("bundle", "create", str(tmp_path / "up.bundle"), "refs/heads/exp")
    rec = ExperimentRecord(experiment_id="n2-1", agent="n2", program="p", hardware_class=HW,
                           parent=coord.root, commit=head, status="ok", val_bpb=1.95)
    d = coord.report(rec, bundle=(tmp_path / "up.bundle").read_bytes()).decision
    assert d.decision == "promote" and best(coord) == head
    with pytest.raises(CoordinatorError, match="unknown commit"):
        coord.fetch("cd" * 20)


def test_next_job_does_not_queue_behind_decisions_when_there_is_no_job(coord, tmp_path):
    import threading

    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    answers: list = []

    def ask(agent):
        answers.append(coord.next_job(agent, HW))

    with coord._lock:  # a long decision in flight on another thread
        t = threading.Thread(target=ask, args=("a0",))
        t.start()
        t.join(timeout=5)
        assert not t.is_alive() and answers == [None]  # answered without the lock
        # a new agent (owed a baseline job) must wait for the lock: its answer changes state
        t2 = threading.Thread(target=ask, args=("newcomer",))
        t2.start()
        t2.join(timeout=0.5)
        assert t2.is_alive()
    t2.join(timeout=5)
    assert answers[1] is not None and answers[1].kind == "baseline"


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_reports_queued_during_a_decision_are_decided_together_once_each(coord, tmp_path):
    """Group commit: reports (and begins) that arrive while the decision lock is held are decided
    in one batch by one leader; every caller gets its own decision; a retried batch appends nothing."""
    import threading

    agents = make_agents(coord, tmp_path, n=2)
    run_baselines(coord, agents, vals=(2.0, 2.002))
    a = agents[0]
    recs = []
    for i in range(12):
        c = a.commit(coord.root, set_constants(a.text_at(coord.root), Z=i + 2), f"Z={i + 2}")
        recs.append(a.record(c, coord.root, val=2.05 + i / 1000))  # all clearly worse: discard
    results: dict[str, str] = {}

    def send(rec):
        coord.begin(a.started(rec))
        results[rec.experiment_id] = coord.report(rec).decision.decision

    def ledger_records():
        return sum(1 for typ, _, _ in coord.ledger.events() if typ == "record")

    before = ledger_records()
    with coord._lock:  # a long decision in flight: everything below queues
        threads = [threading.Thread(target=send, args=(r,)) for r in recs]
        for t in threads:
            t.start()
        _wait_for(lambda: len(coord._group) == len(recs))  # 12 begins queued, one thread leading
    for t in threads:
        t.join(timeout=30)
    assert results == {r.experiment_id: "discard" for r in recs}
    assert any(n == len(recs) for n, *_ in coord.stats.batches)  # the 12 queued begins: one batch
    assert ledger_records() == before + len(recs)
    # The same reports again, concurrently: the same answers and nothing appended.
    threads = [threading.Thread(target=send, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert set(results.values()) == {"discard"} and ledger_records() == before + len(recs)
    perf = coord.perf()
    assert perf["decisions"] >= 2 * len(recs) and perf["decision_p99_ms"] >= perf["decision_p50_ms"] > 0
    # Where the lock time went: the deciding thread's own CPU is part of it, never more (a little
    # slack: thread_time ticks more coarsely than perf_counter).
    assert perf["record_p50_ms"] > 0 and 0 < perf["batch_cpu_share"] <= 1.05, perf
    assert 0 < perf["slow_batch_cpu_share"] <= 1.05, perf


def test_next_job_fast_path_sees_leases(tmp_path, redis_url):
    """While a decision holds the lock, an agent with nothing to take is answered at once, but the
    agent holding a lease (its job is owed back to it) and, once the lease runs out, anyone, are not."""
    import threading

    cfg = PromotionConfig(sigma_prior=0.003, job_lease_s=0.3)
    coord = Coordinator(tmp_path / "home", redis_url, cfg, swarm_id="t", baseline_train_py=baseline_text())
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents, vals=[2.0, 2.002, 1.998])
    c = agents[0].commit(coord.root, set_constants(agents[0].text_at(coord.root), Z=1), "Z")
    assert coord.report(agents[0].record(c, coord.root, val=1.995)).decision.decision == "pending"
    job = coord.next_job("a1", HW)
    assert job.kind == "confirm"
    answers: dict[str, object] = {}

    def ask(agent):
        answers[agent] = coord.next_job(agent, HW)

    with coord._lock:
        t = threading.Thread(target=ask, args=("a2",))
        t.start()
        t.join(timeout=5)
        assert not t.is_alive() and answers["a2"] is None  # leased to a1: answered without the lock
        t1 = threading.Thread(target=ask, args=("a1",))
        t1.start()
        t1.join(timeout=0.3)
        assert t1.is_alive()  # a1 holds the lease: it must get its job, through the lock
    t1.join(timeout=5)
    assert answers["a1"].job_id == job.job_id
    time.sleep(0.4)  # the lease runs out
    with coord._lock:
        t = threading.Thread(target=ask, args=("a2",))
        t.start()
        t.join(timeout=0.3)
        assert t.is_alive()
    t.join(timeout=5)
    assert answers["a2"].job_id == job.job_id


def test_report_reply_says_whether_a_job_waits_and_what_best_is(coord, tmp_path):
    agents = make_agents(coord, tmp_path)
    run_baselines(coord, agents)
    a0, a1, a2 = agents
    c = a0.commit(coord.root, set_constants(a0.text_at(coord.root), Z=1), "Z")
    reply = coord.report(a0.record(c, coord.root, val=1.9955))  # inside the margin: confirm
    assert reply.decision.decision == "pending"
    assert reply.job_waiting and reply.best.commit == coord.root
    assert reply.job_waiting == (coord.next_job("a0", HW) is not None)  # the hint is what next_job says
    # Leased to a0 now: a1 is told nothing waits, and next_job agrees.
    c1 = a1.commit(coord.root, set_constants(a1.text_at(coord.root), Y=1), "Y")
    r1 = coord.report(a1.record(c1, coord.root, val=2.05))
    assert r1.decision.decision == "discard" and not r1.job_waiting
    assert coord.next_job("a1", HW) is None
    # A promotion: the reply carries the new best.
    rec, _ = a2.experiment(coord, coord.root, "A up", A=1)
    r2 = coord.report(rec)  # a retried report: same decision, current best
    assert r2.decision.decision == "promote" and r2.best.commit == rec.commit
