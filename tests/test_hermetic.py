"""The user's shell settings never reach a test: tests/conftest.py drops SWARM_*, RAY_*, MLFLOW_*,
WANDB_* and the LLM provider keys before any test (or anything a test starts) reads them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_exported_swarm_ray_and_llm_settings_are_dropped_before_the_tests_run(tmp_path):
    env = dict(os.environ, SWARM_HOME=str(tmp_path / "users-swarm"), SWARM_DATA_DIR="/nonexistent",
               RAY_ADDRESS="10.9.9.9:6379", OPENAI_API_KEY="sk-user", MLFLOW_TRACKING_URI="http://x",
               PYTHONPATH=str(ROOT))
    probe = ("import importlib.util, json, os, sys\n"
             "spec = importlib.util.spec_from_file_location('conftest', sys.argv[1])\n"
             "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
             "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith(('SWARM_', 'RAY_',"
             " 'MLFLOW_')) or k == 'OPENAI_API_KEY'}))\n")
    out = subprocess.run([sys.executable, "-c", probe, str(ROOT / "tests" / "conftest.py")], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {}
    assert not (tmp_path / "users-swarm").exists()
