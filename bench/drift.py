"""Measure the machine's speed drift as a swarm meets it: rounds of concurrent real runs of the
unchanged baseline (the real runner: sandbox, clock, evaluator), one process per run, as the
agents of a swarm run side by side. Appends one JSON line per run to a data file and prints
what the coordinator's comparisons depend on:

    python bench/drift.py [--rounds 12] [--width 2] [--budget 30] [--threads 1]
        [--out bench/data/real-cpu-b30-t1.drift.jsonl]
    python bench/drift.py --analyse [--out ...]     # the figures only, from the file
    python bench/drift.py --partner DEPTH=3 [...]   # the last slot trains other code: a candidate
                                                    # beside best (out: ...drift-DEPTH-3.jsonl)

  shared     the share of the variance of log(steps) that the runs of one round have in common
             (one-way ANOVA over rounds): the drift that concurrent runs share
  lag1       the autocorrelation of the round means of log(steps) from one round to the next
  slope      val_bpb against log(steps) within the unchanged code (bpb per unit of log steps)
  sigma      the runs' val_bpb std (each code's about its own mean); `sigma_steps` what is left
             once val_bpb is corrected by the run's own steps (what the machine's speed explains);
             `sigma_pair` the std of a run corrected by its concurrent partner's steps instead
             (what a reference run alongside removes, without trusting the run's own step count)
  sd_diff    (--partner) the std of partner - baseline over the rounds: a candidate's run compared
             with a run of best made at the same time; `sd_apart` the same for runs made apart
             (the two codes' variances summed); `partner_gain` baseline's mean - the partner's

The budget is wall clock, so val_bpb follows the machine's speed; the question is how much of
that speed is shared by runs that train at the same time (then a comparison made in time pairs
cancels it) and how much persists from round to round (then samples taken in different
periods differ by more than their sigma says).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))


def _one(args: tuple) -> dict:
    train_py, run_dir, budget, seed, profile, threads = args
    from trainer.runner import run_experiment
    t0 = time.time()
    res = run_experiment(train_py, run_dir, budget=budget, seed=seed, profile=profile, device="cpu",
                         threads=threads)
    return {"status": res.status, "val_bpb": res.val_bpb, "steps": res.steps, "tokens": res.tokens,
            "training_seconds": res.training_seconds, "total_seconds": res.total_seconds,
            "contention": getattr(res, "contention", None), "hardware_class": res.hardware_class,
            "started": t0, "finished": time.time(), "error": (res.error or "")[:200] or None}


def with_constants(text: str, changes: dict[str, str]) -> str:
    """train.py with module-level constants set, as the landscape's collection writes its points
    (`DEPTH = 8 if CUDA else 4` becomes `DEPTH = 3`); a name that is not a constant of the file
    is an error."""
    from bench.collect_landscape import set_right_sides
    try:
        return set_right_sides(text, changes)
    except KeyError as e:
        raise SystemExit(f"drift: --partner {e.args[0]}: not one module-level constant of train.py") from None


def collect(out: Path, rounds: int, width: int, budget: float, threads: int, profile: str,
            partner: dict[str, str] | None = None) -> None:
    from trainer import baseline_path
    from trainer.prepare import prepare
    prepare("bundled", [profile])
    work = Path(tempfile.mkdtemp(prefix="swarm-drift-"))
    tp = work / "train.py"
    base = Path(baseline_path()).read_text(encoding="utf-8")
    tp.write_text(base)
    codes = [str(tp)] * width
    if partner:   # the last slot runs other code: a candidate beside best, as a swarm's agents are
        other = work / "partner.py"
        other.write_text(with_constants(base, partner))
        codes[-1] = str(other)
    done = sum(1 for _ in out.open()) // width if out.exists() else 0
    ctx = mp.get_context("spawn")
    with ctx.Pool(width) as pool:
        for r in range(done, done + rounds):
            jobs = [(codes[k], str(work / f"r{r}-{k}"), budget, 1000 * r + k, profile, threads)
                    for k in range(width)]
            rows = pool.map(_one, jobs)
            with out.open("a") as f:
                for k, row in enumerate(rows):
                    at = _dt.datetime.fromtimestamp(row["started"], _dt.timezone.utc)
                    row.update(round=r, slot=k, budget=budget, threads=threads, profile=profile,
                               at=at.isoformat(timespec="seconds"),
                               code=",".join(f"{n}={v}" for n, v in partner.items()) if partner and k == width - 1
                               else "baseline")
                    f.write(json.dumps(row) + "\n")
            print(f"round {r}: " + "  ".join(f"{x['steps']} steps {x['val_bpb'] or float('nan'):.4f}" for x in rows),
                  flush=True)


def analyse(rows: list[dict]) -> dict:
    """The figures of the module's docstring from rows of complete rounds (every run ok). Rows
    with other code in a slot (`--partner`) are centred on their own code's means; `sd_diff` is
    then the std of the concurrent difference (partner - baseline) and `sd_apart` what it would
    be for the same runs made at different times (sqrt of the sum of the two variances)."""
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(r["round"], []).append(r)
    rounds = [sorted(v, key=lambda x: x["slot"]) for _, v in sorted(by.items())
              if len(v) >= 2 and all(x["status"] == "ok" and x["steps"] for x in v)]
    code = [[x.get("code", "baseline") for x in rd] for rd in rounds]
    raw_l = [[math.log(x["steps"]) for x in rd] for rd in rounds]
    raw_v = [[x["val_bpb"] for x in rd] for rd in rounds]
    cl: dict[str, list[float]] = {}
    cv: dict[str, list[float]] = {}
    for cs, ls_, vs_ in zip(code, raw_l, raw_v):
        for c, x, v in zip(cs, ls_, vs_):
            cl.setdefault(c, []).append(x)
            cv.setdefault(c, []).append(v)
    ml = {c: statistics.mean(x) for c, x in cl.items()}
    mv = {c: statistics.mean(x) for c, x in cv.items()}
    # each run's log steps and val_bpb as deviations from its own code's means
    ls = [[x - ml[c] for c, x in zip(cs, rd)] for cs, rd in zip(code, raw_l)]
    vs = [[v - mv[c] for c, v in zip(cs, rd)] for cs, rd in zip(code, raw_v)]
    flat_l, flat_v = [x for rd in ls for x in rd], [x for rd in vs for x in rd]
    k = len(ls[0])
    dof = len(flat_v) - len(ml)
    # one-way ANOVA over rounds: the variance shared within a round
    within = sum((x - statistics.mean(rd)) ** 2 for rd in ls for x in rd) / (len(flat_l) - len(ls))
    between = k * statistics.variance([statistics.mean(rd) for rd in ls])
    shared_var = max(0.0, (between - within) / k)
    shared = shared_var / (shared_var + within) if shared_var + within > 0 else 0.0
    means = [statistics.mean(rd) for rd in ls]
    mm = statistics.mean(means)
    lag1 = (sum((a - mm) * (b - mm) for a, b in zip(means, means[1:])) /
            sum((a - mm) ** 2 for a in means)) if len(means) > 2 else float("nan")
    b = sum(x * y for x, y in zip(flat_l, flat_v)) / sum(x * x for x in flat_l)
    res_own = [v - b * x for v, x in zip(flat_v, flat_l)]
    # corrected by the partner's steps (slot k's partner: the mean of the round's others)
    pair = []
    for rl, rv in zip(ls, vs):
        for j, v in enumerate(rv):
            other = statistics.mean(x for i, x in enumerate(rl) if i != j)
            pair.append(v - b * other)
    steps = [x["steps"] for rd in rounds for x in rd]
    out = {"runs": len(flat_v), "rounds": len(rounds), "width": k, "steps_min": min(steps),
           "steps_max": max(steps), "shared": shared, "lag1": lag1, "slope": b,
           "sigma": math.sqrt(sum(v * v for v in flat_v) / dof),
           "sigma_steps": math.sqrt(sum(e * e for e in res_own) / (dof - 1)),
           "sigma_pair": math.sqrt(sum(e * e for e in pair) / dof),
           "corr_steps_val": _corr(flat_l, flat_v)}
    if len(ml) > 1:
        diff = [rv[-1] - rv[0] for rv in vs]
        out["sd_diff"] = statistics.stdev(diff)
        out["sd_apart"] = math.sqrt(sum(statistics.variance(x) for x in cv.values()))
        out["partner_gain"] = mv[code[0][0]] - mv[code[0][-1]]   # baseline - partner: + = the partner better
    return out


def _corr(xs, ys) -> float:
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy) if sx and sy else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=12, help="rounds of concurrent runs to add")
    ap.add_argument("--width", type=int, default=2, help="runs per round (a swarm's agents on this machine)")
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--out", default=None, help="default: bench/data/real-<profile>-b<budget>-t<threads>.drift.jsonl")
    ap.add_argument("--analyse", action="store_true", help="print the figures of the data file only")
    ap.add_argument("--partner", action="append", default=[], metavar="NAME=VALUE",
                    help="the last slot runs train.py with this constant set (repeatable): a candidate "
                         "beside best; default out: ...drift-NAME-VALUE.jsonl")
    a = ap.parse_args(argv)
    partner = dict(p.split("=", 1) for p in a.partner)
    tail = "".join(f"-{n}-{v}" for n, v in partner.items())
    out = Path(a.out or _HERE / "data" / f"real-{a.profile}-b{a.budget:g}-t{a.threads}.drift{tail}.jsonl")
    if not a.analyse:
        collect(out, a.rounds, a.width, a.budget, a.threads, a.profile, partner)
    f = analyse([json.loads(line) for line in out.read_text().splitlines() if line.strip()])
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in f.items()))
    return 0


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
