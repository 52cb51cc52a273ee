"""bench/research.py in a reduced configuration: the swarm on the synthetic landscape loses no
winner, and on the null landscape (every effect zero) at most 1% of experiments move best.
Real Coordinator, redis and git, real ResearchAgent loop; a run is reproducible by its seeds."""
from __future__ import annotations

import re

from bench.research import Config, run_bench

LINE = re.compile(r"^agents=8 swarm_gain=[-\d.]+ independent_gain=[-\d.na]+ single_gain=[-\d.na]+ "
                  r"speedup=[-\d.na]+ lost_winners=\d+ capture=[-\d.na]+ recall=[-\d.na]+ "
                  r"false_promotions=[\d.]+$")


def test_reduced_bench_loses_no_winner_and_rarely_promotes_noise(tmp_path, redis_url):
    conf = Config(agents=8, runs=96, seeds=1, null_runs=96, null_seeds=3)
    out: list[str] = []
    res = run_bench(conf, tmp_path, redis_url, {}, arms=("swarm", "null"), out=out.append)
    print("\n".join(out))
    assert LINE.match(out[-1]), out[-1]
    swarm = res["arms"]["swarm"]
    assert swarm["lost"] == 0, [r.lost for r in swarm["results"]]
    null = res["arms"]["null"]
    assert sum(r.experiments for r in null["results"]) >= 150  # enough decisions to mean something
    assert res["false_promotions"] <= 0.01
