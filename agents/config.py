"""AgentConfig: everything one research agent needs, built by the CLI from swarm.yaml.

Unknown keys are errors (extra="forbid") so a typo names itself. Secrets are never here:
a backend names the environment variable that holds its key (`api_key_env`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.backends.base import BackendSpec, backend_config

Adopt = Literal["always", "if-better", "never"]


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentConfig(_Cfg):
    """One agent. Paths may be str or Path; swarm_home holds repo.git, worktrees, runs, agents."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    program_name: str
    program_path: Path | None = None
    program_text: str | None = None
    backend: BackendSpec = Field(default_factory=lambda: backend_config({"type": "mutate"}))
    adopt: Adopt | None = None            # None: the program's own `adopt:` or "if-better"
    seed: int = 0
    swarm_id: str = ""
    swarm_home: Path = Path(".swarm")
    repo_path: Path | None = None         # the bare research repo; default swarm_home/repo.git
    hardware_class: str | None = None     # None: derived from device and profile
    budget: float | None = Field(default=None, gt=0)   # training seconds; None: profile default
    profile: str | None = None
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1)
    data_dir: Path | None = None
    # Prepared on this agent's node when missing there (a worker of a cluster): the swarm's
    # source, e.g. "bundled" or "climbmix". None: the data must already be prepared.
    data_source: str | None = None
    max_steps: int | None = None
    hard_limit: float | None = None
    max_fix_attempts: int = Field(default=2, ge=0)
    max_edit_bytes: int = Field(default=20_000, gt=0)     # size of one proposed edit
    max_file_bytes: int = Field(default=200_000, gt=0)    # size of the resulting train.py
    recent_n: int = Field(default=12, ge=0)               # results of each kind in the prompt
    max_prompt_chars: int = Field(default=60_000, gt=1000)
    prepare_ahead: bool = True            # propose the next edit while the current run trains
    # Seconds between progress heartbeats while training (each is a coordinator call: at 256
    # agents, one a second was ~256 calls/s, about a quarter core of the coordinator here).
    heartbeat_s: float = Field(default=5.0, gt=0)
    graceful_stop: bool = False           # stop(): False cancels the run (crash "stopped")
    # While the backend does not answer (down, timed out, 5xx: no record, no experiment used
    # up), the agent waits this long before asking again, doubling up to the cap; the same
    # wait follows runs of unchanged code (baseline, jobs) that crash in a row (health.RunHealth).
    backend_wait_s: float = Field(default=10.0, gt=0)
    backend_wait_max_s: float = Field(default=120.0, gt=0)
    # A backend with nothing left to propose from its train.py (mutate's or optuna's search space
    # exhausted, five times in a row) and no other program to move to: the agent waits this many
    # budgets for best to move (running the coordinator's confirmations and verifications
    # meanwhile, checking every backend_wait_s), then proposes from the new best; 0 stops it at
    # once (as it did before: a one-knob program's agents stopped for the night).
    spent_wait_runs: float = Field(default=12.0, ge=0)

    @model_validator(mode="after")
    def _one_program(self):
        if (self.program_path is None) == (self.program_text is None):
            raise ValueError("exactly one of program_path and program_text is needed")
        return self

    @property
    def repo(self) -> Path:
        return Path(self.repo_path) if self.repo_path else Path(self.swarm_home) / "repo.git"

    @property
    def state_dir(self) -> Path:
        return Path(self.swarm_home) / "agents" / self.name

    @property
    def worktree(self) -> Path:
        return Path(self.swarm_home) / "worktrees" / self.name

    @property
    def runs_dir(self) -> Path:
        return Path(self.swarm_home) / "runs"
