"""bench/search.py at a toy size (three methods, real backends, one real redis), and the
research bench with the optuna backend."""
import json
import math

import pytest

from bench.search import baseline_source, main, merge, true_bpb


def test_landscape_and_merge():
    base = baseline_source()
    assert math.isclose(true_bpb(base), 1.6453, abs_tol=1e-4)
    cand = base.replace("MATRIX_LR = 0.02 ", "MATRIX_LR = 0.04 ")
    best = base.replace("WARMDOWN_FRAC = 0.5 ", "WARMDOWN_FRAC = 0.7 ")
    merged = merge(base, cand, best)
    assert "MATRIX_LR = 0.04 " in merged and "WARMDOWN_FRAC = 0.7 " in merged
    assert true_bpb(base.replace("MATRIX_LR = 0.02 ", "MATRIX_LR = 0.2 ")
                    .replace("DEPTH = 8 if CUDA else 4", "DEPTH = 8 if CUDA else 10")) is None


def test_bench_runs_every_method_at_equal_runs(tmp_path, capsys, monkeypatch):
    import tempfile

    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    out = tmp_path / "search.json"
    assert main(["--seeds", "1", "--runs", "14", "--at", "7", "--agents", "3", "--out", str(out)]) == 0
    assert not list(work.iterdir())   # its redis folder removed
    d = json.loads(out.read_text())
    # --at 7: the same swarms' state after their first 7 runs, each trace's prefix
    for r7 in d["at"]["7"]:
        (trace,) = d["traces"][r7["method"]]
        assert r7["runs"] == 7 and r7["finals"] == [pytest.approx(trace[6], abs=1e-4)]
    assert [r["method"] for r in d["rows"]] == ["mutate", "optuna-tpe", "optuna-cmaes",
                                                "optuna-tpe-anywhere", "optuna-cmaes-anywhere"]
    for (trace,) in d["traces"].values():
        assert len(trace) == 14 and trace[0] <= d["baseline"] + 1e-4   # traces keep 4 decimals
    assert "| optuna-tpe |" in capsys.readouterr().out


def test_research_bench_runs_the_optuna_backend_with_its_studies_on_the_bench_redis(tmp_path, redis_url,
                                                                                   monkeypatch):
    import redis

    from agents.backends.optuna_study import study_views
    from bench.research import Config, run_bench
    from bench.swarmsim import backend_spec

    monkeypatch.delenv("SWARM_REDIS_URL", raising=False)
    assert backend_spec("{type: optuna, sampler: cmaes}") == {"type": "optuna", "sampler": "cmaes"}
    conf = Config(agents=4, runs=24, seeds=1, null_runs=0, null_seeds=0)
    out: list[str] = []
    res = run_bench(conf, tmp_path, redis_url, {"*": "optuna"}, arms=("swarm",), out=out.append)
    assert res["arms"]["swarm"]["results"][0].runs == 24
    views = study_views(redis.Redis.from_url(redis_url), "swarm-0")
    # four programs, one agent each: a study per program, each with its agent's trials
    assert len(views) == 4 and all(len(v.rows) >= 2 for v in views)
    assert all(r["agent"] for v in views for r in v.rows)
