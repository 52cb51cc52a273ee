"""Start or join Ray so that a local swarm (and every test) stays on 127.0.0.1.

By default Ray binds to the machine's external address and its dashboard probes the cloud
metadata address; a local swarm needs neither. Used by the CLI and by the tests.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LOOPBACK_ENV = {
    # Ray then uses 127.0.0.1 as the node address on Linux (measured, see ENV-NOTES).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
}

# A private local Ray has no dashboard to show task events; reporting them anyway cost ~17% of
# the CPU of every actor call (bench/coordinator.py: 970 -> 800 us per call on each side).
QUIET_ENV = {"RAY_task_events_report_interval_ms": "0"}
# A new local Ray turns token auth on by default and says so with a WARNING on the user's
# terminal at every `swarm run`. Quiet, that logger is raised to ERROR. (Setting RAY_AUTH_MODE
# instead breaks a driver that imported ray before it was set: its client stays 'disabled'
# while the GCS it starts wants a token.)
AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def loopback_environment(home: Path) -> dict[str, str]:
    """Environment entries that keep a local Ray on loopback with no cloud probing.

    `home` gets a `ray_bootstrap_config.yaml` naming the local provider, which is what Ray's
    cloud detection reads before it would ask the metadata address.
    """
    home.mkdir(parents=True, exist_ok=True)
    boot = home / "ray_bootstrap_config.yaml"
    if not boot.exists():
        boot.write_text("provider:\n  type: local\n")
    return dict(LOOPBACK_ENV)


# The folder that holds this package (agents/, coordinator/, trainer/): an editable install's
# checkout, or site-packages. ray.init runs from here: Ray puts the driver's working directory at
# ray.init first on every worker's sys.path (and a local node's workers start there), so `swarm run`
# started in a research project with a folder named `agents` or `trainer` made the workers import
# that folder instead of this package (tests/test_ray_code.py). From here, they import the code the
# driver runs; contextlib.chdir gives the driver its own working directory back.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def start_local_ray(num_cpus: int, *, num_gpus: int | None = None,
                    object_store_mb: int = 256, temp_dir: Path | None = None,
                    address: str | None = None, resources: dict[str, float] | None = None,
                    quiet: bool = True) -> None:
    """Start a private local Ray (address None) on 127.0.0.1, or join `address`.
    `resources`: custom resources of the private Ray's one node. `quiet` keeps Ray's own
    start-up chatter (its INFO lines) off the user's terminal.

    Raises ConnectionError with one line naming the address when it cannot be joined.
    """
    if address is None:
        # Before `import ray`: Ray reads these at import time.
        os.environ.update(loopback_environment(Path(os.environ.get("HOME", "/tmp"))))
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return
    if address:
        try:
            with contextlib.chdir(PACKAGE_ROOT):
                ray.init(address=address, log_to_driver=False,
                         logging_level=logging.WARNING if quiet else logging.INFO,
                         runtime_env=_driver_runtime_env())
        except Exception as e:  # ray raises several types here; the user needs one line
            raise ConnectionError(f"cannot join Ray at {address!r}: {str(e).splitlines()[0]}") from e
        return
    # Ray reads the flag at import; when the caller imported ray before us (the test
    # fixture does), the driver would still resolve 127.0.0.1 to the external address.
    from ray._private import ray_constants
    ray_constants.ENABLE_RAY_CLUSTER = False
    kwargs = {}
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        kwargs["_temp_dir"] = str(temp_dir.resolve())   # before ray.init moves to PACKAGE_ROOT
    if quiet:
        logging.getLogger(AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)
    # address="local": always a new private cluster, never one another process started.
    with contextlib.chdir(PACKAGE_ROOT):
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                 include_dashboard=False,
                 object_store_memory=object_store_mb * 1024 * 1024,
                 _node_ip_address="127.0.0.1", log_to_driver=False,
                 logging_level=logging.WARNING if quiet else logging.INFO, **kwargs)
    log.info("started a local Ray with %d CPUs on 127.0.0.1", num_cpus)


def _driver_runtime_env() -> dict:
    """The runtime env of a driver that joins a cluster. Inside a Ray job (`ray job submit`)
    Ray merges it with the job's own and refuses an env var that both set."""
    env = {"PYTHONUNBUFFERED": "1"}
    try:
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        taken = (job.get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        taken = {}
    env = {k: v for k, v in env.items() if k not in taken}
    return {"env_vars": env} if env else {}
