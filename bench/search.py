"""Search bench: `mutate` and the `optuna` backend (TPE, CMA-ES; from best, and the old
`start: anywhere`) side by side at equal runs.

8 simulated agents work concurrently (runs overlap in time, so a trial is proposed while
others are in flight) on the real baseline train.py and the real `baseline` program's search
space; a synthetic landscape gives each train.py a true val_bpb, measured with Gaussian noise:
`bowls` (the optimum far from the baseline, noise 0.003), `tuned` (the baseline two steps
from its optimum and most of the space much worse; noise 0.011) or `real` (bench/real_landscape.py,
a GP fitted to 132 runs of the real trainer, the `baseline` program cut to its six measured
knobs; noise 0.0164).
The backends are the real ones (optuna's study in a real redis-server, as in a swarm) and see
what a ResearchAgent gives them: a ProposalContext on the current best, then `observe` of every
record the agent ran. The coordinator's rule is the real one (coordinator.decide.rules.judge):
a first round of baselines, re-measures of each new best, confirmation runs for results inside
the margin, and results whose parent is no longer best merged onto best and verified. Every
run counts against the budget.

Prints, per method: the true val_bpb of the final best (mean over seeds), the runs it took
to reach mutate's final best (the target), and how much worse than its parent an experiment
truly was; writes bench/results/search.json.

    PYTHONPATH=. python bench/search.py --seeds 10 --runs 96 [--landscape tuned|real] [--at 48]
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from agents.backends.base import ProposalContext, make_backend  # noqa: E402
from agents.backends.mutate import find_constants  # noqa: E402
from agents.backends.optuna import OptunaBackend, OptunaSpec  # noqa: E402
from agents.errors import InvalidEdit  # noqa: E402
from agents.messages import ExperimentRecord, PromotionConfig  # noqa: E402
from agents.program import load_program  # noqa: E402
from bench.signals import remove_work  # noqa: E402
from coordinator.decide.rules import NoisePool, Samples, judge  # noqa: E402
from coordinator.run.config import shipped_programs_dir  # noqa: E402
from coordinator.state.redisd import RedisDaemon  # noqa: E402

HW = "cpu-bench-1t"           # the cpu branch of every `A if CUDA else B` switch is the live one
SIGMA = 0.003                 # val_bpb noise of one run
LIMITS = dict(max_edit_bytes=20_000, max_file_bytes=200_000)
METHODS = {
    "mutate": {"type": "mutate"},
    "optuna-tpe": {"type": "optuna", "sampler": "tpe"},
    "optuna-cmaes": {"type": "optuna", "sampler": "cmaes"},
    # the old optuna: the sampler's own points over the whole space
    "optuna-tpe-anywhere": {"type": "optuna", "sampler": "tpe", "start": "anywhere"},
    "optuna-cmaes-anywhere": {"type": "optuna", "sampler": "cmaes", "start": "anywhere"},
}


def baseline_source() -> str:
    import importlib.resources
    return (importlib.resources.files("trainer") / "baseline" / "train.py").read_text()


def values(source: str) -> dict:
    return {n: (c.values[-1]) for n, c in find_constants(source).items()}


def true_bpb(source: str) -> float | None:
    """The landscape: bowls in log space around a tuned point away from the baseline, one
    interaction (a deeper model wants a lower matrix LR), and a divergence region (crash)."""
    v = values(source)
    lr, depth = v["MATRIX_LR"], v["DEPTH"]
    if lr > 0.12 and depth >= 9:
        return None                                      # diverges: a crash
    x = math.log(lr / 0.045) + 0.15 * (depth - 6)
    return (1.50 + 0.040 * x ** 2
            + 0.020 * math.log(v["EMBED_LR"] / 0.6) ** 2
            + 0.030 * math.log(v["UNEMBED_LR"] / 0.003) ** 2
            + 0.100 * (v["WEIGHT_DECAY"] - 0.12) ** 2
            + 0.006 * (depth - 7) ** 2
            + 0.050 * (v["WARMDOWN_FRAC"] - 0.7) ** 2)


# The tuned landscape: the baseline sits near its optimum, as the real trainer's does (tried as a
# new user would, 8 wide optuna trials were all 0.03-0.42 bpb worse than it, with sigma about
# 0.011). Bowls in the program's own steps: the optimum is two MATRIX_LR steps and one
# WARMDOWN_FRAC step from the baseline (0.027 better, about 2.5 sigma); 3-8 steps away in
# several constants costs 0.03-0.4.
TUNED_OPT = {"MATRIX_LR": 0.02 * 1.3 ** 2, "EMBED_LR": 0.3, "UNEMBED_LR": 0.008, "WEIGHT_DECAY": 0.0,
             "DEPTH": 4, "WARMDOWN_FRAC": 0.6}
TUNED_COST = {"MATRIX_LR": 0.006, "EMBED_LR": 0.003, "UNEMBED_LR": 0.004, "WEIGHT_DECAY": 0.002,
              "DEPTH": 0.008, "WARMDOWN_FRAC": 0.003}   # bpb for one step away, squared in steps
TUNED_STEP = {"MATRIX_LR": ("log", 1.3), "EMBED_LR": ("log", 1.4), "UNEMBED_LR": ("log", 1.4),
              "WEIGHT_DECAY": ("add", 0.05), "DEPTH": ("add", 1), "WARMDOWN_FRAC": ("add", 0.1)}


def tuned_bpb(source: str) -> float | None:
    v = values(source)
    if v["MATRIX_LR"] > 0.12 and v["DEPTH"] >= 9:
        return None                                      # diverges: a crash
    total = 2.40
    for n, (kind, step) in TUNED_STEP.items():
        s = (math.log(v[n] / TUNED_OPT[n]) / math.log(step)) if kind == "log" else (v[n] - TUNED_OPT[n]) / step
        total += TUNED_COST[n] * s * s
    return total


LANDSCAPES = {"bowls": (true_bpb, SIGMA, 1.5), "tuned": (tuned_bpb, 0.011, 2.40), "real": None}


def landscape(name: str) -> tuple:
    """(true val_bpb of a train.py or None for a crash, sigma, optimum, program) of a landscape.
    `real`: bench/real_landscape.py, the GP fitted to the real trainer's runs (the `baseline`
    program cut to its six measured knobs; ~9 s to fit, so built only when asked for)."""
    program = load_program(shipped_programs_dir() / "baseline.md")
    if LANDSCAPES[name] is not None:
        return (*LANDSCAPES[name], program)
    from agents.program import parse_program
    from bench.real_landscape import RealLandscape

    land = RealLandscape()

    def real_bpb(source: str) -> float | None:
        return None if land.crashes(source) else land.true_bpb(source)

    return real_bpb, land.sigma, land.optimum, parse_program(land.program_text("baseline"), "baseline")


def merge(parent: str, cand: str, best: str) -> str:
    """The candidate's constant changes (against its parent) applied onto best."""
    pv, cv = find_constants(parent), find_constants(cand)
    lines = best.split("\n")
    bc = find_constants(best)
    for n, c in cv.items():
        if n in pv and pv[n].values != c.values and n in bc:
            b = bc[n]
            lines[b.line] = lines[b.line][:b.col] + c.render(c.values) + lines[b.line][b.end_col:]
    return "\n".join(lines)


class Sim:
    """One swarm: n agents, one backend type, a run budget; returns the best's true value
    after each finished run."""

    def __init__(self, method: str, seed: int, n_agents: int, runs: int, client, program,
                 land: tuple = LANDSCAPES["bowls"]):
        self.rng = random.Random(seed)
        self.true_bpb, self.sigma = land[0], land[1]
        self.excess: list[float] = []        # each experiment's true val_bpb minus its parent's
        self.program, self.runs, self.n = program, runs, n_agents
        self.cfg = PromotionConfig()
        self.root = baseline_source()
        self.best, self.samples, self.pool = self.root, {}, NoisePool()
        self.history: set[str] = set()       # older bests
        self.jobs: list[tuple] = [("baseline", self.root, self.root, None)] * n_agents
        spec = METHODS[method]
        self.backends = []
        for i in range(n_agents):
            if spec["type"] == "optuna":
                b = OptunaBackend(OptunaSpec.model_validate(spec), seed=seed * 100 + i, agent=f"a{i}",
                                  client=client, swarm_id=f"bench-{method}-{seed}", hardware_class=HW)
            else:
                b = make_backend(spec, seed=seed * 100 + i, agent=f"a{i}")
            self.backends.append(b)
        self.trace: list[float] = []
        self.counts = {"experiment": 0, "baseline": 0, "confirm": 0, "verify": 0, "crash": 0,
                       "invalid": 0, "promote": 0}

    def _s(self, src: str) -> Samples:
        return self.samples.setdefault(src, Samples())

    def _start(self, i: int) -> tuple | None:
        if self.jobs:
            kind, src, parent, cand = self.jobs.pop(0)
            return kind, src, parent, cand, None
        ctx = ProposalContext(program=self.program, source=self.best, base_commit=str(hash(self.best)),
                              agent=f"a{i}", seed=i)
        p = self.backends[i].propose(ctx)
        try:
            new, desc = p.resolve(self.best, **LIMITS)
        except InvalidEdit as e:
            self.counts["invalid"] += 1
            self._observe(i, "experiment", None, self.best, p.description or "", "invalid", None, str(e))
            return None
        return "experiment", new, self.best, None, desc

    def _observe(self, i, kind, src, parent, desc, status, val, reason=None):
        b = self.backends[i]
        if not hasattr(b, "observe"):
            return
        rec = ExperimentRecord(experiment_id=f"e{len(self.trace)}-{i}", swarm_id="bench", kind=kind,
                               agent=f"a{i}", program=self.program.name, hardware_class=HW,
                               parent=str(hash(parent)), commit=None if src is None else str(hash(src)),
                               description=desc or kind, status=status, val_bpb=val, reason=reason)
        b.observe(rec, src)

    def _finish(self, i: int, run: tuple) -> None:
        kind, src, parent, cand, desc = run
        self.counts[kind] += 1
        t = self.true_bpb(src)
        if t is None:
            self.counts["crash"] += 1
            self._observe(i, kind, src, parent, desc, "crash", None, "diverged")
            return
        if kind == "experiment":
            self.excess.append(t - self.true_bpb(parent))
        val = t + self.rng.gauss(0, self.sigma)
        self._observe(i, kind, src, parent, desc, "ok", val)
        self.pool.add(self._s(src), val)
        if kind == "baseline":
            return
        if kind == "verify" and parent != self.best:
            return          # best moved while it ran (the coordinator merges again; rare here)
        self._judge(src, parent)

    def _judge(self, src: str, parent: str) -> None:
        """coordinator.decide.core's rule: against best when the parent is best; against its
        parent when that is an older best, and then merged onto best and verified."""
        sigma = self.pool.sigma(self.cfg.sigma_prior)
        if parent != self.best and parent not in self.history:
            return
        v = judge(self.cfg, self._s(src), self._s(parent), sigma, net_added=0, allow_simplify=False)
        if v.decision == "pending":
            self.jobs.append(("confirm", src, parent, None))
        elif v.decision != "promote":
            return
        elif parent == self.best:
            self.history.add(self.best)
            self.best = src
            self.counts["promote"] += 1
            # the coordinator re-measures each new best first (best_remeasures, top priority)
            self.jobs[:0] = [("baseline", src, src, None)] * self.cfg.best_remeasures
        else:
            merged = merge(parent, src, self.best)
            if merged != self.best:
                self.jobs.append(("verify", merged, self.best, None))

    def run(self) -> list[float]:
        events = []
        for i in range(self.n):
            heapq.heappush(events, (self.rng.uniform(0, 0.1), i, None))
        done = 0
        while done < self.runs:
            t, i, run = heapq.heappop(events)
            if run is not None:
                self._finish(i, run)
                done += 1
                self.trace.append(self.true_bpb(self.best))
            nxt = None
            while nxt is None:
                nxt = self._start(i)
            heapq.heappush(events, (t + self.rng.uniform(0.8, 1.2), i, nxt))
        return self.trace


def runs_to(trace: list[float], target: float) -> int | None:
    return next((k + 1 for k, v in enumerate(trace) if v <= target + 1e-12), None)


def _quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4f}"


def summarize(traces: dict, excess: dict, extra: dict, runs: int, base: float) -> list[dict]:
    """Per method, the swarms' state after `runs` runs (a prefix of each trace: a swarm's first
    R runs do not depend on how many it goes on to do). The target: mutate's mean final best."""
    cut = {m: [tr[:runs] for tr in trs] for m, trs in traces.items()}
    target = statistics.mean(tr[-1] for tr in cut["mutate"]) if "mutate" in cut else None
    rows = []
    for method, trs in cut.items():
        finals = [tr[-1] for tr in trs]
        rtt = [runs_to(tr, target) for tr in trs] if target is not None else []
        reached = [r for r in rtt if r is not None]
        med = statistics.median([r if r is not None else math.inf for r in rtt]) if rtt else None
        mean_trace = [statistics.mean(tr[k] for tr in trs) for k in range(runs)]
        rows.append({"method": method, "runs": runs, "target": target, "final_mean": statistics.mean(finals),
                     "moved": sum(f < base - 1e-12 for f in finals),
                     "mean_curve_runs_to_target": runs_to(mean_trace, target) if target else None,
                     "mean_curve": [round(mean_trace[k - 1], 4) for k in
                                    (runs // 4, runs // 2, 3 * runs // 4, runs)],
                     "final_sd": statistics.pstdev(finals), "finals": finals, "runs_to_target": rtt,
                     "median_runs_to_target": med, "reached": f"{len(reached)}/{len(rtt)}",
                     "share_of_runs": (med / runs) if med is not None else None,
                     "excess_median": statistics.median(excess[method]) if excess[method] else None,
                     "excess_p90": _quantile(excess[method], 0.9),
                     "counts": extra[method]})
    return rows


def print_table(rows: list[dict], base: float, sigma: float) -> None:
    q = rows[0]["runs"]
    print(f"\nafter {q} runs; target = mutate's mean final best "
          f"{'-' if rows[0]['target'] is None else round(rows[0]['target'], 4)}")
    print("| method | final best, true val_bpb (mean ± sd) | gain in sigma | seeds that moved best | "
          "runs to target (median over seeds) | reached | mean best after "
          + "/".join(str(q * k // 4) for k in (1, 2, 3, 4)) + " runs | experiment over its parent, "
          "true (median / p90) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        med = r["median_runs_to_target"]
        med_s = "never" if med in (None, math.inf) else f"{med:g}"
        print(f"| {r['method']} | {r['final_mean']:.4f} ± {r['final_sd']:.4f} | "
              f"{(base - r['final_mean']) / sigma:.1f} | {r['moved']}/{len(r['finals'])} | {med_s} | "
              f"{r['reached']} | {' / '.join(f'{x:.4f}' for x in r['mean_curve'])} | "
              f"{_signed(r['excess_median'])} / {_signed(r['excess_p90'])} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=120, help="runs per swarm, every kind counted")
    ap.add_argument("--at", default="", help="also the table after these runs (e.g. 96: one swarm "
                    "of --runs runs gives its state at every earlier run count)")
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--landscape", choices=sorted(LANDSCAPES), default="bowls",
                    help="bowls: the optimum far from the baseline; tuned: the baseline near it; "
                    "real: fitted to the real trainer's runs (bench/real_landscape.py)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "search.json"))
    args = ap.parse_args(argv)
    land = landscape(args.landscape)
    true_bpb_of, sigma, optimum, program = land
    tmp = Path(tempfile.mkdtemp(prefix="search-bench-"))
    daemon = RedisDaemon(tmp / "redis", fsync="no").start()
    client = redis.Redis.from_url(daemon.url)
    traces: dict[str, list[list[float]]] = {}
    extra: dict[str, list[dict]] = {}
    excess: dict[str, list[float]] = {}
    try:
        for method in args.methods.split(","):
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                sim = Sim(method, seed, args.agents, args.runs, client, program, land)
                traces.setdefault(method, []).append(sim.run())
                extra.setdefault(method, []).append({**sim.counts, "seconds": time.perf_counter() - t0})
                excess.setdefault(method, []).extend(sim.excess)
                print(f"{method:13s} seed {seed}: final {sim.trace[-1]:.4f} {sim.counts}", flush=True)
    finally:
        client.close()
        daemon.stop()
        remove_work(tmp)   # its redis folder (every run left one in /tmp)
    base = true_bpb_of(baseline_source())
    print(f"\n{args.landscape} landscape, {args.agents} agents, {args.seeds} seeds; noise sigma "
          f"{sigma:.4f}; baseline true val_bpb {base:.4f}, optimum {optimum:.4f}")
    checkpoints = sorted({int(x) for x in args.at.split(",") if x.strip() and int(x) < args.runs} | {args.runs})
    tables = {k: summarize(traces, excess, extra, k, base) for k in checkpoints}
    for k in checkpoints:
        print_table(tables[k], base, sigma)
    rows = tables[args.runs]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    traces = {m: [[round(x, 4) for x in tr] for tr in trs] for m, trs in traces.items()}
    out.write_text(json.dumps({"landscape": args.landscape, "agents": args.agents, "runs": args.runs,
                               "seeds": args.seeds, "sigma": sigma, "baseline": base,
                               "target": rows[0]["target"], "rows": rows,
                               "at": {k: tables[k] for k in checkpoints if k != args.runs},
                               "traces": traces}, separators=(",", ":"), default=str) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
