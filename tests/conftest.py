"""Shared fixtures: a private redis-server, a loopback-only local Ray, git identity."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Hermetic: the user's own settings never reach a test (or the swarms, Ray jobs and servers the
# tests start, which inherit this environment). A SWARM_HOME exported as the README suggests made
# the `ray job submit` test run in the user's swarm; an LLM key would turn `auto` into litellm.
_USER_PREFIXES = ("SWARM_", "RAY_", "MLFLOW_", "WANDB_")
_USER_KEYS = {"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY",
              "GROQ_API_KEY", "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY", "TOGETHERAI_API_KEY"}
for _k in [k for k in os.environ if k.startswith(_USER_PREFIXES) or k in _USER_KEYS]:
    del os.environ[_k]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("GIT_AUTHOR_NAME", "swarm-test")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "swarm-test@localhost")
os.environ.setdefault("GIT_COMMITTER_NAME", "swarm-test")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "swarm-test@localhost")


# The slow tier (`-m slow`; the fast tier is `-m "not slow" -n 2`, the README's test command). A test
# is slow when it carries @pytest.mark.slow, or uses a fixture that makes it slow, or sits in a
# module whose every test is slow. Measured 2026-12-03 (CPU seconds of the whole process tree
# per test, on a loaded machine): one run of the real trainer in its sandbox costs 4-7 CPU s
# (import torch twice, export, score), starting the session's Ray 6-8 s.
SLOW_FIXTURES = {
    "ray_local": "starts a local Ray",
    "prepared_data_dir": "runs the real trainer on the prepared corpus",
}
SLOW_MODULES = {
    "test_attacks_isolation": "each attack runs a train.py in the real sandbox",
    "test_attacks_scoring": "each attack trains and scores a train.py for real",
    "test_runner": "the real runner, trainer and evaluation",
    "test_runner_adversarial": "hostile train.py files through the real runner",
    "test_runner_contract": "the real runner against its fake",
    "test_chaos": "kills processes of a loaded swarm at random",
    "test_multinode": "head and worker Ray nodes",
    "test_ray_code": "starts a Ray in a driver of its own",
    "test_bench_coordinator": "runs the coordinator bench (one arm on Ray)",
    "test_bench_research": "runs the research bench (162 s here)",
    "test_bench_search": "runs the search bench",
    "test_swarm_run": "real swarms",
    "test_swarm_run_llm": "a real swarm with an LLM backend",
    "test_trainer_manual": "`swarm train` runs the real trainer",
}

SLOW_TESTS = {   # the heaviest of the rest (CPU seconds of the process tree, measured here)
    "test_report.py::test_report_in_headless_chromium_counts_nodes_and_shows_diff_on_click":
        "starts Chromium (8.7 s)",
    "test_rules_null.py::test_null_effects_rarely_promote": "a statistical simulation (7.9 s)",
    "test_sandbox.py::test_torch_trains_under_the_limits": "trains with torch in the sandbox (5.8 s)",
    "test_prepare.py::test_two_processes_at_once": "prepares the corpus twice at once (5.5 s)",
}


def _slow_reason(item) -> str | None:
    for name, why in SLOW_FIXTURES.items():
        if name in getattr(item, "fixturenames", ()):
            return why
    if item.module is None:
        return None
    name = item.module.__name__.rsplit(".", 1)[-1]
    return SLOW_MODULES.get(name) or SLOW_TESTS.get(f"{name}.py::{item.name}")


@pytest.hookimpl(tryfirst=True)   # before `-m` selects on the markers
def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine")
    skip_cluster = pytest.mark.skip(reason="needs a multi-node Ray cluster")
    for item in items:
        if "slow" not in item.keywords and _slow_reason(item):
            item.add_marker(pytest.mark.slow)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        if "cluster" in item.keywords:
            item.add_marker(skip_cluster)


@pytest.fixture
def redis_daemon(tmp_path):
    """A real redis-server on 127.0.0.1, a free port, a password, AOF on; stopped by PID."""
    from coordinator.state.redisd import RedisDaemon

    d = RedisDaemon(tmp_path / "redis").start()
    yield d
    d.stop(kill=True)


@pytest.fixture
def redis_url(redis_daemon):
    return redis_daemon.url


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray on loopback with 2 CPUs for the whole session, shut down after."""
    import ray
    from agents.raylocal import start_local_ray

    # Short path: Ray's unix sockets must fit in 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    start_local_ray(num_cpus=4, object_store_mb=200, temp_dir=tmp)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory):
    """A data dir with the bundled corpus prepared for the cpu profile, once per session.

    Pass it as `data_dir=` to trainer.runner.run_experiment (or set SWARM_DATA_DIR)."""
    from trainer.prepare import prepare

    d = tmp_path_factory.mktemp("swarm-data")
    prepare("bundled", ["cpu"], data_dir=d)
    return d
