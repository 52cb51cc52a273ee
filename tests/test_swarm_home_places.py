"""The swarm's home and data dir where users put them: the working directory, the user's home, a
separate path, the temp folder. Before, with a home outside the temp folder every run after an
agent's first crashed (FileNotFoundError .standby-*/train.py): the standby's scratch was renamed
on the host while its sandbox's bind mount pointed at it (renaming a mount point's folder
detaches the mount in other namespaces, and the sandbox's root was the host's). Each place:
runs back to back, the second taking the standby, both train, and neither sees the home nor the
data dir. A real `swarm run` with its home and data outside the temp folder is
tests/test_swarm_run.py's."""
from __future__ import annotations

import shutil
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
