"""coordinator/state/figures.py on synthetic ledgers: the words (experiments, jobs, runs,
keeps, moves), best's value, step deltas, rates over the whole run, contended runs; and the
texts built on them (the live view's ideas, the end of `swarm run`)."""
from __future__ import annotations

import pytest

from coordinator.run import live
from coordinator.state import figures
from tests.synthetic import lineage_graph, make_swarm

HW = "cpu"


def row(eid, kind="experiment", **kw) -> dict:
    r = dict(experiment_id=eid, kind=kind, hardware_class=HW, run_status="ok", agent="a0",
             program="p", description=eid, started_at=0.0, finished_at=0.0)
    r.update(kw)
    return r


def baseline_round(n=3, commit="c0", vals=(2.50, 2.40, 2.45)):
    return [row(f"b{i}", "baseline", commit=commit, val_bpb=vals[i % len(vals)], decision="sample",
                started_at=100.0 * i, finished_at=100.0 * i + 90, decided_at=100.0 * i + 90,
                sigma=0.02, dof=i) for i in range(n)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    sw = make_swarm(tmp_path_factory.mktemp("sw"), experiments=60, agents=4,
                    hardware_classes=("h100", "a100"), seed=3)
    return sw


def test_counts_say_what_each_word_means(synthetic):
    rows = synthetic.rows
    c = figures.counts(rows)
    assert c.records == len(rows)
    assert c.experiments == sum(1 for r in rows if r["kind"] == "experiment")
    assert c.jobs == c.records - c.experiments == sum(c.jobs_by_kind.values())
    assert c.runs == sum(1 for r in rows if r["run_status"] != "invalid")
    assert c.trained_experiments == c.experiments - c.outcomes.get("invalid", 0)
    assert sum(c.outcomes.values()) == c.experiments
    assert c.keeps == sum(1 for r in rows if r["status"] == "keep") == c.outcomes["kept"] + c.outcomes["merged"]
    fig = figures.compute(rows)
    assert fig.best_moves == len({(r["hardware_class"], r["best_after"]) for r in rows if r["best_after"]})
    for hw, b in fig.best.items():
        assert b.commit == synthetic.best[hw] and [s.n for s in b.steps] == list(range(1, b.moves + 1))


def test_a_step_shows_its_decisions_delta_in_the_tree_and_json(synthetic):
    """Issue 23: the table said 'best Δ 0.0695' where the lineage said '+0.1869' for the same
    step (the tree took the difference of the node means of a merge commit)."""
    from coordinator.review.report import render_tree

    rows = synthetic.rows
    G = lineage_graph(synthetic)
    text = render_tree(G)
    merge = next(r for r in rows if r["decision"] == "merge")
    line = next(ln for ln in text.splitlines() if merge["merge_commit"][:7] in ln)
    assert f"{merge['decision_delta']:+.4f}" in line
    assert G.nodes[merge["merge_commit"]]["delta"] == pytest.approx(merge["decision_delta"])
    for r in rows:
        if r["decision"] == "promote":
            assert G.nodes[r["commit"]]["delta"] == pytest.approx(r["decision_delta"])


def test_best_value_is_what_the_coordinator_publishes_else_the_last_decisions():
    rows = baseline_round() + [
        row("e1", commit="c1", val_bpb=2.30, decision="promote", best_before="c0", best_after="c1",
            mean=2.30, samples=1, samples_best=3, delta_best=0.15, decided_at=400.0, finished_at=400.0),
        row("r1", "baseline", commit="c1", val_bpb=2.36, decision="sample", decided_at=500.0, finished_at=500.0),
        row("e2", commit="c2", val_bpb=2.40, decision="discard", best_before="c1", mean=2.40,
            samples_best=1, delta_best=-0.04, decided_at=600.0, finished_at=600.0)]
    b = figures.compute(rows).best[HW]
    # the last decision compared e2 with best's one fresh re-measure: 2.36, 1 sample
    assert (b.commit, b.val_bpb, b.samples, b.source) == ("c1", pytest.approx(2.36), 1, "last decision")
    assert (b.baseline, b.baseline_val_bpb, b.baseline_samples) == ("c0", pytest.approx(2.45), 3)
    assert b.gain == pytest.approx(0.09)
    pub = {HW: {"commit": "c1", "val_bpb": 2.35, "samples": 2}}
    b = figures.compute(rows, pub).best[HW]
    assert (b.val_bpb, b.samples, b.source) == (2.35, 2, "published")
    # a key that still names the old best (the rows are newer) is not used
    b = figures.compute(rows, {HW: {"commit": "c0", "val_bpb": 9.0, "samples": 9}}).best[HW]
    assert b.val_bpb == pytest.approx(2.36)


def test_the_baseline_a_move_started_from_is_best_as_it_was_compared_not_the_new_bests_mean():
    """The quick start said 'moved 1 time: 2.4318 -> 2.3893 (+0.0425)' where the baseline was
    2.4474 (9 samples): a move's record holds the new best's own mean (its runs besides the one
    that selected it: 2.3893, the confirm) and the decision's delta (its two runs' mean 2.4049
    against 2.4474), and the sum of the two is no value anything had."""
    vals = (2.4470, 2.4421, 2.4578, 2.4449, 2.4564, 2.4566, 2.4331, 2.4380, 2.4506)
    base = sum(vals) / len(vals)
    move = row("e1", commit="c1", val_bpb=2.4205, decision="promote", best_before="c0", best_after="c1",
               mean=2.3893, samples=1, samples_best=9, delta_best=base - (2.4205 + 2.3893) / 2,
               decided_at=1300.0, finished_at=1200.0)
    discard = row("e0", commit="d0", val_bpb=2.4668, decision="discard", best_before="c0", mean=2.4668,
                  samples_best=9, delta_best=base - 2.4668, decided_at=1000.0, finished_at=1000.0)
    confirm = row("k1", "confirm", commit="c1", val_bpb=2.3893, decision="sample",
                  decided_at=1250.0, finished_at=1250.0)
    for rows in (baseline_round(9, vals=vals) + [discard, move, confirm],   # a discard judged against it first
                 baseline_round(9, vals=vals) + [move, confirm]):           # the move was its only decision
        b = figures.compute(rows).best[HW]
        assert (b.baseline, b.baseline_val_bpb, b.baseline_samples) == ("c0", pytest.approx(base), 9)
        assert (b.val_bpb, b.samples) == (pytest.approx(2.3893), 1)
        assert b.gain == pytest.approx(base - 2.3893) and b.steps[0].delta == pytest.approx(0.0425, abs=1e-4)


def test_the_baseline_is_what_the_first_move_was_judged_against_not_an_older_decisions_copy():
    """The quick start's last screen said 'moved 2 times: 2.4070 -> 2.1737' where its first move
    was judged against 2.4099 over 9 samples: the move's record could not say best's mean, and a
    `carried` record written as best moved repeated its pending decision's older figures (8
    samples). The move records `best_mean`; the figures take best as the decision with the most
    of its samples compared it."""
    vals = (2.4080, 2.4030, 2.4150, 2.4050, 2.4110, 2.4040, 2.4120, 2.3980, 2.4331)
    base8, base9 = sum(vals[:8]) / 8, sum(vals) / 9
    pend = row("e2", commit="c2", val_bpb=2.3950, decision="pending", best_before="c0", mean=2.3950,
               samples_best=8, delta_best=base8 - 2.3950, decided_at=850.0, finished_at=850.0)
    move = row("e1", commit="c1", val_bpb=2.3600, decision="promote", best_before="c0", best_after="c1",
               mean=2.3614, samples=1, samples_best=9, best_mean=base9, delta_best=base9 - 2.3614,
               decided_at=1000.0, finished_at=990.0)
    carried = {**pend, "decision": "carried", "merge_commit": "c1", "decided_at": 1000.5}
    for rows in (baseline_round(9, vals=vals) + [move, carried],
                 baseline_round(9, vals=vals) + [pend, move, carried]):
        b = figures.compute(rows).best[HW]
        assert (b.baseline_val_bpb, b.baseline_samples) == (pytest.approx(base9), 9)
        assert b.steps[0].delta == pytest.approx(b.baseline_val_bpb - 2.3614)
        # the step says both means it compared (its runs': best's less the delta)
        assert b.steps[0].verified == ("1 run of its own (2.3614) beat best 2.4099 (9 samples)"), b.steps[0].verified
    # a ledger from before decisions recorded best_mean: as before (mean + delta of a decision
    # that left best where it was)
    old = {k: v for k, v in move.items() if k != "best_mean"}
    b = figures.compute(baseline_round(9, vals=vals) + [pend, old]).best[HW]
    assert (b.baseline_val_bpb, b.baseline_samples) == (pytest.approx(base8), 8)


def test_rates_cover_the_whole_run_not_the_experiments_window():
    """Issue 23: 139.2 experiments/hour over the experiments' own window, 75.8 over the run."""
    rows = baseline_round() + [row(f"e{i}", commit=f"c{i}", started_at=1500.0 + 60 * i,
                                   finished_at=1560.0 + 60 * i, decision="discard") for i in range(4)]
    r = figures.rates(rows)
    assert (r.start, r.end, r.pauses) == (0.0, 1560.0 + 180, 0)   # 20 min without a run: no pause
    assert r.experiments_per_hour == pytest.approx(4 / ((1740.0) / 3600))
    assert r.runs_per_hour == pytest.approx(7 / (1740.0 / 3600))
    assert r.hours == r.span_hours == pytest.approx(1740.0 / 3600)
    assert figures.rates([row("x", finished_at=30.0)]).experiments_per_hour is None  # under a minute


def test_a_resumed_swarms_rates_leave_out_the_night_between():
    """`swarm run` one evening, stopped, `swarm run` again the next: the 14 hours between had no
    run going, and dividing by them cut the experiments per hour to a fifth. The pause is left out
    of the rates and the duration, and said, on every view (they all read figures.rates)."""
    def night(t0, k):
        return [row(f"n{t0}-{i}", commit=f"c{t0}-{i}", agent=f"a{i % 2}", started_at=t0 + 300.0 * (i // 2),
                    finished_at=t0 + 300.0 * (i // 2) + 290, decision="discard") for i in range(k)]
    first, second = night(0.0, 24), night(3600.0 + 14 * 3600, 24)   # an hour, 14 h off, an hour
    r = figures.rates(first + second)
    assert r.pauses == 1 and r.span_hours == pytest.approx((16 * 3600 - 10) / 3600)
    assert r.hours == pytest.approx((2 * 3600 - 20) / 3600)
    assert r.experiments_per_hour == pytest.approx(48 / r.hours)       # about 24 an hour, as each night
    data = {"swarm_id": "s", "experiments": 48, "runs": 48, "jobs": 0, "best_moves": 0,
            "experiments_per_hour": r.experiments_per_hour, "rates": r.model_dump(), "counts": {}, "best": {}}
    line = live.counts_line(data)
    assert "24.1 experiments/hour of running (less 1 pause with no run going: 16.0 h from the first run" in line
    said = live.summary(first + second, data)
    assert ("48 runs in 119.7 min (a run is any training" in said
            and "resumed: 1 pause with no run going left out, 16.0 h from the first run to the last." in said), said
    # A stretch without a run that is short against the runs is no pause: a 45-minute gap
    # between runs of 20 minutes (three of them: an hour) is running time.
    long_runs = [row(f"l{i}", commit=f"l{i}", started_at=1200.0 * i + (2700.0 if i >= 2 else 0.0),
                     finished_at=1200.0 * i + 1200.0 + (2700.0 if i >= 2 else 0.0), decision="discard")
                 for i in range(4)]
    assert figures.rates(long_runs).pauses == 0


def test_contended_runs_are_listed_and_left_out_of_sample_means():
    rows = baseline_round(vals=(2.50, 2.40, 2.45)) + [
        row("slow", "baseline", commit="c0", val_bpb=2.90, decision="sample", contended=True)]
    fig = figures.compute(rows)
    assert fig.contended == ["slow"] and fig.counts.contended == 1
    assert fig.best[HW].val_bpb == pytest.approx(2.45) and fig.best[HW].samples == 3


def test_current_ideas_hold_only_ideas_in_flight():
    """Issue 23: after a stop, status listed as current ideas proposals that already ran."""
    agents = [{"agent": "a0", "phase": "train", "description": "LR up", "ts": 100.0},
              {"agent": "a1", "phase": "report", "description": "WD down", "ts": 100.0},
              {"agent": "a2", "phase": "propose", "description": "", "ts": 100.0}]
    rows = [row("e1", agent="a1", description="WD down", finished_at=101.0)]
    assert live.current_ideas(agents, rows, running=True) == [{"agent": "a0", "description": "LR up"}]
    assert live.current_ideas(agents, rows, running=False) == []
    data = live.gather(None, "s", rows, running=False)
    data["agents"] = agents
    assert "current ideas" not in _text(live.render(data))


def test_a_run_on_a_busy_machine_says_nothing_could_be_judged_and_why():
    """Every run contended (the machine was busy): best has no sample, so no value (not 0.0, which
    the latest-best key once said) and no experiment is judged; the summary says so in words."""
    rows = [row(f"b{i}", "baseline", commit="c0", val_bpb=2.8, decision="sample", contended=True,
                started_at=10.0 * i, finished_at=10.0 * i + 9) for i in range(2)]
    rows += [row(f"e{i}", commit=f"c{i + 1}", val_bpb=2.7, decision="unjudged", contended=True,
                 decision_reason="best has no samples yet", started_at=30.0 + i, finished_at=40.0 + i)
             for i in range(4)]
    pub = {HW: {"commit": "c0", "val_bpb": None, "samples": 0, "seq": 1}}
    fig = figures.compute(rows, pub)
    assert fig.best[HW].val_bpb is None and fig.best[HW].samples == 0
    data = live.gather(None, "s", rows, running=False)
    text = " ".join(live.summary(rows, data).split())
    assert "best [cpu] did not move: it is still the baseline, - (0 samples)." in text
    assert ("No experiment was judged: best has no sample to compare with. The machine was busy: 6 of 6 "
            "runs trained slower than its norm (contended)") in text


def test_the_latest_best_key_of_a_best_without_samples_holds_no_value(redis_url, tmp_path):
    """A contended run refreshes best's key with no sample behind it: NaN (read as None by the
    views), not the empty book's mean 0.0."""
    from coordinator.decide.bestkey import BestKeys
    from coordinator.decide.commits import CommitCache
    from coordinator.decide.noise import SampleBook
    from coordinator.state.ledger import Ledger, connect_redis
    from coordinator.state.repo import ResearchRepo

    r = connect_redis(redis_url)
    repo = ResearchRepo(tmp_path / "repo.git")
    root = repo.create("A = 0\n")
    keys_ = BestKeys(r, Ledger(r, "s"), "s", SampleBook(CommitCache(repo), 0.005))
    keys_.publish(HW, root, None, None)
    keys_.refresh(HW, root)
    assert live.published(r, "s")[HW]["val_bpb"] is None


def _text(renderable) -> str:
    import io

    from rich.console import Console
    buf = io.StringIO()
    Console(file=buf, width=100, color_system=None).print(renderable)
    return " ".join(buf.getvalue().split())


def test_the_end_of_a_run_says_why_nothing_moved():
    rows = baseline_round() + [
        row(f"e{i}", agent=f"a{i % 2}", commit=f"c{i}", description=d, val_bpb=2.45 + gap,
            decision="discard", best_before="c0", mean=2.45 + gap, delta_best=-gap, samples_best=3,
            margin=0.039, sigma=0.011, dof=8, decided_at=400.0 + i, finished_at=400.0 + i)
        for i, (d, gap) in enumerate((("DEPTH 4 -> 10", 0.42), ("DEPTH 4 -> 5", 0.03), ("LR x3", 0.2)))]
    rows.append(row("bad", run_status="invalid", decision="invalid", started_at=500.0, finished_at=501.0))
    data = live.gather(None, "s", rows, running=False)
    text = " ".join(live.summary(rows, data).split())
    assert "4 experiments and 6 runs" in text
    assert "best [cpu] did not move: it is still the baseline, 2.4500 (3 samples)." in text
    assert ('3 experiments judged, all worse than the baseline by 0.0300-0.4200; the closest was '
            'a1\'s "DEPTH 4 -> 5" (-0.0300).') in text
    assert "0 crashed or timed out, 1 invalid edit never trained." in text
    assert "A result must beat best by the margin (0.0390 at the last decision, 3.5 x the noise sigma 0.0110)" in text
    for cmd in ("swarm lineage", "swarm status", "swarm report", "swarm export --format tsv --output -"):
        assert cmd in text
    # an edit refused because another run trained that very train.py is told apart
    rows.append(row("dup", run_status="invalid", decision="invalid", started_at=502.0, finished_at=502.0,
                    reason="already tried: a0's experiment e1 trained this train.py (discard)"))
    text = " ".join(live.summary(rows, live.gather(None, "s", rows, running=False)).split())
    assert "0 crashed or timed out, 2 invalid edits never trained (1 of them already tried by another run)." in text
    # where sigma came from: this swarm's runs, or a prior from earlier swarms when the
    # coordinator's status() says so
    assert "noise [cpu]: sigma 0.0110 (8 dof), measured by this swarm's runs." in text
    hist = live.noise_history({"classes": {HW: {"noise_prior": {"sigma": 0.012, "dof": 24, "swarms": 3}}}})
    text = " ".join(live.summary(rows, data, history=hist).split())
    assert ("noise [cpu]: sigma 0.0110 (8 dof), with a prior from earlier swarms (sigma 0.0120 over 24 "
            "dof from 3 earlier swarms).") in text


def test_the_end_of_a_run_says_why_nothing_moved_before_any_margin_was_set():
    """A short swarm whose judgements all ended pending (sigma from the prior, best on one sample)
    recorded no margin: the summary said which results looked better and stopped there, with no
    word of the bar (seen in a real swarm of the slow tier)."""
    rows = baseline_round(n=1) + [
        row(f"e{i}", agent=f"a{i % 2}", commit=f"c{i + 1}", description=f"change {i}", val_bpb=2.45 - gap,
            decision="pending", best_before="c0", mean=2.45 - gap, delta_best=gap, samples_best=1,
            sigma=0.005, dof=0, decided_at=400.0 + i, finished_at=400.0 + i)
        for i, gap in enumerate((0.0456, 0.01, 0.02))]
    data = live.gather(None, "s", rows, running=False)
    text = " ".join(live.summary(rows, data).split())
    assert "best [cpu] did not move: it is still the baseline" in text
    assert "3 of 3 judged experiments looked better but stayed unproven; the closest was" in text
    assert "A result must beat best by the margin" not in text
    assert ("No margin was set yet: the noise estimate rests on 0 degrees of freedom and best on 1 sample; "
            "a result moves best once the runs of best and of it give its test enough evidence") in text


def test_the_end_of_a_run_lists_each_move_and_agrees_with_the_last_frame(synthetic):
    rows = synthetic.rows
    data = live.gather(None, "s", rows, running=False)
    text = live.summary(rows, data, home_arg=" --swarm-home /x")
    fig = figures.compute(rows)
    for hw, b in fig.best.items():
        times = "time" if b.moves == 1 else "times"
        assert f"best [{hw}] moved {b.moves} {times}: {b.baseline_val_bpb:.4f} -> {b.val_bpb:.4f}" in text
        for s in b.steps:
            line = next(ln for ln in text.splitlines() if ln.startswith(f"  {s.n}. {s.commit[:7]} "))
            assert f"{s.delta:+.4f} {s.decision}" in line and s.verified in line
    assert "swarm status --swarm-home /x" in text
    frame = _text(live.render(data))
    head = text.splitlines()[0]
    assert f"{data['experiments']} experiments" in head and f"{data['runs']} runs" in head
    assert live.counts_line(data) in frame
    assert live.plain_line(data).startswith(f"[swarm] {data['experiments']} experiments, {data['runs']} runs")


def test_the_end_of_a_time_boxed_run_says_what_is_still_pending_and_how_to_go_on():
    """`swarm run --minutes 8` can stop while a result's sequential test wants more runs: the
    last lines say so, and that running again in the same place decides it."""
    rows = baseline_round(9) + [
        row("e1", commit="c1", parent="c0", val_bpb=2.30, decision="promote", best_before="c0",
            best_after="c1", decision_delta=0.15, delta_best=0.15, margin=0.06, sigma=0.02, dof=8,
            samples=1, samples_best=9, started_at=1000.0, finished_at=1090.0, decided_at=1090.0),
        row("e2", commit="c2", parent="c1", val_bpb=2.28, decision="pending", delta_best=0.02,
            margin=0.06, sigma=0.02, dof=8, started_at=1100.0, finished_at=1190.0, decided_at=1190.0),
        row("b9", "baseline", commit="c1", val_bpb=2.31, decision="sample", started_at=1100.0,
            finished_at=1190.0, decided_at=1190.0)]
    data = live.gather(None, "s", rows, running=False)
    text = " ".join(live.summary(rows, data).split())
    assert "1 experiment still pending when the swarm stopped (its test wants more runs)" in text, text
    assert "`swarm run` again here resumes the swarm and decides it" in text, text
    n = int(text.split("; now ")[1].split()[0])
    assert f"now {n} sample{'s' if n != 1 else ''})" in text, text     # never "1 samples"
    # the step's line counted "1 run(s) of its own" (the quick start of 2026-12-06 21:45)
    assert "1 run of its own beat best (9 samples) by more than the margin 0.0600" in text, text
    assert "(s)" not in text, text
    # two pending (the quick start of 2026-12-06 18:57 said "2 experiments ... (its test wants more runs)")
    rows.append({**rows[-2], "experiment_id": "e3", "commit": "c3"})
    text = " ".join(live.summary(rows, live.gather(None, "s", rows, running=False)).split())
    assert "2 experiments still pending when the swarm stopped (their tests want more runs)" in text, text
    assert "resumes the swarm and decides them" in text, text


def test_the_summary_says_which_agents_backend_ended_the_run_out_of_order():
    """A one-knob program's agent (mutate, static allocation) had nothing left to propose after
    two experiments and waited for best; the run's last screen said "moved 0 times" and "5
    invalid edit(s) never trained", no word of the agent. Its heartbeat's backend state is named
    now, with the reason and what the agent did; an agent whose backend is up is not."""
    rows = baseline_round(9)
    data = live.gather(None, "s", rows, running=False)
    reason = "mutate: search space exhausted (every nearby state already tried), asked 5 times"
    data["agents"] = [
        {"agent": "a0-warmup", "program": "warmup", "backend_state": "spent", "backend_reason": reason,
         "stop_reason": "backend refused: spent", "spent_waited_s": 240.4, "phase": "stopped"},
        {"agent": "a1-schedule", "program": "schedule", "backend_state": "spent", "backend_reason": reason,
         "stop_reason": "time limit", "spent_waited_s": None, "phase": "stopped"},
        {"agent": "a2-explore", "program": "explore", "backend_state": "refused",
         "backend_reason": "the same failure 5 times in a row: command exited with 1", "phase": "stopped"},
        {"agent": "a3-ok", "program": "baseline", "backend_state": "up", "phase": "stopped"}]
    text = " ".join(live.summary(rows, data).split())
    assert (f"a0-warmup (warmup): its backend had nothing left to propose from best ({reason}); it "
            "stopped: best did not move in 240 s.") in text, text
    assert "a1-schedule (schedule): its backend had nothing left to propose from best" in text, text
    assert "it was waiting for best to move (running the coordinator's jobs)." in text, text
    assert "a2-explore (explore): stopped, its backend refused: the same failure 5 times" in text, text
    assert "a3-ok" not in text, text


def test_the_summary_names_experiments_left_unjudged_by_the_contended_cap():
    """`promotion.contended_remeasures`: an experiment whose every run stayed contended up to the
    cap is `unjudged`; the end of the run says how many, and which setting decided it, instead of
    the old "they cannot move best until re-measured" (no re-measure was coming)."""
    rows = baseline_round(vals=(2.50, 2.40, 2.45)) + [
        row("e1", commit="c1", val_bpb=2.30, decision="unjudged", contended=True,
            decision_reason="never judged: all 2 runs of it were contended", started_at=400.0, finished_at=410.0),
        row("e1c", "confirm", commit="c1", val_bpb=2.31, decision="sample", contended=True,
            started_at=411.0, finished_at=420.0)]
    data = live.gather(None, "s", rows, running=False)
    text = " ".join(live.summary(rows, data).split())
    assert ("2 runs were contended (the machine was slower than its norm): a contended run counts "
            "nowhere; 1 experiment was never judged: its runs stayed contended up to "
            "promotion.contended_remeasures.") in text, text
    # never judged is its own outcome, not "discarded", in the counts every view shows
    assert "experiments: 1 unjudged;" in text, text
    one = [r for r in rows if r["experiment_id"] != "e1c"]
    text = " ".join(live.summary(one, live.gather(None, "s", one, running=False)).split())
    assert "1 run was contended (the machine" in text, text
    assert figures.counts(rows).outcomes == {"unjudged": 1}
    from coordinator.review.report.tables import program_table
    assert program_table(rows)[-1]["unjudged"] == 1 and program_table(rows)[-1]["discarded"] == 0


def test_programs_no_agent_ever_ran_share_one_line():
    """The quick start (2 agents, 6 shipped programs) listed four programs with '0 agents, yield
    0.0000±0.0421 bpb/device-h (0.0000 bpb in 0.00 h), 0% of device-hours' each: lines that
    say nothing. Those become one line naming them; a program that ran, or is pinned or spent,
    keeps its own line."""
    def prog(name, agents, hours, **kw):
        return {"program": name, "agents": agents, "yield_": 0.5 if hours else 0.0, "sd": 0.04,
                "credit": 0.1 if hours else 0.0, "hours": hours, "share": 0.5 if hours else 0.0,
                "mode": "adaptive", **kw}
    lines = live.program_lines([prog("baseline", 1, 0.13), prog("architecture", 1, 0.13),
                                prog("optimizer", 0, 0.0), prog("schedule", 0, 0.0),
                                prog("left", 0, 0.2), prog("pin", 0, 0.0, pinned=True)])
    assert lines[0].startswith("programs (adaptive allocation")
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == [
        "baseline", "architecture", "left", "pin (pinned)", "no agent so far"]
    assert lines[-1] == "  no agent so far: optimizer, schedule"
