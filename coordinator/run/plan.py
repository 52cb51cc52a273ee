"""What `swarm run` decided before it created anything (Plan), and the supervision limits:
made by swarm.py's checks, carried out by supervise.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coordinator.run.config import SwarmConfig

MAX_RESTARTS = 3          # per agent; an agent that keeps dying is left dead
STOP_GRACE_S = 120.0      # how long in-flight runs get to record themselves after Ctrl-C


@dataclass
class Plan:
    """Everything `swarm run` decided before it created anything."""
    cfg: SwarmConfig
    home: Path
    profile: str
    n_agents: int
    gpus_per_agent: int
    agent_specs: list[dict]          # name, program_name, program_path, backend, adopt, seed
    redis_url: str | None            # None: embedded
    address: str | None              # None: a private local Ray
    max_experiments: int | None
    deadline: float | None
    plain: bool
    verbose: bool
    unsafe: bool = False             # --unsafe-no-sandbox: train.py runs unconfined
    extra: dict = field(default_factory=dict)
    allocation: dict | None = None   # AllocationSpec (decide/allocation.py) when adaptive
