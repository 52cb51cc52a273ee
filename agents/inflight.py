"""inflight.json: what an agent is running right now, so that a restarted agent with the same
name can record the run as `crash` and kill the child process group it left behind."""
from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

from agents.messages import StartedExperiment
from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)


class Inflight:
    """The file SWARM_HOME/agents/<name>/inflight.json, written atomically."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "inflight.json"

    def write(self, started: StartedExperiment, run_dir: Path, pgid: int | None = None,
              **extra) -> None:
        data = {"experiment_id": started.experiment_id, "pgid": pgid, "run_dir": str(run_dir),
                "started": started.model_dump(mode="json"), **extra}
        atomic_write(self.path, json.dumps(data))

    def update(self, **fields) -> None:
        data = self.read()
        if data is None:
            return
        data.update(fields)
        atomic_write(self.path, json.dumps(data))

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError) as e:
            log.warning("unreadable %s (%s): ignored", self.path, type(e).__name__)
            return None

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _group_members(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            # Field 5 (after the parenthesised command name) is the process group id.
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid:
                pids.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _belongs_to_run(pid: int, run_dir: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return run_dir in cmd or cwd.startswith(run_dir)


def kill_leftover(pgid: int | None, run_dir: str) -> bool:
    """Kill process group `pgid` if it still exists AND one of its members works in `run_dir`
    (a recycled pgid belonging to someone else is left alone). Returns True when killed."""
    if not pgid or pgid <= 1:
        return False
    members = _group_members(pgid)
    if not members or not any(_belongs_to_run(p, run_dir) for p in members):
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    log.info("killed leftover process group %d of %s", pgid, run_dir)
    return True
