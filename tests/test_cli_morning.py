"""The morning-after commands read a stopped swarm from its parquet snapshot (no redis, no Ray)."""
import json
import sys

import pytest

from coordinator.cli import main
from coordinator.state.home import SwarmHome
from coordinator.state.ledger import write_parquet_rows
from tests.synthetic import make_swarm


@pytest.fixture
def stopped_swarm(tmp_path):
    home = SwarmHome(tmp_path / "home")
    sw = make_swarm(home.root, experiments=12, agents=2)
    home.create_or_resume(None)
    write_parquet_rows(sw.rows, home.ledger_snapshot)
    return home, sw


def test_export_and_lineage_from_the_snapshot(stopped_swarm, tmp_path, capsys):
    home, sw = stopped_swarm
    out = tmp_path / "ledger.json"
    assert main(["export", "--swarm-home", str(home.root), "--format", "json", "--output", str(out)]) == 0
    assert len(json.loads(out.read_text())) == len(sw.rows)
    assert main(["lineage", "--swarm-home", str(home.root)]) == 0
    assert "best/" in capsys.readouterr().out
    dot = tmp_path / "g.dot"
    assert main(["lineage", "--swarm-home", str(home.root), "--format", "dot", "--output", str(dot)]) == 0
    assert dot.read_text().splitlines()[0] == 'strict digraph "lineage" {'  # pydot's writer
    capsys.readouterr()
    assert main(["status", "--swarm-home", str(home.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # experiments are the agents' own ideas; a run is a record that trained (jobs too)
    assert data["experiments"] == sum(1 for r in sw.rows if r["kind"] == "experiment")
    assert data["runs"] == sum(1 for r in sw.rows if r["run_status"] != "invalid")
    assert data["records"] == len(sw.rows) and data["running"] is False
    assert data["lost_winners"] == []


def test_morning_after_commands_do_not_import_ray(stopped_swarm):
    import subprocess
    home, _ = stopped_swarm
    code = ("import sys; from coordinator.cli import main; "
            f"rc = main(['export', '--swarm-home', {str(home.root)!r}, '--format', 'tsv', '--output', '-']); "
            "assert 'ray' not in sys.modules, 'ray was imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("commit\tval_bpb")


def test_swarm_lineage_json_is_one_json_object(stopped_swarm):
    """`swarm lineage --format json | python -c 'json.load(sys.stdin)["nodes"]'` works: the
    installed entry point prints the graph as a JSON object, not a JSON string holding it."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    home, sw = stopped_swarm
    root = Path(__file__).resolve().parents[1]
    exe = shutil.which("swarm")
    cmd = [exe] if exe else [sys.executable, "-m", "coordinator.cli"]
    env = {**os.environ, "PYTHONPATH": str(root)}  # this tree's code, whatever is installed
    r = subprocess.run([*cmd, "lineage", "--swarm-home", str(home.root), "--format", "json", "--all"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, dict) and data["directed"] is True
    commits = {row["commit"] for row in sw.rows if row.get("commit")}
    assert commits <= {n["id"] for n in data["nodes"]}
    assert len(data["links"]) >= 1


def test_lineage_exports_hold_best_only_unless_all(stopped_swarm, tmp_path, capsys):
    """Issue 23: `--format json|dot` held discarded commits without --all, unlike the tree."""
    home, sw = stopped_swarm
    discarded = {r["commit"] for r in sw.rows if r["decision"] == "discard"}
    assert discarded
    for fmt in ("json", "dot"):
        for extra, want in (([], False), (["--all"], True)):
            out = tmp_path / f"g{len(extra)}.{fmt}"
            assert main(["lineage", "--swarm-home", str(home.root), "--format", fmt,
                         "--output", str(out), *extra]) == 0
            text = out.read_text()
            assert all((c in text) is want for c in discarded), (fmt, extra)
            assert sw.best["cpu-small"] in text
    capsys.readouterr()
