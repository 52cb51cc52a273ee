"""The `command` backend with small scripts standing in for a coding-agent CLI, and an agent
driven by it end to end."""
from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from agents.agent import ResearchAgent
from agents.backends.base import ProposalContext, make_backend
from agents.config import AgentConfig
from agents.errors import ProposalAbandoned
from agents.program import parse_program
from tests.fake_coordinator import TINY_PROGRAM, FakeCoordinator, fake_runner, git, make_research_repo

LIMITS = dict(max_edit_bytes=20_000, max_file_bytes=200_000)


def setup(tmp_path, script: str, timeout_s=20.0):
    make_research_repo(tmp_path / "home")
    wt = tmp_path / "wt"
    git(tmp_path, "clone", "-q", str(tmp_path / "home" / "repo.git"), str(wt))
    cli = tmp_path / "fake_cli.py"
    cli.write_text(script)
    backend = make_backend({"type": "command", "timeout_s": timeout_s,
                            "template": f"{sys.executable} {cli} {{prompt_file}} {{train_py}}"})
    ctx = ProposalContext(program=parse_program(TINY_PROGRAM, "tiny"),
                          source=(wt / "train.py").read_text(), base_commit=git(wt, "rev-parse", "HEAD"),
                          agent="a", worktree=wt, state_dir=tmp_path / "state", in_flight="other idea")
    return backend, ctx, wt


EDITOR = '''import sys, pathlib
prompt = pathlib.Path(sys.argv[1]).read_text()
assert "Research program" in prompt and "DEPTH = 4" in prompt, prompt[:200]
p = pathlib.Path(sys.argv[2])
p.write_text(p.read_text().replace("DEPTH = 4", "DEPTH = 6"))
print("thinking...")
print("DESCRIPTION: deeper model")
'''


def test_edit_is_what_the_cli_changed_and_worktree_is_restored(tmp_path):
    backend, ctx, wt = setup(tmp_path, EDITOR)
    p = backend.propose(ctx)
    new, desc = p.resolve(ctx.source, **LIMITS)
    assert desc == "deeper model" and "DEPTH = 6" in new
    assert git(wt, "status", "--porcelain") == ""


def test_forbidden_file_is_invalid(tmp_path):
    script = EDITOR + 'pathlib.Path("prepare.py").write_text("evil = 1\\n")\n'
    backend, ctx, wt = setup(tmp_path, script)
    p = backend.propose(ctx)
    assert p.touched == ["prepare.py"]
    try:
        p.resolve(ctx.source, **LIMITS)
    except Exception as e:
        assert "prepare.py" in str(e)
    else:
        raise AssertionError("a forbidden file must make the edit invalid")
    assert git(wt, "status", "--porcelain") == "" and not (wt / "prepare.py").exists()


def test_cli_that_never_exits_is_killed(tmp_path):
    script = ('import os, pathlib, subprocess, sys, time\n'
              'pathlib.Path(sys.argv[2]).write_text("half")\n'
              'child = subprocess.Popen(["sleep", "300"])\n'
              'pathlib.Path(sys.argv[1]).with_name("child.pid").write_text(str(child.pid))\n'
              'time.sleep(300)\n')
    backend, ctx, wt = setup(tmp_path, script, timeout_s=2)
    t0 = time.time()
    p = backend.propose(ctx)
    assert p.error and "timed out" in p.error
    assert time.time() - t0 < 60
    pid = int((tmp_path / "state" / "command" / "child.pid").read_text())
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # a zombie is dead enough; it goes once reaped by init
        if open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the CLI's child process survived the timeout")
    assert git(wt, "status", "--porcelain") == ""


def test_failing_cli_is_an_error_with_its_last_stderr_line(tmp_path):
    backend, ctx, _ = setup(tmp_path, 'import sys\nprint("no key configured", file=sys.stderr)\nsys.exit(3)\n')
    p = backend.propose(ctx)
    assert p.error == "command exited with 3: no key configured"


def test_agent_with_command_backend(tmp_path):
    make_research_repo(tmp_path / "home")
    cli = tmp_path / "fake_cli.py"
    cli.write_text('import sys, pathlib, re\np = pathlib.Path(sys.argv[1])\n'
                   's = p.read_text()\nd = int(re.search(r"DEPTH = (\\d+)", s).group(1))\n'
                   'p.write_text(s.replace(f"DEPTH = {d}", f"DEPTH = {d + 1}"))\n'
                   'print(f"DESCRIPTION: depth {d + 1}")\n')
    cfg = AgentConfig(name="cmd", program_name="tiny", program_text=TINY_PROGRAM,
                      swarm_home=tmp_path / "home", hardware_class="hw", budget=1,
                      backend={"type": "command", "template": f"{sys.executable} {cli} {{train_py}}",
                               "timeout_s": 30})
    coord = FakeCoordinator()
    agent = ResearchAgent(cfg, coord, runner=fake_runner())
    agent.run(max_experiments=3)
    exps = [r for r in coord.all_records() if r.kind == "experiment"]
    assert [r.description for r in exps] == ["depth 5", "depth 6", "depth 7"]
    assert [r.status for r in exps] == ["ok"] * 3
    assert agent.kept == 2 and agent.wt.is_clean()


def test_cli_failing_the_same_way_stops_the_agent_instead_of_looping(tmp_path):
    make_research_repo(tmp_path / "home")
    cli = tmp_path / "not_logged_in.py"
    cli.write_text('import sys\nprint("not logged in", file=sys.stderr)\nsys.exit(1)\n')
    cfg = AgentConfig(name="cmd", program_name="tiny", program_text=TINY_PROGRAM,
                      swarm_home=tmp_path / "home", hardware_class="hw", budget=1,
                      backend={"type": "command", "template": f"{sys.executable} {cli}"})
    coord = FakeCoordinator()
    out = ResearchAgent(cfg, coord, runner=fake_runner()).run(deadline=time.time() + 3600)
    exps = [r for r in coord.all_records() if r.kind == "experiment"]
    assert [r.reason for r in exps] == ["command exited with 1: not logged in"] * 5
    assert out["stop_reason"] == ("backend refused: the same failure 5 times in a row: "
                                  "command exited with 1: not logged in")


def test_stop_kills_the_cli_in_flight(tmp_path):
    backend, ctx, _ = setup(tmp_path, "import time\ntime.sleep(60)\n", timeout_s=50)
    threading.Timer(1.0, backend.cancel).start()   # were it not killed: 50 s, then no raise
    with pytest.raises(ProposalAbandoned):
        backend.propose(ctx)


PLANTER = EDITOR + '''import os, stat, subprocess
marker = pathlib.Path(sys.argv[2]).parent.parent / "hook-ran"
hooks = pathlib.Path(sys.argv[2]).parent.parent / "planted-hooks"
hooks.mkdir(exist_ok=True)
script = "#!/bin/sh\\necho ran >> " + str(marker) + "\\n"
for name in ("fsmon", "pre-commit", "post-checkout", "reference-transaction", "post-index-change"):
    f = hooks / name
    f.write_text(script)
    f.chmod(0o755)
# the CLI runs in the worktree, so it can rewrite the repo's config the agent's git then reads
subprocess.run(["git", "config", "core.fsmonitor", str(hooks / "fsmon")], check=True)
subprocess.run(["git", "config", "core.hooksPath", str(hooks)], check=True)
'''


def test_git_after_the_cli_never_runs_what_the_cli_planted(tmp_path):
    """A coding-agent CLI edits the worktree's git config (fsmonitor, hooksPath); the backend's
    own git calls afterwards (status, reset, clean) must not run any of it."""
    backend, ctx, wt = setup(tmp_path, PLANTER)
    p = backend.propose(ctx)
    new, _ = p.resolve(ctx.source, **LIMITS)
    assert "DEPTH = 6" in new
    assert git(wt, "config", "core.hooksPath").strip()  # the plant is really there
    assert not (tmp_path / "hook-ran").exists()
