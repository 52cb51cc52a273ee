"""Research bench: does the swarm find a better train.py, sooner, than its agents apart?

Drives the real Coordinator (coordinator/decide/core.py, a real redis-server on 127.0.0.1
with a password, a real bare git repo) and the real ResearchAgent loop (agents/agent.py, with
the `mutate` backend over each program's search space) in this process, with a fake runner on
the synthetic landscape of bench/landscape.py (ten knobs, known true effects, Gaussian noise).

Time is simulated: every run costs one budget. Agents run in rounds: in a round each agent
does one iteration of its loop, all of them start from the same state (the fake runner holds
each one until every agent of the round has started), and their reports reach the coordinator
in a random order drawn from the seed; so a run of the bench is reproducible.

Arms, at an equal number of training runs (baseline, confirm and verify runs included):
  swarm        N agents, several programs, one coordinator, default adopt rules
  independent  N agents sharing nothing (each its own coordinator and best); the best of the
               N is the one whose own best has the lowest measured mean (what a person picks)
  single       one agent on the program that covers every knob, one run at a time
  null         the swarm on the null landscape (every effect zero), its first rounds only

Ends with one line:
  agents=N swarm_gain=X independent_gain=X single_gain=X speedup=X lost_winners=N capture=X
  recall=X false_promotions=X
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; bench/coordinator.py would then
# shadow the coordinator package.
_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from agents.agent import ResearchAgent  # noqa: E402
from agents.backends.base import make_backend  # noqa: E402
from agents.config import AgentConfig  # noqa: E402
from agents.messages import Decision, ExperimentRecord, PromotionConfig  # noqa: E402
from bench.landscape import (Landscape, RunLog, baseline_text, fake_runner,  # noqa: E402
                             program_text, programs_for)
from coordinator.decide.core import Coordinator  # noqa: E402
from coordinator.decide.rules import margin_for, standard_error  # noqa: E402
from coordinator.state.redisd import RedisDaemon  # noqa: E402

HW = "bench-sim"
MOVED = ("promote", "merge", "simplification")
# Decisions that are a recorded reason for a winner not (yet) being on best.
REASONS = ("pending", "did-not-stack", "carried")
TARGET_FRACTION = 0.5  # speed-to-target: true gain of best >= this share of the landscape's maximum


# --- rounds: concurrent iterations in a reproducible order ------------------------------------
class Rounds:
    """Plays rounds of agent iterations. Each agent's iteration runs in its own thread; the
    threads enter the loop one at a time (start order) up to the runner, wait there until all
    of the round have started, then finish (runner result, report, ratchet) one at a time in
    a second random order."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cv = threading.Condition()
        self.n = 0
        self.start_order: list[int] = []
        self.end_order: list[int] = []
        self.start_pos = self.end_pos = 0
        self.ran: set[int] = set()
        self.errors: list[BaseException] = []

    def gate(self, i: int):
        def wait() -> None:
            with self.cv:
                self.ran.add(i)
                self.start_pos += 1
                self.cv.notify_all()
                self.cv.wait_for(self._my_end(i))
        return wait

    def _my_end(self, i: int):
        return lambda: self.start_pos >= self.n and self.end_pos < self.n and self.end_order[self.end_pos] == i

    def play(self, agents: list[ResearchAgent]) -> None:
        self.n = len(agents)
        self.start_order = self.rng.sample(range(self.n), self.n)
        self.end_order = self.rng.sample(range(self.n), self.n)
        self.start_pos = self.end_pos = 0
        self.ran = set()

        def body(i: int) -> None:
            with self.cv:
                self.cv.wait_for(lambda: self.start_pos < self.n and self.start_order[self.start_pos] == i)
            try:
                agents[i]._iteration()
            except BaseException as e:  # a bench bug: surface it after the round
                self.errors.append(e)
            finally:
                with self.cv:
                    if i not in self.ran:  # ended without training: give the start turn on
                        self.start_pos += 1
                        self.cv.notify_all()
                        self.cv.wait_for(self._my_end(i))
                    self.end_pos += 1
                    self.cv.notify_all()

        threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.errors:
            raise RuntimeError(f"agent iteration failed: {self.errors[0]!r}") from self.errors[0]


# --- one arm ---------------------------------------------------------------------------------
@dataclass
class ArmResult:
    arm: str
    runs: int = 0
    rounds: int = 0
    gain: float = float("nan")             # true gain of the final best over the baseline
    measured_best: float = float("nan")    # the coordinator's mean for its final best
    best_trained_gain: float = float("nan")
    runs_to_target: int | None = None
    rounds_to_target: int | None = None
    experiments: int = 0
    moves: int = 0                         # experiments whose final decision moved best
    lost_winners: int = 0
    true_wins: int = 0
    true_wins_reached: int = 0
    decisions: dict = field(default_factory=dict)
    lost: list = field(default_factory=list)

    @property
    def capture(self) -> float:
        return self.gain / self.best_trained_gain if self.best_trained_gain > 0 else float("nan")


def backend_spec(kind: str) -> dict:
    """A --backend value: a type name, or a YAML flow mapping for a spec with options
    (`{type: optuna, sampler: cmaes}`)."""
    if kind.lstrip().startswith("{"):
        import yaml
        return yaml.safe_load(kind)
    return {"type": kind}


class Swarm:
    """One coordinator and its agents in a fresh SWARM_HOME."""

    def __init__(self, home: Path, redis_url: str, swarm_id: str, land: Landscape, programs: list[str],
                 seed: int, cfg: PromotionConfig, backends: dict[str, str], budget: float,
                 adopt: str | None = None):
        # The optuna backend keeps its studies (one per swarm id and program) on this redis, as
        # `swarm run` has its agents do.
        os.environ["SWARM_REDIS_URL"] = redis_url
        self.home, self.land, self.cfg = home, land, cfg
        self.coord = Coordinator(home, redis_url, cfg, swarm_id=swarm_id, baseline_train_py=baseline_text())
        self.log = RunLog()
        self.rounds = Rounds(random.Random(seed * 7919 + 1))
        self.agents: list[ResearchAgent] = []
        for i, prog in enumerate(programs):
            name = f"a{i}"
            kind = backends.get(prog, backends.get("*", "mutate"))
            acfg = AgentConfig(name=name, program_name=prog, program_text=program_text(prog, adopt),
                               backend=backend_spec(kind), seed=seed * 1000 + i, swarm_id=swarm_id,
                               swarm_home=home, hardware_class=HW, budget=budget, recent_n=0,
                               heartbeat_s=1e9)
            rng = random.Random(f"{swarm_id}/{seed}/{name}")
            runner = fake_runner(land, rng, name, self.log, gate=self.rounds.gate(i))
            backend = make_backend(acfg.backend, seed=acfg.seed, agent=name)
            self.agents.append(ResearchAgent(acfg, self.coord, runner=runner, backend=backend,
                                             hardware_class=HW))

    def best(self) -> str:
        return self.coord.repo.ref(f"refs/heads/best/{HW}")

    def gain_now(self) -> float:
        return self.land.gain(self.coord.repo.show(self.best()))

    def play(self, max_runs: int, target: float | None, res: ArmResult) -> None:
        while len(self.log) < max_runs:
            before = len(self.log)
            self.rounds.play(self.agents)
            res.rounds += 1
            if len(self.log) == before:
                break  # nothing trains any more (search spaces exhausted)
            if target is not None and res.rounds_to_target is None and self.gain_now() >= target - 1e-12:
                res.rounds_to_target, res.runs_to_target = res.rounds, len(self.log)
        res.runs = len(self.log)

    def finish(self, res: ArmResult) -> ArmResult:
        c = self.coord
        res.gain = self.gain_now()
        b = c.best(HW)
        res.measured_best = b.val_bpb if b else float("nan")
        res.best_trained_gain = max((self.land.baseline - t for _, _, t, _ in self.log.runs), default=0.0)
        audit(c, self.land, self.cfg, res)
        c.flush_refs()
        return res


def audit(c: Coordinator, land: Landscape, cfg: PromotionConfig, res: ArmResult) -> None:
    """Replay the ledger: for each ok experiment, best and its mean when it was first decided;
    then count lost winners (beat that best by the margin, not on the final best, no recorded
    reason), true wins (truly better than that best by 2 sigma) and how many reached best."""
    repo = c.repo
    final = repo.ref(f"refs/heads/best/{HW}")
    on_best = set(repo.git("rev-list", final).split())
    chain_blobs = {c.commits.blob(x) for x in repo.first_parent_history(final)}
    blob_of: dict[str, str] = {}

    def blob(commit: str) -> str:
        if commit not in blob_of:
            blob_of[commit] = c.commits.blob(commit)
        return blob_of[commit]

    final_dec = dict(c.decisions)
    records: dict[str, ExperimentRecord] = {}
    samples: dict[str, list[float]] = {}
    seen: set[str] = set()
    best = c.root
    sigma = cfg.sigma_prior
    for typ, id, js in c.ledger.events():
        if typ == "record":
            records[id] = ExperimentRecord.model_validate_json(js)
            continue
        if typ != "decision":
            continue
        d = Decision.model_validate_json(js)
        rec = records.get(id)
        if rec is not None and id not in seen and getattr(d, "stage", None) != "sigma":  # a wait: no judgment
            seen.add(id)
            if rec.status == "ok" and d.decision != "rejected" and rec.val_bpb is not None:
                samples.setdefault(blob(rec.commit), []).append(rec.val_bpb)
            if rec.kind == "experiment":
                res.experiments += 1
                fd = final_dec.get(id, d)
                res.decisions[fd.decision] = res.decisions.get(fd.decision, 0) + 1
                if fd.decision in MOVED:
                    res.moves += 1
                if rec.status == "ok" and rec.val_bpb is not None:
                    _judge_audit(rec, d, fd, best, samples.get(blob(best), []), sigma, cfg, land,
                                 on_best, chain_blobs, blob, repo, res)
        if d.sigma:
            sigma = d.sigma
        if d.best_after:
            best = d.best_after


def _judge_audit(rec, d, fd, best, best_samples, sigma, cfg, land, on_best, chain_blobs, blob, repo,
                 res: ArmResult) -> None:
    reached = rec.commit in on_best or blob(rec.commit) in chain_blobs
    # The coordinator's own judgment against best when its decision records one (it does since
    # every result is judged against best: delta, margin, samples of best); else (the code
    # before) what its rule gave against the best of that moment, replayed here.
    if getattr(d, "samples_best", 0) and d.delta is not None and d.margin is not None:
        delta, margin = d.delta, d.margin
    elif best_samples:
        n_b = len(best_samples)
        delta = sum(best_samples) / n_b - rec.val_bpb
        margin = margin_for(cfg, standard_error(sigma, 1, n_b), rec.lines_added - rec.lines_removed)
    else:
        delta = margin = None
    if delta is not None and delta > margin and not reached and fd.decision not in REASONS:
        res.lost_winners += 1
        res.lost.append((rec.experiment_id, round(delta, 4), round(margin, 4), fd.decision, fd.reason[:60]))
    true_best = land.true_bpb(repo.show(best))
    if land.true_bpb(repo.show(rec.commit)) < true_best - 2 * land.sigma:
        res.true_wins += 1
        res.true_wins_reached += reached


# --- the comparison --------------------------------------------------------------------------
@dataclass
class Config:
    agents: int = 8
    runs: int = 320          # training runs per arm (baselines, confirms, verifies included)
    # 12 seeds: with 4, the speed-to-target ratio swung from 4.0 to 7.9 between seed sets
    # (the single agent needs 21 to 125 budgets, the swarm 4 to 14).
    seeds: int = 12
    null_runs: int = 160     # the null swarm's first runs
    null_seeds: int = 12
    budget: float = 300.0    # simulated seconds per run (one unit of wall clock)

    @classmethod
    def quick(cls) -> "Config":
        return cls(agents=8, runs=96, seeds=2, null_runs=96, null_seeds=3)


def run_bench(conf: Config, workdir: Path, redis_url: str, backends: dict[str, str],
              cfg: PromotionConfig | None = None, arms=("swarm", "independent", "single", "null"),
              out=print, adopt: str | None = None) -> dict:
    cfg = cfg or PromotionConfig()
    land, null = Landscape(), Landscape(null=True)
    target = TARGET_FRACTION * land.max_gain
    results: dict[str, list[ArmResult]] = {a: [] for a in arms}
    n = conf.agents
    for seed in range(conf.seeds):
        t0 = time.time()
        runs = conf.runs
        if "swarm" in arms:
            s = Swarm(workdir / f"swarm-{seed}", redis_url, f"swarm-{seed}", land, programs_for(n),
                      seed, cfg, backends, conf.budget, adopt)
            r = ArmResult("swarm")
            s.play(conf.runs, target, r)
            results["swarm"].append(s.finish(r))
            runs = r.runs
        if "independent" in arms:
            picks = []
            for i, prog in enumerate(programs_for(n)):
                s = Swarm(workdir / f"ind-{seed}-{i}", redis_url, f"ind-{seed}-{i}", land, [prog],
                          seed * 100 + i, cfg, backends, conf.budget)
                r = ArmResult("independent")
                s.play(math.ceil(runs / n), None, r)
                picks.append(s.finish(r))
            chosen = min(picks, key=lambda r: r.measured_best)
            agg = ArmResult("independent", runs=sum(p.runs for p in picks), rounds=max(p.rounds for p in picks),
                            gain=chosen.gain, measured_best=chosen.measured_best,
                            best_trained_gain=max(p.best_trained_gain for p in picks))
            for p in picks:
                for k in ("experiments", "moves", "lost_winners", "true_wins", "true_wins_reached"):
                    setattr(agg, k, getattr(agg, k) + getattr(p, k))
            results["independent"].append(agg)
        if "single" in arms:
            s = Swarm(workdir / f"single-{seed}", redis_url, f"single-{seed}", land, ["explore"],
                      seed, cfg, backends, conf.budget)
            r = ArmResult("single")
            s.play(runs, target, r)
            results["single"].append(s.finish(r))
        msg = [f"seed {seed}:"]
        for a in ("swarm", "independent", "single"):
            if a in arms:
                x = results[a][-1]
                msg.append(f"{a} gain {x.gain:.4f} ({x.runs} runs)")
        out("  ".join(msg) + f"  [{time.time() - t0:.0f}s]")
    if "null" in arms:
        for seed in range(conf.null_seeds):
            s = Swarm(workdir / f"null-{seed}", redis_url, f"null-{seed}", null, programs_for(n),
                      1000 + seed, cfg, backends, conf.budget)
            r = ArmResult("null")
            s.play(conf.null_runs, None, r)
            results["null"].append(s.finish(r))
        out(f"null: {sum(r.moves for r in results['null'])} best moves in "
            f"{sum(r.experiments for r in results['null'])} experiments")
    return summarize(conf, land, target, results, out)


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
    out(f"landscape: baseline {land.baseline:.4f}, optimum {land.optimum:.4f} (max gain "
        f"{land.max_gain:.4f}), noise sigma {land.sigma}; target gain {target:.4f}")
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
            decs: dict[str, int] = {}
            for r in results[arm]:
                for k, v in r.decisions.items():
                    decs[k] = decs.get(k, 0) + v
            out(f"{arm} experiment decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(decs.items())))
            for r in results[arm]:
                for lw in r.lost[:3]:
                    out(f"  lost winner: {lw}")
    # Speed-to-target: the single agent's wall clock over the swarm's, per seed; a seed where
    # the single agent never got there counts its whole run (a lower bound on the speedup).
    sp = []
    for sw, si in zip(results.get("swarm", []), results.get("single", [])):
        if sw.rounds_to_target is None:
            sp.append(0.0)
            continue
        t_single = si.rounds_to_target if si.rounds_to_target is not None else si.rounds
        sp.append(t_single / sw.rounds_to_target)
    speedup = _mean(sp) if sp else float("nan")
    if sp:
        # The per-seed ratio swings with the single agent's luck (21 to 125 budgets over 12
        # seeds): its spread, median and the ratio of the mean times say how much to trust it.
        ts = [si.rounds_to_target if si.rounds_to_target is not None else si.rounds
              for si in results.get("single", [])]
        tw = [s.rounds_to_target for s in results.get("swarm", []) if s.rounds_to_target is not None]
        ratio_of_means = _mean(ts) / _mean(tw) if tw else float("nan")
        out(f"speed-to-target per seed (single / swarm wall clock): {' '.join(f'{x:.1f}' for x in sp)}; "
            f"mean {speedup:.2f} ± {statistics.stdev(sp) if len(sp) > 1 else 0.0:.2f}, median "
            f"{statistics.median(sp):.2f}, ratio of mean times {ratio_of_means:.2f}")
    fp = line.get("null", {}).get("moves", float("nan"))
    sw = line.get("swarm", {})
    final = (f"agents={conf.agents} swarm_gain={sw.get('gain', float('nan')):.4f} "
             f"independent_gain={line.get('independent', {}).get('gain', float('nan')):.4f} "
             f"single_gain={line.get('single', {}).get('gain', float('nan')):.4f} "
             f"speedup={speedup:.2f} lost_winners={sw.get('lost', 0)} "
             f"capture={sw.get('capture', float('nan')):.3f} recall={sw.get('recall', float('nan')):.3f} "
             f"false_promotions={fp:.4f}")
    out(final)
    return {"line": final, "speedup": speedup, "false_promotions": fp, "arms": line}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced configuration for CI (a minute or two)")
    ap.add_argument("--agents", type=int)
    ap.add_argument("--runs", type=int, help="training runs per arm")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--null-runs", type=int)
    ap.add_argument("--null-seeds", type=int)
    ap.add_argument("--arms", default="swarm,independent,single,null")
    ap.add_argument("--backend", action="append", default=[], metavar="[PROGRAM=]TYPE",
                    help="proposal backend type, for every program or one (repeatable; default "
                         "mutate); TYPE may be a YAML mapping: '{type: optuna, sampler: cmaes}'")
    ap.add_argument("--adopt", choices=["always", "if-better", "never"],
                    help="the swarm's agents' adopt rule (default: the programs', i.e. if-better)")
    ap.add_argument("--promotion", action="append", default=[], metavar="KEY=VALUE",
                    help="a PromotionConfig key for every coordinator of the bench (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (repos, ledger)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    conf = Config.quick() if a.quick else Config()
    for k in ("agents", "runs", "seeds", "null_runs", "null_seeds"):
        if getattr(a, k) is not None:
            setattr(conf, k, getattr(a, k))
    backends = {}
    for spec in a.backend:
        prog, _, kind = spec.rpartition("=")
        backends[prog or "*"] = kind
    work = Path(tempfile.mkdtemp(prefix="bench-research-"))
    redis = RedisDaemon(work / "redis", fsync="everysec").start()
    t0 = time.time()
    try:
        print(f"research bench: {conf}, backends {backends or {'*': 'mutate'}}")
        promo = PromotionConfig(**dict(kv.split("=", 1) for kv in a.promotion))
        if a.promotion:
            print(f"promotion: {promo}")
        run_bench(conf, work, redis.url, backends, cfg=promo, arms=tuple(a.arms.split(",")), adopt=a.adopt)
        print(f"[{time.time() - t0:.0f}s]", file=sys.stderr)
    finally:
        redis.stop(kill=True)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
