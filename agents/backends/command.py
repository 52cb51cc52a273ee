"""`command`: a coding-agent CLI the user already runs (Claude Code, Codex, aider...) run in the
agent's worktree under a timeout; its edit is whatever it changed there, validated like any
other. The worktree is restored afterwards: the agent commits the edit itself."""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.backends.base import Proposal, ProposalContext, register_backend
from agents.edits import EDITABLE
from agents.errors import AgentError, BackendRefused, ProposalAbandoned
from agents.prompt import fix_prompt, user_prompt
from agents.worktree import GIT

log = logging.getLogger(__name__)


class CommandSpec(BaseModel):
    """A coding-agent CLI run in the worktree: `{prompt_file}`, `{worktree}`, `{train_py}`,
    `{program_file}` are substituted (shell-quoted) into the template."""
    model_config = ConfigDict(extra="forbid")
    type: Literal["command"] = "command"
    template: str
    timeout_s: float = Field(default=600.0, gt=0)


def _git(worktree: Path, *args: str) -> str:
    # The CLI ran in this worktree and may have planted hooks or an fsmonitor in its config:
    # the same hook-free base argv as every other git call of the agent.
    return subprocess.run([*GIT, *args], cwd=worktree, check=True, capture_output=True,
                          text=True).stdout


def changed_paths(worktree: Path) -> list[str]:
    """Paths changed, added or deleted in the worktree relative to HEAD (untracked included)."""
    out = _git(worktree, "status", "--porcelain", "-uall", "--no-renames")
    return sorted({line[3:].strip().strip('"') for line in out.splitlines() if line.strip()})


def restore(worktree: Path) -> None:
    """Put the worktree back at HEAD: tracked changes and untracked files removed."""
    _git(worktree, "reset", "--hard", "-q")
    _git(worktree, "clean", "-fdq")


class CommandBackend:
    """Runs `template` (a shell command line) in the worktree, at most `timeout_s` seconds."""

    name = "command"

    def __init__(self, spec: CommandSpec, *, seed: int = 0, agent: str = ""):
        self.spec = spec
        self.agent = agent
        self._proc: subprocess.Popen | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """The agent is stopping: kill the CLI's process group now (propose/fix then raise
        ProposalAbandoned and leave the worktree restored)."""
        self._cancelled.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _run(self, ctx: ProposalContext, prompt: str) -> Proposal:
        if ctx.worktree is None:
            raise AgentError("command backend needs the agent's worktree")
        wt = Path(ctx.worktree)
        scratch = Path(ctx.state_dir or wt.parent) / "command"
        scratch.mkdir(parents=True, exist_ok=True)
        prompt_file = scratch / "prompt.md"
        prompt_file.write_text(prompt, encoding="utf-8")   # role and format are in it
        program_file = scratch / "program.md"
        program_file.write_text(ctx.program.text, encoding="utf-8")
        target = wt / EDITABLE
        if target.read_text(encoding="utf-8", errors="replace") != ctx.source:
            target.write_text(ctx.source, encoding="utf-8")   # a fix starts from the crashed file
        cmd = self.spec.template.format(prompt_file=shlex.quote(str(prompt_file)),
                                        worktree=shlex.quote(str(wt)),
                                        train_py=shlex.quote(str(target)),
                                        program_file=shlex.quote(str(program_file)))
        log_path = scratch / "command.log"
        if self._cancelled.is_set():
            raise ProposalAbandoned("stopped before the command started")
        started = time.time()
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(["bash", "-c", cmd], cwd=wt, stdout=subprocess.PIPE,
                                    stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
            self._proc = proc
            try:
                stdout, _ = proc.communicate(timeout=self.spec.timeout_s)
            except subprocess.TimeoutExpired:
                # The CLI runs in its own session: kill its whole group, nothing else.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.communicate()
                restore(wt)
                return Proposal(error=f"command timed out after {self.spec.timeout_s:g}s")
        self._proc = None
        if self._cancelled.is_set():
            restore(wt)
            raise ProposalAbandoned("the command was stopped")
        text = stdout.decode("utf-8", errors="replace")
        transcript = {"backend": self.name, "command": cmd, "prompt": prompt, "stdout": text,
                      "stderr": log_path.read_text(errors="replace")[-20_000:],
                      "exit_code": proc.returncode, "started_at": started,
                      "duration_s": round(time.time() - started, 3)}
        if proc.returncode != 0:
            restore(wt)
            err = log_path.read_text(errors="replace").strip().splitlines()
            return Proposal(error=f"command exited with {proc.returncode}"
                                  + (f": {err[-1][:200]}" if err else ""), transcript=transcript)
        changed = changed_paths(wt)
        try:
            new_source = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            new_source = None
        except UnicodeDecodeError:
            restore(wt)
            return Proposal(error=f"command left {EDITABLE} not valid UTF-8")
        restore(wt)
        if new_source is None:
            return Proposal(error=f"command deleted {EDITABLE}")
        desc = ""
        for line in text.splitlines():
            if line.strip().upper().startswith("DESCRIPTION:"):
                desc = line.split(":", 1)[1].strip()
                break
        if not desc:
            desc = next((ln.strip() for ln in text.splitlines() if ln.strip()), "command edit")
        return Proposal(description=desc[:200], new_source=new_source,
                        touched=[p for p in changed if p != EDITABLE], transcript=transcript)

    def preflight(self) -> list[str]:
        """The template's program exists. Raises BackendRefused naming it."""
        try:
            words = shlex.split(self.spec.template)
        except ValueError as e:
            raise BackendRefused(f"command template cannot be split into words: {e}") from None
        words = [w for w in words if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]  # VAR=value
        prog = words[0] if words else ""
        if prog and "{" not in prog and shutil.which(prog) is None:
            raise BackendRefused(f"command {prog!r} (from the template {self.spec.template!r}) "
                                 f"is not on PATH")
        return []

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Run the CLI with the proposal prompt; the edit is what it changed in the worktree."""
        return self._run(ctx, user_prompt(ctx))

    def fix(self, ctx: ProposalContext, log_tail: str) -> Proposal:
        """Run the CLI on the crashed train.py with the log tail in its prompt file."""
        return self._run(ctx, fix_prompt(ctx, log_tail))


register_backend("command", CommandBackend, CommandSpec)
