"""bench/search.py end to end at a toy size: three methods, real backends, one real redis."""
import json
import math

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


def test_bench_runs_every_method_at_equal_runs(tmp_path, capsys):
    out = tmp_path / "search.json"
    assert main(["--seeds", "1", "--runs", "14", "--agents", "3", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [r["method"] for r in d["rows"]] == ["mutate", "optuna-tpe", "optuna-cmaes"]
    for (trace,) in d["traces"].values():
        assert len(trace) == 14 and trace[0] <= d["baseline"] + 1e-12
    assert "| optuna-tpe |" in capsys.readouterr().out
