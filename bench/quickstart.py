"""Quick-start bench: the README's first command replayed many times on the real trainer's landscape.

`swarm run --agents A --budget 30 --minutes M` on a fresh machine: the shipped default config
(its programs as `swarm run` assigns them to A agents, its promotion rules), the backend `auto`
resolves to without an LLM key, no noise history. Each replay is a research-bench swarm
(bench/swarmsim.py: the real Coordinator and ResearchAgent loop, a real redis-server and bare git
repo, simulated runs) on bench/real_landscape.py (a GP fitted to 132 runs of the real trainer,
30 s budget, 1 thread). Time: a round of runs takes --seconds-per-run (default: a run's median
wall time in the real quick start, 2 agents on 2 cores, measured 2026-12-03), after the swarm's
start-up; as in `swarm run --minutes`, no round starts that would end past M minutes. With
--max-experiments N instead, an agent stops once it has run N experiments of its own (the
baseline and the coordinator's jobs are not counted; jobs still queued then are not run).

Prints one line:
  quickstarts=N moved_fraction=X false_moves=N median_minutes=X
moved_fraction: replays whose best moved; false_moves: moves of best to a train.py that is not
truly better than the best it replaced (the landscape's noise-free value); median_minutes: the
swarm's start-up plus the busiest agent's runs times the seconds per run.

The landscape's programs are the shipped ones cut to the six knobs the data measured: the real
`architecture` program also moves MODEL_DIM, HEAD_DIM, LOGIT_CAP and WINDOW_PATTERN, which the
replay cannot (in the real quick start its study spent trials on MODEL_DIM 128 -> 256): the
five real quick starts in the README are the check of this bench.

    PYTHONPATH=. python bench/quickstart.py [--replays 40] [--minutes 8 | --max-experiments 4]
        [--seconds-per-run 48] [--backend TYPE|'{type: optuna, sampler: cmaes}'] [--programs baseline,architecture]
        [--drift SHARE,LAG1[,CROSS]] [--promotion KEY=VALUE]

--drift: the machine's speed drift as bench/drift.py measured it (research.py's --drift);
--promotion: a promotion key over the shipped config's (concurrent=shared, say).
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from agents.messages import Decision, PromotionConfig  # noqa: E402
from agents.program import load_program  # noqa: E402
from bench.signals import remove_work  # noqa: E402
from bench.landscape import Drift  # noqa: E402
from bench.swarmsim import ArmResult, Swarm, history_file, program_specs  # noqa: E402
from coordinator.decide.allocation import AllocationConfig, AllocationSpec  # noqa: E402
from coordinator.run.config import assign_programs, load_config, resolve_backend, resolve_program  # noqa: E402
from coordinator.state.redisd import RedisDaemon  # noqa: E402

AGENTS = 2             # the quick start's --agents: this machine has 2 cores
MINUTES = 8.0          # the quick start's --minutes (README)
# A run's wall time in the real quick start (2 agents on 2 cores, 30 s budget: start-up, training,
# the locked evaluation; median 48 s over the first 8 minutes of `swarm run --agents 2 --budget
# 30`, 2026-12-03), and the swarm's start-up before its first run (Ray, redis, the worktrees).
SECONDS_PER_RUN = 48.0
STARTUP_S = 20.0


def quickstart_plan(agents: int, programs: list[str] | None = None, backend: str | None = None,
                    ) -> tuple[list[str], dict[str, str], PromotionConfig, AllocationConfig]:
    """What `swarm run --agents A` does with the shipped default config and no LLM key: each
    agent's program, each shipped program's backend (as `auto` resolves it: an allocation may move
    an agent to any of them), the promotion rules and the allocation. `programs` / `backend`
    replace the default's (to compare quick starts)."""
    cfg, base = load_config(None)
    if programs is None:
        programs = [cfg.programs[j].label() for j in assign_programs(cfg.programs, agents)]
    entries = {e.label(): (i, e) for i, e in enumerate(cfg.programs)}
    backends = {}
    for name in dict.fromkeys(programs + list(entries)):
        if backend is not None:
            backends[name] = backend
            continue
        i, entry = entries[name]
        prog = load_program(resolve_program(entry, base, "swarm.default.yaml", i), name)
        spec = resolve_backend(entry.backend or cfg.backend, env={}, program=prog, local=True)
        backends[name] = json.dumps(spec)   # a YAML flow mapping: swarmsim.backend_spec reads it
    return programs, backends, cfg.promotion, cfg.allocation


def replay(land, workdir: Path, redis_url: str, seed: int, programs: list[str], backends: dict[str, str],
           cfg: PromotionConfig, max_experiments: int | None, minutes: float | None = None,
           seconds_per_run: float = SECONDS_PER_RUN, drift: Drift | None = None,
           allocation: AllocationConfig | None = None, history: int = 0) -> dict:
    """One quick start: returns moved, false moves, the moves, runs per agent, minutes, and the
    share of runs each program had."""
    home = workdir / f"q{seed}"
    # a fresh machine has no noise history (`history` dof: one that has)
    hist = history_file(home.with_suffix(".history.json"), land, history, random.Random(seed))
    sw = Swarm(home, redis_url, f"quick-{seed}", land, programs, seed, cfg, backends, history=hist,
               drift=drift.at(seed) if drift is not None else None)
    if allocation is not None:   # as swarm run configures it: every shipped program, the agents start on theirs
        sw.coord.configure_allocation(AllocationSpec(
            config=allocation.model_copy(update={"seed": seed}),
            programs=program_specs(land, [n for n in backends if n in land.program_names], backends)))
    res = ArmResult("quickstart")
    while True:
        if minutes is not None and STARTUP_S + (res.rounds + 1) * seconds_per_run > minutes * 60:
            break   # swarm run --minutes: no run is started that would end past the deadline
        active = 0
        for a in sw.agents:
            # swarm run's loop (ResearchAgent.run) stops an agent at N experiments of its own;
            # the round then plays it as one that ended without training
            if max_experiments is not None and a.experiments >= max_experiments:
                a._iteration = lambda: None
            else:
                active += 1
        if not active:
            break
        if sw.round() is None:
            break   # nothing trains any more
        res.rounds += 1
    res.runs = len(sw.log)
    sw.finish(res)
    c = sw.coord
    prev, moves, false = c.root, [], 0
    by_program: Counter = Counter()
    for typ, _id, js in c.ledger.events():
        if typ == "record":
            by_program[json.loads(js)["program"]] += 1
        if typ != "decision":
            continue
        d = Decision.model_validate_json(js)
        if d.best_after and d.best_after != prev:
            old, new = land.true_bpb(c.repo.show(prev)), land.true_bpb(c.repo.show(d.best_after))
            false += new >= old
            moves.append((d.decision, round(old - new, 4)))
            prev = d.best_after
    per_agent = Counter(agent for agent, *_ in sw.log.runs)
    runs_max = max(per_agent.values(), default=0)
    return {"seed": seed, "moved": bool(moves), "false_moves": false, "moves": moves,
            "gain": res.gain, "runs": dict(per_agent), "kinds": res.kinds,
            "programs": dict(by_program), "agent_moves": len(c.allocation.history) if c.allocation else 0,
            # candidates measured better than best whose test had not ended when the time was up
            "pending": sum(1 for d in c.decisions.values() if d.decision == "pending" and (d.delta or 0) > 0),
            "minutes": (STARTUP_S + runs_max * seconds_per_run) / 60.0}


def run(replays: int, max_experiments: int | None = None, agents: int = AGENTS,
        programs: list[str] | None = None, backend: str | None = None, land=None, out=print,
        verbose: bool = False, minutes: float | None = MINUTES,
        seconds_per_run: float = SECONDS_PER_RUN, drift: Drift | None = None, promotion: dict | None = None,
        allocation: dict | None = None, history: int = 0) -> dict:
    if land is None:
        from bench.real_landscape import RealLandscape
        land = RealLandscape()
    programs, backends, cfg, alloc = quickstart_plan(agents, programs, backend)
    if promotion:
        cfg = PromotionConfig(**{**cfg.model_dump(), **promotion})
    if allocation:
        alloc = AllocationConfig(**{**alloc.model_dump(), **allocation})
    missing = [p for p in programs if p not in land.program_names]
    if missing:
        raise SystemExit(f"error: program(s) {', '.join(missing)} move no knob of the landscape")
    work = Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    redis = RedisDaemon(work / "redis", fsync="no").start()
    rows = []
    try:
        for seed in range(replays):
            r = replay(land, work, redis.url, seed, programs, backends, cfg, max_experiments, minutes,
                       seconds_per_run, drift, alloc, history)
            rows.append(r)
            if verbose:
                out(f"  replay {seed}: moves {r['moves']} gain {r['gain']:+.4f} runs {r['runs']} "
                    f"{r['minutes']:.1f} min {r['kinds']} programs {r['programs']} agent moves {r['agent_moves']}")
    finally:
        redis.stop(kill=True)
        remove_work(work)
    n = len(rows)
    summary = {"quickstarts": n, "moved_fraction": sum(r["moved"] for r in rows) / n,
               "false_moves": sum(r["false_moves"] for r in rows),
               "median_minutes": statistics.median(r["minutes"] for r in rows),
               "mean_gain_sigma": statistics.mean(r["gain"] for r in rows) / land.sigma,
               "programs": programs, "backends": backends, "max_experiments": max_experiments,
               "allocation": alloc.model_dump(),
               "minutes": minutes,
               "rows": rows}
    stop = f"--minutes {minutes:g}" if minutes is not None else f"--max-experiments {max_experiments}"
    ran = Counter()
    for r in rows:
        ran.update(r["programs"])
    total = sum(ran.values()) or 1
    out(f"# {agents} agents {programs}, backends {backends}, {stop} ({seconds_per_run:g} s a run); "
        f"allocation {alloc.mode} (min_agents {alloc.min_agents:g}, visits {alloc.visits:g}, dwell_runs "
        f"{alloc.dwell_runs}); noise history {history} dof; mean true gain {summary['mean_gain_sigma']:.1f} "
        f"sigma; runs per agent {statistics.mean(max(r['runs'].values()) for r in rows):.1f} (busiest, mean); "
        "share of runs by program "
        + ", ".join(f"{n} {ran[n] / total:.2f}" for n in sorted(ran, key=ran.get, reverse=True))
        + f"; agent moves {statistics.mean(r['agent_moves'] for r in rows):.1f} a replay; replays ending with a "
          f"candidate measured better than best still pending {sum(1 for r in rows if r['pending'])}")
    out(f"quickstarts={n} moved_fraction={summary['moved_fraction']:.2f} "
        f"false_moves={summary['false_moves']} median_minutes={summary['median_minutes']:.1f}")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replays", type=int, default=40, help="quick starts replayed (seeds 0..N-1)")
    stop = ap.add_mutually_exclusive_group()
    stop.add_argument("--minutes", type=float, default=MINUTES,
                      help=f"the time box of swarm run --minutes (default {MINUTES:g}, the README's)")
    stop.add_argument("--max-experiments", type=int, help="instead: stop each agent after N experiments")
    ap.add_argument("--seconds-per-run", type=float, default=SECONDS_PER_RUN,
                    help=f"a run's wall time (default {SECONDS_PER_RUN:g}: the real quick start's)")
    ap.add_argument("--agents", type=int, default=AGENTS)
    ap.add_argument("--programs", help="comma-separated, one per agent (default: as swarm run assigns them)")
    ap.add_argument("--backend", help="every program's backend (default: what auto picks without an LLM key)")
    ap.add_argument("--drift", metavar="SHARE,LAG1[,CROSS]",
                    help="the machine's speed drift (bench/drift.py measures it)")
    ap.add_argument("--promotion", action="append", default=[], metavar="KEY=VALUE",
                    help="a promotion key over the shipped config's (repeatable)")
    ap.add_argument("--allocation", action="append", default=[], metavar="KEY=VALUE",
                    help="an allocation key over the shipped config's (repeatable): mode=static, visits=0")
    ap.add_argument("--history", type=int, default=0, metavar="DOF",
                    help="a machine with noise history of this many dof (default 0: a fresh one)")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per replay")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        drift = Drift.parse(a.drift) if a.drift else None
    except ValueError as e:
        print(f"error: --drift {a.drift!r}: {e} (SHARE,LAG1 such as 0.89,0.19)", file=sys.stderr)
        return 2
    t0 = time.time()
    run(a.replays, a.max_experiments, a.agents, a.programs.split(",") if a.programs else None, a.backend,
        verbose=a.verbose, minutes=None if a.max_experiments else a.minutes, seconds_per_run=a.seconds_per_run,
        drift=drift, promotion=dict(kv.split("=", 1) for kv in a.promotion),
        allocation=dict(kv.split("=", 1) for kv in a.allocation), history=a.history)
    print(f"[{time.time() - t0:.0f}s]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
