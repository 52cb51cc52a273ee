"""Allocation bench: does adaptive allocation (coordinator/decide/allocation.py) reach a better
train.py sooner than agents kept on their programs all night (static)?

The research bench's simulated swarm (bench/swarmsim.py: the real Coordinator on a real
redis-server and bare git repo, the real ResearchAgent loop with the `mutate` backend over each
program's search space, or `--backend auto` (the product's offline default: optuna where it can
express the program), a fake runner on the synthetic bowls of bench/landscape.py), 8 agents,
4 programs (2 agents each at the start, by equal weights), in rounds (one run per agent per round:
a round is the wall clock of one budget). Both arms start from a noise history (24 dof), so no
arm pays the baseline tax before its first move. Scenarios:
  barren        two programs whose knobs do nothing (LOG_EVERY; EVAL_EVERY) and two that can
                move best (the optimizer knobs; the architecture knobs)
  equal         four programs over the same knobs (equally good)
  late_bloomer  depth (DEPTH), late (WIDTH: pays only once DEPTH >= 6 is on best), optimizer
                knobs, and a barren one
  turns         (not in the default run) barren's programs in another order (logging, optimizer,
                evals, architecture): with --agents 2 or 3 the agents start on a barren program and
                a paying one, and the programs take turns
  tuned         (not in the default run) two programs over knobs the baseline already has at
                their optimum (every change of theirs is worse) and two that can move best
  real          (not in the default run) the landscape measured from the real trainer, four
                shipped programs (architecture, optimizer, schedule, explore); use --target 0.9
Measured: rounds until the true gain of best reaches half of what the scenario's programs can
reach (censored at --rounds: counted as --rounds when not reached, and said); in late_bloomer,
the share of device-hours the `late` program gets from the round its first result moves best.

Ends with one line:
  agents=8 programs=4 barren_speedup=X equal_ratio=X late_bloomer_share=X
barren_speedup and equal_ratio are static's mean rounds to the target over adaptive's;
late_bloomer_share is adaptive's (static's is printed above it).
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from agents.messages import PromotionConfig  # noqa: E402
from bench.signals import remove_work  # noqa: E402
from bench.landscape import _SPACE_COARSE, KNOBS, Bowls, constants, penalties  # noqa: E402
from bench.ratio import paired_ratio  # noqa: E402
from bench.swarmsim import Swarm, history_file, parse_backends, program_specs  # noqa: E402
from coordinator.decide.allocation import AllocationConfig, AllocationSpec  # noqa: E402
from coordinator.state.ledger import connect_redis  # noqa: E402
from coordinator.state.redisd import RedisDaemon  # noqa: E402

AGENTS = 8
TARGET_FRACTION = 0.5
OPTIMUM = {"LR": 0.04, "DEPTH": 8, "WIDTH": 512, "WEIGHT_DECAY": 0.1, "WARMUP": 200,
           "GRAD_CLIP": 1.0, "QK_NORM": 1, "SOFTCAP": 1}
SCENARIOS: dict[str, dict[str, list[str]]] = {
    "barren": {"optimizer": ["LR", "WEIGHT_DECAY", "WARMUP", "GRAD_CLIP"],
               "architecture": ["DEPTH", "WIDTH", "QK_NORM", "SOFTCAP"],
               "logging": ["LOG_EVERY"], "evals": ["EVAL_EVERY"]},
    "equal": {f"explore{i}": ["LR", "DEPTH", "WIDTH", "WEIGHT_DECAY", "WARMUP", "QK_NORM"] for i in range(1, 5)},
    "late_bloomer": {"depth": ["DEPTH"], "late": ["WIDTH"],
                     "optimizer": ["LR", "WEIGHT_DECAY", "WARMUP", "GRAD_CLIP"], "logging": ["LOG_EVERY"]},
    # fewer agents than programs (--agents 2 or 3: the programs take turns), a barren program first:
    # who makes the visits (an agent of a program that moves best, or one of a program that does not)
    "turns": {"logging": ["LOG_EVERY"], "optimizer": ["LR", "WEIGHT_DECAY", "WARMUP", "GRAD_CLIP"],
              "evals": ["EVAL_EVERY"], "architecture": ["DEPTH", "WIDTH", "QK_NORM", "SOFTCAP"]},
    # two programs over knobs the baseline already has at their optimum (a tuned train.py: every
    # change of theirs is worse, some by several sds), two that can move best
    "tuned": {"architecture": ["DEPTH", "WIDTH", "QK_NORM", "SOFTCAP"], "learning_rate": ["LR"],
              "regularize": ["WEIGHT_DECAY", "GRAD_CLIP"], "warmup": ["WARMUP"]},
    # the landscape measured from the real trainer (bench/real_landscape.py), four shipped programs
    # over its measured knobs (real_land); half its reachable gain comes in two rounds (DEPTH): run
    # it with --target 0.9
    "real": {"architecture": [], "optimizer": [], "schedule": [], "explore": []},
}
TUNED = {"tuned": {"WEIGHT_DECAY", "GRAD_CLIP", "WARMUP"}}   # knobs the scenario's baseline has at their optimum
LATE = "late"
BARREN = {"LOG_EVERY", "EVAL_EVERY"}   # knobs that do nothing on the bowls


class ScenarioLand(Bowls):
    """The bowls with a scenario's programs; `late_width`: WIDTH pays only once DEPTH >= 6."""

    def __init__(self, programs: dict[str, list[str]], late_width: bool = False, at_optimum=frozenset()):
        self.programs, self.late_width, self.at_optimum = programs, late_width, set(at_optimum)
        super().__init__()
        covered = {k for knobs in programs.values() for k in knobs}
        text = self.baseline_text()
        for k, v in OPTIMUM.items():
            if k in covered:
                text = re.sub(rf"^{k} = \S+", f"{k} = {v!r}", text, flags=re.M)
        self.max_gain = self.gain(text)   # what these programs can reach

    def baseline_text(self) -> str:
        text = super().baseline_text()
        for k in self.at_optimum:
            text = re.sub(rf"^{k} = \S+", f"{k} = {OPTIMUM[k]!r}", text, flags=re.M)
        return text

    def true_bpb(self, text: str) -> float:
        if not self.late_width:
            return super().true_bpb(text)
        c = {n: v0 for n, (v0, _) in KNOBS.items()}
        c.update({k: v for k, v in constants(text).items() if k in KNOBS})
        p = penalties(c)
        if c["DEPTH"] < 6:  # the width is not the bottleneck of a shallow model
            p["WIDTH"] = penalties({**c, "WIDTH": KNOBS["WIDTH"][0]})["WIDTH"]
        return 1.5 + sum(p.values())

    def program_text(self, name: str, adopt: str | None = None) -> str:
        space = "\n".join(f"  {k}: {_SPACE_COARSE[k]}" for k in self.programs[name])
        head = f"adopt: {adopt}\n" if adopt else ""
        return f"# {name}\nTune these knobs.\n\n```yaml\n{head}search_space:\n{space}\n```\n"

    def programs_for(self, n: int) -> list[str]:
        names = list(self.programs)
        return [names[i % len(names)] for i in range(n)]

    def useful(self) -> list[str]:
        """The programs that can move best (some knob of theirs does something)."""
        return [k for k in self.programs
                if not all(x in BARREN or x in self.at_optimum for x in self.programs[k])]

    def oracle_for(self, n: int, floor: int) -> list[str]:
        """The allocation an oracle would hold all night: the floor on every program, the rest
        shared evenly by the programs that can move best (a program whose knobs all do nothing
        cannot): what adaptive allocation can at best learn, the bench's ceiling."""
        names = list(self.programs)
        useful = self.useful()
        out = [k for k in names for _ in range(floor)]
        out += [useful[i % len(useful)] for i in range(n - len(out))]
        return out


def real_land(names: list[str]):
    """The real trainer's landscape with `names` (shipped programs) as the scenario's programs;
    every one of them can move best as far as the bench knows (the oracle is static there)."""
    from bench.real_landscape import RealLandscape

    class RealScenario(RealLandscape):
        def __init__(self):
            super().__init__()
            self.programs = {n: list(self.program_space(n)) for n in names}

        def programs_for(self, n: int) -> list[str]:
            return [names[i % len(names)] for i in range(n)]

        def useful(self) -> list[str]:
            return list(names)

        oracle_for = ScenarioLand.oracle_for

    return RealScenario()


@dataclass
class Arm:
    scenario: str
    mode: str
    seed: int
    rounds_to_target: int | None = None
    rounds: int = 0
    late_share: float | None = None     # late_bloomer: late's share of device-hours after it paid
    moves: int = 0                      # reassignments
    paying: list[int] = field(default_factory=list)  # per round: agents on programs that can move best
    final: dict = field(default_factory=dict)  # program -> agents at the end


def run_arm(scenario: str, mode: str, seed: int, work: Path, redis_url: str, max_rounds: int,
            alloc: dict, target_fraction: float = TARGET_FRACTION, backends: dict[str, str] | None = None,
            stagger: bool = False) -> Arm:
    land = real_land(list(SCENARIOS[scenario])) if scenario == "real" else ScenarioLand(
        SCENARIOS[scenario], late_width=scenario == "late_bloomer", at_optimum=TUNED.get(scenario, frozenset()))
    # The same swarm id in both arms: the runs' noise and the proposals draw from the same
    # streams (common random numbers), so the arms differ by the allocation only; redis is
    # emptied between arms (main).
    sid = f"{scenario}-{seed}"
    hist = history_file(work / f"{sid}-{mode}-history.json", land, 24, random.Random(seed))
    programs = land.oracle_for(AGENTS, _oracle_floor(alloc)) if mode == "oracle" else land.programs_for(AGENTS)
    backends = backends or {"*": "mutate"}
    s = Swarm(work / f"{sid}-{mode}", redis_url, sid, land, programs, seed, PromotionConfig(),
              backends, history=hist, stagger=stagger)
    late = mode.startswith("oracle@")   # static for R rounds, then the oracle's allocation at once
    cfg = dict(alloc, dwell_runs=10 ** 9) if late else alloc  # the bandit itself never moves anyone
    s.coord.configure_allocation(AllocationSpec(
        config=AllocationConfig(mode="adaptive" if late else "static" if mode == "oracle" else mode,
                                seed=seed, **cfg),
        programs=program_specs(land, list(land.programs), backends)))
    arm = Arm(scenario, mode, seed)
    target = target_fraction * land.max_gain
    paid_at: tuple[float, float] | None = None  # (late's hours, all hours) when late first paid
    useful = land.useful()
    for r in range(1, max_rounds + 1):
        if late and r == int(mode.split("@")[1]) + 1:
            _move_to(s, land.oracle_for(AGENTS, _oracle_floor(alloc)))
        if s.round() is None:
            break   # every agent stopped
        arm.rounds = r
        arm.paying.append(sum(y["agents"] for y in s.coord.allocation_status() if y["program"] in useful))
        if arm.rounds_to_target is None and s.gain_now() >= target - 1e-12:
            arm.rounds_to_target = r
            if scenario != "late_bloomer":
                break
        if scenario == "late_bloomer":
            ys = {y["program"]: y for y in s.coord.allocation_status()}
            if paid_at is None and ys[LATE]["credit"] > 0:
                paid_at = (ys[LATE]["hours"], sum(y["hours"] for y in ys.values()))
    ys = {y["program"]: y for y in s.coord.allocation_status()}
    arm.final = {n: y["agents"] for n, y in ys.items()}
    arm.moves = len(s.coord.allocation.history)
    if paid_at is not None:
        total = sum(y["hours"] for y in ys.values()) - paid_at[1]
        arm.late_share = (ys[LATE]["hours"] - paid_at[0]) / total if total > 0 else None
    s.coord.flush_refs()
    s.rounds.close()
    return arm


def _floor(alloc: dict) -> float:
    """The floor the arms run under: --min-agents, else the config's default."""
    return alloc.get("min_agents", AllocationConfig().min_agents)


def _oracle_floor(alloc: dict) -> int:
    """The oracle's floor: the whole agents of the floor (a fractional one's visits aside)."""
    return math.floor(_floor(alloc))


def _move_to(s: Swarm, target: list[str]) -> None:
    """Move agents (at their next iteration boundary, as a reassignment does) so that each
    program has as many as in `target`: what a learner that knew everything after R rounds
    would do."""
    from coordinator.decide.allocation import Assignment

    A = s.coord.allocation
    A._follow()
    want = {n: target.count(n) for n in A.programs}
    have = A._counts()
    short = [n for n in A.programs for _ in range(max(want[n] - have[n], 0))]
    spare = []
    for agent, p in sorted(A.program_of.items()):
        if have[p] > want[p]:
            have[p] -= 1
            spare.append(agent)
    for agent, to in zip(spare, short):
        A.ledger.put_allocation(agent, Assignment(agent=agent, program=to, previous=A.program_of[agent],
                                                  reason="oracle", runs_at=A.runs.get(agent, 0)).model_dump_json())


def _per_seed(arms: list[Arm], max_rounds: int) -> list[int]:
    """Rounds to the target per seed (a censored arm counts max_rounds)."""
    return [a.rounds_to_target or max_rounds for a in arms]


def _rounds(arms: list[Arm], max_rounds: int) -> tuple[float, int]:
    """Mean rounds to the target (a censored arm counts max_rounds) and how many were censored."""
    return statistics.mean(_per_seed(arms, max_rounds)), sum(a.rounds_to_target is None for a in arms)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--agents", type=int, default=8, help="agents per swarm (the issue's: 8; fewer than "
                    "4 with the default floor of 1: the programs take turns)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=30, help="rounds per arm at most (late_bloomer: exactly)")
    ap.add_argument("--scenarios", default="barren,equal,late_bloomer")
    ap.add_argument("--min-agents", type=float, default=None,
                    help="AllocationConfig.min_agents (default: the config's); a fraction time-shares")
    ap.add_argument("--backend", action="append", default=[], metavar="[PROGRAM=]TYPE",
                    help="proposal backend, for every program or one (repeatable; default mutate; "
                         "auto: what swarm run makes of it offline on one node, per program)")
    ap.add_argument("--dwell-runs", type=int, default=None, help="AllocationConfig.dwell_runs (default: the config's)")
    ap.add_argument("--inert-dwell-runs", type=int, default=None, help="AllocationConfig.inert_dwell_runs")
    ap.add_argument("--prior-moves", type=float, default=None,
                    help="AllocationConfig.prior_moves (default: the config's)")
    ap.add_argument("--pending-weight", type=float, default=None,
                    help="AllocationConfig.pending_weight (default: the config's)")
    ap.add_argument("--inert-prior", type=float, default=None,
                    help="AllocationConfig.inert_prior (default: the config's)")
    ap.add_argument("--effect-sigmas", type=float, default=None, help="AllocationConfig.effect_sigmas")
    ap.add_argument("--share", default=None, choices=("p_best", "active"),
                    help="AllocationConfig.share (default: the config's)")
    ap.add_argument("--modes", default="static,adaptive", help="arms to run (static does not depend "
                    "on the allocation's settings: its figures can be reused; oracle: the extra agents on "
                    "the programs that can move best from the start; oracle@R: static for R rounds, then "
                    "the oracle's allocation, what a learner that needs R rounds could at best do)")
    ap.add_argument("--target", type=float, default=TARGET_FRACTION,
                    help="the share of the reachable gain the rounds are counted to (the issue's: 0.5)")
    ap.add_argument("--stagger", action="store_true",
                    help="play the agents out of step (bench/swarmsim.py Staggered): a job waits for the "
                         "agent whose turn comes, as in a real swarm")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    global AGENTS
    AGENTS = a.agents
    logging.basicConfig(level=logging.INFO if a.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    alloc = {}   # the config's defaults unless given
    for key in ("min_agents", "dwell_runs", "inert_dwell_runs", "prior_moves", "pending_weight", "inert_prior",
                "effect_sigmas", "share"):
        if getattr(a, key) is not None:
            alloc[key] = getattr(a, key)
    backends = parse_backends(a.backend)
    work = Path(tempfile.mkdtemp(prefix="bench-allocation-"))
    redis = RedisDaemon(work / "redis", fsync="everysec").start()
    t0 = time.time()
    res: dict[tuple[str, str], list[Arm]] = {}
    try:
        print(f"allocation bench: {AGENTS} agents, seeds {a.first_seed}..{a.first_seed + a.seeds - 1}, "
              f"at most {a.rounds} rounds, target {a.target} of the reachable gain, allocation {alloc}, "
              f"backends {backends or {'*': 'mutate'}}",
              flush=True)
        for scenario in a.scenarios.split(","):
            for seed in range(a.first_seed, a.first_seed + a.seeds):
                for mode in a.modes.split(","):
                    arm = run_arm(scenario, mode, seed, work, redis.url, a.rounds, alloc, a.target, backends,
                                  a.stagger)
                    connect_redis(redis.url).flushall()
                    res.setdefault((scenario, mode), []).append(arm)
                    share = "" if arm.late_share is None else f" late_share={arm.late_share:.3f}"
                    print(f"  {scenario:12s} {mode:8s} seed {seed:2d}: rounds_to_target="
                          f"{arm.rounds_to_target} moves={arm.moves} final={arm.final}{share}", flush=True)
        for scenario in ("barren", "equal", "tuned", "turns"):
            if (scenario, "static") in res and (scenario, "oracle") in res:
                st, _ = _rounds(res[(scenario, "static")], a.rounds)
                orc, co = _rounds(res[(scenario, "oracle")], a.rounds)
                print(f"{scenario}: oracle (the extra agents on the programs that can move best from "
                      f"the start) {orc:.2f} rounds ({co} censored): ceiling {st / orc:.2f}")
        for (scenario, mode), arms in res.items():
            if scenario != "late_bloomer":
                m, c = _rounds(arms, a.rounds)
                print(f"{scenario} {mode}: mean rounds to target {m:.2f} ({c} censored)")
        for (scenario, mode), arms in res.items():
            if scenario in ("barren", "tuned", "turns") and mode == "adaptive":
                by_round = [statistics.mean(a.paying[r] for a in arms if len(a.paying) > r)
                            for r in range(min(12, max(len(a.paying) for a in arms)))]
                print(f"{scenario} adaptive: agents on the programs that can move best, mean by round "
                      "(arms still running): " + " ".join(f"{x:.1f}" for x in by_round))
        line = {}
        for scenario, key in (("tuned", None), ("real", None), ("turns", None), ("barren", "barren_speedup"),
                              ("equal", "equal_ratio")):
            if (scenario, "static") in res and (scenario, "adaptive") in res:
                (st, cs), (ad, ca) = (_rounds(res[(scenario, m)], a.rounds) for m in ("static", "adaptive"))
                # the same seeds in both arms: the interval is of the paired ratio
                r = paired_ratio(*(_per_seed(res[(scenario, m)], a.rounds) for m in ("static", "adaptive")))
                print(f"{scenario}: mean rounds to target static {st:.2f} ({cs} censored), adaptive {ad:.2f} "
                      f"({ca} censored): static / adaptive {r}"
                      + ("" if key else f": {scenario}_speedup={r.value:.2f}"))
                if key:
                    line[key] = f"{r.value:.2f}"
        if any(k[0] == "late_bloomer" for k in res):
            floor = _floor(alloc)
            for mode in [m for m in ("static", "adaptive") if ("late_bloomer", m) in res]:
                shares = [x.late_share for x in res[("late_bloomer", mode)] if x.late_share is not None]
                n = len(res[("late_bloomer", mode)])
                m = statistics.mean(shares) if shares else float("nan")
                print(f"late_bloomer {mode}: late's share of device-hours after it paid {m:.3f} "
                      f"({len(shares)}/{n} seeds where it paid; floor {floor:g}/{AGENTS} = "
                      f"{floor / AGENTS:.3f})")
                if mode == "adaptive":
                    line["late_bloomer_share"] = f"{m:.3f}"
        print(f"[{time.time() - t0:.0f}s]", file=sys.stderr)
        print(f"agents={AGENTS} programs=4 " + " ".join(f"{k}={v}" for k, v in line.items()))
    finally:
        redis.stop(kill=True)
        remove_work(work)
    return 0


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
