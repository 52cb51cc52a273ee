"""ResearchAgent: the plain class behind the Ray actor. One worktree, one program, one backend,
one seed; loops sync -> propose -> validate -> commit -> run -> (fix) -> report -> ratchet."""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from trainer.schema import ExperimentResult
from agents.messages import (Broadcast, ExperimentRecord, ReportReply, StartedExperiment,
                             new_experiment_id)

from agents.backends.base import Backend, Proposal, ProposalContext, make_backend
from agents.config import AgentConfig
from agents.edits import EDITABLE, line_delta
from agents.errors import (BackendError, BackendRefused, InvalidEdit, ProposalAbandoned,
                           SpendingCapReached)
from agents.inflight import Inflight, kill_leftover
from agents.health import SAME_FAILURE_STOP, BackendHealth, RunHealth
from agents.ports import CoordinatorPort
from agents.program import Program, load_program, parse_program
from agents.transcript import keep_transcript, redact, secret_values
from agents.worktree import Worktree

log = logging.getLogger(__name__)

Runner = Callable[..., ExperimentResult]
# Decisions after which the agent keeps the commit as its line.
KEEP = ("promote", "merge", "simplification", "pending")


def _default_runner() -> Runner:
    from trainer.runner import run_experiment
    return run_experiment


def _hardware_class(cfg: AgentConfig) -> str:
    from trainer.profiles import detect_profile, hardware_class
    device = cfg.device
    if device == "auto":
        try:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:
            device = "cpu"
    return hardware_class(cfg.profile or detect_profile(), device, cfg.threads)


class ResearchAgent:
    """One research agent. Build it directly for tests; agents.actor makes it a Ray actor.

    `coordinator` is a CoordinatorPort: a Coordinator in-process, or a RayCoordinator around
    the coordinator actor's handle (agents.actor and swarm run wrap it).
    `runner` defaults to trainer.runner.run_experiment, `backend` to make_backend(config.backend).
    Raises ProgramError for a malformed program, WorktreeError when the repo cannot be used."""

    def __init__(self, config: AgentConfig | dict, coordinator: CoordinatorPort, *, runner: Runner | None = None,
                 backend: Backend | None = None, hardware_class: str | None = None,
                 cuda_visible_devices: str | None = None):
        self.cfg = config if isinstance(config, AgentConfig) else AgentConfig.model_validate(config)
        cfg = self.cfg
        self.port = coordinator
        self.program: Program = (load_program(cfg.program_path, cfg.program_name)
                                 if cfg.program_path else parse_program(cfg.program_text, cfg.program_name))
        self.adopt = cfg.adopt or self.program.adopt or "if-better"
        self.backend = backend or make_backend(cfg.backend, seed=cfg.seed, agent=cfg.name)
        self.runner = runner or _default_runner()
        self.hw = hardware_class or cfg.hardware_class or _hardware_class(cfg)
        self.cuda_visible_devices = cuda_visible_devices
        self.inflight = Inflight(cfg.state_dir)
        self.wt = Worktree(cfg.worktree, cfg.repo, cfg.name)
        self._stop = threading.Event()
        self._cancel = threading.Event()
        # The run in flight's own cancel: set by a hard stop, or when the verification it runs
        # is moot (best moved off the commit it must beat: the coordinator cancelled the job).
        self._run_cancel = threading.Event()
        self._job_gone: str | None = None
        self._lock = threading.Lock()
        self.parent_val: float | None = None   # the coordinator's mean for the head (else one run)
        self.line_margin: float | None = None  # the margin the coordinator judged the head with
        self.own: collections.deque[ExperimentRecord] = collections.deque(maxlen=max(1, cfg.recent_n))
        self.counts: collections.Counter[str] = collections.Counter()
        self.experiments = 0
        self.kept = 0
        self.stop_reason: str | None = None
        self.phase = "starting"
        self.description = ""
        self.progress = 0.0
        self.last_delta: float | None = None
        self._last_beat = 0.0
        self._prep: threading.Thread | None = None
        self._prepared: Proposal | BaseException | None = None
        self._last_seq = -1
        self.recovered: ExperimentRecord | None = None
        self.health = BackendHealth(cfg.swarm_home, cfg.name, wait_s=cfg.backend_wait_s,
                                    wait_max_s=cfg.backend_wait_max_s, secrets=self._secrets)
        self.runs = RunHealth(cfg.backend_wait_s, cfg.backend_wait_max_s)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.runs_dir.mkdir(parents=True, exist_ok=True)
        self._setup()

    # --- start-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        self._ensure_data()
        best = self.port.best(self.hw)
        self.wt.open(best.commit if best else None, fetch=self.port.fetch)
        self.recovered = self._recover()
        self.wt.clean()
        if best and self.adopt != "never":
            self._adopt(best)

    def _ensure_data(self) -> None:
        """On a node that has not prepared the swarm's data (a cluster worker), prepare it
        (idempotent, file-locked, so agents sharing a node prepare it once)."""
        if not self.cfg.data_source:
            return
        from trainer.errors import DataMissing
        from trainer.prepare import locate, prepare

        try:
            locate(self.cfg.profile, self.cfg.data_dir)
        except DataMissing:
            log.info("%s: preparing %s data on this node", self.cfg.name, self.cfg.data_source)
            prepare(self.cfg.data_source, [self.cfg.profile] if self.cfg.profile else None,
                    self.cfg.data_dir)

    def _recover(self) -> ExperimentRecord | None:
        """A previous incarnation died mid-run: kill its child group, record `crash`."""
        data = self.inflight.read()
        if data is None:
            return None
        kill_leftover(data.get("pgid"), data.get("run_dir", "//none//"))
        st = StartedExperiment.model_validate(data["started"])
        rec = ExperimentRecord(
            experiment_id=st.experiment_id, swarm_id=self.cfg.swarm_id, kind=st.kind,
            agent=st.agent, program=st.program, backend=self.backend.name, seed=st.seed,
            hardware_class=st.hardware_class, parent=st.parent,
            commit=data.get("commit") or st.commit, description=st.description,
            status="crash", reason="agent died mid-run", job_id=st.job_id,
            parent_val_bpb=data.get("parent_val_bpb"), started_at=st.started_at)
        self.port.report(rec, None)
        self.inflight.clear()
        log.warning("%s: recorded %s as crash (agent died mid-run)", self.cfg.name, st.experiment_id)
        return rec

    # --- public API (the actor's methods) ------------------------------------------------
    def run(self, max_experiments: int | None = None, deadline: float | None = None) -> dict:
        """Loop until stop(), `max_experiments` own experiments (jobs not counted), the unix
        time `deadline`, or a spending cap. Never raises for a bad edit or a bad run (they are
        records); returns the summary (see status())."""
        self._stop.clear()
        self._cancel.clear()
        self.stop_reason = None
        done_at_start = self.experiments
        last_wall = 0.0
        try:
            while True:
                if self._stop.is_set():
                    self.stop_reason = self.stop_reason or "stopped"
                    break
                if max_experiments is not None and self.experiments - done_at_start >= max_experiments:
                    self.stop_reason = "max_experiments"
                    break
                if deadline is not None and time.time() + last_wall > deadline:
                    self.stop_reason = "deadline"
                    break
                t0 = time.time()
                self._iteration()
                last_wall = time.time() - t0
        except SpendingCapReached as e:
            self.stop_reason = str(e)
            log.warning("%s: %s; stopping", self.cfg.name, e)
        finally:
            self._join_prep()
            self.phase = "stopped"
            self._beat(force=True)
        return self.status()

    def stop(self, graceful: bool | None = None) -> None:
        """Stop at the next iteration boundary. graceful (default config.graceful_stop): let
        the current run finish; otherwise cancel it (recorded crash "stopped")."""
        self.stop_reason = self.stop_reason or "stopped"
        self._stop.set()
        # A proposal or fix in flight is not waited for (a local model can take minutes): the
        # backend abandons it, and it is written down as abandoned.
        cancel = getattr(self.backend, "cancel", None)
        if callable(cancel):
            cancel()
        if not (self.cfg.graceful_stop if graceful is None else graceful):
            self._cancel.set()
            self._run_cancel.set()

    def status(self) -> dict:
        """A snapshot: name, program, phase, description, progress, counts, parent val_bpb,
        head commit, stop reason, LLM spend."""
        return {"agent": self.cfg.name, "program": self.program.name, "backend": self.backend.name,
                "hardware_class": self.hw, "phase": self.phase, "description": self.description,
                # progress is over the budget of the run in flight: none outside training
                "progress": round(self.progress, 3) if self.phase == "train" else 0.0,
                "experiments": self.experiments,
                "kept": self.kept, "statuses": dict(self.counts), "parent_val_bpb": self.parent_val,
                "last_delta": self.last_delta, "stop_reason": self.stop_reason,
                "spent_usd": getattr(self.backend, "spent_usd", 0.0),
                "spent_tokens": getattr(self.backend, "spent_tokens", 0),
                **self.health.status(), "last_outcome": self._last_outcome(),
                "head": self._safe_head()}

    def _last_outcome(self) -> str | None:
        """The newest of: the agent's stop, the backend's trouble, its last experiment."""
        last = self.own[-1] if self.own else None
        what = None if last is None else (f"ok: {last.description}" if last.status == "ok"
                                          else f"{last.status}: {last.reason or last.description}")
        if self.stop_reason and self.phase == "stopped":
            return f"stopped: {self.stop_reason}" + (f"; last: {what}"[:200] if what else "")
        return self.health.outcome() or (what[:200] if what else None)

    def _safe_head(self) -> str | None:
        try:
            return self.wt.head()
        except Exception:
            return None

    # --- one iteration ---------------------------------------------------------------------
    def _iteration(self) -> None:
        self.port.flush()
        self.phase = "sync"
        job = self.port.next_job(self.cfg.name, self.hw)
        if job is not None:
            self._join_prep()
            self.wt.ensure(job.commit, self.port.fetch)
            self._train(kind=job.kind, commit=job.commit, parent=job.parent, seed=job.seed,
                        source=self.wt.show(job.commit), description=job.description or job.kind,
                        job_id=job.job_id)
            return
        best = self.port.best(self.hw)
        if best is not None:
            self._maybe_adopt(best)
        if self.parent_val is None:
            # Nothing to compare against yet: measure our own parent first.
            self._join_prep()
            head = self.wt.head()
            self._train(kind="baseline", commit=head, parent=head, seed=self.cfg.seed,
                        source=self.wt.source(), description="baseline (own parent)")
            return
        self._experiment()

    def _maybe_adopt(self, best: Broadcast) -> None:
        """Follow best by the coordinator's means: a line that trails best by more than the
        margin the coordinator judged its head with is dead, whatever the rule; `always` adopts
        every new best, `if-better` a best whose mean beats the line's, `never` only when the
        line is dead."""
        head = self.wt.head()
        if best.commit == head:
            return
        line = self.parent_val
        dead = (line is not None and self.line_margin is not None
                and line - best.val_bpb > self.line_margin)
        if not (self.adopt == "always" or dead or (
                self.adopt == "if-better" and (line is None or best.val_bpb < line))):
            return
        self._join_prep()
        self._adopt(best)

    def _adopt(self, best: Broadcast) -> None:
        self.wt.ensure(best.commit, self.port.fetch)
        if self.wt.head() != best.commit:
            self.wt.reset_hard(best.commit)
            log.info("%s: adopted best %s (val_bpb %.4f)", self.cfg.name, best.commit[:10], best.val_bpb)
        self.parent_val = best.val_bpb
        self.line_margin = None  # best itself: nothing to trail
        self._last_seq = best.seq

    def _context(self, base: str, source: str, in_flight: str | None = None) -> ProposalContext:
        swarm = self.port.recent(self.hw, self.cfg.recent_n) if self.cfg.recent_n else []
        return ProposalContext(program=self.program, source=source, base_commit=base,
                               agent=self.cfg.name, seed=self.cfg.seed,
                               own_recent=list(reversed(self.own)), swarm_recent=swarm,
                               worktree=self.wt.path, state_dir=self.cfg.state_dir,
                               in_flight=in_flight, max_prompt_chars=self.cfg.max_prompt_chars)

    # --- proposals prepared while a run trains --------------------------------------------
    def _start_prep(self, base: str, source: str, in_flight: str) -> None:
        if not self.cfg.prepare_ahead:
            return
        ctx = self._context(base, source, in_flight)

        def work():
            try:
                p = self.backend.propose(ctx)
                p.base = base
                self._prepared = p
            except ProposalAbandoned as e:  # stopping: the loop thread may not look again
                self.health.abandoned(e, "prepared proposal")
                self._prepared = e
            except BaseException as e:  # handed to the loop thread, which decides
                self._prepared = e

        self._prepared = None
        self._prep = threading.Thread(target=work, name=f"{self.cfg.name}-prepare", daemon=True)
        self._prep.start()

    def _join_prep(self) -> None:
        if self._prep is not None:
            self._prep.join()
            self._prep = None

    def _take_prepared(self, base: str) -> Proposal | None:
        self._join_prep()
        p, self._prepared = self._prepared, None
        if isinstance(p, ProposalAbandoned):
            return None        # written down by the thread that abandoned it
        if isinstance(p, (SpendingCapReached, BackendError)):
            raise p
        if isinstance(p, BaseException):
            log.warning("%s: background proposal failed: %s", self.cfg.name, p)
            return None
        if p is not None and p.base != base:
            log.info("%s: base moved since the proposal was prepared: re-preparing", self.cfg.name)
            return None
        return p

    # --- the experiment ------------------------------------------------------------------
    def _experiment(self) -> None:
        base = self.wt.head()
        source = self.wt.source()
        self.phase = "propose"
        self.description = ""
        self._beat(force=True)
        started_at = time.time()   # before the proposal: a record's duration includes it
        try:
            proposal = self._take_prepared(base)
            if proposal is None:
                if self._stop.is_set():
                    return
                proposal = self.backend.propose(self._context(base, source))
        except BackendError as e:
            # No answer is not an experiment: no record, nothing counted.
            self._backend_failed(e)
            return
        self.health.answered()
        eid = new_experiment_id(self.cfg.name)
        try:
            new, desc = proposal.resolve(source, max_edit_bytes=self.cfg.max_edit_bytes,
                                         max_file_bytes=self.cfg.max_file_bytes)
        except InvalidEdit as e:
            self._keep_transcript(eid, proposal, f"invalid: {e}")
            self._same_failure(proposal.error)
            rec = self._record(eid, kind="experiment", parent=base, commit=None,
                               description=redact(proposal.description or "", self._secrets())[:200],
                               status="invalid", reason=redact(str(e), self._secrets()),
                               proposal=proposal, started_at=started_at)
            self._finish(rec, source, None)
            return
        self._keep_transcript(eid, proposal, "ok")
        self._same_failure(None)
        desc = redact(desc, self._secrets())   # a model may echo anything into git and the ledger
        self._train(kind="experiment", commit=None, parent=base, seed=self.cfg.seed, source=new,
                    description=desc, eid=eid, proposal=proposal, base_source=source,
                    started_at=started_at)

    # --- the backend's trouble: not experiments -----------------------------------------------
    def _secrets(self) -> list[str]:
        env = getattr(getattr(self.backend, "spec", None), "api_key_env", None)
        return secret_values([os.environ.get(env)] if env else [])

    def _backend_failed(self, e: BackendError, *, wait: bool = True, what: str = "proposal") -> None:
        """Down: wait (growing, capped; a stop ends the wait) and let the loop ask again.
        Refused: stop this agent with the reason. Abandoned: written down, nothing else."""
        kind, delay = self.health.failed(e, what)
        if kind == "refused":
            self.stop_reason = f"backend refused: {self.health.reason}"
            self._stop.set()
            self._beat(force=True)
        elif kind == "down" and wait:
            self.phase = "backend down"
            self._beat(force=True)
            self._stop.wait(delay)

    def _same_failure(self, error: str | None) -> None:
        if self.health.same_failure(error):
            self._backend_failed(BackendRefused(f"the same failure {SAME_FAILURE_STOP} times in a "
                                                f"row: {error}"))

    def _keep_transcript(self, eid: str, proposal: Proposal, parse: str) -> None:
        keep_transcript(self.cfg.runs_dir / eid, proposal, parse, secrets=self._secrets(),
                        experiment_id=eid.split("/")[0], agent=self.cfg.name,
                        program=self.program.name, backend=self.backend.name)

    def _message(self, desc: str, eid: str) -> str:
        return (f"{desc}\n\nExperiment: {eid}\nProgram: {self.program.name}\n"
                f"Agent: {self.cfg.name}\n")

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

    def _finish(self, rec: ExperimentRecord, base_source: str | None, commit: str | None) -> None:
        """Report, clear inflight.json, ratchet (experiments) or learn the parent's score."""
        self.phase = "report"
        answer = self.port.report(rec, self._bundle(rec))
        d = answer.decision if isinstance(answer, ReportReply) else answer
        self.inflight.clear()
        self._observe(rec)
        self.counts[rec.status] += 1
        if rec.kind == "experiment":
            self.experiments += 1
            self.own.append(rec)
            self.last_delta = rec.delta
            # The line follows the coordinator, not one noisy run: keep a commit it kept (or is
            # still judging), or one it says beat its own parent by the margin.
            if (rec.status == "ok" and rec.val_bpb is not None and commit is not None and d is not None
                    and (d.decision in KEEP or d.beat_parent)):
                self._join_prep()
                self.wt.reset_hard(commit)   # keep: the branch moves to the winner
                self.parent_val = d.mean if d.mean is not None else rec.val_bpb
                self.line_margin = d.margin
                self.kept += 1
                log.info("%s: kept %s (%s, %s) val_bpb %.4f", self.cfg.name, commit[:10],
                         rec.description, d.decision, rec.val_bpb)
        elif (rec.status == "ok" and rec.val_bpb is not None and rec.kind == "baseline"
              and rec.commit == self._safe_head() and self.parent_val is None):
            self.parent_val = rec.val_bpb
        self.phase = "idle"
        self._beat(force=True)
        # A verification stopped because best moved is not code that crashed.
        wait = 0.0 if self._job_gone else self.runs.ran(rec.kind, rec.status, rec.reason)
        self._job_gone = None
        if wait:  # unchanged code crashed again: the machine, not an idea; do not loop hot
            self.phase = f"waiting {wait:.0f}s: {self.runs.streak} runs of code that trained before crashed"
            log.warning("%s: %s (last: %s)", self.cfg.name, self.phase, self.runs.last_error)
            self._beat(force=True)
            self._stop.wait(wait)
            self.phase = "idle"

    def _observe(self, rec: ExperimentRecord) -> None:
        """Tell a backend that learns from results (optuna: `observe(record, source)`) what
        this run gave; `source` is the train.py that trained (None for an invalid edit)."""
        observe = getattr(self.backend, "observe", None)
        if observe is None:
            return
        try:
            observe(rec, self.wt.show(rec.commit) if rec.commit else None)
        except Exception as e:  # a backend's bookkeeping must never stop research
            log.warning("%s: backend could not observe %s: %s", self.cfg.name, rec.experiment_id, e)

    def _bundle(self, rec: ExperimentRecord) -> bytes | None:
        if self.wt.shared or rec.commit is None or rec.kind != "experiment":
            return None
        return self.wt.bundle(rec.commit, rec.parent)

    def _beat(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_beat < self.cfg.heartbeat_s:
            return
        self._last_beat = now
        try:
            self.port.heartbeat(self.cfg.name, self.status())
        except Exception as e:  # the live view must never stop research
            log.debug("heartbeat failed: %s", e)


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
