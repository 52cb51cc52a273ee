"""Bench the locked trainer: tokens/s, overhead (startup + eval) and MFU of the baseline; with
--seeds N also the val_bpb spread over N seeds (the noise floor the coordinator needs).

    python bench/trainer.py [--budget 60] [--seeds 0] [--data-dir D]
Ends with one line: tokens_per_s=N overhead_s=N mfu_percent=N (na on CPU).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

# This file is named like the package it benches: keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=60)
    ap.add_argument("--seeds", type=int, default=0, help="also run N seeds and print the val_bpb spread")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--profile", default=None)
    args = ap.parse_args(argv)

    from trainer import baseline_path
    from trainer.prepare import prepare
    from trainer.runner import run_experiment

    data = args.data_dir or tempfile.mkdtemp(prefix="swarm-bench-data-")
    prepare("bundled", [args.profile] if args.profile else None, data_dir=data)
    runs = Path(tempfile.mkdtemp(prefix="swarm-bench-runs-"))
    r = run_experiment(baseline_path(), runs / "bench", budget=args.budget, data_dir=data, profile=args.profile)
    if r.status != "ok":
        print(f"baseline {r.status}: {r.error}", file=sys.stderr)
        return 1
    tps = r.tokens / r.training_seconds
    overhead = r.total_seconds - r.training_seconds
    print(f"val_bpb={r.val_bpb:.4f} unigram_bpb={r.unigram_bpb:.4f} ratio={r.val_bpb / r.unigram_bpb:.3f}")
    print(f"training_seconds={r.training_seconds:.2f} startup_s={r.startup_seconds:.1f} "
          f"eval_s={r.eval_seconds:.1f} steps={r.steps} params={r.num_params} hw={r.hardware_class}")
    if args.seeds:
        vals = [r.val_bpb]
        for s in range(1, args.seeds):
            ri = run_experiment(baseline_path(), runs / f"seed{s}", budget=args.budget, seed=s, data_dir=data,
                                profile=args.profile)
            print(f"seed {s}: {ri.status} val_bpb={ri.val_bpb}")
            if ri.status == "ok":
                vals.append(ri.val_bpb)
        if len(vals) > 1:
            print(f"seeds={len(vals)} val_bpb mean={statistics.mean(vals):.4f} "
                  f"stdev={statistics.stdev(vals):.4f} range={max(vals) - min(vals):.4f}")
    mfu = "na" if r.mfu_percent is None else f"{r.mfu_percent:.2f}"
    print(f"tokens_per_s={tps:.0f} overhead_s={overhead:.1f} mfu_percent={mfu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
