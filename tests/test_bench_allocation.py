"""bench/allocation.py runs end to end on one short seed of every scenario and ends with its summary
line; its figures are printed, never asserted (seed counts that tell settings apart take minutes)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "allocation.py"
LINE = re.compile(r"^agents=8 programs=4 barren_speedup=[\d.]+ equal_ratio=[\d.]+ late_bloomer_share=(nan|[\d.]+)$")


def test_bench_runs_every_scenario_and_prints_its_summary(tmp_path):
    p = subprocess.run([sys.executable, str(BENCH), "--seeds", "1", "--rounds", "3"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert LINE.match(lines[-1]), lines[-1]
    trace = next(x for x in lines if x.startswith("barren adaptive: agents on the programs that can move best"))
    assert len(trace.split(": ")[-1].split()) == 3   # one figure per round played
    assert sum(1 for x in lines if re.match(r"^  \S+ +(static|adaptive) +seed  0: ", x)) == 6


def test_backend_auto_gives_each_program_its_offline_default_and_a_moved_agent_takes_it(tmp_path):
    """`--backend auto` (what `swarm run` makes of `auto` offline on one node): the allocation's
    programs carry it, so an agent moved to one takes its backend, and the bench runs on it. The
    bench used to run mutate only, the product's offline default being optuna."""
    from bench.allocation import SCENARIOS, ScenarioLand
    from bench.swarmsim import program_specs

    land = ScenarioLand(SCENARIOS["barren"])
    specs = program_specs(land, list(land.programs), {"*": "auto"})
    # LOG_EVERY's range (1..100 by 5) is not whole steps apart: Optuna cannot express it, mutate runs it
    assert {p.name: p.backend["type"] for p in specs} == {"optimizer": "optuna", "architecture": "optuna",
                                                          "logging": "mutate", "evals": "optuna"}
    assert {p.backend["type"] for p in program_specs(land, list(land.programs), {})} == {"mutate"}
    p = subprocess.run([sys.executable, str(BENCH), "--backend", "auto", "--scenarios", "barren", "--seeds", "1",
                        "--rounds", "2", "--modes", "adaptive"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert lines[0].endswith("backends {'*': 'auto'}"), lines[0]
    assert sum(1 for x in lines if re.match(r"^  barren +adaptive +seed  0: ", x)) == 1, lines


def test_stagger_plays_the_agents_out_of_step_and_ends(tmp_path):
    """`--stagger`: the arms run with bench/swarmsim.py's Staggered (agent k of N ends each run k/N
    of a budget after agent 0) and every agent thread ends with its arm, so the bench exits."""
    p = subprocess.run([sys.executable, str(BENCH), "--scenarios", "equal", "--seeds", "1", "--rounds", "3",
                        "--stagger"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert sum(1 for x in lines if re.match(r"^  equal +(static|adaptive) +seed  0: rounds_to_target=", x)) == 2, lines
    assert lines[-1].startswith("agents=8 programs=4 equal_ratio="), lines[-1]
