"""End to end through `swarm run` with the litellm backend against the scripted server: the
agents' transcripts, logs and last outcome, and an exit status that tells the truth."""
import json
import os
import subprocess
import sys

import pytest

from tests.fake_llm_server import FakeLLMServer

SECRET = "sk-e2e-llm-0b7c1d2e3f4a5b6c"


def _swarm(tmp_path, *args, timeout=400):
    env = dict(os.environ, SWARM_HOME=str(tmp_path / "home"), SWARM_DATA_DIR=str(tmp_path / "data"),
               E2E_LLM_KEY=SECRET, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_swarm_run_with_no_valid_proposal_exits_1_and_says_why(tmp_path):
    with FakeLLMServer([("ok", "I would train it longer.")]) as srv:
        (tmp_path / "swarm.yaml").write_text(
            f'backend: {{type: litellm, model: "openai/fake", api_base: "{srv.url}", '
            f'api_key_env: E2E_LLM_KEY, timeout_s: 10, max_retries: 0}}\n'
            "programs:\n  - {name: baseline}\n"
            # one baseline repeat (min_dof 1) before the proposals this test is about
            "promotion: {min_dof: 1, best_remeasures: 0}\nprofile: cpu-smoke\n")
        r = _swarm(tmp_path, "run", "--agents", "1", "--budget", "5", "--max-experiments", "2", "--plain")
        st = _swarm(tmp_path, "status", "--json")
    assert r.returncode == 1, r.stderr[-3000:]
    assert ("swarm run: no valid proposal in this run: 2 invalid (2 x 'no edit found in output')"
            in r.stderr)
    # preflight (1) + 2 proposals, each asked again once with the parser's message
    assert len(srv.requests) == 5
    home = tmp_path / "home"
    transcripts = sorted(home.glob("runs/*/proposal.json"))
    assert len(transcripts) == 2
    t = json.loads(transcripts[0].read_text())
    assert t["result"] == "invalid: no edit found in output" and len(t["turns"]) == 2
    assert (home / "logs" / "agent-a0-baseline.log").is_file()
    agent = json.loads(st.stdout)["agents"][0]
    assert agent["last_outcome"] == "stopped: max_experiments; last: invalid: no edit found in output"
    assert agent["statuses"]["invalid"] == 2
    everything = "".join(p.read_text(errors="replace") for p in home.rglob("*")
                         if p.is_file() and p.suffix in (".json", ".jsonl", ".log"))
    assert SECRET not in everything
