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

    def unstaffed_line(self) -> str | None:
        """One line at start when some programs begin with no agent (more programs than agents):
        which, and whether they will ever run. Under a whole floor (`min_agents` 1, the default) an
        agent alone on its program never leaves it, so they get an agent only when another
        program's backend is spent; static allocation never gives them one. None when every
        program has an agent, or a floor under 1 lets the allocation move agents to them (a fraction
        brings each in for visits)."""
        staffed = {s["program_name"] for s in self.agent_specs}
        idle = [e.label() for e in self.cfg.programs if e.label() not in staffed]
        if not idle:
            return None
        alloc = self.cfg.allocation
        head = (f"programs: {len(idle)} of {len(self.cfg.programs)} start with no agent "
                f"({self.n_agents} agent{'s' if self.n_agents != 1 else ''}): {', '.join(idle)}")
        if alloc.mode == "static":
            return f"{head}; under static allocation they never run"
        if alloc.min_agents < 1 or alloc.min_agents != int(alloc.min_agents):
            return None   # no floor, or a fractional one: the allocation may move agents to them
        return (f"{head}; under allocation.min_agents {alloc.min_agents:g} no agent leaves a program it "
                "is alone on, so they run only when another program's backend is spent: "
                "`allocation: {min_agents: 0.5}` in swarm.yaml has every program take turns")

