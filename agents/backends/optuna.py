"""`optuna`: model-based search (TPE, or CMA-ES) over the program's search space, in one Optuna
study per swarm, program and hardware class that every agent using it shares (journal storage
on the swarm's redis). Mixed mode: a share of proposals comes from an LLM backend whose prompt
carries what the study has learned; its edits to search-space constants become trials too.

The search starts where best is (`start: best`): trials are neighbours of the agent's
train.py in a trust region that widens as best moves (optuna_region.py); `start: anywhere` is
the sampler's own search over the whole space. Samplers are seeded from the study's size, and
no point the study holds is proposed again, so a resumed swarm goes on where it stopped.

How a trial meets the swarm (see README, "The optuna backend"):
- propose: the sampler asks a trial for every search-space constant in train.py; its values
  are written into the agent's current train.py (its copy of best, or its own kept commit).
  The description starts `optuna #N:` so the record names its trial.
- observe (called by the agent after each run): the trial is told the record's val_bpb, or
  FAIL for crash / timeout / invalid. Every other trained file (a baseline, a confirmation,
  a verification run, an LLM edit that moved a search-space constant) is added as a finished
  trial at the point it trained, so the study holds every sample the coordinator has.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import random
import re
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from agents.backends import optuna_region as R
from agents.backends import optuna_study as S
from agents.backends.base import Proposal, ProposalContext, make_backend, register_backend
from agents.errors import AgentError, InvalidEdit, ProgramError, SpendingCapReached

log = logging.getLogger(__name__)

LLM_TAG = "llm: "
_NOT_LLM = ("optuna", "mutate", "auto")   # `auto` may stand for mutate
_TRIAL_TAG = re.compile(r"^optuna #(\d+):")
_MAX_ASKS = 10
# As mutate says it (the agent's program is then spent until best moves: it moves to another
# program, or waits for best to move).
EXHAUSTED = ("optuna: search space exhausted (every point a move from best can reach is trained, "
             "training or crashed)")


class StudyUnavailable(AgentError):
    """The study cannot be used now: no storage configured, redis unreachable, or the agent's
    hardware class not known yet. A proposal then returns it as its `error`."""


class OptunaSpec(BaseModel):
    """Model-based search in a study shared by the swarm; optional LLM share (mixed mode)."""
    model_config = ConfigDict(extra="forbid")

    type: Literal["optuna"] = "optuna"
    sampler: Literal["tpe", "cmaes"] = "tpe"
    # best: trials start around the agent's train.py (its copy of best) and move 1-2 constants
    # by the program's steps; the region grows as best moves (agents/backends/optuna_region.py).
    # anywhere: the sampler's own points over the whole search space (the old behaviour).
    start: Literal["best", "anywhere"] = "best"
    # Random trials before the model is used; the swarm's baseline runs count among them.
    n_startup_trials: int = Field(default=10, ge=0)
    llm: Any = None                    # an LLM backend spec (litellm or command): mixed mode
    llm_share: float | None = Field(default=None, ge=0, le=1)   # None: 0.3 with llm, else 0
    # The env var holding the study's redis URL: `swarm run` sets it to the swarm's own redis.
    storage_env: str = "SWARM_REDIS_URL"
    storage_wait_s: float = Field(default=60.0, ge=0)   # how long to wait for redis to return

    @field_validator("llm", mode="before")
    @classmethod
    def _llm(cls, v):
        if v is None:
            return None
        from agents.backends.base import backend_config

        kind = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
        if kind in _NOT_LLM:
            raise ValueError(f"type {kind!r} is not an LLM backend (litellm, command, or a plugin's)")
        try:
            v = backend_config(v)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ValueError((f"{where}: " if where else "") + ("unknown key" if err["type"] ==
                             "extra_forbidden" else err["msg"])) from None
        except PydanticCustomError as e:
            raise ValueError(str(e)) from None
        if hasattr(v, "api_key_env") and not v.api_key_env and not getattr(v, "api_base", None):
            raise ValueError("api_key_env: the LLM has no key (name the env variable that holds "
                             "it, or give api_base for a local server)")
        return v

    @model_validator(mode="after")
    def _share(self):
        if self.llm is None and self.llm_share:
            raise ValueError("llm_share: there is no llm backend to share with (set llm:)")
        return self

    @property
    def share(self) -> float:
        if self.llm is None:
            return 0.0
        return 0.3 if self.llm_share is None else self.llm_share


def trial_number(description: str | None) -> int | None:
    """The trial an `optuna #N: ...` description names."""
    m = _TRIAL_TAG.match(description or "")
    return int(m.group(1)) if m else None


def _one_line(text: str) -> str:
    # what Proposal.resolve makes of a description: the record's description must match it
    return " ".join(text.split())[:200]


class OptunaBackend:
    """One agent's handle on the shared study. Thread-safe: the agent prepares its next
    proposal while `observe` tells the study about the last run."""

    name = "optuna"

    def __init__(self, spec: OptunaSpec, *, seed: int = 0, agent: str = "", client=None,
                 swarm_id: str | None = None, hardware_class: str | None = None,
                 llm=None):
        self.spec = spec
        self.seed = seed
        self.agent = agent
        self._client = client                 # a redis client; None: from $storage_env
        self._where = (swarm_id or "", hardware_class) if hardware_class else None
        self._rng = random.Random(seed)       # which proposals go to the LLM
        self.llm = llm if llm is not None else (
            make_backend(spec.llm, seed=seed, agent=agent) if spec.llm is not None else None)
        self._llm_off = False
        self._lock = threading.RLock()
        self._program = None
        self.study = None
        self._outstanding: dict[int, Any] = {}     # trial number -> Trial asked here, not told
        self._llm_base: dict[str, dict] = {}       # LLM description -> params it started from
        self._queue: list[tuple[Any, str | None]] = []   # (record, source) not told yet
        self.counts: collections.Counter[str] = collections.Counter()   # proposals by origin

    @property
    def spent_usd(self) -> float:
        return getattr(self.llm, "spent_usd", 0.0) if self.llm is not None else 0.0

    # --- the study ----------------------------------------------------------------------
    def _redis(self):
        if self._client is None:
            import redis

            url = os.environ.get(self.spec.storage_env)
            if not url:
                raise StudyUnavailable(f"optuna: no study storage: {self.spec.storage_env} is not set "
                                   "(swarm run sets it to the swarm's redis)")
            self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        return self._client

    def _locate(self, ctx: ProposalContext | None) -> None:
        """The swarm and hardware class come with the records the agent sees (its own and the
        swarm's recent ones are all of its class)."""
        if self._where is not None or ctx is None:
            return
        for r in list(ctx.own_recent) + [r for r, _ in ctx.swarm_recent]:
            if r.hardware_class:
                self._where = (r.swarm_id, r.hardware_class)
                return

    def _bind(self, source: str | None):
        """The study of (swarm, program, hardware class), created on first use; trials this
        agent left running in an earlier life are told FAIL. None until both are known."""
        if self.study is not None:
            return self.study
        if self._program is None or self._where is None:
            return None
        import optuna
        from optuna.trial import TrialState

        swarm_id, hw = self._where
        study = optuna.create_study(study_name=S.study_name(self._program.name, hw),
                                    storage=S.journal_storage(self._redis(), swarm_id),
                                    direction="minimize", load_if_exists=True)
        # seeded from the study's state: a resumed swarm goes on, it does not start over
        held = len(study.get_trials(deepcopy=False))
        seed = S.resume_seed(self.seed, held, swarm_id)
        if held:
            log.info("%s: study %s goes on from its %d trials", self.agent, study.study_name, held)
        study.sampler = R.LocalSampler(self._inner_sampler(source, hw, seed), self._program, seed,
                                       local=self.spec.start == "best",
                                       startup_trials=self.spec.n_startup_trials)
        if not study.user_attrs:
            study.set_user_attr("program", self._program.name)
            study.set_user_attr("hardware_class", hw)
            study.set_user_attr("swarm_id", swarm_id)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("agent") == self.agent and t.number not in self._outstanding:
                study._storage.set_trial_user_attr(t._trial_id, "not_run",
                                                   "its agent restarted before telling it")
                study.tell(t.number, state=TrialState.FAIL)
                log.info("%s: trial %d left running by an earlier run: FAIL", self.agent, t.number)
        self.study = study
        return study

    def _inner_sampler(self, source: str | None, hw: str, seed: int):
        """TPE, or CMA-ES with its mean at the agent's train.py: with `start: best` its spread
        is one of the program's steps and the region's projection handles the int grid."""
        import optuna

        x0, sigma0, margin = None, None, True
        if source is not None:
            params, dists = S.params_of(source, self._program, hw)
            numeric = [n for n, d in dists.items()
                       if not isinstance(d, optuna.distributions.CategoricalDistribution)]
            x0 = {n: params[n] for n in numeric} if all(n in params for n in numeric) else None
            if self.spec.start == "best" and numeric:
                ax = R.axes(self._program.search_space, {n: dists[n] for n in numeric})
                # CMA-ES works in the unit cube: one step of a constant is 1/span of it
                sigma0 = sum(1 / a.span for a in ax.values()) / len(ax)
                margin = False
        return S.make_sampler(self.spec.sampler, seed, self.spec.n_startup_trials, x0,
                              sigma0=sigma0, with_margin=margin)

    def _retry(self, fn, *args):
        """fn(*args), waiting up to storage_wait_s while redis is down (swarm run restarts the
        embedded one from its AOF within a second or two)."""
        import redis

        deadline = time.monotonic() + self.spec.storage_wait_s
        delay = 0.2
        while True:
            try:
                return fn(*args)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
                if time.monotonic() + delay > deadline:
                    raise StudyUnavailable(f"optuna: the study's redis is unreachable: "
                                       f"{type(e).__name__}") from None
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    # --- proposals ----------------------------------------------------------------------
    def propose(self, ctx: ProposalContext) -> Proposal:
        """A new train.py from the sampler (or, for about llm_share of calls, from the LLM).
        Never raises for a bad state: returns a Proposal with `error` (recorded invalid)."""
        if self.llm is not None and not self._llm_off and self._rng.random() < self.spec.share:
            try:
                return self._propose_llm(ctx)
            except SpendingCapReached as e:
                # the cap binds the LLM's spend; the optimizer costs nothing and goes on alone
                self._llm_off = True
                log.warning("%s: %s; the optuna share goes on alone", self.agent, e)
        try:
            with self._lock:
                return self._retry(self._propose_trial, ctx)
        except (StudyUnavailable, ProgramError) as e:
            return Proposal(error=str(e))

    def _ready(self, ctx: ProposalContext):
        self._program = self._program or ctx.program
        self._locate(ctx)
        study = self._bind(ctx.source)
        if study is None:
            raise StudyUnavailable("optuna: the hardware class is not known yet (no record seen)")
        self._flush()
        return study

    def _propose_trial(self, ctx: ProposalContext) -> Proposal:
        study = self._ready(ctx)
        hw = self._where[1]
        dists = S.distributions(ctx.source, ctx.program, hw)
        if not dists:
            return Proposal(error="optuna: none of the search-space constants "
                                  f"({', '.join(sorted(ctx.program.search_space))}) is in train.py")
        local = self.spec.start == "best"
        current = S.current_values(ctx.source, ctx.program, hw)
        fixed = S.fixed_values(ctx.source, ctx.program, hw)   # what the constraints read beside the space
        centre = R.clamp_into(current, R.axes(ctx.program.search_space, dists))
        running = trial_number(ctx.in_flight)
        unrun = sorted(n for n in self._outstanding if n != running)
        # A trial prepared on a base that moved before it ran: its point is still the sampler's
        # choice, so it is applied to the new base; older ones are given up. Around best, a
        # trial whose centre moved is given up too: the region follows the new best.
        for n in unrun[:-1]:
            self._give_up(n, "its base moved before it ran")
        if unrun and local and self._outstanding[unrun[-1]].user_attrs.get("centre") != R.point_key(centre):
            self._give_up(unrun.pop(), "best moved before it ran")
        trials = [self._outstanding[unrun[-1]]] if unrun else []
        code = S.code_hash(ctx.source, ctx.program)
        for _ in range(_MAX_ASKS):
            if trials:
                trial = trials.pop()
            else:
                study.sampler.aim(centre, dists, code, fixed)
                trial = study.ask(fixed_distributions=dists)
                if study.sampler.exhausted:
                    # every point a move can reach is held: what the sampler gave is a repeat
                    self._outstanding[trial.number] = trial
                    self._give_up(trial.number, "every point of the search space is held")
                    return Proposal(error=EXHAUSTED, spent=True)
            if trial.number not in self._outstanding:
                self._outstanding[trial.number] = trial
                trial.set_user_attr("agent", self.agent)
                trial.set_user_attr("origin", "optuna")
                trial.set_user_attr("base", ctx.base_commit)
                region = study.sampler.region
                if local and region is not None:
                    trial.set_user_attr("centre", R.point_key(centre))
                    trial.set_user_attr("region", region.describe())
            if trial.user_attrs.get("code") != code:   # new, or prepared on a base that moved
                trial.set_user_attr("code", code)
            broken = ctx.program.violated({**fixed, **current, **trial.params})
            if broken:   # a trial prepared on another base, or the sampler found no other point
                self._give_up(trial.number, f"breaks the constraint {broken}")
                continue
            new, changes = S.write_params(ctx.source, trial.params, ctx.program, hw)
            if changes:
                self.counts["optuna"] += 1
                return Proposal(description=_one_line(f"optuna #{trial.number}: " + ", ".join(changes)),
                                new_source=new)
            # the sampler chose the base itself: nothing to train
            self._give_up(trial.number, "the point is the current train.py")
        return Proposal(error=f"optuna: the sampler proposed the current train.py {_MAX_ASKS} times")

    def _give_up(self, number: int, why: str) -> None:
        from optuna.trial import TrialState

        trial = self._outstanding.pop(number)
        trial.set_user_attr("not_run", why)
        self.study.tell(trial, state=TrialState.FAIL)

    def _propose_llm(self, ctx: ProposalContext) -> Proposal:
        note, base = "", {}
        try:
            with self._lock:
                self._retry(self._ready, ctx)
                note = self._note()
                base, _ = S.params_of(ctx.source, ctx.program, self._where[1])
        except (StudyUnavailable, ProgramError) as e:
            log.warning("%s: the LLM's prompt goes without the study: %s", self.agent, e)
        if note:
            ctx = dataclasses.replace(ctx, program=ctx.program.model_copy(
                update={"text": ctx.program.text + "\n\n" + note}))
        p = self.llm.propose(ctx)   # seconds: outside the lock
        self.counts["llm"] += 1
        if p.error:
            return p
        desc = p.description
        if not desc and p.text is not None:
            from agents.edits import parse_edit
            try:
                desc = parse_edit(p.text).description
            except InvalidEdit:
                desc = ""
        p.description = _one_line(LLM_TAG + (desc or "edit"))
        with self._lock:
            self._llm_base[p.description] = base
        return p

    def _note(self) -> str:
        """What the study knows, for the LLM's prompt: best params and their importances."""
        from optuna.trial import TrialState

        study = self.study
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return ""
        best = min(done, key=lambda t: t.value)
        lines = [f"## What the swarm's optimizer has learned (Optuna study {study.study_name}, "
                 f"{len(done)} finished trials)",
                 f"- Best so far: val_bpb {best.value:.4f} with "
                 + ", ".join(f"{k}={v!r}" for k, v in sorted(best.params.items()))]
        imp = S.importances(study)
        if imp:
            lines.append("- Parameter importances (Optuna's estimate, summing to 1): "
                         + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
        lines.append("- The optimizer tunes these constants itself; an edit that changes them "
                     "is told to it as a trial too.")
        return "\n".join(lines)

    def fix(self, ctx: ProposalContext, log_tail: str) -> Proposal:
        """An LLM proposal's crash goes to the LLM; an optimizer's trial cannot be repaired
        (it is told FAIL, which the sampler learns from)."""
        if self.llm is not None and (ctx.in_flight or "").startswith(LLM_TAG):
            return self.llm.fix(ctx, log_tail)
        return Proposal(error="optuna cannot fix a crash: the trial is told FAIL")

    # --- results ------------------------------------------------------------------------
    def observe(self, record, source: str | None = None) -> None:
        """Tell the study what a finished run gave. `source` is the train.py that trained
        (None for an invalid edit). Never raises: what redis cannot take now is told later."""
        with self._lock:
            if self._where is None and record.hardware_class:
                self._where = (record.swarm_id, record.hardware_class)
            self._queue.append((record, source))
            try:
                if self._retry(self._bind, source) is not None:
                    self._retry(self._flush)
            except StudyUnavailable as e:
                log.warning("%s: %d result(s) wait for the study: %s", self.agent, len(self._queue), e)
            except Exception:
                log.exception("%s: telling the study failed", self.agent)

    def _flush(self) -> None:
        while self._queue:
            self._tell(*self._queue[0])
            self._queue.pop(0)

    def _tell(self, rec, source: str | None) -> None:
        import optuna
        from optuna.trial import TrialState

        study, hw = self.study, self._where[1]
        n = trial_number(rec.description) if rec.kind == "experiment" else None
        trial = self._outstanding.get(n) if n is not None else None
        if trial is not None:
            trial.set_user_attr("experiment_id", rec.experiment_id)
            if rec.commit:
                trial.set_user_attr("commit", rec.commit)
            if rec.status == "ok" and rec.val_bpb is not None:
                study.tell(trial, rec.val_bpb)
            else:
                trial.set_user_attr("status", rec.status)
                trial.set_user_attr("reason", (rec.reason or rec.status)[:200])
                study.tell(trial, state=TrialState.FAIL)
            del self._outstanding[n]
            return
        if source is None or n is not None:
            return   # an invalid edit, or a trial this agent no longer holds (already FAIL)
        origin = rec.kind
        if rec.kind == "experiment":
            if not rec.description.startswith(LLM_TAG):
                return
            origin = "llm"
        params, dists = S.params_of(source, self._program, hw)
        if not params:
            return
        if origin == "llm" and params == self._llm_base.pop(rec.description, None):
            return   # a code-only edit: it says nothing about the search-space constants
        attrs = {"origin": origin, "agent": rec.agent, "experiment_id": rec.experiment_id,
                 "commit": rec.commit or "", "code": S.code_hash(source, self._program)}
        if rec.status == "ok" and rec.val_bpb is not None:
            t = optuna.trial.create_trial(params=params, distributions=dists, value=rec.val_bpb,
                                          user_attrs=attrs)
        elif origin == "llm":
            t = optuna.trial.create_trial(params=params, distributions=dists, state=TrialState.FAIL,
                                          user_attrs={**attrs, "status": rec.status})
        else:
            return   # a crashed sample of a known point adds nothing
        study.add_trial(t)


register_backend("optuna", OptunaBackend, OptunaSpec)
