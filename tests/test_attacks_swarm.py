"""The promoted forgery (issue 24): in a real `swarm run` (real Ray, redis, git, trainer, both
sandboxes) whose command backend turns train.py into a model that forges its own score. Before,
the forged val_bpb 0.04 was promoted to best; now the run is a crash with its fixed reason, best
is still the baseline, and nothing of the attempt is left."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_attacks_eval import FORGED, hostile, named
from test_attacks_scoring import _alive_with
from test_swarm_run import _ledger_counts, _swarm

REFUSED = "submit refused: tensor 0 has a name that is not a dotted identifier"
CLI = '''import pathlib, sys
p = pathlib.Path(sys.argv[1])
if "class Named" not in p.read_text():   # a fix attempt changes nothing
    p.write_text({text!r})
print("DESCRIPTION: a faster head")
'''


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_forged_score_is_never_promoted(tmp_path):
    # the forged reply also carries a confirm score, as a careful forger's would
    text = hostile(named(FORGED.replace('"num_params"', '"confirm_bpb": 0.05, "num_params"')))
    assert "confirm_bpb" in text
    cli = tmp_path / "cli.py"
    cli.write_text(CLI.format(text=text))
    # the cheapest rules under which a result can move best at all (two baseline samples, no
    # confirmation or re-measure runs), so that one agent gets to its experiment in minutes
    (tmp_path / "swarm.yaml").write_text(
        "backend: {type: command, timeout_s: 120, template: '" + sys.executable + " " + str(cli) + " {train_py}'}\n"
        "programs:\n  - {name: baseline}\n"
        "promotion: {min_dof: 1, confirm_runs: 0, best_remeasures: 0}\n"
        "profile: cpu-smoke\n")   # 2 eval batches (trainer/profiles.py): the forged score is the claim
    r = _swarm(tmp_path, "run", "--agents", "1", "--budget", "8", "--max-experiments", "1", "--plain", timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    home, data = tmp_path / "home", tmp_path / "data"

    counts, rows = _ledger_counts(home)
    exps = [row for row in rows if row["kind"] == "experiment"]
    assert len(exps) == 1 and exps[0]["status"] == "crash", exps
    assert exps[0]["reason"].startswith(REFUSED), exps[0]["reason"]
    assert all(row["val_bpb"] is None or row["val_bpb"] > 1.0 for row in rows), [row["val_bpb"] for row in rows]
    assert counts["started"] == counts["records"]

    git = ["git", "--git-dir", str(home / "repo.git")]
    refs = subprocess.run(git + ["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/best"],
                          capture_output=True, text=True, check=True).stdout.split("\n")
    root = subprocess.run(git + ["rev-parse", "refs/swarm/root"], capture_output=True, text=True,
                          check=True).stdout.strip()
    refs = [ln.split() for ln in refs if ln.strip()]
    assert refs and all(sha == root for sha, _ in refs), (refs, root)  # best is still the baseline
    st = json.loads(_swarm(tmp_path, "status", "--json").stdout)
    assert st["runs"] == len(rows)
    # nothing of the swarm is left running: no sandbox, no evaluator, no daemon
    assert _alive_with(str(home)) == [] and _alive_with(str(data)) == []
