"""Measure the real trainer's landscape: the real runner (sandbox, clock, evaluator) trains the
baseline train.py at a designed set of points of a program's search space, one run at a time,
and appends one JSON line per run to a data file that bench/real_landscape.py fits.

    python bench/collect_landscape.py [--profile cpu] [--budget 30] [--threads 1]
        [--program programs/baseline.md] [--out bench/data/real-cpu-b30-t1.jsonl] [--limit N]

The design (deterministic from --design-seed), in a shuffled order with the baseline's own
repeats spread evenly through it so that a drift of the machine shows up in them:
  baseline   --repeats runs of the unchanged baseline (the noise, and its drift)
  oat        one knob at a time through the baseline: -4, -2, -1, +1, +2, +4 of the program's
             steps (clipped to the space, duplicates dropped)
  local      a Latin hypercube within +-3 steps of the baseline on every knob (the trust region
             a search that starts at the baseline explores first)
  global     a Latin hypercube over the whole search space
  pairs      two knobs moved together (+-1 or +-2 steps each), every pair of knobs once
  replicate  a few local points again with other seeds (is the noise the same away from the baseline?)

Resumable: runs already in the output file (same design point and seed) are skipped, so an
interrupted collection continues where it stopped. A GPU profile: `--profile gpu --budget 300
--device cuda` (the baseline point is then the CUDA branch of each `A if CUDA else B` constant).
Measure on a quiet machine: the budget is wall clock, so other load changes what a run trains;
steps and tokens are recorded with every run for that reason, and --cpu pins the runs to one core.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

from agents.backends.mutate import find_constants, step_value  # noqa: E402
from agents.program import ChoiceParam, FloatParam, IntParam, LogParam, load_program  # noqa: E402


# --- the design ------------------------------------------------------------------------------
def baseline_point(source: str, space: dict, profile: str) -> dict:
    """The baseline's value of every search-space constant for a profile (CUDA branch on gpu)."""
    consts = find_constants(source)
    point = {}
    for name in space:
        c = consts[name]
        point[name] = c.values[0] if (profile == "gpu" and c.cond is not None) else c.values[-1]
    return point


def _unit_to_value(u: float, param):
    """A point of [0, 1] onto the parameter's range (log scale for `log`), on its grid."""
    if isinstance(param, LogParam):
        v = math.exp(math.log(param.min) + u * (math.log(param.max) - math.log(param.min)))
        return float(f"{v:.4g}")
    if isinstance(param, IntParam):
        n = (param.max - param.min) // param.step
        return param.min + param.step * min(n, int(u * (n + 1)))
    if isinstance(param, FloatParam):
        n = round((param.max - param.min) / param.step)
        return float(f"{param.min + param.step * min(n, int(u * (n + 1))):.6g}")
    if isinstance(param, ChoiceParam):
        return param.values[min(len(param.values) - 1, int(u * len(param.values)))]
    raise TypeError(type(param).__name__)


def _lhs(n: int, dims: int, rng: random.Random) -> list[list[float]]:
    """A Latin hypercube of n points in [0, 1]^dims."""
    cols = []
    for _ in range(dims):
        strata = [(i + rng.random()) / n for i in range(n)]
        rng.shuffle(strata)
        cols.append(strata)
    return [[cols[d][i] for d in range(dims)] for i in range(n)]


def design(base: dict, space: dict, *, repeats: int, local: int, global_: int, replicates: int,
           seed: int) -> list[dict]:
    """The designed points: [{part, point}] (baseline repeats are separate entries)."""
    rng = random.Random(seed)
    names = list(space)
    pts: list[dict] = []
    seen: set[str] = set()

    def add(part: str, point: dict, dup: bool = False) -> None:
        key = json.dumps(point, sort_keys=True)
        if key in seen and not dup:
            return
        seen.add(key)
        pts.append({"part": part, "point": dict(point)})

    seen.add(json.dumps(base, sort_keys=True))
    for n in names:
        for k in (-4, -2, -1, 1, 2, 4):
            p = dict(base)
            p[n] = step_value(base[n], space[n], rng, k)
            add("oat", p)
    for u in _lhs(local, len(names), rng):
        p = dict(base)
        for d, n in enumerate(names):
            p[n] = step_value(base[n], space[n], rng, round(-3 + 6 * u[d]))
        add("local", p)
    for u in _lhs(global_, len(names), rng):
        add("global", {n: _unit_to_value(u[d], space[n]) for d, n in enumerate(names)})
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p = dict(base)
            p[a] = step_value(base[a], space[a], rng, rng.choice([-2, -1, 1, 2]))
            p[b] = step_value(base[b], space[b], rng, rng.choice([-2, -1, 1, 2]))
            add("pairs", p)
    locals_ = [x for x in pts if x["part"] == "local"]
    reps = []
    for x in rng.sample(locals_, min(replicates // 3, len(locals_))):
        reps += [{"part": "replicate", "point": dict(x["point"])} for _ in range(3)]
    rng.shuffle(pts)
    pts += reps
    rng.shuffle(pts)
    # the baseline's repeats spread evenly through the run (first and last included)
    out: list[dict] = []
    every = max(1, len(pts) // max(1, repeats - 1))
    b = 0
    for i, x in enumerate(pts):
        if i % every == 0 and b < repeats:
            out.append({"part": "baseline", "point": dict(base)})
            b += 1
        out.append(x)
    while b < repeats:
        out.append({"part": "baseline", "point": dict(base)})
        b += 1
    for i, x in enumerate(out):
        x["seed"] = i  # every run its own seed: the noise of each point is independent
    return out


def write_point(source: str, point: dict) -> str:
    """train.py with each constant of `point` set to a plain literal (its whole right side)."""
    return set_right_sides(source, {name: _literal(value) for name, value in point.items()})


def _literal(value) -> str:
    lit = repr(value) if not isinstance(value, float) else f"{value:.6g}"
    if isinstance(value, float) and not any(ch in lit for ch in ".en"):
        lit += ".0"
    return lit


def set_right_sides(source: str, texts: dict[str, str]) -> str:
    """train.py with the whole right side of each module-level constant named in `texts` replaced
    by that source text (`DEPTH = 8 if CUDA else 4` becomes `DEPTH = 3`); KeyError names a
    constant find_constants does not find."""
    consts = find_constants(source)
    lines = source.split("\n")
    for name, text in sorted(texts.items(), key=lambda kv: (consts[kv[0]].line, -consts[kv[0]].col)):
        c = consts[name]
        ln = lines[c.line]
        lines[c.line] = ln[:c.col] + text + ln[c.end_col:]
    return "\n".join(lines)


# --- the machine and the code ----------------------------------------------------------------
def code_version() -> str:
    root = _HERE.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "trainer"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty-trainer" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    import torch

    from trainer.profiles import cpu_model
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def drop_slow(out: Path, fraction: float, shape_knobs: list[str]) -> int:
    """Runs trained on a loaded machine: the budget is wall clock, so another job on the same
    core cuts a run's steps (seen here: the baseline's 114 steps fell to 57-77 while other work
    shared the core). Among runs of one compute shape (the knobs that change the work per token;
    the learning rates and the schedule do not), tokens/s is the machine's speed: runs more
    than `fraction` below their shape's median are moved aside, to be trained again."""
    rows = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    speed: dict[str, list[float]] = {}

    def shape(r):
        return json.dumps({k: r["point"].get(k) for k in shape_knobs}, sort_keys=True)

    def tps(r):
        return (r.get("tokens") or 0) / (r.get("training_seconds") or 1.0)

    for r in rows:
        if r["status"] == "ok":
            speed.setdefault(shape(r), []).append(tps(r))
    med = {k: sorted(v)[len(v) // 2] for k, v in speed.items()}
    keep, slow = [], []
    for r in rows:
        m = med.get(shape(r))
        (slow if r["status"] == "ok" and m and tps(r) < (1 - fraction) * m else keep).append(r)
    if slow:
        with out.with_suffix(".slow.jsonl").open("a") as f:
            for r in slow:
                f.write(json.dumps(r) + "\n")
        out.write_text("".join(json.dumps(r) + "\n" for r in keep))
    print(f"drop-slow: {len(slow)} of {len(rows)} runs more than {fraction:.0%} below their shape's "
          f"median tokens/s moved to {out.with_suffix('.slow.jsonl').name}", flush=True)
    return len(slow)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu", help="the trainer profile (cpu, gpu): model size and batch")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--budget", type=float, default=30.0, help="training seconds per run (the swarm's --budget)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (CPU)")
    ap.add_argument("--program", default=str(_HERE.parent / "programs" / "baseline.md"),
                    help="the program whose search space is measured")
    ap.add_argument("--out", default=None, help="default: bench/data/real-<profile>-b<budget>-t<threads>.jsonl")
    ap.add_argument("--repeats", type=int, default=24, help="runs of the unchanged baseline (>= 20)")
    ap.add_argument("--local", type=int, default=28, help="points a few steps from the baseline (space-filling)")
    ap.add_argument("--global", dest="global_", type=int, default=24, help="points over the whole space")
    ap.add_argument("--replicates", type=int, default=12, help="second runs of design points (noise elsewhere)")
    ap.add_argument("--design-seed", type=int, default=0, help="seed of the space-filling samples")
    ap.add_argument("--limit", type=int, default=None, help="stop after this many new runs")
    ap.add_argument("--cpu", default=None, help="pin the runs to these cores (taskset list, e.g. 0)")
    ap.add_argument("--data-dir", default=None, help="prepared data (default: the cache swarm uses)")
    ap.add_argument("--dry-run", action="store_true", help="print the design and exit")
    ap.add_argument("--drop-slow", type=float, default=None, metavar="FRACTION",
                    help="move runs whose tokens/s is more than FRACTION below the median of the runs of "
                         "the same compute shape (--shape-knobs) to <out>.slow.jsonl, then re-run them")
    ap.add_argument("--shape-knobs", default="DEPTH",
                    help="the knobs that change the model's compute per token (comma list)")
    a = ap.parse_args(argv)

    from trainer import baseline_path
    source = Path(baseline_path()).read_text(encoding="utf-8")
    prog = load_program(a.program)
    space = dict(prog.search_space)
    base = baseline_point(source, space, a.profile)
    runs = design(base, space, repeats=a.repeats, local=a.local, global_=a.global_,
                  replicates=a.replicates, seed=a.design_seed)
    parts: dict[str, int] = {}
    for r in runs:
        parts[r["part"]] = parts.get(r["part"], 0) + 1
    print(f"design: {len(runs)} runs " + ", ".join(f"{k} {v}" for k, v in parts.items()), flush=True)
    if a.dry_run:
        for r in runs:
            print(json.dumps(r))
        return 0

    out = Path(a.out or _HERE / "data" / f"real-{a.profile}-b{a.budget:g}-t{a.threads}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.drop_slow is not None and out.exists():
        drop_slow(out, a.drop_slow, a.shape_knobs.split(","))
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((json.dumps(r["point"], sort_keys=True), r["seed"]))
    if a.cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in a.cpu.split(",")})

    from trainer.evaluator import close_all
    from trainer.prepare import prepare
    from trainer.runner import run_experiment
    from trainer.standby import discard_all

    data = prepare("bundled", [a.profile], data_dir=a.data_dir) if a.data_dir else None
    del data
    meta = {"program": Path(a.program).name, "search_space": {k: v.model_dump() for k, v in space.items()},
            "baseline": base, "profile": a.profile, "device": a.device, "budget": a.budget,
            "threads": a.threads, "design_seed": a.design_seed, "code_version": code_version(),
            "machine": machine(), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "train_py_sha256": hashlib.sha256(source.encode()).hexdigest()}
    meta_path = out.with_suffix(".meta.json")
    if not meta_path.exists():
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    work = Path(tempfile.mkdtemp(prefix="swarm-landscape-"))
    n_new = 0
    try:
        for i, r in enumerate(runs):
            key = (json.dumps(r["point"], sort_keys=True), r["seed"])
            if key in done:
                continue
            if a.limit is not None and n_new >= a.limit:
                break
            tp = work / f"train-{i}.py"
            tp.write_text(write_point(source, r["point"]))
            t0 = time.time()
            res = run_experiment(tp, work / f"run-{i}", budget=a.budget, seed=r["seed"], profile=a.profile,
                                 device=a.device, threads=a.threads, data_dir=a.data_dir, standby=True)
            row = {"i": i, "part": r["part"], "point": r["point"], "seed": r["seed"], "status": res.status,
                   "val_bpb": res.val_bpb, "steps": res.steps, "tokens": res.tokens,
                   "training_seconds": res.training_seconds, "total_seconds": res.total_seconds,
                   "startup_seconds": res.startup_seconds, "num_params": res.num_params,
                   "hardware_class": res.hardware_class, "unigram_bpb": res.unigram_bpb,
                   "error": (res.error or "")[:200] or None,
                   "at": _dt.datetime.fromtimestamp(t0, _dt.timezone.utc).isoformat(timespec="seconds")}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            n_new += 1
            v = "na" if res.val_bpb is None else f"{res.val_bpb:.4f}"
            print(f"[{i + 1}/{len(runs)}] {r['part']:<9} {res.status:<7} val_bpb={v} steps={res.steps} "
                  f"{json.dumps(r['point'])}  ({time.time() - t0:.0f}s)", flush=True)
    finally:
        discard_all()
        close_all()
    print(f"{n_new} new runs in {out}")
    return 0


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
