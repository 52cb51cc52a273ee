"""A screenshot of `swarm report` after a swarm with moves, merges and discards: the real
Coordinator (real redis-server and git) decides a scripted history and some rounds of random
one-constant edits by three fake agents (tests/scripted_swarm.py: no training), then
`swarm report` writes the page and headless Chromium takes its picture.

    python bench/report_shot.py [--rounds 12] [--out bench/results/report.png] [--keep DIR]

Ends with one line: records=N commits=N moves=N merges=N png=PATH
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

# bench/coordinator.py is named like the package: drop bench/ from the path. The repository
# root and tests/ go first (the scripted swarm and the DevTools client live in tests/).
ROOT = Path(__file__).resolve().parents[1]
sys.path = [str(ROOT), str(ROOT / "tests")] + [p for p in sys.path
                                               if Path(p or ".").resolve() != ROOT / "bench"]

from coordinator.cli import main as swarm  # noqa: E402
from coordinator.state.redisd import RedisDaemon  # noqa: E402
from tests.headless import NODE_COUNT_JS, Browser  # noqa: E402
from tests.scripted_swarm import scripted_swarm  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="rounds of random edits after the script")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "report.png")
    ap.add_argument("--keep", type=Path, help="build the swarm here and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="report-shot-"))
    daemon = RedisDaemon(work / "redis").start()
    try:
        s = scripted_swarm(work / "home", daemon.url, rounds=args.rounds, seed=args.seed)
        at = ["--swarm-home", str(s.home.root), "--redis-url", daemon.url]
        assert swarm(["report", *at]) == 0
        html = s.home.reports_dir / "report.html"
        with Browser(timeout=180) as b:   # a loaded machine renders slowly
            b.open(html)
            drawn = b.eval(NODE_COUNT_JS)
            # open the panel of the last merge commit, as a reviewer would click it
            i = b.eval("(function(){var ns = window.__reportData.nodes, k = -1;"
                       "ns.forEach(function(n, j){ if (n.is_merge && n.step) k = j; }); return k;})()")
            if i >= 0:
                b.eval(f"window.__showNode({i})")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            b.screenshot(args.out)
        rows = s.coord.ledger.rows()
        moves = [d for d in s.coord.decisions.values() if d.best_after]
        print(f"records={len(rows)} commits={drawn} moves={len(moves)} "
              f"merges={sum(d.decision == 'merge' for d in moves)} png={args.out}")
    finally:
        daemon.stop(kill=True)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
