"""Shared fixtures: a private redis-server, a loopback-only local Ray, git identity."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("GIT_AUTHOR_NAME", "swarm-test")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "swarm-test@localhost")
os.environ.setdefault("GIT_COMMITTER_NAME", "swarm-test")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "swarm-test@localhost")


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine")
    skip_cluster = pytest.mark.skip(reason="needs a multi-node Ray cluster")
    for item in items:
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
