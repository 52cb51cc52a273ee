"""bench/quickstart.py: the README's quick start replayed through the research bench's swarm
(the real Coordinator and ResearchAgent loop, a real redis-server) on a real-landscape fit. Here
the fit is of a small file with the real program's six knobs and a known shape (a shallower
model is better), so it takes a second; the shipped data's fit is for the bench itself."""
from __future__ import annotations

import json
import random
import re

import pytest

pytest.importorskip("sklearn")

from bench.quickstart import STARTUP_S, quickstart_plan, run  # noqa: E402
from bench.real_landscape import DATA, RealLandscape  # noqa: E402
from coordinator.run.config import assign_programs, load_config  # noqa: E402


def _toy_landscape(tmp_path) -> RealLandscape:
    """The shipped collection's knobs and baseline; values: 2.3 + 0.03 per layer below 4 better."""
    meta = json.loads(DATA.with_suffix(".meta.json").read_text())
    base, space = meta["baseline"], meta["search_space"]
    rng = random.Random(0)
    rows = []
    for i in range(40):
        p = dict(base)
        if i >= 12:   # 12 repeats of the baseline, then one knob at a time
            k = rng.choice(list(space))
            s = space[k]
            p[k] = (s["min"] + (s["max"] - s["min"]) * rng.random()) if s["type"] != "int" else rng.randint(2, 8)
        val = 2.3 + 0.03 * (p["DEPTH"] - 4) + rng.gauss(0, 0.005)
        rows.append({"part": "baseline" if i < 12 else "oat", "point": p, "seed": i, "status": "ok",
                     "val_bpb": val, "total_seconds": 40.0})
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.with_suffix(".meta.json").write_text(json.dumps(meta))
    return RealLandscape(path)


def test_the_plan_is_what_swarm_run_does_without_an_llm_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-not-used")   # the plan reads no key from the shell
    cfg, _ = load_config(None)
    programs, backends, promotion, allocation = quickstart_plan(2)
    assert programs == [cfg.programs[j].label() for j in assign_programs(cfg.programs, 2)]
    # every shipped program has its backend: the allocation may move an agent to any of them
    assert set(backends) == {e.label() for e in cfg.programs} > set(programs)
    assert all(json.loads(b)["type"] in ("optuna", "mutate") for b in backends.values())
    assert promotion == cfg.promotion and allocation == cfg.allocation


def test_a_tiny_replay_count_prints_the_line(tmp_path):
    land = _toy_landscape(tmp_path)
    lines: list[str] = []
    s = run(1, max_experiments=1, land=land, out=lines.append, minutes=None, seconds_per_run=40.0)
    m = re.fullmatch(r"quickstarts=1 moved_fraction=(\S+) false_moves=(\d+) median_minutes=(\S+)", lines[-1])
    assert m, lines
    assert float(m[1]) == s["rows"][0]["moved"] and int(m[2]) == s["rows"][0]["false_moves"]
    for r in s["rows"]:
        # each agent ran its baseline share and one experiment; minutes are the busiest agent's runs
        assert r["kinds"].get("experiment") == 2
        assert r["minutes"] == pytest.approx((STARTUP_S + max(r["runs"].values()) * 40.0) / 60)
        assert r["false_moves"] <= len(r["moves"])


def test_a_time_boxed_replay_starts_no_run_past_its_minutes(tmp_path):
    """`swarm run --minutes M`: no run is started that would end past M minutes."""
    land = _toy_landscape(tmp_path)
    s = run(2, land=land, out=lambda _: None, minutes=4.0, seconds_per_run=40.0)
    for r in s["rows"]:
        busiest = max(r["runs"].values())
        assert STARTUP_S + busiest * 40.0 <= 4.0 * 60 < STARTUP_S + (busiest + 1) * 40.0
        assert r["minutes"] <= 4.0
