"""The one place ResearchAgent becomes a Ray actor: one GPU per agent where there are GPUs,
a configurable number of CPUs where there are none."""
from __future__ import annotations

import logging
from typing import Any

from agents.agent import ResearchAgent
from agents.config import AgentConfig

log = logging.getLogger(__name__)


def _log_to_home(cfg: AgentConfig) -> None:
    """The agent's warnings (a backend not answering, a retry) go to SWARM_HOME/logs/<agent>.log:
    Ray's worker logs live in a temp folder deleted when the swarm stops. Configured here, once
    per actor process, as the CLI does for the terminal."""
    path = cfg.swarm_home / "logs" / f"agent-{cfg.name}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError as e:
        log.warning("cannot write %s: %s", path, e)
        return
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("agents")
    root.setLevel(logging.INFO)
    root.addHandler(handler)


class _ActorAgent(ResearchAgent):
    """ResearchAgent in its own actor process: logs to SWARM_HOME/logs."""

    def __init__(self, config, coordinator, **kw):
        cfg = config if isinstance(config, AgentConfig) else AgentConfig.model_validate(config)
        _log_to_home(cfg)
        super().__init__(cfg, coordinator, **kw)


class _GpuAgent(_ActorAgent):
    """ResearchAgent that gives its runs the GPU Ray assigned to this actor."""

    def __init__(self, config, coordinator, **kw):
        import ray
        ids = ray.get_gpu_ids()
        if ids and kw.get("cuda_visible_devices") is None:
            kw["cuda_visible_devices"] = ",".join(str(int(i)) if isinstance(i, (int, float)) else str(i)
                                                  for i in ids)
        super().__init__(config, coordinator, **kw)


def agent_actor(config: AgentConfig | dict, *, gpus: int = 0, cpus: float = 1,
                max_restarts: int = 0, namespace: str | None = None, **options: Any):
    """An actor class for this agent: `agent_actor(cfg, gpus=1).remote(cfg, port)`, where port is
    a CoordinatorPort (RayCoordinator(coordinator_handle, cfg.state_dir / "spool")).

    max_concurrency=4 so stop()/status() answer while run() loops. The actor is named
    `agent-<name>`. max_restarts defaults to 0: a restarted actor would re-run __init__, which
    records the dead run as crash and cleans the worktree; the caller usually does that itself
    by creating a new actor with the same name."""
    import ray

    cfg = config if isinstance(config, AgentConfig) else AgentConfig.model_validate(config)
    opts = dict(num_gpus=gpus, num_cpus=cpus, max_restarts=max_restarts, max_concurrency=4,
                name=f"agent-{cfg.name}")
    if namespace:
        opts["namespace"] = namespace
    opts.update(options)
    return ray.remote(_GpuAgent if gpus else _ActorAgent).options(**opts)
