"""`tracking:` in swarm.yaml: which experiment trackers get the swarm's records, as pydantic models.

Both are off by default; `tracking: {mlflow: {}}` turns MLflow on with its defaults. The
packages are optional extras (`pip install 'autoresearch-swarm[mlflow]'`, `[wandb]`): a tracker
configured without its package is a config error naming the key.
"""
from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PROJECT = "autoresearch-swarm"


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _need(package: str, extra: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"the {package} package is not installed "
                         f"(pip install 'autoresearch-swarm[{extra}]')")


class MlflowTracking(_Cfg):
    """One MLflow run per swarm in `experiment`, with a child run per record."""
    # null: $MLFLOW_TRACKING_URI, else MLflow's own default (a local store in the working dir)
    tracking_uri: str | None = None
    experiment: str = Field(DEFAULT_PROJECT, min_length=1)

    @model_validator(mode="after")
    def _installed(self):
        _need("mlflow", "mlflow")
        return self


class WandbTracking(_Cfg):
    """One W&B run per swarm and one per record, grouped by the swarm id, in `project`."""
    project: str = Field(DEFAULT_PROJECT, min_length=1)
    entity: str | None = None                          # null: the key's default entity
    mode: Literal["online", "offline"] | None = None   # null: $WANDB_MODE, else online
    dir: str | None = None                             # null: SWARM_HOME (runs under SWARM_HOME/wandb)

    @model_validator(mode="after")
    def _installed(self):
        _need("wandb", "wandb")
        return self


class TrackingConfig(_Cfg):
    mlflow: MlflowTracking | None = None
    wandb: WandbTracking | None = None
    # A tracker that is down is tried again after 1 s, 2 s, 4 s ... up to this; the decisions
    # never wait for it, and what it missed is logged when it answers again.
    retry_max_s: float = Field(60.0, gt=0)

    def enabled(self) -> bool:
        return self.mlflow is not None or self.wandb is not None
