"""Which code a swarm's Ray workers run. Ray puts the driver's working directory first on every
worker's sys.path: `swarm run` started in a research project that has a folder named `agents`,
`trainer` or `coordinator` (common names) made the workers import that folder instead of this
package, so the agent actors failed, or ran foreign code. start_local_ray (agents/raylocal.py)
starts Ray so that the workers import the code the driver runs, wherever it was started."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import agents

DRIVER = textwrap.dedent("""
    import json, os, shutil, sys, tempfile
    from pathlib import Path
    import agents.raylocal as rl
    before = os.getcwd()
    tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    rl.start_local_ray(num_cpus=1, object_store_mb=100, temp_dir=tmp)
    import ray

    @ray.remote
    def where():
        import agents, trainer
        return agents.__file__, trainer.__file__

    try:
        a, t = ray.get(where.remote(), timeout=120)
        print(json.dumps({"agents": a, "trainer": t, "cwd_after": os.getcwd(), "cwd_before": before}))
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
""")


def test_workers_import_this_package_not_a_same_named_folder_of_the_working_directory(tmp_path):
    project = tmp_path / "project"            # a user's research project, where `swarm run` is started
    for name in ("agents", "trainer"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text("raise ImportError('the project folder, not the package')\n")
    drv = tmp_path / "bin"
    drv.mkdir()
    (drv / "drv.py").write_text(DRIVER)
    root = Path(agents.__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SWARM_"))}
    env["PYTHONPATH"] = str(root)   # the driver imports the package as installed (not from its cwd)
    p = subprocess.run([sys.executable, str(drv / "drv.py")], cwd=project, env=env, capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert Path(got["agents"]).resolve() == root / "agents" / "__init__.py"
    assert Path(got["trainer"]).resolve() == root / "trainer" / "__init__.py"
    assert got["cwd_after"] == got["cwd_before"] == str(project)   # the driver's own directory is unchanged
