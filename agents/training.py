"""The runs of a ResearchAgent (its mixin, split from agents/agent.py): commit an experiment
aside, run it (or a job's commit unchanged), fix crashes, watch a verification whose best moved,
and build the one record of each run. The loop, proposals and the ratchet stay in agent.py."""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any

from trainer.schema import ExperimentResult
from agents.backends.base import Proposal
from agents.edits import EDITABLE, line_delta
from agents.errors import BackendError, InvalidEdit, SpendingCapReached
from agents.messages import ExperimentRecord, StartedExperiment, new_experiment_id

log = logging.getLogger(__name__)


class Training:
    """ResearchAgent's run handling; uses the agent's cfg, port, wt, backend, program, runner,
    inflight, health and its events (_cancel, _run_cancel, _stop)."""

    def _train(self, *, kind: str, commit: str | None, parent: str, seed: int, source: str,
               description: str, job_id: str | None = None, eid: str | None = None,
               proposal: Proposal | None = None, base_source: str | None = None,
               started_at: float | None = None) -> None:
        """Commit (experiments), run, fix crashes (experiments), report, ratchet. Jobs/baselines
        train `source` of an existing commit unchanged."""
        eid = eid or new_experiment_id(self.cfg.name)
        started_at = started_at or time.time()
        if kind == "experiment":
            commit = self._commit_aside(source, description, eid, parent)
        self.description = description
        run_dir = self._begin(StartedExperiment(
            experiment_id=eid, agent=self.cfg.name, program=self.program.name,
            hardware_class=self.hw, parent=parent, commit=commit, kind=kind, seed=seed,
            description=description, job_id=job_id, started_at=started_at))
        if kind == "experiment":
            self._start_prep(parent, base_source, description)
        confirm = float("inf") if kind != "experiment" else (
            self.parent_val * 1.02 if self.parent_val is not None else None)
        self._job_gone = None
        self._run_cancel = threading.Event()  # this run's (and its fixes'): a stop sets it too
        if self._cancel.is_set():
            self._run_cancel.set()
        done = threading.Event()
        if kind == "verify":  # watched from its own thread: never from the runner's serve loop
            threading.Thread(target=self._watch_verification, args=(parent, done), daemon=True,
                             name=f"{self.cfg.name}-verify-watch").start()
        try:
            run = _Attempt(result=self._run(run_dir, source, seed, confirm), source=source,
                           commit=commit, proposal=proposal)
        finally:
            done.set()
        run.reason = run.result.error
        if run.result.status == "crash" and self._job_gone and not self._cancel.is_set():
            run.reason = f"cancelled: {self._job_gone}"
        if kind == "experiment":
            self._fix_crashes(run, eid=eid, parent=parent, description=description,
                              run_dir=run_dir, seed=seed, confirm=confirm)
        if run.result.status == "crash" and self._cancel.is_set():
            run.reason = "stopped"
        result = run.result
        rec = self._record(eid, kind=kind, parent=parent, commit=run.commit, description=description,
                           status=result.status, reason=None if result.status == "ok" else run.reason,
                           proposal=run.proposal, started_at=started_at, result=result, seed=seed,
                           job_id=job_id, fixes=run.fixes)
        if kind == "experiment":
            rec.lines_added, rec.lines_removed = line_delta(base_source, run.source)
        self._finish(rec, base_source, run.commit)

    def _commit_aside(self, source: str, description: str, eid: str, parent: str) -> str:
        """Commit an experiment's train.py on `parent`; returns the commit."""
        commit = self.wt.commit(source, self._message(description, eid), parent)
        # The worktree goes back to the parent while the copy in the run dir trains: the
        # next proposal is prepared there (a discard, the usual outcome, keeps that base).
        self.wt.reset_hard(parent)
        return commit

    def _begin(self, started: StartedExperiment) -> Path:
        """Tell the coordinator and inflight.json that a run starts; returns its run dir."""
        self.port.begin(started)
        run_dir = self.cfg.runs_dir / started.experiment_id
        self.inflight.write(started, run_dir, commit=started.commit, parent_val_bpb=self.parent_val)
        return run_dir

    def _fix_crashes(self, run: _Attempt, *, eid: str, parent: str, description: str,
                     run_dir: Path, seed: int, confirm: float | None) -> None:
        """While the run crashed: ask the backend for a fix (it sees the log tail), commit it
        and run again, up to max_fix_attempts. Updates `run` in place."""
        while (run.result.status == "crash" and run.fixes < self.cfg.max_fix_attempts
               and not self._cancel.is_set()):
            self._join_prep()   # a command backend shares the worktree with a fix
            self.phase = "fix"
            ctx = self._context(parent, run.source, description)
            try:
                fix = self.backend.fix(ctx, run.result.log_tail)
            except SpendingCapReached as e:
                run.reason = f"{run.result.error or 'crash'}; no fix attempt: {e}"
                self.stop_reason = str(e)
                self._stop.set()
                return
            except BackendError as e:
                run.reason = f"{run.result.error or 'crash'}; no fix attempt: {e}"
                self._backend_failed(e, wait=False, what="fix")
                return
            self.health.answered()
            self._keep_transcript(f"{eid}/fix{run.fixes + 1}", fix, "fix")
            run.proposal = _merge_usage(run.proposal, fix)
            try:
                fixed, _ = fix.resolve(run.source, max_edit_bytes=self.cfg.max_edit_bytes,
                                       max_file_bytes=self.cfg.max_file_bytes)
            except InvalidEdit as e:
                run.reason = f"{run.result.error or 'crash'}; fix attempt {run.fixes + 1} unusable: {e}"
                return
            run.fixes += 1
            run.source = fixed
            run.commit = self.wt.commit(fixed, self._message(f"{description} (fix {run.fixes})", eid),
                                        parent)
            self.wt.reset_hard(parent)
            self.inflight.update(commit=run.commit)
            run.result = self._run(run_dir / f"fix{run.fixes}", fixed, seed, confirm)
            run.reason = run.result.error

    def _run(self, run_dir: Path, source: str, seed: int, confirm: float | None) -> ExperimentResult:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / EDITABLE).write_text(source, encoding="utf-8")
        self.phase = "train"
        self.progress = 0.0
        self._beat(force=True)
        cfg = self.cfg
        try:
            return self.runner(run_dir / EDITABLE, run_dir, budget=cfg.budget, seed=seed,
                               profile=cfg.profile, device=cfg.device,
                               cuda_visible_devices=self.cuda_visible_devices,
                               data_dir=cfg.data_dir, max_steps=cfg.max_steps,
                               hard_limit=cfg.hard_limit, confirm_below=confirm,
                               threads=cfg.threads, cancel=self._run_cancel, on_event=self._on_event,
                               standby=True)  # the next run's sandbox warms up while we propose
        except Exception as e:  # the runner should not raise; if it does, it is still a record
            log.exception("%s: runner raised", cfg.name)
            return ExperimentResult(status="crash", error=f"runner raised {type(e).__name__}: "
                                    f"{' '.join(str(e).split())[:200]}", seed=seed)

    def _on_event(self, event: Any) -> None:
        """Runner events (trainer.events): `started` puts the sandbox's process group in
        inflight.json, so a restarted agent kills what a dead run left; `progress` feeds the
        live view. Anything else is ignored."""
        from trainer.events import Progress, Started, parse_event

        try:
            ev = parse_event(event if isinstance(event, dict) else dict(getattr(event, "__dict__", {})))
        except Exception as e:
            log.debug("%s: runner event ignored (%s)", self.cfg.name, type(e).__name__)
            return
        if isinstance(ev, Started):
            self.inflight.update(pgid=ev.pgid, run_dir=ev.run_dir)
        elif isinstance(ev, Progress):
            self.progress = ev.progress
        self._beat()

    def _watch_verification(self, parent: str, done: threading.Event) -> None:
        """A verification job whose best moved is moot (the coordinator cancelled it and will
        merge the candidate onto the new best): stop its run. Asked as the run starts, then
        every heartbeat_s until it ends."""
        while not done.is_set():
            try:
                best = self.port.best(self.hw)
            except Exception as e:  # the coordinator unreachable: the run goes on
                log.debug("%s: best not known during a verification: %s", self.cfg.name, e)
                best = None
            if done.is_set():
                return
            if best is not None and best.commit != parent:
                self._job_gone = f"best moved to {best.commit[:10]} during the verification"
                log.info("%s: stopping the verification run: %s", self.cfg.name, self._job_gone)
                self._run_cancel.set()
                return
            done.wait(self.cfg.heartbeat_s)

    def _record(self, eid: str, *, kind: str, parent: str, commit: str | None, description: str,
                status: str, reason: str | None, proposal: Proposal | None, started_at: float,
                result: ExperimentResult | None = None, seed: int | None = None,
                job_id: str | None = None, fixes: int = 0) -> ExperimentRecord:
        val = result.val_bpb if result is not None and result.status == "ok" else None
        delta = (self.parent_val - val) if (val is not None and self.parent_val is not None
                                            and kind == "experiment") else None
        p = proposal or Proposal()
        return ExperimentRecord(
            experiment_id=eid, swarm_id=self.cfg.swarm_id, kind=kind, agent=self.cfg.name,
            program=self.program.name, backend=self.backend.name,
            seed=self.cfg.seed if seed is None else seed, hardware_class=self.hw, parent=parent,
            commit=commit, description=description, status=status,
            reason=(" ".join(reason.split())[:300] if reason else None), val_bpb=val,
            confirm_bpb=result.confirm_bpb if result is not None else None,
            parent_val_bpb=self.parent_val if kind == "experiment" else None, delta=delta,
            fix_attempts=fixes, result=result, prompt_tokens=p.prompt_tokens,
            completion_tokens=p.completion_tokens, cost_usd=p.cost_usd, started_at=started_at,
            finished_at=time.time(), job_id=job_id)


@dataclasses.dataclass
class _Attempt:
    """One experiment's latest run: its result, the train.py and commit it ran, fixes so far."""

    result: ExperimentResult
    source: str
    commit: str | None
    proposal: Proposal | None
    fixes: int = 0
    reason: str | None = None


def _merge_usage(a: Proposal | None, b: Proposal) -> Proposal:
    """Token and cost totals of a proposal and its fix attempts, for the one record."""
    if a is None:
        return b
    return Proposal(description=a.description, prompt_tokens=a.prompt_tokens + b.prompt_tokens,
                    completion_tokens=a.completion_tokens + b.completion_tokens,
                    cost_usd=a.cost_usd + b.cost_usd)
