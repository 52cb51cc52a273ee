"""What a person reads: `swarm status` in 80 columns, figures over experiments only with each
move of best counted once, sigma/dof/margin and the lost-winner audit, and plain `swarm run`
output that prints a line only when something happened (issue 13)."""
from __future__ import annotations

import io

from rich.console import Console

from coordinator.run import live

IDEA = "raise the learning rate warmup to 400 steps and halve the weight decay on the embeddings"


def rows():
    base = dict(hardware_class="cpu", run_status="ok", agent="a0", program="p")
    return [
        {**base, "kind": "baseline", "experiment_id": "b1", "started_at": 0.0, "finished_at": 100.0},
        {**base, "kind": "experiment", "experiment_id": "e1", "started_at": 100.0, "finished_at": 400.0,
         "decision": "merge", "best_after": "M1", "sigma": 0.01, "dof": 9, "margin": 0.03,
         "decided_at": 900.0, "delta_best": 0.05, "beat_best": True, "commit": "c1"},
        # the merge's verification run: a sample, not a second move
        {**base, "kind": "verify", "experiment_id": "v1", "started_at": 400.0, "finished_at": 900.0,
         "decision": "sample", "commit": "M1"},
        {**base, "kind": "experiment", "experiment_id": "e2", "started_at": 400.0, "finished_at": 3700.0,
         "decision": "discard", "commit": "c2"},
        {**base, "kind": "experiment", "experiment_id": "e3", "run_status": "invalid",
         "started_at": 3700.0, "finished_at": 3701.0, "decision": "invalid"},
    ]


def test_figures_count_experiments_only_and_each_move_once():
    data = live.gather(None, "s", rows())
    # experiments: the agents' ideas (the invalid edit too); runs: what trained (not it)
    assert data["experiments"] == 3 and data["runs"] == 4 and data["jobs"] == 2
    assert data["records"] == 5
    assert data["best_moves"] == 1 and data["keeps"] == 1
    # 3 experiments over the whole run, t=0 to t=3701
    assert abs(data["experiments_per_hour"] - 3 / (3701 / 3600)) < 1e-9
    b = data["best"]["cpu"]
    assert (b["sigma"], b["dof"], b["margin"]) == (0.01, 9, 0.03)
    assert [s["delta"] for s in b["steps"]] == [0.05]


def test_status_is_readable_in_80_columns():
    data = live.gather(None, "s", rows())
    data["agents"] = [{"agent": f"agent-with-a-long-name-{i}", "program": "optimizer", "phase": "train",
                       "progress": 0.5, "last_delta": -0.0123, "experiments": 12, "description": IDEA}
                      for i in range(3)]
    data["current_ideas"] = live.current_ideas(data["agents"], rows(), running=True)
    data["lost_winners"] = [{"experiment_id": "e9", "delta": 0.04, "margin": 0.03, "why": "pending"}]
    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=False, color_system=None).print(live.render(data))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "..." not in text
    flat = " ".join(text.split())
    for i in range(3):
        assert f"agent-with-a-long-name-{i}" in text
        assert f"agent-with-a-long-name-{i}: {IDEA}" in flat
    assert "sigma 0.01000 (9 dof), margin 0.03000 (last decision)" in flat
    assert "winners not on best: 1" in flat and "e9 +0.0400 > margin 0.0300: pending" in flat


def test_plain_output_prints_a_line_only_when_something_happened(capsys):
    from coordinator.run.supervise import _View

    v = _View(plain=True)
    data = live.gather(None, "s", rows())
    v.update(data)
    data["agents"] = [{"agent": "a0", "phase": "train", "progress": 0.7}]  # phases move all the time
    v.update(data)
    v.update(live.gather(None, "s", rows()))
    assert len(capsys.readouterr().out.splitlines()) == 1
    more = rows() + [{"kind": "experiment", "experiment_id": "e4", "run_status": "ok",
                      "started_at": 3701.0, "finished_at": 4000.0, "decision": "discard"}]
    v.update(live.gather(None, "s", more))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "4 experiments" in out[0]


def test_the_live_view_reads_the_ledger_again_as_soon_as_it_grew(redis_url):
    """`swarm run`'s view re-reads the ledger when it grew (one XLEN a redraw), not on a 5 s
    clock: the quick start of 2026-12-06 15:41 printed `0 experiments, 0 runs, best cpu-... 2.4511
    (1 samples)` (the counts 5 s old, the best just published beside them). A plain line is drawn
    only from rows just read."""
    import time

    from agents.messages import ExperimentRecord
    from coordinator.run.supervise import _LedgerRows
    from coordinator.state.ledger import Ledger, connect_redis
    from trainer.schema import ExperimentResult

    client = connect_redis(redis_url)
    ledger = Ledger(client, "view-test")

    def add(i: int) -> None:
        ledger.add_record(ExperimentRecord(
            experiment_id=f"e{i}", kind="baseline", agent="a0", program="p", hardware_class="hw", parent="p",
            commit="c", status="ok", val_bpb=1.0, result=ExperimentResult(status="ok", val_bpb=1.0)))

    cache = _LedgerRows({"swarm_id": "view-test"})
    rows, fresh = cache.get(client)
    assert rows == [] and fresh
    rows, fresh = cache.get(client)
    assert not fresh                      # nothing new: not read again, nothing to draw
    add(1)
    deadline = time.monotonic() + 4.0     # well inside the old 5 s
    while time.monotonic() < deadline:
        rows, fresh = cache.get(client)
        if fresh:
            break
        time.sleep(0.05)
    assert fresh and [r["experiment_id"] for r in rows] == ["e1"]


def test_counts_of_one_read_in_the_singular_in_every_line():
    """The quick start's first plain line said `0 experiments, 0 runs, best cpu-... 2.4511 (1 samples)`:
    every view counts through figures.plural, so one of a thing reads `1 sample`, `1 run`."""
    one = rows()[:2]
    one[1] = {**one[1], "decision": "discard", "best_after": None}
    data = live.gather(None, "s", one)
    data["best"]["cpu"]["samples"] = 1
    assert (data["experiments"], data["runs"], data["best_moves"]) == (1, 2, 0)
    plain = live.plain_line(data)
    assert plain.startswith("[swarm] 1 experiment, 2 runs, best cpu ") and "(1 sample)" in plain, plain
    assert "moved 0 times" in plain, plain
    counts = live.counts_line(data)
    assert counts.startswith("1 experiment, 2 runs (1 job), best moved 0 times"), counts
    assert "(1 sample) at " in live.best_line("cpu", data["best"]["cpu"])
