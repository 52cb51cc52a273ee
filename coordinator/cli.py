"""The `swarm` command: parses arguments, configures logging once, turns errors into one line.

Each subcommand's work lives elsewhere (trainer.prepare, trainer.manual, coordinator.run.swarm,
coordinator.run.live, coordinator.review.views); status/lineage/report/export/stop never import Ray.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_USAGE = 2
UNSAFE_FLAG = "--unsafe-no-sandbox"
DELEGATED = {  # whole argv handed to the trainer's own CLIs
    "prepare": ("trainer.prepare", "prepare the training data and tokenizer (once per machine)",
                "swarm prepare --source bundled"),
    "train": ("trainer.manual", "train one train.py by hand under the budget and print val_bpb",
              "swarm train --budget 60"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`swarm run: error: ...`) and exit 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return v
    return parse


def _sub(subs, name, help_line, example, **kw):
    return subs.add_parser(name, help=help_line, description=help_line,
                           epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def _home_arg(p):
    p.add_argument("--swarm-home", metavar="DIR",
                   help="the swarm's state directory (default: $SWARM_HOME or ./.swarm)")
    p.add_argument("--redis-url", metavar="URL",
                   help="the ledger's redis when it is not the embedded one")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="swarm",
        description="Run many autonomous ML research agents at once, sharing one verified best train.py.",
        epilog="example:\n  swarm run --agents 2 --budget 30 --minutes 8\n\n"
               "Each command has its own --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO to stderr too")
    subs = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, (_, line, example) in DELEGATED.items():
        _sub(subs, name, line, example, add_help=False)

    r = _sub(subs, "run", "start (or resume) a swarm of research agents and show it live until it ends",
             "swarm run --agents 2 --budget 30 --minutes 8")
    r.add_argument("--config", metavar="FILE", help="swarm.yaml (default: ./swarm.yaml if present, "
                   "else the shipped default)")
    r.add_argument("--agents", type=_positive(int), metavar="N", help="number of agents (CPU), overrides agents.count")
    r.add_argument("--gpus", type=int, metavar="N", help="GPUs to use, one agent each")
    r.add_argument("--budget", type=_positive(float), metavar="S", help="training seconds per experiment")
    r.add_argument("--max-experiments", type=_positive(int), metavar="N",
                   help="stop after N experiments per agent (the baseline run not counted)")
    stop_after = r.add_mutually_exclusive_group()
    stop_after.add_argument("--hours", type=_positive(float), metavar="H",
                            help="stop after H hours (no run is started that would end later)")
    stop_after.add_argument("--minutes", type=_positive(float), metavar="M",
                            help="stop after M minutes (no run is started that would end later)")
    r.add_argument("--profile", choices=["auto", "cpu", "gpu", "cpu-smoke"],
                   help="hardware profile (cpu-smoke: cpu scoring 2 of its 16 eval batches, for trying the machinery)")
    r.add_argument("--seed", type=int, help="base seed (agent i gets seed + i)")
    r.add_argument("--address", metavar="ADDR", help="join this Ray cluster (or 'auto'; default: "
                   "$RAY_ADDRESS, else a private local Ray)")
    r.add_argument("--plain", action="store_true", help="print progress lines instead of the live view")
    r.add_argument(UNSAFE_FLAG, action="store_true",
                   help="run train.py WITHOUT the bubblewrap sandbox (only where namespaces are "
                        "impossible; a train.py can then read secrets and forge its score); "
                        "recorded in swarm.json and shown by status and the report")
    _home_arg(r)

    s = _sub(subs, "status", "show the agents, best val_bpb per hardware class and experiments/hour",
             "swarm status")
    s.add_argument("--json", action="store_true", help="print the status as JSON (the README's "
                   "'Reviewing results' lists its keys)")
    _home_arg(s)

    ln = _sub(subs, "lineage", "print the lineage tree of experiments (or write it as json/dot/graphml)",
              "swarm lineage --format dot --output lineage.dot")
    ln.add_argument("--all", action="store_true", help="every trained commit: add the discarded, "
                    "crashed, pending and carried results (default: best's commits only, in every format)")
    ln.add_argument("--format", choices=["tree", "json", "dot", "graphml"], default="tree",
                    help="tree (default): best per hardware class in the terminal; json: networkx "
                    "node-link data; dot, graphml: for graph tools")
    ln.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    _home_arg(ln)

    rp = _sub(subs, "report", "write the morning report (HTML with plots) of a swarm's results",
              "swarm report --output report/")
    rp.add_argument("--output", metavar="DIR", help="default: SWARM_HOME/reports")
    _home_arg(rp)

    ex = _sub(subs, "export", "write the ledger (every experiment record) as parquet, tsv or json, or log it to MLflow",
              "swarm export --format tsv --output ledger.tsv")
    ex.add_argument("--format", choices=["parquet", "tsv", "json", "mlflow"], default="parquet",
                    help="parquet (the default), tsv (the original's five columns first), json, or "
                         "mlflow: every record as a run in an MLflow experiment (needs the [mlflow] extra)")
    ex.add_argument("--output", metavar="FILE", help="the file to write, or - for stdout (tsv and json "
                    "only); default: SWARM_HOME/snapshots/ledger.<format>. With --format mlflow: the "
                    "tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default store)")
    ex.add_argument("--experiment", metavar="NAME", help="with --format mlflow: the MLflow experiment "
                    "(default: autoresearch-swarm)")
    _home_arg(ex)

    st = _sub(subs, "stop", "ask the running `swarm run` to stop cleanly and wait until it has",
              "swarm stop")
    st.add_argument("--timeout", type=_positive(float), default=300.0, metavar="S",
                    help="seconds to wait for the swarm to record its in-flight runs and exit "
                         "(default 300)")
    st.add_argument("--swarm-home", metavar="DIR",
                    help="the swarm's state directory (default: $SWARM_HOME or ./.swarm)")
    return p


def setup_logging(home: Path | None, verbose: bool) -> None:
    """Handlers once, here: SWARM_HOME/logs/swarm.log (INFO) and stderr (WARNING, or INFO with -v)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.INFO if verbose else logging.WARNING)
    err.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(err)
    if home is not None:
        (home / "logs").mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(home / "logs" / "swarm.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Every error class that means 'bad input or environment': one line, exit 2."""
    from agents.errors import AgentError
    from coordinator.run.config import ConfigError
    from coordinator.state.home import SwarmError
    from coordinator.state.redisd import RedisError
    from trainer.errors import TrainerError
    return (ConfigError, RedisError, SwarmError, AgentError, TrainerError, ConnectionError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if argv and argv[0] in DELEGATED:
        import importlib
        if argv[0] == "train":
            rest, code = _sandbox_gate("train", argv[1:])
            if code is not None:
                return code
            argv = [argv[0], *rest]
        return int(importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "export" and args.output == "-" and args.format == "parquet":
        # parquet is binary: it never goes to a terminal (it used to come out as JSON)
        print("swarm export: error: --output - needs --format tsv or json (parquet needs a file)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        return _dispatch(args)
    except _user_errors() as e:
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        print(f"swarm {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _sandbox_gate(command: str, argv: list[str]) -> tuple[list[str], int | None]:
    """`swarm train`: check the sandbox before anything starts (exit 2 with one line where
    bubblewrap cannot make namespaces), unless --unsafe-no-sandbox, which the runner then
    reads from SWARM_UNSAFE_NO_SANDBOX. Returns (argv without the flag, exit code or None)."""
    from trainer.sandbox import UNSAFE_ENV, SandboxUnavailable, check_sandbox

    unsafe = UNSAFE_FLAG in argv
    argv = [a for a in argv if a != UNSAFE_FLAG]
    if unsafe:
        os.environ[UNSAFE_ENV] = "1"
        print(f"swarm {command}: warning: {UNSAFE_FLAG}: train.py runs without the sandbox",
              file=sys.stderr)
        return argv, None
    os.environ.pop(UNSAFE_ENV, None)  # only the flag turns the sandbox off, never a stray env var
    if not {"-h", "--help"} & set(argv):
        try:
            check_sandbox()
        except SandboxUnavailable as e:
            print(f"swarm {command}: error: {e}", file=sys.stderr)
            return argv, EXIT_USAGE
    return argv, None


def _dispatch(args) -> int:
    from coordinator.state.home import SwarmHome, resolve_home

    if args.command == "run":
        from coordinator.run.swarm import run_command
        return run_command(args, setup_logging)
    home = SwarmHome(resolve_home(args.swarm_home))
    if args.command == "stop":
        setup_logging(None, args.verbose)
        home.info()
        if home.stop_run(args.timeout):
            print(f"swarm in {home.root} stopped")
        else:
            print(f"no swarm run is running in {home.root}")
        return 0
    info = home.info()  # before logging: a missing home must not get a logs/ dir
    setup_logging(home.root, args.verbose)
    from coordinator.review import views
    if args.command == "status":
        return views.status(home, info, args)
    if args.command == "lineage":
        return views.lineage(home, info, args)
    if args.command == "report":
        return views.report(home, info, args)
    if args.command == "export":
        return views.export(home, info, args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
