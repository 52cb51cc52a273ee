"""End to end: a real `swarm run` with the optuna backend, `swarm stop`, and `swarm run` again
in the same SWARM_HOME (real trainer on CPU, Ray, redis, git). The resumed swarm says it is
resuming and from which state, and its study goes on: no point it already held is proposed
again (before, a resumed agent replayed its first points in the same order)."""
import json
import os
import subprocess
import sys
import time

import pytest


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SWARM_", "RAY_")) and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    return dict(env, SWARM_HOME=str(tmp_path / "home"), SWARM_DATA_DIR=str(tmp_path / "data"),
                PYTHONUNBUFFERED="1")


def _swarm(tmp_path, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def _trials(home):
    """Every trial of the swarm's studies: (number, state, params, user attrs)."""
    from agents.backends.optuna_study import journal_storage
    from coordinator.state.home import SwarmHome, ledger_redis

    h = SwarmHome(home)
    with ledger_redis(h) as client:
        storage = journal_storage(client, h.info()["swarm_id"])
        (study,) = storage.get_all_studies()
        return [(t.number, t.state.name, dict(t.params), dict(t.user_attrs))
                for t in storage.get_all_trials(study._study_id)]


def _ok_experiments_now(home) -> int:
    """Experiments trained so far (discarded, kept...), read from the running swarm's redis."""
    import redis

    from coordinator.state.ledger import Ledger

    try:
        pw, port = (home / "redis" / "redis.secret").read_text().split()
        info = json.loads((home / "swarm.json").read_text())
        c = redis.Redis(host="127.0.0.1", port=int(port), password=pw, socket_timeout=2)
        return sum(r["kind"] == "experiment" and r.get("run_status", r.get("status")) != "invalid"
                   for r in Ledger(c, info["swarm_id"]).rows())
    except (OSError, ValueError, KeyError, redis.RedisError):
        return 0


def _key(params):
    return json.dumps({n: round(v, 6) if isinstance(v, float) else v for n, v in sorted(params.items())})


@pytest.mark.slow
@pytest.mark.timeout(1800)   # its own waits are up to 900 s each; a loaded machine: 900 s ran out in `swarm stop`
def test_swarm_stop_then_run_again_goes_on_with_the_study(tmp_path):
    home = tmp_path / "home"
    # few baseline repeats (min_dof 2): the study's trials, not the noise estimate, are the point
    (tmp_path / "swarm.yaml").write_text("backend: {type: optuna}\nprograms:\n  - {name: baseline}\n"
                                         "promotion: {min_dof: 2, best_remeasures: 1}\n")
    run = [sys.executable, "-m", "coordinator.cli", "run", "--agents", "2", "--budget", "6", "--plain"]
    # 1. a swarm that would go on for a while, stopped with `swarm stop` once it has trials
    p = subprocess.Popen(run + ["--max-experiments", "6"], cwd=tmp_path, env=_env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900  # a loaded 2-core machine: minutes per round
    while time.monotonic() < deadline and p.poll() is None:
        time.sleep(2)
        if _ok_experiments_now(home) >= 2:
            break
    assert p.poll() is None, "the first run ended before it was stopped"
    stop = _swarm(tmp_path, "stop", "--timeout", "900")   # in-flight runs record themselves first
    out1, err1 = p.communicate(timeout=900)
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stderr[-2000:]
    first = _trials(home)
    held = {_key(params) for _, state, params, attrs in first if params and not attrs.get("not_run")}
    assert len(held) >= 3                     # the baseline and the first trials

    # 2. run again in the same home: it says where it goes on from; its study goes on
    r2 = _swarm(tmp_path, "run", "--agents", "2", "--budget", "6", "--plain", "--max-experiments", "2")
    assert r2.returncode == 0, r2.stderr[-2000:]
    line = next(ln for ln in r2.stdout.splitlines() if ln.startswith("swarm run: resuming swarm"))
    assert "experiments" in line and "best " in line, line
    assert "baseline@" in line and f"({len(first)} trials" in line, line
    later = [(n, params, attrs) for n, state, params, attrs in _trials(home)[len(first):]
             if attrs.get("origin") == "optuna" and not attrs.get("not_run")]
    assert len(later) >= 2
    for n, params, attrs in later:
        assert _key(params) not in held, f"trial {n} proposes a point the study already held"
        assert attrs.get("centre"), "a trial proposed around best records its centre"
