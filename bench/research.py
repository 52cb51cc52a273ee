"""Research bench: does the swarm find a better train.py, sooner, than its agents apart?

Drives the real Coordinator (coordinator/decide/core.py, a real redis-server on 127.0.0.1
with a password, a real bare git repo) and the real ResearchAgent loop (agents/agent.py, with
the `mutate` backend over each program's search space) in this process, with a fake runner on a
landscape (bench/landscape.py: `--landscape bowls`, the synthetic ten knobs, by default; `real`,
bench/real_landscape.py, fitted to the real trainer's measurements). bench/swarmsim.py holds
the simulated swarm.

Time is simulated: every run costs one budget. Agents run in rounds: in a round each agent
does one iteration of its loop, all of them start from the same state (the fake runner holds
each one until every agent of the round has started), and their reports reach the coordinator
in a random order drawn from the seed; so a run of the bench is reproducible.

An agent that stops itself (its program spent, five alike refusals, no other program to take)
plays no more rounds, as in `swarm run`; an arm ends at its runs, or when every agent of it has
stopped (a lone agent's spent program leaves its runs unused: that is the cost of not sharing).

Arms, at an equal number of training runs (baseline, confirm and verify runs included):
  swarm        N agents, several programs, one coordinator, default adopt rules
  independent  N agents sharing nothing but the noise knowledge (each its own coordinator and
               best): the first measures sigma as the swarm does and leaves it in a noise
               history the others start from (so the arm pays the baseline once, as the swarm);
               the best of the N is the one whose own best has the lowest measured mean
  single       one agent on the program that covers every knob, one run at a time
  null         the swarm on the null landscape (every effect zero), its first rounds only
With --history every arm (and the null swarm) starts from a noise history of the hardware class.
--short: the 2-agent, 20-run swarm on a class with history (baseline share, seeds with a move).
--drift SHARE,LAG1[,CROSS]: the machine's speed drift (bench/drift.py measures it): that share of
the run noise is common to the runs of one train.py in one round and carried from round to round
with that lag-1 correlation, CROSS of it (default SHARE) common to runs of different train.py
(bench/landscape.py Drift); the same machine for every arm of a seed.

Ends with one line:
  agents=N swarm_gain=X independent_gain=X single_gain=X speedup=X lost_winners=N capture=X
  recall=X false_promotions=X
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; bench/coordinator.py would then
# shadow the coordinator package.
_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from agents.messages import PromotionConfig  # noqa: E402
from bench.signals import remove_work  # noqa: E402
from bench.landscape import Bowls, Drift, Landscape  # noqa: E402
from bench.ratio import paired_ratio  # noqa: E402
from bench.swarmsim import ArmResult, Swarm, history_file, parse_backends, program_specs  # noqa: E402
from coordinator.decide.allocation import AllocationConfig, AllocationSpec  # noqa: E402
from coordinator.state.redisd import RedisDaemon  # noqa: E402

TARGET_FRACTION = 0.5  # speed-to-target: true gain of best >= this share of the landscape's maximum


class LandscapeMissing(SystemExit):
    """--landscape real before bench/real_landscape.py exists."""


def make_landscape(name: str, null: bool = False) -> Landscape:
    """`bowls` (the synthetic one) or `real` (bench/real_landscape.py's RealLandscape)."""
    if name == "bowls":
        return Bowls(null=null)
    if name == "real":
        try:
            from bench.real_landscape import RealLandscape
        except ImportError as e:
            raise LandscapeMissing(f"--landscape real: bench/real_landscape.py (RealLandscape) is not "
                                   f"available ({e})") from None
        return RealLandscape(null=null)
    raise LandscapeMissing(f"--landscape {name!r}: unknown (bowls or real)")


# --- the comparison --------------------------------------------------------------------------
@dataclass
class Config:
    agents: int = 8
    runs: int = 320          # training runs per arm (baselines, confirms, verifies included)
    # 12 seeds: with 4, the speed-to-target ratio swung from 4.0 to 7.9 between seed sets
    # (the single agent needs 21 to 125 budgets, the swarm 4 to 14).
    seeds: int = 12
    first_seed: int = 0      # seeds first_seed .. first_seed + seeds - 1 (a later set: a holdout)
    null_runs: int = 160     # the null swarm's first runs
    null_seeds: int = 12
    history: int = 0         # every arm starts from a noise history of this many dof (0: none)
    allocation: str = "adaptive"  # the swarm arm's (swarm run's default); independent agents have one program
    drift: Drift | None = None  # the machine's speed drift shared by concurrent runs (None: iid noise)
    stagger: bool = False    # the agents out of step (swarmsim.Staggered), not in lock-step rounds

    def drift_at(self, seed: int) -> Drift | None:
        return self.drift.at(seed) if self.drift is not None else None

    @classmethod
    def quick(cls) -> "Config":
        return cls(agents=8, runs=96, seeds=2, null_runs=96, null_seeds=3)


def _time_to_target(r: ArmResult) -> float:
    """Wall clock to the target in budgets: to the report that reached it where the agents are out
    of step (Staggered: the first round only starts the runs), else to the end of its round; the
    whole run where it never got there."""
    if r.wall_to_report is not None:
        return r.wall_to_report
    return r.rounds_to_target if r.rounds_to_target is not None else r.rounds


def _independent(conf: Config, seed: int, runs: int, workdir: Path, redis_url: str, land: Landscape,
                 cfg: PromotionConfig, backends: dict[str, str]) -> ArmResult:
    """N agents apart, sharing only the noise knowledge (see the module docstring)."""
    n = conf.agents
    hist = history_file(workdir / f"ind-{seed}-history.json", land, conf.history, random.Random(seed))
    picks = []
    for i, prog in enumerate(land.programs_for(n)):
        s = Swarm(workdir / f"ind-{seed}-{i}", redis_url, f"ind-{seed}-{i}", land, [prog],
                  seed * 100 + i, cfg, backends, history=hist, drift=conf.drift_at(seed), stagger=conf.stagger)
        r = ArmResult("independent")
        s.play(math.ceil(runs / n), None, r)
        picks.append(s.finish(r))
    chosen = min(picks, key=lambda r: r.measured_best)
    agg = ArmResult("independent", runs=sum(p.runs for p in picks), rounds=max(p.rounds for p in picks),
                    gain=chosen.gain, measured_best=chosen.measured_best,
                    best_trained_gain=max(p.best_trained_gain for p in picks))
    for p in picks:
        for k in ("experiments", "moves", "lost_winners", "true_wins", "true_wins_reached",
                  "baseline_root", "remeasures"):
            setattr(agg, k, getattr(agg, k) + getattr(p, k))
        for k, v in p.kinds.items():
            agg.kinds[k] = agg.kinds.get(k, 0) + v
    return agg


def run_bench(conf: Config, workdir: Path, redis_url: str, backends: dict[str, str],
              cfg: PromotionConfig | None = None, arms=("swarm", "independent", "single", "null"),
              out=print, adopt: str | None = None, landscape: str = "bowls") -> dict:
    cfg = cfg or PromotionConfig()
    land, null = make_landscape(landscape), make_landscape(landscape, null=True)
    target = TARGET_FRACTION * land.max_gain
    results: dict[str, list[ArmResult]] = {a: [] for a in arms}
    n = conf.agents

    def hist(name: str, seed: int):
        if not conf.history:
            return None
        return history_file(workdir / f"{name}-{seed}-history.json", land, conf.history, random.Random(seed))

    for seed in range(conf.first_seed, conf.first_seed + conf.seeds):
        t0 = time.time()
        runs = conf.runs
        if "swarm" in arms:
            s = Swarm(workdir / f"swarm-{seed}", redis_url, f"swarm-{seed}", land, land.programs_for(n),
                      seed, cfg, backends, adopt, history=hist("swarm", seed), drift=conf.drift_at(seed),
                      stagger=conf.stagger)
            _allocate(s, conf.allocation, seed, backends, adopt)
            r = ArmResult("swarm")
            s.play(conf.runs, target, r)
            results["swarm"].append(s.finish(r))
            runs = r.runs
        if "independent" in arms:
            results["independent"].append(_independent(conf, seed, runs, workdir, redis_url, land, cfg, backends))
        if "single" in arms:
            s = Swarm(workdir / f"single-{seed}", redis_url, f"single-{seed}", land, [land.single_program],
                      seed, cfg, backends, history=hist("single", seed), drift=conf.drift_at(seed),
                      stagger=conf.stagger)
            r = ArmResult("single")
            s.play(runs, target, r)
            results["single"].append(s.finish(r))
        msg = [f"seed {seed}:"]
        for a in ("swarm", "independent", "single"):
            if a in arms:
                x = results[a][-1]
                msg.append(f"{a} gain {x.gain:.4f} ({x.runs} runs" + (
                    f", target at {x.runs_to_target})" if x.runs_to_target is not None else ")"))
        out("  ".join(msg) + f"  [{time.time() - t0:.0f}s]")
    if "null" in arms:
        for seed in range(conf.first_seed, conf.first_seed + conf.null_seeds):
            s = Swarm(workdir / f"null-{seed}", redis_url, f"null-{seed}", null, null.programs_for(n),
                      1000 + seed, cfg, backends, history=hist("null", 1000 + seed),
                      drift=conf.drift_at(1000 + seed), stagger=conf.stagger)
            _allocate(s, conf.allocation, 1000 + seed, backends, None)
            r = ArmResult("null")
            s.play(conf.null_runs, None, r)
            results["null"].append(s.finish(r))
        out(f"null: {sum(r.moves for r in results['null'])} best moves in "
            f"{sum(r.experiments for r in results['null'])} experiments")
    return summarize(conf, land, target, results, out)


def _allocate(s: Swarm, mode: str, seed: int, backends: dict[str, str], adopt: str | None) -> None:
    """The swarm's programs under the allocation `swarm run` configures (its defaults, `mode`):
    adaptive, an agent whose backend refused its program (mutate: every nearby state tried)
    moves to another instead of stopping, and agents follow the programs that move best."""
    names = sorted(set(a.program.name for a in s.agents))
    s.coord.configure_allocation(AllocationSpec(config=AllocationConfig(mode=mode, seed=seed),
                                                programs=program_specs(s.land, names, backends, adopt)))


def run_short(seeds: int, workdir: Path, redis_url: str, backends: dict[str, str], cfg: PromotionConfig,
              landscape: str = "bowls", agents: int = 2, runs: int = 20, history: int = 24, out=print,
              drift: Drift | None = None, allocation: str = "adaptive") -> dict:
    """The short swarm a user starts on a class with noise history: baseline share and how
    many seeds see best move."""
    land = make_landscape(landscape)
    rs = []
    for seed in range(seeds):
        spec = history_file(workdir / f"short-{seed}-history.json", land, history, random.Random(seed))
        s = Swarm(workdir / f"short-{seed}", redis_url, f"short-{seed}", land, land.programs_for(agents),
                  seed, cfg, backends, history=spec, drift=drift.at(seed) if drift else None)
        _allocate(s, allocation, seed, backends, None)
        r = ArmResult("short")
        s.play(runs, None, r)
        rs.append(s.finish(r))
    moved = sum(1 for r in rs if r.moves)
    share = sum(r.baseline_root for r in rs) / max(1, sum(r.runs for r in rs))
    remeasure = sum(r.remeasures for r in rs) / max(1, sum(r.runs for r in rs))
    firsts = [r.first_move_run for r in rs if r.first_move_run is not None]
    out(f"short swarm ({agents} agents, {runs} runs, noise history of {history} dof, {landscape}): best moved "
        f"in {moved} of {seeds} seeds (first move at run {min(firsts, default=0)}-{max(firsts, default=0)}); "
        f"baseline share {share:.1%} (root), re-measures of a new best {remeasure:.1%}; true gain "
        f"{_ms([r.gain for r in rs])}")
    return {"moved": moved, "seeds": seeds, "baseline_share": share, "remeasure_share": remeasure, "results": rs}


def _ms(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.mean(xs) if xs else float("nan")


def summarize(conf: Config, land: Landscape, target: float, results: dict, out=print) -> dict:
    out("")
    out(f"landscape {type(land).__name__}: baseline {land.baseline:.4f}, optimum {land.optimum:.4f} (max gain "
        f"{land.max_gain:.4f}), noise sigma {land.sigma}; target gain {target:.4f}"
        + (f"; noise history {conf.history} dof" if conf.history else ""))
    out(f"{'arm':<12} {'runs':>5} {'exps':>5} {'true gain (mean ± sd)':>22} {'capture':>8} "
        f"{'to target':>16} {'lost':>5} {'recall':>7} {'moves/exp':>10}")
    line = {}
    for arm, rs in results.items():
        if not rs:
            continue
        runs = _mean([r.runs for r in rs])
        gain = _ms([r.gain for r in rs])
        cap = _mean([r.capture for r in rs])
        hit = [r for r in rs if r.rounds_to_target is not None]
        if arm in ("swarm", "single"):
            tt = (f"{_mean([r.runs_to_target for r in hit]):.0f}r/{_mean([r.rounds_to_target for r in hit]):.0f}t"
                  f" {len(hit)}/{len(rs)}") if hit else f"never 0/{len(rs)}"
        else:
            tt = "-"
        lost = sum(r.lost_winners for r in rs)
        tw = sum(r.true_wins for r in rs)
        rec = sum(r.true_wins_reached for r in rs) / tw if tw else float("nan")
        exps = sum(r.experiments for r in rs)
        mv = sum(r.moves for r in rs) / exps if exps else float("nan")
        out(f"{arm:<12} {runs:>5.0f} {exps / len(rs):>5.0f} {gain:>22} {cap:>8.3f} {tt:>16} {lost:>5} "
            f"{rec:>7.3f} {mv:>10.4f}")
        line[arm] = dict(gain=_mean([r.gain for r in rs]), capture=cap, lost=lost, recall=rec, moves=mv,
                         results=rs)
    out("  (to target: mean runs r / wall-clock t in budgets, over the seeds that reached it)")
    for arm in ("swarm",):
        if arm in results:
            decs = sum((Counter(r.decisions) for r in results[arm]), Counter())
            out(f"{arm} experiment decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(decs.items())))
            missed = sum((Counter(r.true_missed) for r in results[arm]), Counter())
            out(f"{arm} true wins (2 sigma better than best when judged) not on the final best, by final "
                f"decision: " + (", ".join(f"{k} {v}" for k, v in sorted(missed.items())) or "none"))
            for r in results[arm]:
                for lw in r.lost[:3]:
                    out(f"  lost winner: {lw}")
    # Per arm: the share of runs that trained an unchanged root (the start-up tax: sigma and
    # best's first mean) and an unchanged later best (its re-measures and the samples of it a
    # sequential test asked for).
    for arm, rs in results.items():
        if rs:
            total = max(1, sum(r.runs for r in rs))
            firsts = [r.first_move_run for r in rs if r.first_move_run is not None]
            kinds: dict[str, int] = {}
            for r in rs:
                for k, v in r.kinds.items():
                    kinds[k] = kinds.get(k, 0) + v
            out(f"{arm:<12} baseline share {sum(r.baseline_root for r in rs) / total:6.1%} (root), "
                f"{sum(r.remeasures for r in rs) / total:6.1%} (re-measures of a new best); best first "
                f"moved after {_mean(firsts):.1f} runs in {len(firsts)}/{len(rs)} seeds; runs: "
                + ", ".join(f"{k} {v / len(rs):.1f}" for k, v in sorted(kinds.items())))
    # Speed-to-target: the ratio of the mean wall-clock times (in budgets) of the single agent
    # and the swarm to half the maximum gain; a seed where an arm never got there counts its
    # whole run (for the single agent a lower bound on the speedup, for the swarm an upper one:
    # both said). Per seed the ratio swings with the single agent's luck (21 to 125 budgets).
    sw_rs, si_rs = results.get("swarm", []), results.get("single", [])
    speedup = runs_ratio = report_ratio = float("nan")
    if sw_rs and si_rs:
        ts = [_time_to_target(si) for si in si_rs]
        tw = [_time_to_target(s) for s in sw_rs]
        speedup_ci = paired_ratio(ts, tw)
        speedup = speedup_ci.value
        per_seed = [a / b for a, b in zip(ts, tw)]
        rs_w = [s.runs_to_target if s.runs_to_target is not None else s.runs for s in sw_rs]
        rs_i = [si.runs_to_target if si.runs_to_target is not None else si.runs for si in si_rs]
        runs_ci = paired_ratio(rs_w, rs_i)
        runs_ratio = runs_ci.value
        # The same, counting the runs of the round that reached the target only up to the report
        # that reached it (the rest of the round ended at the same simulated time, after it).
        rp_w = [s.runs_to_report if s.runs_to_report is not None else s.runs for s in sw_rs]
        rp_i = [si.runs_to_report if si.runs_to_report is not None else si.runs for si in si_rs]
        report_ratio = _mean(rp_w) / _mean(rp_i)
        out(f"speed-to-target (single / swarm wall clock): ratio of mean times {speedup_ci} "
            f"(target {0.85 * conf.agents:.2f}); per seed {' '.join(f'{x:.1f}' for x in per_seed)}, median "
            f"{statistics.median(per_seed):.2f}; runs to target swarm {_mean(rs_w):.1f} / single "
            f"{_mean(rs_i):.1f} = {runs_ci} (target <= 1.1); to the report that reached it "
            f"{_mean(rp_w):.1f} / {_mean(rp_i):.1f} = {report_ratio:.2f}")
        # Where the runs to the target went, per arm (mean over the seeds that reached it).
        for arm, rs in (("swarm", sw_rs), ("single", si_rs)):
            hit = [r for r in rs if r.rounds_to_target is not None]
            kinds = sorted({k for r in hit for k in r.kinds_to_target})
            out(f"  {arm} runs to target by kind: " + ", ".join(
                f"{k} {_mean([r.kinds_to_target.get(k, 0) for r in hit]):.1f}" for k in kinds)
                + f" (experiments whose best moved while they trained or waited: "
                  f"{_mean([r.stale_to_target for r in hit]):.1f})")
    fp = line.get("null", {}).get("moves", float("nan"))
    sw = line.get("swarm", {})
    final = (f"agents={conf.agents} swarm_gain={sw.get('gain', float('nan')):.4f} "
             f"independent_gain={line.get('independent', {}).get('gain', float('nan')):.4f} "
             f"single_gain={line.get('single', {}).get('gain', float('nan')):.4f} "
             f"speedup={speedup:.2f} lost_winners={sw.get('lost', 0)} "
             f"capture={sw.get('capture', float('nan')):.3f} recall={sw.get('recall', float('nan')):.3f} "
             f"false_promotions={fp:.4f}")
    out(final)
    return {"line": final, "speedup": speedup, "runs_ratio": runs_ratio, "report_ratio": report_ratio,
            "false_promotions": fp, "arms": line}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced configuration for CI (a minute or two)")
    ap.add_argument("--agents", type=int)
    ap.add_argument("--runs", type=int, help="training runs per arm")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--first-seed", type=int, help="the first seed (default 0): a later set of seeds, "
                    "as a holdout for what was measured on the first ones")
    ap.add_argument("--null-runs", type=int)
    ap.add_argument("--null-seeds", type=int)
    ap.add_argument("--arms", default="swarm,independent,single,null")
    ap.add_argument("--backend", action="append", default=[], metavar="[PROGRAM=]TYPE",
                    help="proposal backend type, for every program or one (repeatable; default "
                         "mutate); TYPE may be a YAML mapping: '{type: optuna, sampler: cmaes}'; auto: "
                         "what swarm run picks on one node without an LLM key (optuna where Optuna can "
                         "express the program's space, else mutate; a key in the environment is ignored)")
    ap.add_argument("--adopt", choices=["always", "if-better", "never"],
                    help="the swarm's agents' adopt rule (default: the programs', i.e. if-better)")
    ap.add_argument("--promotion", action="append", default=[], metavar="KEY=VALUE",
                    help="a PromotionConfig key for every coordinator of the bench (repeatable)")
    ap.add_argument("--landscape", default="bowls", choices=["bowls", "real"],
                    help="bowls: the synthetic ten knobs; real: fitted to the real trainer (bench/real_landscape.py)")
    ap.add_argument("--history", type=int, metavar="DOF",
                    help="every arm starts from a noise history of this many degrees of freedom")
    ap.add_argument("--short", action="store_true",
                    help="only the 2-agent, 20-run swarm on a class with noise history (12 seeds)")
    ap.add_argument("--drift", metavar="SHARE,LAG1[,CROSS]", default=None,
                    help="the machine's speed drift: the share of the run noise that one round's runs have "
                         "in common, its lag-1 correlation from round to round (bench/drift.py measures both), and "
                         "the share runs of different code have in common (default SHARE)")
    ap.add_argument("--allocation", choices=["static", "adaptive"],
                    help="the swarm's (and the null and short swarms') allocation (default adaptive, as swarm run)")
    ap.add_argument("--stagger", action="store_true", help="the agents out of step (each ends its runs a "
                    "fraction of a budget after the one before it), not in lock-step rounds: every proposal "
                    "sees every report that ended before it (bench/swarmsim.py, Staggered)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (repos, ledger)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    conf = Config.quick() if a.quick else Config()
    conf.stagger = a.stagger
    for k in ("agents", "runs", "seeds", "first_seed", "null_runs", "null_seeds", "history", "allocation"):
        if getattr(a, k) is not None:
            setattr(conf, k, getattr(a, k))
    try:
        make_landscape(a.landscape)
        if a.drift:
            conf.drift = Drift.parse(a.drift)
    except ValueError as e:
        print(f"error: --drift {a.drift!r}: {e} (SHARE,LAG1 such as 0.6,0.5)", file=sys.stderr)
        return 2
    except LandscapeMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    backends = parse_backends(a.backend)
    work = Path(tempfile.mkdtemp(prefix="bench-research-"))
    redis = RedisDaemon(work / "redis", fsync="everysec").start()
    t0 = time.time()
    try:
        print(f"research bench: {conf}, backends {backends or {'*': 'mutate'}}")
        promo = PromotionConfig(**dict(kv.split("=", 1) for kv in a.promotion))
        if a.promotion:
            print(f"promotion: {promo}")
        if a.short:
            run_short(a.seeds or 12, work, redis.url, backends, promo, a.landscape, agents=a.agents or 2,
                      runs=a.runs or 20, history=conf.history or promo.history_dof_max, drift=conf.drift,
                      allocation=conf.allocation)
        else:
            run_bench(conf, work, redis.url, backends, cfg=promo, arms=tuple(a.arms.split(",")),
                      adopt=a.adopt, landscape=a.landscape)
        print(f"[{time.time() - t0:.0f}s]", file=sys.stderr)
    finally:
        redis.stop(kill=True)
        if not a.keep:
            remove_work(work)
        else:
            print(f"work folder kept: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
