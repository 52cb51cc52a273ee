"""ResearchAgent: the plain class behind the Ray actor. One worktree, one program, one backend,
one seed; loops sync -> propose -> validate -> commit -> run -> (fix) -> report -> ratchet."""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Callable

from trainer.schema import ExperimentResult
from agents.messages import (ALREADY_TRIED, Broadcast, ExperimentRecord, ReportReply, StartedExperiment,
                             new_experiment_id)

from agents.backends.base import Backend, Proposal, ProposalContext, backend_config, make_backend
from agents.config import AgentConfig
from agents.errors import (BackendError, BackendRefused, InvalidEdit, ProposalAbandoned,
                           SpendingCapReached)
from agents.inflight import Inflight, kill_leftover
from agents.health import SAME_FAILURE_STOP, BackendHealth, RunHealth
from agents.ports import CoordinatorPort
from agents.program import Program, load_program, parse_program
from agents.transcript import keep_transcript, redact, secret_values
from agents.training import Training
from agents.worktree import Worktree, object_id

log = logging.getLogger(__name__)

Runner = Callable[..., ExperimentResult]
# Decisions after which the agent keeps the commit as its line.
KEEP = ("promote", "merge", "simplification", "pending")
# Proposals in a row whose train.py another run already trained, before the iteration ends
# without a run (the next one proposes again): mutate's states near best run out, a model may
# repeat itself; a refusal costs a proposal, never a run. 3 cost adaptive allocation its rounds on
# bench/allocation.py (barren: 12.50 rounds to the target, 10 gave 12.08): agents crowded onto a
# paying program meet each other's states more often than agents spread evenly.
CLAIM_TRIES = 10


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


class ResearchAgent(Training):
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
        # One backend per program this agent has run (an optuna backend is bound to its
        # program's study): a move back to a program takes its backend up again.
        self._backends: dict[str, Backend] = {self.program.name: self.backend}
        self.moves = 0  # times the coordinator moved this agent to another program
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
        self._lead: str | None = None          # the lead (another agent's pending idea) it builds on
        self.own: collections.deque[ExperimentRecord] = collections.deque(maxlen=max(1, cfg.recent_n))
        self.counts: collections.Counter[str] = collections.Counter()
        self.experiments = 0
        self.kept = 0
        self.stop_reason: str | None = None
        self.spent_waited: float | None = None   # seconds a spent backend waited for best before the stop
        self.phase = "starting"
        self.description = ""
        self.progress = 0.0
        self.last_delta: float | None = None
        self._last_beat = 0.0
        self._prep: threading.Thread | None = None
        self._prepared: Proposal | BaseException | None = None
        self._last_seq = -1
        # (best's commit when it happened, unix time, reason): the backend has nothing left to
        # propose from its train.py and no other program took the agent (see _spent_wait)
        self._spent: tuple[str | None, float, str] | None = None
        self._longest_run = 0.0   # seconds, start to report, of the agent's longest ok run
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
        self.spent_waited = None
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
                "experiments": self.experiments, "moves": self.moves,
                "kept": self.kept, "statuses": dict(self.counts), "parent_val_bpb": self.parent_val,
                "last_delta": self.last_delta, "stop_reason": self.stop_reason,
                "spent_waited_s": self.spent_waited,
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
        self._maybe_move()
        job = self.port.next_job(self.cfg.name, self.hw)
        if job is not None:
            self._join_prep()
            self.wt.ensure(job.commit, self.port.fetch)
            self._train(kind=job.kind, commit=job.commit, parent=job.parent, seed=job.seed,
                        source=self.wt.show(job.commit), description=job.description or job.kind,
                        job_id=job.job_id)
            return
        best = self.port.best(self.hw)
        if self._spent is not None and self._spent_wait(best):
            return
        if best is not None:
            self._maybe_adopt(best)
            self._follow_lead(best)
        if self.parent_val is None:
            # Nothing to compare against yet: measure our own parent first.
            self._join_prep()
            head = self.wt.head()
            self._train(kind="baseline", commit=head, parent=head, seed=self.cfg.seed,
                        source=self.wt.source(), description="baseline (own parent)")
            return
        self._experiment()

    def _maybe_move(self) -> None:
        """At the iteration boundary (no run, job or fix in flight): ask the coordinator which
        program to run (adaptive allocation); moved, take that program's text, backend and adopt
        rule, and adopt best. A coordinator without an allocation, or unreachable, moves nobody."""
        self._take(self._ask())

    def _ask(self, leaving: str | None = None):
        ask = getattr(self.port, "assignment", None)
        if ask is None:
            return None
        try:
            return ask(self.cfg.name, self.program.name, leaving)
        except Exception as e:  # an allocation question must never stop research
            log.warning("%s: could not ask for its program: %s", self.cfg.name, e)
            return None

    def _take(self, spec) -> bool:
        """Run `spec` from now on (None or the current program: nothing changes)."""
        if spec is None or spec.name == self.program.name:
            return False
        self._join_prep()
        self._prepared = None  # a proposal prepared for the old program is not run
        old = self.program.name
        self.program = parse_program(spec.text, spec.name, f"<program {spec.name}>")
        self.backend = self._backends.get(spec.name) or make_backend(
            backend_config(spec.backend), seed=self.cfg.seed, agent=self.cfg.name)
        self._backends[spec.name] = self.backend
        self.adopt = spec.adopt or self.program.adopt or "if-better"
        self.own.clear()  # the prompt's own results were another program's
        self._spent = None  # the new program has its own states to propose
        self.health.same_failure(None)  # a run of one program's refusals ends with the program
        self.moves += 1
        log.info("%s: moved from program %s to %s", self.cfg.name, old, spec.name)
        best = self.port.best(self.hw)
        if best is not None:
            self._adopt(best)
        return True

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

    def _follow_lead(self, best: Broadcast) -> None:
        """Build on the lead (coordinator/decide/leads.py): an agent whose line is best runs its
        next idea on top of the candidate pending on best that is measured best so far, as one
        agent does on its own pending line, and goes back to best when the lead is one no more
        (decided against, or best moved on: a lead that became best is simply best). An agent
        on a line of its own, or with `adopt: never`, stays where it is."""
        ask = getattr(self.port, "lead", None)
        if ask is None or self.adopt == "never":
            return
        try:
            lead = ask(self.hw)
        except Exception as e:  # a lead is an optimisation: never a reason to stop research
            log.warning("%s: could not ask for the lead: %s", self.cfg.name, e)
            return
        head = self.wt.head()
        if self._lead is not None and head != self._lead:
            self._lead = None              # moved off it already (adopted a new best)
        if self._lead is not None:
            if lead is not None and lead.commit == head:
                return
            self._lead = None
            if best.commit != head:
                self._join_prep()
                self._adopt(best)
                log.info("%s: the lead %s is decided; back on best", self.cfg.name, head[:10])
                head = best.commit
        if lead is None or lead.commit == head or lead.best != best.commit:
            return
        if head != best.commit and object_id("blob", self.wt.source().encode()) != lead.best_blob:
            return                         # a line of its own (its pending idea, a kept winner)
        self._join_prep()
        self.wt.ensure(lead.commit, self.port.fetch)
        self.wt.reset_hard(lead.commit)
        self.parent_val = lead.val_bpb     # the lead's mean so far (what its test has seen)
        self.line_margin = None
        self._lead = lead.commit
        log.info("%s: building on the lead %s (%s, %+.4f vs best over %d samples)", self.cfg.name,
                 lead.commit[:10], lead.experiment_id, lead.delta, lead.samples)

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
        """One idea trained: proposed, checked, committed, run, reported. A proposal whose train.py
        another run already trained is recorded and replaced at once, and a backend with nothing
        left to propose is asked again (_nothing_left), up to CLAIM_TRIES times in all."""
        for attempt in range(CLAIM_TRIES):
            if not self._propose_and_train(prepared=attempt == 0):
                return

    def _propose_and_train(self, prepared: bool) -> bool:
        """Returns True when nothing was trained and the agent should propose again at once (the
        proposal was already tried, or the backend had nothing left and may yet find a state)."""
        base = self.wt.head()
        source = self.wt.source()
        self.phase = "propose"
        self.description = ""
        self._beat(force=True)
        started_at = time.time()   # before the proposal: a record's duration includes it
        try:
            proposal = self._take_prepared(base) if prepared else None
            if proposal is None:
                if self._stop.is_set():
                    return False
                proposal = self.backend.propose(self._context(base, source))
        except BackendError as e:
            # No answer is not an experiment: no record, nothing counted.
            self._backend_failed(e)
            return False
        self.health.answered()
        if proposal.spent:
            return self._nothing_left(proposal)
        eid = new_experiment_id(self.cfg.name)
        try:
            new, desc = proposal.resolve(source, max_edit_bytes=self.cfg.max_edit_bytes,
                                         max_file_bytes=self.cfg.max_file_bytes)
        except InvalidEdit as e:
            self._keep_transcript(eid, proposal, f"invalid: {e}")
            rec = self._record(eid, kind="experiment", parent=base, commit=None,
                               description=redact(proposal.description or "", self._secrets())[:200],
                               status="invalid", reason=redact(str(e), self._secrets()),
                               proposal=proposal, started_at=started_at)
            self._finish(rec, source, None)
            # after the record: a refusal that moves the agent is recorded under the program
            # that refused, not the one it moves to
            self._same_failure(proposal.error)
            return False
        self._keep_transcript(eid, proposal, "ok")
        self._same_failure(None)
        desc = redact(desc, self._secrets())   # a model may echo anything into git and the ledger
        held = self._claim(new, eid)
        if held is not None:
            # Another run trained (or is training) this very train.py: an idea, never trained;
            # its record tells the backend (a model sees it among its own results).
            rec = self._record(eid, kind="experiment", parent=base, commit=None, description=desc[:200],
                               status="invalid", reason=ALREADY_TRIED + held, proposal=proposal,
                               started_at=started_at)
            self._finish(rec, source, None)
            return True
        self._train(kind="experiment", commit=None, parent=base, seed=self.cfg.seed, source=new,
                    description=desc, eid=eid, proposal=proposal, base_source=source,
                    started_at=started_at)
        return False

    def _nothing_left(self, proposal: Proposal) -> bool:
        """The backend has nothing left to propose from this train.py (mutate's nearby states or
        optuna's reachable points all tried): no idea, so no record (a record per refusal made
        five "experiments" and five "invalid edits" of a one-knob program's end, in 0.2 s, where
        nothing was tried). Asked again at once (mutate's search is random: a state may turn up);
        the SAME_FAILURE_STOP-th alike answer spends the program: the agent moves to another
        one, or waits for best to move. Returns True to ask again within this iteration."""
        return not self._same_failure(proposal.error, spent=True)

    def _claim(self, source: str, eid: str) -> str | None:
        """Ask the coordinator to hold `source` for `eid`: None to train it, else why not."""
        claim = getattr(self.port, "claim", None)
        if claim is None:
            return None
        try:
            return claim(self.hw, object_id("blob", source.encode("utf-8")), eid)
        except Exception as e:  # a question about duplicates must never stop research
            log.warning("%s: could not claim its train.py: %s", self.cfg.name, e)
            return None

    # --- the backend's trouble: not experiments -----------------------------------------------
    def _secrets(self) -> list[str]:
        env = getattr(getattr(self.backend, "spec", None), "api_key_env", None)
        return secret_values([os.environ.get(env)] if env else [])

    def _backend_failed(self, e: BackendError, *, wait: bool = True, what: str = "proposal",
                        spent: bool = False) -> None:
        """Down: wait (growing, capped; a stop ends the wait) and let the loop ask again.
        Refused: move to another program (adaptive allocation), else stop this agent with the
        reason, or, `spent` (nothing left to propose from this train.py), wait for best to move.
        Abandoned: written down, nothing else."""
        kind, delay = self.health.failed(e, what)
        # the reason goes into the ledger: redacted (a provider's error may quote the key)
        if kind == "refused" and self._take(self._ask(leaving=redact(str(self.health.reason), self._secrets()))):
            # adaptive allocation gave it another program: research goes on there
            self.health.moved_on(self.program.name)
            return
        if kind == "refused" and spent and self.cfg.spent_wait_runs > 0:
            best = self.port.best(self.hw)
            self._spent = (best.commit if best else None, time.time(), str(self.health.reason))
            self.health.spent()
            self.phase = "spent"
            self._beat(force=True)
            log.warning("%s: nothing left to propose from this train.py: waits for best to move "
                        "(taking the coordinator's jobs meanwhile)", self.cfg.name)
            return
        if kind == "refused":
            log.error("%s: stopping: the backend refused: %s", self.cfg.name, self.health.reason)
            self.stop_reason = f"backend refused: {self.health.reason}"
            self._stop.set()
            self._beat(force=True)
        elif kind == "down" and wait:
            self.phase = "backend down"
            self._beat(force=True)
            self._stop.wait(delay)

    def _same_failure(self, error: str | None, spent: bool = False) -> bool:
        """Note a proposal's error (None: a usable answer); True when it was the
        SAME_FAILURE_STOP-th alike and the refusal was acted on (moved, spent or stopped)."""
        if not self.health.same_failure(error):
            return False
        why = (f"{error}, asked {SAME_FAILURE_STOP} times" if spent
               else f"the same failure {SAME_FAILURE_STOP} times in a row: {error}")
        self._backend_failed(BackendRefused(why), spent=spent)
        return True

    def _spent_wait(self, best: Broadcast | None) -> bool:
        """While the backend has nothing to propose (self._spent): True (this iteration is over)
        until best moves off the commit it was spent on, then the agent adopts the new best and
        proposes from it (False); after cfg.spent_wait_runs budgets without a move it stops."""
        at, since, reason = self._spent
        if best is not None and best.commit != at:
            log.info("%s: best moved (%s): proposing again", self.cfg.name, best.commit[:10])
            self._spent = None
            self.health.resumed()
            self._join_prep()
            self._prepared = None
            self._adopt(best)   # its own line is spent: what is new is on best
            return False
        waited = time.time() - since
        # a budget's wall clock: the configured one (null in swarm.yaml: the profile's, which only
        # the trainer resolves), else the longest run this agent recorded
        budget = max(self.cfg.budget or 0.0, self._longest_run)
        if waited >= self.cfg.spent_wait_runs * budget:
            log.error("%s: stopping: %s, and best did not move in %.0f s", self.cfg.name, reason, waited)
            self.stop_reason = f"backend refused: {reason}; best did not move in {waited:.0f} s"
            self.spent_waited = waited
            self._stop.set()
        else:
            self.phase = "spent"
            self._beat(force=True)
            self._stop.wait(self.cfg.backend_wait_s)
        return True

    def _keep_transcript(self, eid: str, proposal: Proposal, parse: str) -> None:
        keep_transcript(self.cfg.runs_dir / eid, proposal, parse, secrets=self._secrets(),
                        experiment_id=eid.split("/")[0], agent=self.cfg.name,
                        program=self.program.name, backend=self.backend.name)

    def _message(self, desc: str, eid: str) -> str:
        return (f"{desc}\n\nExperiment: {eid}\nProgram: {self.program.name}\n"
                f"Agent: {self.cfg.name}\n")

    def _finish(self, rec: ExperimentRecord, base_source: str | None, commit: str | None) -> None:
        """Report, clear inflight.json, ratchet (experiments) or learn the parent's score."""
        self.phase = "report"
        answer = self.port.report(rec, self._bundle(rec))
        d = answer.decision if isinstance(answer, ReportReply) else answer
        self.inflight.clear()
        self._observe(rec)
        self.counts[rec.status] += 1
        if rec.status == "ok":
            self._longest_run = max(self._longest_run, rec.finished_at - rec.started_at)
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
                # its own line, not best: the coordinator's word is the decision named
                log.info("%s: its line moves to %s (%s; coordinator: %s) val_bpb %.4f", self.cfg.name,
                         commit[:10], rec.description, d.decision, rec.val_bpb)
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
