"""Adaptive allocation: the coordinator moves agents toward the research programs that move best.

An explicit collaborator of the Coordinator with a narrow interface: `assign(agent, program)`
(asked by an agent at an iteration boundary: the program it should run next, or None to stay)
and `yields()` (each program's agents, yield and share, for `swarm status` and the report).

Yield. A program's yield is its verified contribution to best per device-hour: every decision
that moved best (promote, merge, simplification) credits its gain over the best before it
(Decision.delta, bpb) to the program the result ran under; a pool's gain is split between the
result that formed it and its members (Decision.pooled) by each one's own evidence, its latest
delta against best before the pool (a member that was no better gets nothing). Device-hours are the
seconds of every run recorded under the program (experiments and the jobs its agents did).

The bandit (`share: p_best`; the rates `share: active` shows): Thompson sampling over a
Gamma-Poisson model of each program's rate of gain, for a population. Gains are counted in units of
the swarm's mean gain per move; a program's rate has the prior Gamma(a0 * weight share, a0 / pooled
rate): the swarm's own pooled rate, held with the strength of `prior_moves` moves, scaled by the
program's `weight`. Joint draws from the posteriors give each program's probability of having the
highest rate; the agents above the floors are shared in proportion to it (probability matching,
which is what Thompson sampling does one pull at a time), and an agent at its boundary moves from a
program over its share to the one furthest under, when that is worth the agent's line: the two end
up no further from their shares, and the destination's share is the larger (see SLACK and MIN_GAP
below for the rule and what it replaced). Why Thompson rather than an upper confidence bound: a UCB
rule points every free agent at the same program (the swarm herds onto one program until the next
move), while probability matching keeps a spread that shrinks only as the evidence does; the weight
is a prior, naturally. Why shares rather than one draw per question: measured on
bench/allocation.py (barren, seed 0), one draw per question moved agents 70 times in 18 rounds (the
draws' noise, with few moves behind each program), each move costing the agent its line.

Early evidence (`pending_weight`, default 0): candidates still pending in their sequential test
with a positive delta may count a fraction of their delta for their program until decided.
On bench/allocation.py (barren, seeds 0..23) weight 1 gave 11.96 rounds to the target against
12.54 at dwell 6 and 11.92 against 11.75 at dwell 2: no difference within the noise
(bench/results/allocation-2026-12-04.txt), so it is off.

Inert programs (`inert_prior`, default 0.5; 0: off): a program whose every change left val_bpb
within the noise gets a probability of being unable to move best at all (Allocation._inert); under
`share: p_best` it scales the program's rate towards 0 in the draws, and an agent on a program
probably inert may leave it after `inert_dwell_runs` runs (1) rather than `dwell_runs` (6). Without
the short dwell the inert evidence came too late to matter (the agents left at the dwell's end, by
round 7, and half the reachable gain came at round 12); with it, the bench's barren programs give
their agents away from round 3 (AllocationConfig.inert_dwell_runs has the figures).

Shares by activity (`share: active`, with inert_prior; not the default): the agents above the floors are shared by
weight x P(not inert), evenly among the programs that can move best at all, and the rates only
show (see Allocation._targets for why). On bench/allocation.py, 192 seeds no setting was chosen
on, barren: 1.10 times as fast as static to the target, where p_best was 1.03; equal 1.00; the
late bloomer's share 0.222 (p_best 0.211, floor 0.125); a scenario with two programs over knobs
the baseline already has at their optimum 1.02 (p_best 0.96). But on the landscape measured from
the real trainer (four shipped programs, 12 seeds, to 0.9 of the reachable gain) it took 27.58
rounds (10 of 12 censored at 30) against static's 21.83 and p_best's 20.67, so p_best stays the
default (bench/results/allocation-2026-12-05.txt).

Moves are held back by: a floor per program (`min_agents`: an agent never leaves a program that
would fall below it, and a program below it takes the next free agent; a fraction time-shares,
see `_recent_agents`; where the agents are too few for the floors, the programs take turns under a
fractional floor, `visits`), a minimum dwell (an agent
moves only after `dwell_runs` runs on its program) and pins (agents of a pinned program are never
moved, and none are moved into it). A program an agent's backend refused (mutate's search space
exhausted, a model refusing alike five times) is spent: the agent leaves it at once, dwell and
floor notwithstanding (it used to stop for the night), and no agent is moved into it until best
moves: a refusal speaks of the best it was made on (it used to stay spent all night, and a
one-knob program whose knob paid again later never came back).

State: every reassignment is an `allocation` event of the ledger with its reason (the hash
keys.allocation holds each agent's latest); the settings and programs are in redis
(keys.allocation_spec), so a restarted coordinator rebuilds the allocation from the ledger.
The ledger is followed incrementally (XRANGE from the last entry seen), never on the decision
path: one small read per question.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import random
import threading
import time
from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.messages import Decision, ExperimentRecord
from agents.program import ProgramSpec
from coordinator.state import keys
from coordinator.state.ledger import Ledger

log = logging.getLogger(__name__)

MOVED = ("promote", "merge", "simplification")
# When a move is worth its cost (an agent loses its line). Moving one agent from a program `over`
# agents above its share to one `under` below cuts the squared distance of the two from their
# shares iff over + under > 1; at exactly 1 it only trades places. A move needs over + under at
# least 1 - SLACK (not worse, give or take the draws' noise, about +-0.06 agents) and over +
# under + (the destination's share - the source's) above 1 + MIN_GAP: a flip between programs
# nothing tells apart (1.0 + 0) stays, a barren program at 2 of 1.5 gives its agent to a paying
# one at 2 of 2.5 (1.0 + 1.0), two programs at 3 and 1 of 2 each even out (2.0 + 0), and a paying
# program never gives an agent to a barren one a fraction under its share (optimizer at 3 of 2.5,
# logging at 1 of 1.6: 1.1 - 0.9). bench/allocation.py, barren: the old rule (over + under > 1)
# moved agents 0-19 times a run at dwell 6 (mean 5.5; this rule 1.9) and up to 31 at dwell 2,
# mostly trading places among unproven programs and from paying programs back to barren ones.
SLACK = 0.25
MIN_GAP = 0.5
# Runs kept for a fractional floor's window (Allocation._recent_agents): 2 x dwell_runs x agents of them.
RECENT = 1 << 16
# Joint draws per question: P(best) to about +-0.015, a few ms for four programs.
DRAWS = 1024
# A draw in which a program is inert scales its rate by this: it can win only when every program
# drew inert (then the draws' order among them decides, as among programs nothing told apart).
INERT_SCALE = 1e-6
# P(inert) from which a program counts as inert: inert_dwell_runs applies, and `swarm status` says its
# changes left val_bpb within the noise (a program with no evidence sits at inert_prior).
INERT_SURE = 0.8


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllocationConfig(_M):
    """swarm.yaml's `allocation:` (coordinator/run/swarm.default.yaml documents each key)."""
    mode: Literal["static", "adaptive"] = "adaptive"
    # Floor per program, in agents. Whole: an agent never leaves a program that would fall below it.
    # A fraction: the program's agents time-share (see Allocation._recent_agents): 0.5 lets a program be
    # left with no agent and brings one back for a visit of dwell_runs runs whenever its share of
    # the swarm's recent device-hours falls under half an agent's.
    min_agents: float = Field(default=1, ge=0)
    # When the floors cannot all be met (fewer agents than min_agents x the programs not pinned:
    # the quick start's 2 agents on 6 programs), the programs take turns: the floor becomes this
    # share of those agents spread over the programs (0.5 of 2 agents over 6 programs: 1/6 of an
    # agent each, so half the device time visits every program in turn and half follows the
    # yields; see Allocation.floor). 0: a program with no agent at the start runs only when
    # another's backend is spent (it was so before; bench/quickstart.py --programs measures both).
    visits: float = Field(default=0.5, ge=0, le=1)
    # Runs on a program before an agent may move (an agent's repeats of the unchanged baseline after
    # its first, the noise of a fresh swarm, not counted: 7 of the quick start's first 18 runs): with
    # share p_best, 6 rather than 3 cut the moves on the allocation bench (12 seeds: barren 292 ->
    # 116, equal 138 -> 60) with rounds to the target unchanged
    # (bench/results/allocation-2026-12-03.txt); share active, which moves an agent only between
    # programs told apart as inert or not, needs 2 (3.8-4.2 moves a night).
    dwell_runs: int = Field(default=6, ge=1)
    # Runs before an agent may leave a program that is probably inert (P(inert) at least INERT_SURE,
    # which needs inert_prior): a program whose changes do nothing gives its agents above the floor
    # away after this many, not dwell_runs; null: dwell_runs for every program. The evidence is the
    # program's (every agent's runs on it), so one run of the agent's own is enough. Measured on
    # bench/allocation.py with inert_prior 0.5 (bench/results/allocation-inert-dwell-2026-12-07.txt):
    # barren 1.16 times static's speed over 60 seeds (dwell 6 for all: 0.94-1.00), tuned 1.29 (1.05),
    # real 1.14 over 24 seeds (1.16), equal 1.00 (0.99), the late bloomer's share 0.170 (0.172; floor 0.125).
    inert_dwell_runs: int | None = Field(default=1, ge=1)
    prior_moves: float = Field(default=0.5, gt=0)  # strength of the weight prior, in moves
    # Unverified evidence: a candidate still pending in its sequential test with a positive delta
    # counts this fraction of that delta (and of a move) for its program until its decision is
    # final (then its real credit, or none, replaces it). 0: verified moves only.
    pending_weight: float = Field(default=0.0, ge=0, le=1)
    # Inert programs: the prior probability that a program's changes do nothing measurable (0: never
    # suspect it), and how far, in sigmas of one run, an active program's changes move val_bpb
    # (the spread of its effects): see Allocation._inert. Under share p_best, alone, it moved agents
    # off the barren programs of bench/allocation.py by round 3-4 and the target came no sooner;
    # with inert_dwell_runs it does (above). share active is built on it.
    inert_prior: float = Field(default=0.5, ge=0, lt=1)
    effect_sigmas: float = Field(default=3.0, gt=0)
    # How the agents above the floors are shared: `p_best` (Thompson: by each program's probability
    # of having the highest rate of gain) or `active` (by weight among the programs that can move
    # best at all: each counts its weight x P(not inert), so it needs inert_prior; the rates only
    # show). See Allocation._targets; measured in bench/results/allocation-2026-12-05.txt.
    share: Literal["p_best", "active"] = "p_best"
    seed: int | None = None                     # the draws' seed (the bench: reproducible)

    def inert_dwell(self) -> int | None:
        """The runs before an agent may leave a program probably inert, where that rule is in force
        (inert_prior above 0 and inert_dwell_runs under dwell_runs); None where it is not."""
        short = self.inert_dwell_runs
        return short if self.inert_prior > 0 and short is not None and short < self.dwell_runs else None

    @model_validator(mode="after")
    def _active_needs_inert(self):
        if self.share == "active" and self.inert_prior <= 0:
            raise ValueError("share 'active' shares agents by each program's P(not inert): set inert_prior "
                             "above 0 (0.5, say)")
        return self


class AllocationSpec(_M):
    """The settings and the programs an agent may be given (kept in redis)."""
    config: AllocationConfig = Field(default_factory=AllocationConfig)
    programs: list[ProgramSpec]


class Assignment(_M):
    """One reassignment, as the ledger keeps it."""
    agent: str
    program: str
    previous: str
    reason: str
    runs_at: int                                # the agent's runs when it was moved
    at: float = Field(default_factory=time.time)
    left: bool = False   # its backend refused `previous` (exhausted, refusing): that program is spent


class ProgramYield(_M):
    """One program as `swarm status` shows it."""
    program: str
    agents: int
    credit: float          # bpb of best's gain credited to it
    hours: float           # device-hours of its runs
    yield_: float          # credit per device-hour
    sd: float              # the posterior's standard deviation of that yield
    share: float           # its share of the swarm's device-hours
    pinned: bool = False
    spent: bool = False    # an agent's backend refused it: no agent is moved into it until best moves
    inert: float = 0.0     # the probability that its changes do nothing measurable
    floor: float = 1.0     # its floor in agents now (under min_agents: the programs take turns)
    turns: bool = False    # too few agents for min_agents each: the floor is visits x agents / programs


class AllocationError(ValueError):
    """An allocation spec that cannot work (a program named twice, none at all)."""


class Allocation:
    """The allocation decision over one swarm's ledger (see the module docstring)."""

    def __init__(self, ledger, spec: AllocationSpec):
        names = [p.name for p in spec.programs]
        if not names:
            raise AllocationError("allocation: no programs to allocate agents to")
        if len(set(names)) != len(names):
            raise AllocationError(f"allocation: program {sorted(n for n in names if names.count(n) > 1)[0]!r} "
                                  "is named twice")
        # Its own Ledger on the same connection: the coordinator's has a batch (a pipeline) open
        # in its decision thread, which a reassignment must not write into.
        self.ledger = Ledger(ledger.r, ledger.swarm_id)
        self.spec = spec
        self.cfg = spec.config
        self.programs = {p.name: p for p in spec.programs}
        self.rng = random.Random(self.cfg.seed)
        self._lock = threading.Lock()
        self._cursor = "-"
        self.program_of: dict[str, str] = {}     # agent -> program it runs now
        self.runs: dict[str, int] = {}           # agent -> runs recorded (dwell: not the root's repeats)
        self._root: str | None = None            # the commit the swarm's first baseline ran
        self._entered: set[str] = set()          # agents that have run the root once
        self.moved_at: dict[str, int] = {}       # agent -> its runs when last moved
        self.allocated: dict[str, str] = {}      # agent -> the program it was last moved to
        self.hours: dict[str, float] = {n: 0.0 for n in names}
        self.credit: dict[str, float] = {n: 0.0 for n in names}
        self.moves: dict[str, float] = {n: 0.0 for n in names}  # moves credited (shares of pools)
        self._rec_program: dict[str, str] = {}   # experiment id -> program
        self._credited: set[str] = set()
        self._own: dict[str, float] = {}         # experiment id -> its latest own delta vs best
        self._pending: dict[str, float] = {}     # experiment id -> its delta while pending (> 0)
        self._z: dict[str, float] = {}           # experiment id -> its change's effect, in sds
        # program -> the sum of its counted effects' log-likelihood ratios, inert over active (kept
        # as the effects arrive: every agent's boundary asks for P(inert), see _dwell)
        self._llr: dict[str, float] = {n: 0.0 for n in names}
        self._counted: dict[str, tuple[str, float]] = {}   # experiment id -> (program, its term)
        self.history: list[Assignment] = []
        self.spent: set[str] = set()             # programs an agent's backend refused since best moved
        self._recent: deque[tuple[str, float]] = deque(maxlen=RECENT)  # (program, seconds) of the last runs
        self._follow()

    # -- persistence -------------------------------------------------------------------------
    @classmethod
    def configure(cls, ledger, spec: AllocationSpec) -> "Allocation":
        """Keep `spec` in redis (a restarted coordinator finds it) and build the allocation."""
        alloc = cls(ledger, spec)
        ledger.r.set(keys.allocation_spec(ledger.swarm_id), spec.model_dump_json())
        return alloc

    @classmethod
    def restore(cls, ledger) -> "Allocation | None":
        """The allocation a previous coordinator configured, rebuilt from the ledger; None when
        none was configured."""
        raw = ledger.r.get(keys.allocation_spec(ledger.swarm_id))
        if not raw:
            return None
        return cls(ledger, AllocationSpec.model_validate_json(raw))

    # -- following the ledger ------------------------------------------------------------------
    def _follow(self) -> None:
        """Read the ledger entries appended since the last call."""
        key = self.ledger.key("ledger")
        while True:
            chunk = self.ledger.r.xrange(key, min=self._cursor, count=2000)
            if not chunk:
                return
            for _eid, fields in chunk:
                f = {_s(k): _s(v) for k, v in fields.items()}
                self._event(f["type"], f["id"], f["json"])
            self._cursor = "(" + _s(chunk[-1][0])
            if len(chunk) < 2000:
                return

    def _event(self, typ: str, id: str, js: str) -> None:
        if typ == "record":
            rec = ExperimentRecord.model_validate_json(js)
            self._rec_program[id] = rec.program
            if id in self._z:
                self._count_effect(id)   # its decision came first
            if rec.status == "invalid":
                # an edit never trained (a state already tried, a refused proposal) is no run on
                # its program: neither the dwell nor a fractional floor's window counts it
                return
            if rec.kind == "baseline" and self._root is None:
                self._root = rec.commit
            of_root = rec.kind == "baseline" and rec.commit == self._root
            if not (of_root and rec.agent in self._entered):
                # an agent's repeats of the root after its first (the noise a fresh swarm measures:
                # 7 of the quick start's first 9 runs) are no work on a program; its first run,
                # as every later job, counts (with noise history that first is all there is)
                self.runs[rec.agent] = self.runs.get(rec.agent, 0) + 1
            if of_root:
                self._entered.add(rec.agent)
            self.program_of[rec.agent] = rec.program  # a moved agent's records name its new one
            if rec.program in self.hours:
                self.hours[rec.program] += _seconds(rec) / 3600.0
            self._recent.append((rec.program, _seconds(rec)))
        elif typ == "decision" and id not in self._credited:
            d = Decision.model_validate_json(js)
            if d.decision == "pending" and d.merge_commit is None and (d.delta or 0.0) > 0:
                self._pending[id] = float(d.delta)
            elif d.decision != "sample":
                self._pending.pop(id, None)   # decided: its real credit (below), or none
            if d.decision in MOVED and d.best_after:
                self._credited.add(id)
                # new ground: a refusal said nothing was left near the old best (mutate's nearby
                # states of the new one are new; a knob's effect may have changed with it)
                self.spent.clear()
                gain = max(d.delta if d.delta is not None else (d.margin or 0.0), 0.0)
                members = [id] + [m for m in d.pooled if m != id]
                for m, part in _shares(members, self._own).items():
                    prog = self._rec_program.get(m)
                    if prog in self.credit:
                        self.credit[prog] += gain * part
                        self.moves[prog] += part
            elif d.delta is not None and d.decision != "sample" and d.merge_commit is None:
                self._own[id] = d.delta  # its own evidence so far (a pool splits by it)
            z = _effect(d)
            if z is not None:
                self._z[id] = z
                self._count_effect(id)
        elif typ == "allocation":
            a = Assignment.model_validate_json(js)
            self.program_of[a.agent] = a.program
            self.allocated[a.agent] = a.program
            self.moved_at[a.agent] = a.runs_at
            if a.left:
                self.spent.add(a.previous)
            self.history.append(a)

    # -- the bandit -------------------------------------------------------------------------
    def _posterior(self) -> dict[str, tuple[float, float, float]]:
        """program -> (shape, rate, unit): Gamma posterior of its rate of gain in units of
        `unit` bpb per device-hour (see the module docstring)."""
        early, early_moves = self._early()
        moves = sum(self.moves.values()) + early_moves
        total = sum(self.credit.values()) + sum(early.values())
        unit = total / moves if moves > 0 and total > 0 else 1.0
        hours = sum(self.hours.values())
        a0 = self.cfg.prior_moves
        # the pooled rate, itself shrunk by a0 pseudo-moves over one pseudo device-hour per program
        pooled = (total / unit + a0) / (hours + len(self.programs))
        mean_w = sum(p.weight for p in self.programs.values()) / len(self.programs)
        return {n: (a0 * p.weight / mean_w + (self.credit[n] + early[n]) / unit,
                    a0 / pooled + self.hours[n], unit) for n, p in self.programs.items()}

    def _early(self) -> tuple[dict[str, float], float]:
        """Each program's unverified credit, `pending_weight` x the deltas of its candidates
        still pending, and the moves they count as (`pending_weight` each): see
        AllocationConfig.pending_weight."""
        early = {n: 0.0 for n in self.programs}
        w, moves = self.cfg.pending_weight, 0.0
        if w > 0:
            for id, delta in self._pending.items():
                prog = self._rec_program.get(id)
                if prog in early:
                    early[prog] += w * delta
                    moves += w
        return early, moves

    def _targets(self, free: list[str], counts: dict[str, int]
                 ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """Thompson sampling for a population: each program's probability of having the highest
        rate (DRAWS joint draws from the posteriors), and the agents that share gives it on top of
        its floor (the free programs' agents, less the floors, shared by that probability); with
        each program's P(inert), which the draws used. `share: active`: the agents above the floors
        are shared by weight x P(not inert) instead, evenly among the programs that can move best,
        whatever their rates (p_best is still drawn, for the reason a move gives). Why: on
        bench/allocation.py (barren) an oracle that puts the four extra agents on the two paying
        programs 3/3 from round 2 reaches the target in 9.52 rounds (seeds 0..47), one that puts
        all four on either of them in 12.79 and 13.92, as slow as static (13.33): a program's value
        per agent falls fast with the agents already on its few knobs, which a rate per device-hour
        cannot see, and the early rates tilt Thompson's P(best) towards the program whose first
        moves were large."""
        post, inert = self._posterior(), self._inert()
        wins = {n: 0 for n in free}

        def draw(n: str) -> float:
            rate = self.rng.gammavariate(post[n][0], 1.0 / post[n][1])
            return rate * INERT_SCALE if inert[n] > 0 and self.rng.random() < inert[n] else rate

        for _ in range(DRAWS):
            wins[max(free, key=draw)] += 1
        p_best = {n: wins[n] / DRAWS for n in free}
        share = p_best
        if self.cfg.share == "active":
            act = {n: self.programs[n].weight * (1.0 - inert[n]) for n in free}
            total = sum(act.values())
            share = {n: act[n] / total if total > 0 else 1.0 / len(free) for n in free}
        floor = self.floor()
        extra = max(sum(counts[n] for n in free) - floor * len(free), 0)
        return {n: floor + extra * share[n] for n in free}, p_best, inert

    def _inert(self) -> dict[str, float]:
        """Each program's probability that its changes do nothing measurable to val_bpb (a
        program that cannot move best however long it runs: logging, evaluation, refactors), from
        the effects of its experiments' own changes (`_effect`, in sds of their measurement): a
        two-component model, inert (every effect zero: z ~ N(0, 1)) with the prior probability
        `inert_prior`, or active (effects spread `effect_sigmas` sds: z ~ N(0, 1 + s^2)). One run
        whose change moved val_bpb by 3 sds (better or worse) makes a program active at once;
        telling one inert takes a few runs within the noise (two at |z| 0.5: 0.89). Verified
        moves are what the rates count; this only says which programs can have a rate at all, so
        the agents above the floors leave a program whose changes do nothing before any move of
        best exists to tell the programs apart (bench/allocation.py, barren). A program credited
        with half a move of best or more is active, whatever its other runs did."""
        pi = self.cfg.inert_prior
        out = {n: 0.0 for n in self.programs}
        if pi <= 0:
            return out
        log_odds = {n: math.log(pi / (1.0 - pi)) + self._llr[n] for n in self.programs}
        # a program credited with half a move of best or more has moved val_bpb: active
        return {n: 0.0 if self.moves[n] >= 0.5 else 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))
                for n, x in log_odds.items()}

    def _count_effect(self, id: str) -> None:
        """Add experiment `id`'s latest effect to its program's log-likelihood ratio, inert over
        active: log N(z; 0, 1) - log N(z; 0, 1 + effect_sigmas^2), replacing the term an earlier
        decision of the same experiment added."""
        prog = self._rec_program.get(id)
        if prog not in self._llr:
            return
        old = self._counted.get(id)
        if old is not None:
            self._llr[old[0]] -= old[1]
        v1 = 1.0 + self.cfg.effect_sigmas ** 2
        z = self._z[id]
        term = 0.5 * math.log(v1) - 0.5 * z * z * (1.0 - 1.0 / v1)
        self._llr[prog] += term
        self._counted[id] = (prog, term)

    def _counts(self) -> dict[str, int]:
        counts = {n: 0 for n in self.programs}
        for prog in self.program_of.values():
            if prog in counts:
                counts[prog] += 1
        return counts

    def assign(self, agent: str, program: str, leaving: str | None = None) -> ProgramSpec | None:
        """At an agent's iteration boundary: the program it should run from now on, or None to
        stay on `program` (static mode, a pinned or unknown program, dwell not over, floors).
        `leaving`: why the agent's backend refused `program` (its search space exhausted, a
        refusing model): in adaptive mode it moves at once, dwell and floor notwithstanding, to
        a program that is not spent (None: there is none, or `program` is pinned, and it stops
        as in static mode)."""
        with self._lock:
            self._follow()
            if self.cfg.mode != "adaptive":
                return None
            if leaving is not None:
                return self._leave(agent, program, leaving)
            held = self.allocated.get(agent)
            if held is not None and held != program and held in self.programs:
                # an agent restarted by `swarm run` on its static program resumes its allocation
                self.program_of[agent] = held
                log.info("allocation: %s resumes program %s", agent, held)
                return self.programs[held]
            self.program_of[agent] = program
            cur = self.programs.get(program)
            if cur is None or cur.pinned:
                return None
            runs = self.runs.get(agent, 0)
            if runs - self.moved_at.get(agent, 0) < self._dwell(program):
                return None
            counts = self._counts()
            floor = self.floor()
            if counts[program] - 1 < math.floor(floor):
                return None
            recent = self._recent_agents()
            if recent and counts[program] - 1 < floor and recent[program] < floor:
                return None   # a visit to a time-shared program lasts until its share is back up
            # a program some agent's backend refused (its space exhausted, its model refusing) is
            # spent: no agent is moved into it, by floor or share; those on it stay
            free = [n for n, p in self.programs.items() if not p.pinned and (n not in self.spent or n == program)]
            starved = [n for n in free if n not in self.spent and self._starved(n, counts, recent)]
            if starved:
                to = _most_starved(starved, counts, recent)
                reason = self._why_starved(to, counts, recent)
            else:
                target, p_best, inert = self._targets(free, counts)
                surplus = counts[program] - target[program]
                deficits = {n: target[n] - counts[n] for n in free if n != program and n not in self.spent}
                to = max(deficits, key=lambda n: (deficits[n], n)) if deficits else program
                # a move only when it is worth an agent's line (see SLACK, MIN_GAP): no churn
                # from the draws' own noise, never toward a program with a smaller share
                if to == program or surplus <= 0 or deficits[to] <= 0:
                    return None
                gain, gap = surplus + deficits[to], target[to] - target[program]
                if gain < 1 - SLACK or gain + gap <= 1 + MIN_GAP:
                    return None
                if self.cfg.share == "active":
                    why = (f"active: P(inert) {to} {inert[to]:.2f} -> {target[to]:.1f} agents (has {counts[to]}), "
                           f"{program} {inert[program]:.2f} -> {target[program]:.1f} (has {counts[program]})")
                else:
                    why = (f"thompson: P(best) {to} {p_best[to]:.2f} -> {target[to]:.1f} agents "
                           f"(has {counts[to]}), {program} {p_best[program]:.2f} -> "
                           f"{target[program]:.1f} (has {counts[program]})")
                reason = (f"{why}; credit {self.credit[to]:.4f} "
                          f"bpb in {self.hours[to]:.2f}h vs {self.credit[program]:.4f} in "
                          f"{self.hours[program]:.2f}h")
            a = Assignment(agent=agent, program=to, previous=program, reason=reason, runs_at=runs)
            self.ledger.put_allocation(agent, a.model_dump_json())
            self._follow()  # applies the move as any coordinator would read it: once
            log.info("allocation: %s moves %s -> %s: %s", agent, program, to, reason)
            return self.programs[to]

    def _dwell(self, program: str) -> int:
        """Runs an agent spends on `program` before it may move: inert_dwell_runs when the program is
        probably inert, else dwell_runs."""
        short = self.cfg.inert_dwell()
        if short is not None and self._inert()[program] >= INERT_SURE:
            return short
        return self.cfg.dwell_runs

    def _leave(self, agent: str, program: str, why: str) -> ProgramSpec | None:
        if program in self.programs and self.programs[program].pinned:
            return None   # pinned: its agents are never moved (it stops, as in static mode)
        open_ = [n for n, p in self.programs.items() if n != program and n not in self.spent and not p.pinned]
        if not open_:
            return None
        counts = self._counts()
        recent = self._recent_agents()
        starved = [n for n in open_ if self._starved(n, counts, recent)]
        if starved:
            to = _most_starved(starved, counts, recent)
        else:
            target, _p, _inert = self._targets(open_, counts)
            to = max(open_, key=lambda n: (target[n] - counts[n], n))
        a = Assignment(agent=agent, program=to, previous=program, runs_at=self.runs.get(agent, 0), left=True,
                       reason=f"its backend refused {program} ({why[:200]}); {to} has {counts[to]} agent(s)")
        self.ledger.put_allocation(agent, a.model_dump_json())
        self._follow()
        log.info("allocation: %s leaves %s for %s: %s", agent, program, to, a.reason)
        return self.programs[to]

    def _starved(self, n: str, counts: dict[str, int], recent: dict[str, float]) -> bool:
        """Below its floor: fewer agents than the floor's whole part, or (a fractional floor, whose
        `recent` is not empty) no more than that and a recent share under the floor."""
        floor = self.floor()
        whole = math.floor(floor)
        return counts[n] < whole or (bool(recent) and counts[n] <= whole and recent[n] < floor)

    def _why_starved(self, n: str, counts: dict[str, int], recent: dict[str, float]) -> str:
        floor = self.floor()
        said = f"{floor:.2g}" if floor == self.cfg.min_agents else (
            f"{floor:.2g} (programs take turns: {self._free_agents()} agents for {len(self._free())} programs, "
            f"visits {self.cfg.visits:g})")
        if counts[n] < math.floor(floor) or not recent:
            return f"{n} has {counts[n]} agent(s), below the floor of {said}"
        return (f"{n} had {recent[n]:.2f} agents on average over the swarm's last "
                f"{self._window_runs()} runs, below its floor of {said}")

    def _free(self) -> list[str]:
        return [n for n, p in self.programs.items() if not p.pinned]

    def _free_agents(self) -> int:
        free = set(self._free())
        return sum(1 for prog in self.program_of.values() if prog in free)

    def floor(self) -> float:
        """The floor per program in agents now (`floor_for` over the agents not on a pinned program
        and the programs not pinned)."""
        return floor_for(self.cfg, len(self._free()), self._free_agents())

    def _window_runs(self) -> int:
        """A fractional floor's window, in runs: one visit of dwell_runs runs in it gives a program
        the floor's fraction of an agent (2 x dwell_runs x agents for half an agent: a floor under
        0.5 used to count over that window too, and so visited as often as 0.5)."""
        frac = self.floor() % 1.0
        agents = max(len(self.program_of), 1)
        return min(math.ceil(self.cfg.dwell_runs * agents / max(frac, 1.0 / RECENT)), RECENT)

    def _recent_agents(self) -> dict[str, float]:
        """A fractional floor's measure ({} under a whole floor, which needs none): each program's
        agents on average over the swarm's last `_window_runs` runs (2 x dwell_runs x agents for a
        floor of 0.5; its share of their device-seconds, times the agents; by runs when none of
        them trained). A visit of dwell_runs runs every such window keeps a program at its floor:
        under 0.5, one agent time-shares two such programs. Why a window and not the night's share: a program given
        up early would go unvisited for as long as its first hours held its share up."""
        floor = self.floor()
        if floor == math.floor(floor):
            return {}
        agents = max(len(self.program_of), 1)
        secs = {n: 0.0 for n in self.programs}
        runs = {n: 0 for n in self.programs}
        total, seen = 0.0, 0
        for prog, sec in itertools.islice(reversed(self._recent), self._window_runs()):
            total += sec
            seen += 1
            if prog in secs:
                secs[prog] += sec
                runs[prog] += 1
        if total > 0:
            return {n: agents * secs[n] / total for n in self.programs}
        return {n: agents * runs[n] / seen if seen else float(agents) for n in self.programs}

    def yields(self) -> list[ProgramYield]:
        """Each program's agents, yield (bpb of best's gain per device-hour, with the
        posterior's sd) and share of device-hours."""
        with self._lock:
            self._follow()
            post, inert = self._posterior(), self._inert()
            counts = self._counts()
            total_h = sum(self.hours.values())
            floor = self.floor()
            out = []
            for n, p in self.programs.items():
                shape, rate, unit = post[n]
                h = self.hours[n]
                out.append(ProgramYield(
                    program=n, agents=counts[n], credit=round(self.credit[n], 6), hours=round(h, 4),
                    yield_=round(self.credit[n] / h, 6) if h > 0 else 0.0,
                    sd=round(math.sqrt(shape) / rate * unit, 6),
                    share=round(h / total_h, 4) if total_h > 0 else 0.0, pinned=p.pinned, spent=n in self.spent,
                    inert=round(inert[n], 4), floor=round(floor, 4),
                    turns=self.cfg.mode == "adaptive" and floor < self.cfg.min_agents))
            return out


def floor_for(cfg: AllocationConfig, programs: int, agents: int) -> float:
    """The floor per program in agents: `min_agents`, or, when the agents are fewer than
    min_agents x the programs (both counted without the pinned ones), `visits` x agents / programs:
    the programs take turns (see AllocationConfig.visits). `swarm run`'s start line says the same
    from its plan (coordinator/run/plan.py)."""
    f = cfg.min_agents
    if cfg.visits > 0 and programs and agents and f * programs > agents:
        return min(f, cfg.visits * agents / programs)
    return f


def _most_starved(starved: list[str], counts: dict[str, int], recent: dict[str, float]) -> str:
    """Which of the programs below their floors an agent goes to, moved at its boundary or leaving a
    program its backend refused: the fewest agents, then the least run of late (a fractional
    floor's measure; none under a whole floor), then the name."""
    return min(starved, key=lambda n: (counts[n], recent.get(n, 0.0), n))


def _shares(members: list[str], own: dict[str, float]) -> dict[str, float]:
    """How a pool's gain is split between its members: by each one's own evidence (its latest
    delta against best before it was pooled; none or a negative one counts nothing), evenly when
    none of them had any. An even split credited a program whose knobs do nothing with half of
    every pool its noise-lucky results joined (bench/allocation.py, barren)."""
    ev = {m: max(own.get(m, 0.0), 0.0) for m in members}
    total = sum(ev.values())
    if total <= 0:
        return {m: 1.0 / len(members) for m in members}
    return {m: e / total for m, e in ev.items()}


def _effect(d: Decision) -> float | None:
    """A decision's measure of its experiment's own change, in sds: its delta against its parent
    over sigma x sqrt(1/its samples + 1/best's). None for a merge or pool's verification, a sample
    of best, a candidate whose parent has no samples (its delta against best would carry best's
    other changes), or before sigma has 2 degrees of freedom."""
    if (d.decision == "sample" or d.merge_commit is not None or d.delta_parent is None
            or not d.sigma or d.samples < 1 or d.dof < 2):
        return None
    return d.delta_parent / (d.sigma * math.sqrt(1.0 / d.samples + 1.0 / max(d.samples_best, 1)))


def _seconds(rec: ExperimentRecord) -> float:
    """Device seconds of a run: its total time, else its training time, else nothing (an edit
    that never trained)."""
    r = rec.result
    if r is None:
        return 0.0
    return float(getattr(r, "total_seconds", None) or getattr(r, "training_seconds", None) or 0.0)


def _fmt(draw: float, unit: float) -> str:
    return f"{draw * unit:.3g}"


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def dumps_yields(ys: list[ProgramYield]) -> str:
    return json.dumps([y.model_dump() for y in ys])
