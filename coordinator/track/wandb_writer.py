"""Weights & Biases: one run per swarm (id = the swarm id, job_type `swarm`) and one run per
record (id from the experiment id, job_type = the record's kind), all in the group named by
the swarm id. W&B has no child runs: the group is its way to hold one swarm's runs together.

A later decision resumes the record's run by its id (resume="allow") and overwrites its summary
and tags; in offline mode each write is one more offline run directory, which `wandb sync`
merges in order. wandb never captures the terminal (console="off") and says nothing (silent).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from coordinator.track.base import SwarmRun, TrackerDown, destination_key, one_line
from coordinator.track.config import WandbTracking
from coordinator.track.entry import TrackedRun

log = logging.getLogger(__name__)

_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")
MAX_W_TAG = 64   # W&B refuses longer tags


def run_id(experiment_id: str) -> str:
    """The W&B run id of a record: its experiment id, in the characters W&B allows."""
    return _ID_BAD.sub("-", experiment_id)[:128]


def _has_key() -> bool:
    """A W&B key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlsplit

    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbWriter:
    name = "wandb"

    def __init__(self, cfg: WandbTracking, swarm: SwarmRun, swarm_home: Path | None = None):
        self.cfg = cfg
        self.swarm = swarm
        self.dir = Path(cfg.dir).expanduser() if cfg.dir else (Path(swarm_home) if swarm_home else None)
        self.wandb = None

    def _mode(self) -> str:
        return self.cfg.mode or os.environ.get("WANDB_MODE") or "online"

    def destination(self) -> str:
        where = f"{self.cfg.entity}/{self.cfg.project}" if self.cfg.entity else self.cfg.project
        return f"W&B project {where} ({self._mode()}" + (f", {self.dir}/wandb)" if self.dir else ")")

    def key(self) -> str:
        return destination_key(self.name, self.cfg.entity, self.cfg.project, self._mode(),
                               str(self.dir) if self._mode() == "offline" else None)

    def _init(self, **kw):
        wandb = self.wandb
        settings = wandb.Settings(mode=self._mode(), silent=True, console="off",
                                  x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                                  disable_git=True, disable_code=True, disable_job_creation=True)
        return wandb.init(project=self.cfg.project, entity=self.cfg.entity, group=self.swarm.swarm_id,
                          dir=str(self.dir) if self.dir else None, resume="allow",
                          reinit="create_new", settings=settings, **kw)

    def open(self) -> None:
        """Write the swarm's own run (its params) once per session."""
        if self.wandb is not None:
            return
        if self._mode() == "online" and not _has_key():
            # wandb would ask for a key on the terminal (the live view's), or fail on each record
            raise TrackerDown(f"{self.destination()}: no W&B API key (set WANDB_API_KEY or run "
                              f"`wandb login`; or tracking.wandb.mode: offline)")
        try:
            import wandb
            self.wandb = wandb
            if self.dir:
                self.dir.mkdir(parents=True, exist_ok=True)
            r = self._init(id=run_id(self.swarm.swarm_id), name=self.swarm.swarm_id, job_type="swarm",
                           config={"swarm_id": self.swarm.swarm_id, **self.swarm.params})
            r.finish()
        except Exception as e:
            self.wandb = None
            raise TrackerDown(f"{self.destination()}: {one_line(e)}") from None
        log.info("tracking: %s, swarm run %s", self.destination(), self.swarm.swarm_id)

    def write(self, run: TrackedRun) -> None:
        """Create or resume the record's run: config (params), summary (metrics and tags),
        tags, the two artifacts as files of the run; exit code 1 for crash / timeout / invalid."""
        self.open()
        try:
            tags = [t[:MAX_W_TAG] for t in (run.tags.get("decision"), run.tags.get("kind"),
                                            run.tags.get("program"), run.tags.get("agent")) if t]
            r = self._init(id=run_id(run.experiment_id), name=run.name,
                           job_type=run.tags.get("kind", "experiment"), config=run.params, tags=tags)
            try:
                r.summary.update({**run.metrics, **{f"tag.{k}": v for k, v in run.tags.items()},
                                  "finished_at": run.finished_at})
                for name, text in (("train.py.diff", run.diff), ("run.log.tail", run.log_tail)):
                    if text:
                        path = Path(r.dir) / name
                        path.write_text(text)
                        r.save(str(path), base_path=r.dir, policy="now")
            finally:
                r.finish(exit_code=1 if run.failed else 0)
        except Exception as e:
            raise TrackerDown(f"{self.destination()}: {one_line(e)}") from None

    def close(self) -> None:
        pass
