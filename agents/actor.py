"""The one place ResearchAgent becomes a Ray actor: one GPU per agent where there are GPUs,
a configurable number of CPUs where there are none, and the agent's paths as its node sees them."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from agents.agent import ResearchAgent
from agents.config import AgentConfig

log = logging.getLogger(__name__)

# Set in a node's environment (its `ray start`) to give the agents on that node their own
# place for clones, agent state and run logs (a folder per swarm under it), and for prepared
# data, instead of the paths `swarm run` chose on the head.
NODE_HOME_ENV = "SWARM_NODE_HOME"
NODE_DATA_ENV = "SWARM_NODE_DATA_DIR"


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


def node_view(config: AgentConfig | dict) -> AgentConfig:
    """`config` with this node's SWARM_NODE_HOME and SWARM_NODE_DATA_DIR applied, when set.

    Under a node home the research repo is never on this node: the agent works in its own
    clone fed by bundles through the coordinator (agents/worktree.py), and prepares the
    swarm's data in the node's data dir (ResearchAgent._ensure_data)."""
    cfg = config if isinstance(config, AgentConfig) else AgentConfig.model_validate(config)
    update: dict[str, Any] = {}
    if os.environ.get(NODE_HOME_ENV):
        # one folder per swarm: agents keep their names from one swarm to the next
        update.update(swarm_home=Path(os.environ[NODE_HOME_ENV]) / (cfg.swarm_id or "swarm"),
                      repo_path=None)
    if os.environ.get(NODE_DATA_ENV):
        update["data_dir"] = Path(os.environ[NODE_DATA_ENV])
    return cfg.model_copy(update=update) if update else cfg


class _NodeAgent(ResearchAgent):
    """ResearchAgent with its paths as this node sees them (node_view), talking to the
    coordinator actor through a RayCoordinator whose spool lives on this node, logging to
    its SWARM_HOME/logs."""

    def __init__(self, config, coordinator_handle, **kw):
        from agents.ports import RayCoordinator

        cfg = node_view(config)
        _log_to_home(cfg)
        super().__init__(cfg, RayCoordinator(coordinator_handle, cfg.state_dir / "spool"), **kw)

    def run(self, *args, **kwargs) -> dict:
        """ResearchAgent.run; then this process's evaluators stop and their folders go: Ray ends
        an actor's process without its atexit (one agent per process, so nothing else uses them)."""
        try:
            return super().run(*args, **kwargs)
        finally:
            from trainer.evaluator import close_all
            close_all()


class _GpuAgent(_NodeAgent):
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
    """An actor class for this agent: `agent_actor(cfg, gpus=1).remote(cfg, coordinator_handle)`.
    The actor builds its own port (a RayCoordinator spooling under its node's state dir).

    max_concurrency=4 so stop()/status() answer while run() loops. The actor is named
    `agent-<name>`. max_restarts defaults to 0: a restarted actor would re-run __init__, which
    records the dead run as crash and cleans the worktree; the caller usually does that itself
    by creating a new actor with the same name. `options` go to Ray as they are, e.g.
    resources={"swarm_gpu": 1} to place agents only on nodes that offer that resource."""
    import ray

    cfg = config if isinstance(config, AgentConfig) else AgentConfig.model_validate(config)
    opts = dict(num_gpus=gpus, num_cpus=cpus, max_restarts=max_restarts, max_concurrency=4,
                name=f"agent-{cfg.name}")
    if namespace:
        opts["namespace"] = namespace
    opts.update(options)
    return ray.remote(_GpuAgent if gpus else _NodeAgent).options(**opts)
