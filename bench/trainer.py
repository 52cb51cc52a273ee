"""Bench the locked trainer: per-experiment overhead (wall time from spawn to result, minus
training) broken down by phase, and the seconds the sandbox adds, with the same train.py run
with and without the sandbox in one go; tokens/s and MFU of the baseline; with --seeds N also
the val_bpb spread over N seeds (the noise floor the coordinator needs).

    python bench/trainer.py [--budget 30] [--threads 1] [--gap 20] [--repeat 3] [--seeds 0] [--data-dir D]

Runs of the baseline: unsandboxed cold, sandboxed cold, then --repeat warm runs of each,
alternating. "cold" is a process's first run (fresh evaluator, no standby, confirm scored
so its cost shows); "warm" is an agent's steady state (the evaluator kept, the standby sandbox
started when the last run ended, --gap seconds earlier: an agent's proposal time; confirm
not asked, as for most experiments). Ends with one line:
tokens_per_s=N overhead_s=N (sandboxed, warm, median) sandbox_cost_s=N mfu_percent=N (na on CPU).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the package it benches: keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("spawn_to_ready", "ready_to_clock", "eval_wait_ready", "eval_load", "eval_val", "eval_val_probe",
          "eval_confirm", "eval_confirm_probe")


def overhead(r) -> float:
    return r.total_seconds - (r.training_seconds or 0.0)


def breakdown(label: str, r) -> str:
    t = r.timings
    parts = {k: t.get(k, 0.0) for k in PHASES}
    other = overhead(r) - sum(parts.values())
    cells = " ".join(f"{k}={v:.2f}" for k, v in parts.items()) + f" other={other:.2f}"
    return f"{label:<16} overhead={overhead(r):6.2f}s  {cells}"


def spawn_seconds(unsafe: bool, n: int = 3) -> float:
    """Median wall time of `python -c pass` through wrap(), i.e. the bare process spawn."""
    from trainer.sandbox import SandboxSpec, wrap

    d = Path(tempfile.mkdtemp(prefix="swarm-bench-spawn-"))
    argv = wrap([sys.executable, "-I", "-c", "pass"], SandboxSpec(scratch=d, env={"PATH": "/usr/bin:/bin"},
                                                                     memory_mb=6144, max_procs=256, unsafe=unsafe))
    times = []
    for _ in range(n):
        t = time.monotonic()
        subprocess.run(argv, check=True, cwd=d)
        times.append(time.monotonic() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gap", type=float, default=20, help="seconds between runs (an agent's proposal time)")
    ap.add_argument("--repeat", type=int, default=3, help="warm runs per mode")
    ap.add_argument("--seeds", type=int, default=0, help="also run N seeds and print the val_bpb spread")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--profile", default=None)
    args = ap.parse_args(argv)

    from trainer import baseline_path
    from trainer.evaluator import close_all
    from trainer.prepare import prepare
    from trainer.runner import run_experiment
    from trainer.sandbox import UNSAFE_ENV
    from trainer.standby import discard_all

    data = args.data_dir or tempfile.mkdtemp(prefix="swarm-bench-data-")
    prepare("bundled", [args.profile] if args.profile else None, data_dir=data)
    runs = Path(tempfile.mkdtemp(prefix="swarm-bench-runs-"))
    kw = dict(budget=args.budget, data_dir=data, profile=args.profile, threads=args.threads)
    results: dict[tuple[str, str], list] = {}
    # Cold runs first, then warm ones alternating between the modes (each mode keeps its own
    # standby and evaluator), so that the load of a shared machine falls on both alike.
    order = [("no-sandbox", "cold"), ("sandbox", "cold")] + [(m, "warm") for _ in range(args.repeat)
                                                           for m in ("no-sandbox", "sandbox")]
    for i, (mode, phase) in enumerate(order):
        os.environ[UNSAFE_ENV] = "1" if mode == "no-sandbox" else ""
        if phase == "warm":
            time.sleep(args.gap / 2)  # the other mode's standby had the other half
        r = run_experiment(baseline_path(), runs / f"{mode}-{phase}-{i}", standby=True,
                           confirm_below=float("inf") if phase == "cold" else None, **kw)
        if r.status != "ok":
            print(f"baseline {mode} {phase}: {r.status}: {r.error}", file=sys.stderr)
            return 1
        results.setdefault((mode, phase), []).append(r)
        print(breakdown(f"{mode} {phase}", r), flush=True)
    discard_all()
    close_all()
    os.environ.pop(UNSAFE_ENV, None)
    med = {k: statistics.median(overhead(x) for x in v) for k, v in results.items()}
    for k, v in results.items():
        print(f"median overhead {k[0]} {k[1]}: {med[k]:.2f}s over {len(v)} run(s)")
    r = results[("sandbox", "warm")][-1]
    cost_cold = med[("sandbox", "cold")] - med[("no-sandbox", "cold")]
    cost_warm = med[("sandbox", "warm")] - med[("no-sandbox", "warm")]
    spawn_plain, spawn_sbx = spawn_seconds(True), spawn_seconds(False)
    print(f"bare spawn (python -c pass): plain={spawn_plain:.3f}s sandboxed={spawn_sbx:.3f}s "
          f"(+{spawn_sbx - spawn_plain:.3f}s)")
    print(f"sandbox cost per experiment: cold={cost_cold:+.2f}s (one run each) "
          f"warm={cost_warm:+.2f}s (median of {args.repeat} each); noisy on a loaded machine")
    tps = r.tokens / r.training_seconds
    print(f"val_bpb={r.val_bpb:.4f} unigram_bpb={r.unigram_bpb:.4f} ratio={r.val_bpb / r.unigram_bpb:.3f}")
    print(f"training_seconds={r.training_seconds:.2f} steps={r.steps} params={r.num_params} hw={r.hardware_class}")
    if args.seeds:
        vals = [r.val_bpb]
        for s in range(1, args.seeds):
            ri = run_experiment(baseline_path(), runs / f"seed{s}", seed=s, standby=True, **kw)
            print(f"seed {s}: {ri.status} val_bpb={ri.val_bpb}")
            if ri.status == "ok":
                vals.append(ri.val_bpb)
        if len(vals) > 1:
            print(f"seeds={len(vals)} val_bpb mean={statistics.mean(vals):.4f} "
                  f"stdev={statistics.stdev(vals):.4f} range={max(vals) - min(vals):.4f}")
    discard_all()
    mfu = "na" if r.mfu_percent is None else f"{r.mfu_percent:.2f}"
    print(f"tokens_per_s={tps:.0f} overhead_s={med[('sandbox', 'warm')]:.1f} sandbox_cost_s={cost_warm:.1f} "
          f"mfu_percent={mfu}")
    return 0


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
