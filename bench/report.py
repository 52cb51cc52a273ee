"""Bench for `swarm report`: a synthetic ledger of N experiments across 8 agents with merges
(and a real bare git repo), timed build_report, then the page's load time in headless Chromium.

    python bench/report.py [--experiments 1000] [--agents 8] [--keep DIR]

Ends with one line: experiments=N build_s=N load_s=N  (targets: build < 10 s, load < 3 s).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# bench/coordinator.py is named like the package: drop bench/ from the path so that
# `import coordinator` finds the package, not that script.
# The repository root goes first: the DevTools client and the synthetic swarm live in tests/.
ROOT = Path(__file__).resolve().parents[1]
sys.path = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from coordinator.review.report import build_report  # noqa: E402
from tests.headless import NODE_COUNT_JS, Browser  # noqa: E402
from tests.synthetic import lineage_graph, make_swarm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--keep", type=Path, help="write the swarm and report here and keep them")
    args = ap.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t = time.perf_counter()
        sw = make_swarm(home, experiments=args.experiments, agents=args.agents,
                        hardware_classes=("h100", "a100"), seed=1)
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        G = lineage_graph(sw)
        lineage_s = time.perf_counter() - t
        dec = Counter(r["decision"] for r in sw.rows)
        print(f"ledger: {len(sw.rows)} records, {G.number_of_nodes()} commits, "
              f"{sum(1 for n in G if G.nodes[n].get('is_merge'))} merge commits; "
              f"decisions {dict(sorted(dec.items()))}")
        print(f"generate_s={gen_s:.2f} build_lineage_s={lineage_s:.2f} (not part of build_s)")
        t = time.perf_counter()
        html = build_report(sw.rows, G, repo_path=sw.repo_path, swarm_home=home,
                            out_dir=home / "reports")
        build_s = time.perf_counter() - t
        print(f"report: {html} ({html.stat().st_size / 1e6:.1f} MB)")
        with Browser() as b:
            load_s = b.open(html)
            drawn = b.eval(NODE_COUNT_JS)
        print(f"chromium drew {drawn} DAG nodes")
        exps = sum(1 for r in sw.rows if r["kind"] == "experiment")
        print(f"experiments={exps} build_s={build_s:.2f} load_s={load_s:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    main()
