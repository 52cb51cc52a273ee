"""`swarm train [PATH]`: run one experiment by hand and print the original's summary block."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from trainer.errors import BadOption, BadTrainPy, TrainerError
from trainer.schema import ExperimentResult


def check_train_py(path: str | Path) -> Path:
    """The file exists and compiles; else BadTrainPy naming it."""
    p = Path(path)
    if not p.is_file():
        raise BadTrainPy(f"train.py does not exist: {p}")
    try:
        compile(p.read_bytes(), str(p), "exec")
    except SyntaxError as e:
        raise BadTrainPy(f"{p}:{e.lineno}: syntax error: {e.msg}") from None
    except ValueError as e:
        raise BadTrainPy(f"{p}: cannot compile: {e}") from None
    return p


def summary(r: ExperimentResult) -> str:
    def f(v, fmt):
        return "na" if v is None else format(v, fmt)

    rows = [
        ("val_bpb", f(r.val_bpb, ".6f")),
        ("unigram_bpb", f(r.unigram_bpb, ".6f")),
        ("confirm_bpb", f(r.confirm_bpb, ".6f")),
        ("training_seconds", f(r.training_seconds, ".1f")),
        ("total_seconds", f(r.total_seconds, ".1f")),
        ("startup_seconds", f(r.startup_seconds, ".1f")),
        ("eval_seconds", f(r.eval_seconds, ".1f")),
        ("peak_memory_mb", f(r.peak_memory_mb, ".1f")),
        ("mfu_percent", f(r.mfu_percent, ".2f")),
        ("total_tokens_M", f(r.tokens / 1e6 if r.tokens is not None else None, ".3f")),
        ("num_steps", f(r.steps, "d")),
        ("num_params_M", f(r.num_params / 1e6 if r.num_params is not None else None, ".3f")),
        ("seed", str(r.seed)),
        ("budget", f(r.budget, ".0f")),
        ("hardware_class", r.hardware_class),
        ("status", r.status),
    ]
    return "---\n" + "\n".join(f"{k + ':':<18}{v}" for k, v in rows)


def build_parser() -> argparse.ArgumentParser:
    """`swarm train`'s flags, each with its help and its true default."""
    ap = argparse.ArgumentParser(prog="swarm train", description="Train one train.py under the locked runner.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  swarm train --budget 60 --seed 1\n\n"
                                        "--unsafe-no-sandbox (read by `swarm train` before this parser): run\n"
                                        "train.py without the bubblewrap sandbox; see the README's security model.")
    ap.add_argument("path", nargs="?", default=None, help="train.py (default: the baseline)")
    ap.add_argument("--budget", type=float, default=None, metavar="S",
                    help="training seconds (default: the profile's: 300 on gpu, 60 on cpu)")
    ap.add_argument("--seed", type=int, default=0, metavar="N",
                    help="the run's seed: torch's and the order of the training batches (default 0)")
    ap.add_argument("--max-steps", type=int, default=None, metavar="N",
                    help="deterministic mode: stop after N steps")
    ap.add_argument("--profile", default=None, help="cpu or gpu (default: detected)")
    ap.add_argument("--device", default="auto",
                    help="torch device, e.g. cpu or cuda:1 (default auto: cuda:0 when CUDA is "
                         "available, else cpu)")
    ap.add_argument("--threads", type=int, default=None, metavar="N",
                    help="torch threads of the run (default: torch's own choice)")
    ap.add_argument("--data-dir", default=None, metavar="DIR",
                    help="prepared data (default: $SWARM_DATA_DIR, else ~/.cache/autoresearch-swarm)")
    ap.add_argument("--run-dir", default=None, metavar="DIR",
                    help="where run.log and the scratch go (default: $SWARM_HOME/runs/manual-<time>, "
                         "with SWARM_HOME unset: ./.swarm/runs/manual-<time>)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # after parsing: --help must not wait for torch (the runner imports it)
    from trainer import baseline_path
    from trainer.runner import run_experiment

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.budget is not None and not args.budget > 0:
            raise BadOption(f"--budget must be positive, got {args.budget}")
        path = check_train_py(args.path or baseline_path())
        home = Path(os.environ.get("SWARM_HOME", ".swarm"))
        run_dir = Path(args.run_dir) if args.run_dir else home / "runs" / f"manual-{time.strftime('%Y%m%d-%H%M%S')}"
        res = run_experiment(path, run_dir, budget=args.budget, seed=args.seed, profile=args.profile,
                             device=args.device, data_dir=args.data_dir, max_steps=args.max_steps,
                             threads=args.threads)
    except TrainerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(res))
    if res.status != "ok":
        print(f"{res.status}: {res.error} (log: {res.log_path})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
