"""What `swarm run` decided before it created anything (Plan), and the supervision limits:
made by swarm.py's checks, carried out by supervise.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coordinator.decide.allocation import floor_for
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
        which, and whether they will ever run. Static allocation never gives them one. Adaptive,
        where the floors cannot all be met (min_agents x the programs not pinned above the agents
        on them), `visits` has the programs take turns (decide/allocation.Allocation.floor); with
        `visits: 0` an agent alone on its program never leaves it under a whole floor, so they get
        an agent only when another program's backend is spent. None when every program has an
        agent, or a floor that the agents meet (a fraction brings each in for visits), or none."""
        staffed = {s["program_name"] for s in self.agent_specs}
        idle = [e.label() for e in self.cfg.programs if e.label() not in staffed]
        if not idle:
            return None
        alloc = self.cfg.allocation
        head = (f"programs: {len(idle)} of {len(self.cfg.programs)} start with no agent "
                f"({self.n_agents} agent{'s' if self.n_agents != 1 else ''}): {', '.join(idle)}")
        if alloc.mode == "static":
            return f"{head}; under static allocation they never run"
        pinned = {e.label() for e in self.cfg.programs if e.pin}
        free = len(self.cfg.programs) - len(pinned)
        agents = sum(1 for s in self.agent_specs if s["program_name"] not in pinned)
        if alloc.min_agents == 0 or alloc.min_agents * free <= agents:
            return None   # no floor, or one the agents meet: the allocation may move agents to them
        floor = floor_for(alloc, free, agents)
        if floor < alloc.min_agents:
            return (f"{head}; too few agents for allocation.min_agents {alloc.min_agents:g} each, so the "
                    f"programs take turns: each gets {floor:.2g} of an agent "
                    f"(allocation.visits {alloc.visits:g}) in visits of {alloc.dwell_runs} runs, once an agent "
                    f"has run {alloc.dwell_runs} on its program (the noise runs not counted"
                    + (f"; {alloc.inert_dwell()} on one whose changes all left val_bpb within the noise"
                       if alloc.inert_dwell() is not None else "")
                    + "); the rest follows what moves best")
        return (f"{head}; under allocation.min_agents {alloc.min_agents:g} and visits 0 no agent leaves a "
                "program it is alone on, so they run only when another program's backend is spent: "
                "`allocation: {visits: 0.5}` in swarm.yaml has every program take turns")

