"""The swarm's home and data dir where users put them: the working directory, the user's home, a
separate path, the temp folder. Before, with a home outside the temp folder every run after an
agent's first crashed (FileNotFoundError .standby-*/train.py): the standby's scratch was renamed
on the host while its sandbox's bind mount pointed at it (renaming a mount point's folder
detaches the mount in other namespaces, and the sandbox's root was the host's). Each place:
runs back to back, the second taking the standby, both train, and neither sees the home nor the
data dir. One real `swarm run --swarm-home DIR` too."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_runner import TINY, small_eval, write

__all__ = ["small_eval"]  # a fixture, imported for this module's tests

PLACES = ("working-directory", "user-home", "separate-path", "temp-folder")


@pytest.fixture
def place(request, tmp_path, prepared_data_dir, monkeypatch):
    """(home, data dir) in one of PLACES, the data a copy of the prepared one; removed after."""
    where = request.param
    if where == "working-directory":
        base = Path(tempfile.mkdtemp(prefix="swarm-project-", dir="/var/tmp"))
        monkeypatch.chdir(base)
        home, data = Path(".swarm"), Path("data")  # relative, as a user types them
    else:
        parent = {"user-home": Path.home(), "separate-path": Path("/var/tmp"), "temp-folder": tmp_path}[where]
        base = Path(tempfile.mkdtemp(prefix=".swarm-place-", dir=parent))
        home, data = base / "home", base / "data"
    shutil.copytree(prepared_data_dir, base / "data")
    for k in ("SWARM_HOME", "SWARM_DATA_DIR", "SWARM_UNSAFE_NO_SANDBOX"):
        monkeypatch.delenv(k, raising=False)
    yield home, data
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("place", PLACES, indirect=True)
def test_back_to_back_runs_train_wherever_the_home_and_data_are(place, small_eval):
    from trainer.runner import run_experiment
    from trainer.standby import discard_all

    home, data = place
    probe = (f"import os\nfor p in ({str(home.resolve())!r}, {str(data.resolve())!r}):\n"
             "    print('SEES', p, os.path.exists(p), flush=True)\n")
    tp = write(home.parent if home.is_absolute() else Path.cwd(), TINY.replace("model = Bigram()",
                                                                            probe + "model = Bigram()"))
    try:
        results = []
        for i in range(2):
            r = run_experiment(tp, home / "runs" / f"exp{i}", budget=2, threads=1, data_dir=data,
                               swarm_home=home, standby=True)
            results.append(r)
            assert r.status in ("ok", "timeout") and "FileNotFoundError" not in (r.error or ""), (i, r.error)
            log = Path(r.log_path).read_text()
            assert log.count("SEES") == 2 and "True" not in "".join(
                ln for ln in log.splitlines() if ln.startswith("SEES")), log[-2000:]
        assert "standby_age" in results[1].timings  # the second run took the standby
        assert results[1].steps and results[1].steps > 3
    finally:
        discard_all()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_swarm_run_with_a_swarm_home_outside_the_temp_folder(prepared_data_dir):
    """A real `swarm run --swarm-home DIR` (DIR under /var/tmp, the data dir under the user's
    home): every run trains, none crashes on a missing standby scratch."""
    from coordinator.state.home import SwarmHome, ledger_redis
    from coordinator.state.ledger import Ledger

    base = Path(tempfile.mkdtemp(prefix="swarm-run-home-", dir="/var/tmp"))
    data = Path(tempfile.mkdtemp(prefix=".swarm-run-data-", dir=Path.home()))
    try:
        shutil.copytree(prepared_data_dir, data, dirs_exist_ok=True)
        # few baseline repeats (min_dof 2) and one experiment: every run after the agent's first
        # used to crash here
        (base / "swarm.yaml").write_text("backend: {type: mutate}\nprograms:\n  - {name: baseline}\n"
                                         "promotion: {min_dof: 2, best_remeasures: 1, concurrent: independent}\n"
                                         "profile: cpu-smoke\n")   # 2 eval batches: trainer/profiles.py
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
        env.update(SWARM_DATA_DIR=str(data), PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        home = base / "home"
        p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "--agents", "1", "--budget", "5",
                              "--max-experiments", "1", "--plain", "--swarm-home", str(home)],
                             cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            _, err = p.communicate(timeout=2300)
        finally:
            if p.poll() is None:  # its redis and Ray go with its group
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(60)
        assert p.returncode == 0, err[-3000:]
        h = SwarmHome(home)
        with ledger_redis(h) as client:
            rows = Ledger(client, h.info()["swarm_id"]).rows()
        # the baseline (once or twice: with a noise history beside the data, once) then the
        # experiment: the runs after the agent's first are the ones that crashed
        assert len(rows) >= 2 and [r["kind"] for r in rows].count("experiment") == 1, rows
        crashed = [(r.get("status"), r.get("reason")) for r in rows if r.get("status") == "crash"]
        assert crashed == [], crashed
        assert not any("FileNotFoundError" in json.dumps(r) for r in rows)
    finally:
        pidfile = base / "home" / "redis" / "redis.pid"  # a swarm stopped by force leaves its redis
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
