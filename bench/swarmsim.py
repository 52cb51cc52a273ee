"""The simulated swarm of the research bench: agents in reproducible rounds (Rounds), one
coordinator with its agents on a landscape (Swarm), what an arm measured (ArmResult) and the
audit of its ledger (lost winners, true wins reached, baseline share).

The real Coordinator (a real redis-server, a real bare git repo) and the real ResearchAgent loop
run in this process; only the runner is fake (bench/landscape.py: one landscape.sample per run).
"""
from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agents.agent import ResearchAgent
from agents.backends.base import make_backend
from agents.config import AgentConfig
from agents.health import SAME_FAILURE_STOP
from agents.messages import Decision, ExperimentRecord, NoiseHistorySpec, PromotionConfig
from agents.program import ProgramSpec
from bench.landscape import Drift, Landscape, RunLog, fake_runner
from coordinator.decide.core import Coordinator
from coordinator.decide.rules import margin_for, standard_error

MOVED = ("promote", "merge", "simplification")
# Decisions that are a recorded reason for a winner not (yet) being on best.
REASONS = ("pending", "did-not-stack", "carried")


# --- rounds: concurrent iterations in a reproducible order ------------------------------------
ROUND_TIMEOUT_S = 600.0   # a round is simulated time: seconds of CPU at most, never minutes


class Rounds:
    """Plays rounds of agent iterations. Each agent's iteration runs in its own thread; the
    threads enter the loop one at a time (start order) up to the runner, wait there until all
    of the round have started, then finish (runner result, report, ratchet) one at a time in
    a second random order."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cv = threading.Condition()
        self.n = 0
        self.start_order: list[int] = []
        self.end_order: list[int] = []
        self.start_pos = self.end_pos = 0
        self.index = -1  # the round being played (0, 1, ...)
        self.ran: set[int] = set()
        self.errors: list[BaseException] = []
        self.after_end: Callable[[], None] | None = None  # after each agent's report, in end order
        self.timeout = ROUND_TIMEOUT_S

    def gate(self, i: int):
        def wait() -> None:
            with self.cv:
                self.ran.add(i)
                self.start_pos += 1
                self.cv.notify_all()
                self.cv.wait_for(self._my_end(i))
        return wait

    def _my_end(self, i: int):
        return lambda: self.start_pos >= self.n and self.end_pos < self.n and self.end_order[self.end_pos] == i

    def play(self, agents: list[ResearchAgent], which: list[int] | None = None) -> None:
        """One round of agents[i] for i in `which` (default: all). An agent's gate is keyed by its
        index in `agents`, so a round of some of them orders those indices."""
        ids = list(range(len(agents))) if which is None else list(which)
        self.n = len(ids)
        self.index += 1
        self.start_order = self.rng.sample(ids, self.n)
        self.end_order = self.rng.sample(ids, self.n)
        self.start_pos = self.end_pos = 0
        self.ran = set()
        busy: set[int] = set()   # agents inside their iteration (not waiting for a turn)

        def body(i: int) -> None:
            with self.cv:
                self.cv.wait_for(lambda: self.start_pos < self.n and self.start_order[self.start_pos] == i)
            try:
                busy.add(i)
                agents[i]._iteration()
            except BaseException as e:  # a bench bug: surface it after the round
                self.errors.append(e)
            finally:
                busy.discard(i)
                with self.cv:
                    if i not in self.ran:  # ended without training: give the start turn on
                        self.start_pos += 1
                        self.cv.notify_all()
                        self.cv.wait_for(self._my_end(i))
                    if self.after_end is not None:
                        self.after_end()
                    self.end_pos += 1
                    self.cv.notify_all()

        threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in ids]
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [i for i, t in zip(ids, threads) if t.is_alive()]
        if stuck:   # the threads are daemons: they go with the process
            inside = sorted(busy)
            raise RuntimeError(f"round {self.index} did not finish in {self.timeout:g} s: agent(s) {inside} inside "
                               f"their iteration, {len(stuck) - len(inside)} more waiting for a turn (a bench bug, "
                               f"or a gate keyed by another index than the agent's among all the agents)")
        if self.errors:
            raise RuntimeError(f"agent iteration failed: {self.errors[0]!r}") from self.errors[0]

    def close(self) -> None:
        """Nothing to end: a round's threads end with it (Staggered's live for the whole swarm)."""


class _Closed(BaseException):
    """Raised in an agent's thread when its staggered swarm is over (not an Exception: the agent's
    own handlers let it through)."""


class Staggered:
    """Plays the agents out of step, as a real swarm's agents soon are (their runs' start-up,
    evaluation and jobs differ): agent k of N ends each run k/N of a budget after agent 0 does.
    The agents take turns in that fixed order; in its turn an agent ends its run (the runner's
    result, its report, the ratchet) and goes on into its next iteration up to the runner (sync
    to best, propose, commit), so every proposal sees every report that ended before it, where
    Rounds starts all of a round's proposals from the same state. Each agent has one thread for
    the whole swarm; a round is each live agent's turn once: one budget of wall clock. The first
    round only starts the runs (they end in the second). The same interface as Rounds."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cv = threading.Condition()
        self.turn: int | None = None      # the agent that may go on now (None: the driver)
        self.index = -1
        self.errors: list[BaseException] = []
        self.after_end: Callable[[], None] | None = None
        self.timeout = ROUND_TIMEOUT_S
        self.threads: dict[int, threading.Thread] = {}
        self.ended: set[int] = set()      # agents whose run ended in this turn
        self.done: set[int] = set()       # agents whose thread returned (stopped)
        self.closed = False

    def gate(self, i: int):
        def wait() -> None:
            with self.cv:
                self.turn = None          # the run has started: the turn goes back to the driver
                self.cv.notify_all()
                self.cv.wait_for(lambda: self.turn == i or self.closed)
                if self.closed:
                    raise _Closed()
                self.ended.add(i)
        return wait

    def _loop(self, agents: list[ResearchAgent], i: int) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.turn == i or self.closed)
        try:
            while not self.closed:
                try:
                    agents[i]._iteration()
                except _Closed:
                    return
                except BaseException as e:  # a bench bug: surface it after the round
                    self.errors.append(e)
                with self.cv:
                    ran = i in self.ended
                    self.ended.discard(i)
                    if ran and self.after_end is not None:
                        self.after_end()
                    if agents[i]._stop.is_set() or self.errors:
                        return
                    if not ran:       # a turn without a run (a refused proposal): it is over
                        self.turn = None
                        self.cv.notify_all()
                        self.cv.wait_for(lambda: self.turn == i or self.closed)
        finally:
            with self.cv:
                self.done.add(i)
                if self.turn == i:
                    self.turn = None
                self.cv.notify_all()

    def play(self, agents: list[ResearchAgent], which: list[int] | None = None) -> None:
        ids = sorted(range(len(agents)) if which is None else which)
        self.index += 1
        for i in ids:
            if i not in self.threads:
                t = threading.Thread(target=self._loop, args=(agents, i), daemon=True)
                self.threads[i] = t
                t.start()
        deadline = time.monotonic() + self.timeout
        for i in ids:
            with self.cv:
                if i in self.done:
                    continue
                self.turn = i
                self.cv.notify_all()
                if not self.cv.wait_for(lambda: self.turn is None, max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"round {self.index}: agent {i}'s turn did not end in {self.timeout:g} s "
                                       "(a bench bug)")
        if self.errors:
            raise RuntimeError(f"agent iteration failed: {self.errors[0]!r}") from self.errors[0]

    def close(self) -> None:
        """End every agent's thread (those inside a run leave it by _Closed)."""
        with self.cv:
            self.closed = True
            self.cv.notify_all()


IDLE_ROUNDS = 4 * SAME_FAILURE_STOP  # rounds in a row without a run before an arm is called over


# --- one arm ---------------------------------------------------------------------------------
@dataclass
class ArmResult:
    arm: str
    runs: int = 0
    rounds: int = 0
    gain: float = float("nan")             # true gain of the final best over the baseline
    measured_best: float = float("nan")    # the coordinator's mean for its final best
    best_trained_gain: float = float("nan")
    runs_to_target: int | None = None      # runs when a round ends with the target reached
    runs_to_report: int | None = None      # runs up to the report that reached it (end order)
    wall_to_report: float | None = None    # Staggered: budgets of wall clock to that report
    rounds_to_target: int | None = None
    experiments: int = 0                   # trained experiments (invalid edits left out)
    moves: int = 0                         # experiments whose final decision moved best
    first_move_run: int | None = None      # runs before best first moved (None: never)
    lost_winners: int = 0
    true_wins: int = 0
    true_wins_reached: int = 0
    baseline_root: int = 0                 # runs of the unchanged root (the start-up tax)
    remeasures: int = 0                    # runs of a later best, unchanged (its mean, sigma)
    kinds: dict = field(default_factory=dict)  # runs by kind (experiment, baseline, confirm, verify)
    kinds_to_target: dict = field(default_factory=dict)  # the same, when the target was first reached
    ids_to_target: set = field(default_factory=set)      # the experiments recorded by then
    true_missed: dict = field(default_factory=dict)  # true wins not on the final best, by final decision
    stale_to_target: int = 0   # of ids_to_target, those first judged against another best than at their start
    decisions: dict = field(default_factory=dict)
    lost: list = field(default_factory=list)

    @property
    def capture(self) -> float:
        return self.gain / self.best_trained_gain if self.best_trained_gain > 0 else float("nan")


def backend_spec(kind: str, program: str | None = None, program_text: str | None = None) -> dict:
    """A --backend value: a type name, or a YAML flow mapping for a spec with options
    (`{type: optuna, sampler: cmaes}`). `auto` is what `swarm run` makes of it on one node
    without an LLM key, for `program` (its text `program_text`): optuna where Optuna can express
    the program's search space, else mutate. An LLM key in the environment is not looked at: a
    bench never calls a model (it used to resolve against the environment: mutate everywhere
    without a key, a paid model with one)."""
    if kind.lstrip().startswith("{"):
        import yaml
        spec = yaml.safe_load(kind)
    else:
        spec = {"type": kind}
    if spec.get("type") == "auto" and len(spec) == 1:
        from agents.backends.auto import resolve_auto
        from agents.program import parse_program

        prog = parse_program(program_text, program or "program") if program_text is not None else None
        return resolve_auto(env={}, program=prog, local=True)
    return spec


def parse_backends(values: list[str]) -> dict[str, str]:
    """The benches' repeatable `--backend [PROGRAM=]TYPE`: program -> TYPE, "*" for every other."""
    backends = {}
    for v in values:
        prog, _, kind = v.rpartition("=")
        backends[prog or "*"] = kind
    return backends


def program_specs(land: Landscape, names: list[str], backends: dict[str, str],
                  adopt: str | None = None) -> list[ProgramSpec]:
    """Programs with their text and their own backend (`backends`: program -> --backend value,
    "*" for the rest, mutate without): what each agent starts with, and what an allocation
    (coordinator/decide/allocation.py) hands an agent it moves, as in `swarm run`."""
    out = []
    for n in names:
        text = land.program_text(n, adopt)
        out.append(ProgramSpec(name=n, text=text,
                               backend=backend_spec(backends.get(n, backends.get("*", "mutate")), n, text)))
    return out


def history_file(path: Path, land: Landscape, prior_dof: int = 0, rng: random.Random | None = None,
                 ) -> NoiseHistorySpec:
    """A noise-history file for a bench coordinator (decide/history.py). With prior_dof > 0 it
    holds one earlier swarm that measured the landscape's noise with that many degrees of
    freedom (its sum of squares drawn from the landscape's own sigma: honest, not the truth)."""
    spec = NoiseHistorySpec(path=str(path), profile="bench", budget=land.seconds_per_run, apparatus="bench")
    if prior_dof > 0:
        rng = rng or random.Random(0)
        xs = [rng.gauss(0.0, land.sigma) for _ in range(prior_dof + 1)]
        mu = sum(xs) / len(xs)
        m2 = sum((x - mu) ** 2 for x in xs)
        key = f"{land.hardware_class}|bench|{land.seconds_per_run:g}|bench"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"version": 1, "entries": {key: {"swarms": {
            "an-earlier-swarm": {"m2": m2, "dof": prior_dof, "sigma": math.sqrt(m2 / prior_dof)}}}}}))
    return spec


class Swarm:
    """One coordinator and its agents in a fresh SWARM_HOME."""

    def __init__(self, home: Path, redis_url: str, swarm_id: str, land: Landscape, programs: list[str],
                 seed: int, cfg: PromotionConfig, backends: dict[str, str], adopt: str | None = None,
                 history: NoiseHistorySpec | None = None, drift: Drift | None = None, stagger: bool = False):
        # The optuna backend keeps its studies (one per swarm id and program) on this redis, as
        # `swarm run` has its agents do.
        os.environ["SWARM_REDIS_URL"] = redis_url
        self.home, self.land, self.cfg = home, land, cfg
        self.hw = land.hardware_class
        self.coord = Coordinator(home, redis_url, cfg, swarm_id=swarm_id,
                                 baseline_train_py=land.baseline_text(), history=history)
        self.log = RunLog()
        self.rounds = (Staggered if stagger else Rounds)(random.Random(seed * 7919 + 1))
        self.idle = 0   # rounds in a row without a run
        self.agents: list[ResearchAgent] = []
        specs = {p.name: p for p in program_specs(land, sorted(set(programs)), backends, adopt)}
        for i, prog in enumerate(programs):
            name = f"a{i}"
            acfg = AgentConfig(name=name, program_name=prog, program_text=specs[prog].text,
                               backend=specs[prog].backend, seed=seed * 1000 + i, swarm_id=swarm_id,
                               swarm_home=home, hardware_class=self.hw, budget=land.seconds_per_run,
                               recent_n=0, heartbeat_s=1e9,
                               # a spent agent (its search space exhausted) checks best at once each
                               # round; its wait, spent_wait_runs budgets of wall clock, is far longer
                               # than a bench's seconds: it waits until best moves, as it does when
                               # best moves within that many rounds
                               backend_wait_s=1e-3)
            rng = random.Random(f"{swarm_id}/{seed}/{name}")
            runner = fake_runner(land, rng, name, self.log, gate=self.rounds.gate(i), drift=drift,
                                 period=lambda: self.rounds.index)
            backend = make_backend(acfg.backend, seed=acfg.seed, agent=name)
            self.agents.append(ResearchAgent(acfg, self.coord, runner=runner, backend=backend,
                                             hardware_class=self.hw))

    def best(self) -> str:
        return self.coord.repo.ref(f"refs/heads/best/{self.hw}")

    def gain_now(self) -> float:
        return self.land.gain(self.coord.repo.show(self.best()))

    def round(self) -> int | None:
        """One round of the agents still going: an agent that stopped itself (its program spent,
        no other to take) does nothing more, as in `swarm run`, and a round without a run (a
        refused proposal) is not the end (the agent proposes again, moves on or stops itself).
        Returns the runs the round trained; None when the swarm is over: no agent going, or
        IDLE_ROUNDS rounds in a row without a run (refusals that all differ, never a stop)."""
        live = [i for i, a in enumerate(self.agents) if not a._stop.is_set()]
        if not live or self.idle >= IDLE_ROUNDS:
            return None
        before = len(self.log)
        self.rounds.play(self.agents, live)
        n = len(self.log) - before
        self.idle = 0 if n else self.idle + 1
        return n

    def play(self, max_runs: int, target: float | None, res: ArmResult) -> None:
        root = self.coord.root

        def reached() -> None:
            if res.runs_to_report is None and self.gain_now() >= target - 1e-12:
                res.runs_to_report = len(self.log)
                if isinstance(self.rounds, Staggered) and self.rounds.turn is not None:
                    # agent k of N ends its runs k/N of a budget after agent 0; round 0 only starts them
                    res.wall_to_report = self.rounds.index + self.rounds.turn / len(self.agents)

        self.rounds.after_end = reached if target is not None else None
        while len(self.log) < max_runs:
            n = self.round()
            if n is None:
                break
            res.rounds += 1
            if not n:
                continue
            if res.first_move_run is None and self.best() != root:
                res.first_move_run = len(self.log)
            if target is not None and res.rounds_to_target is None and self.gain_now() >= target - 1e-12:
                res.rounds_to_target, res.runs_to_target = res.rounds, len(self.log)
                for id, rec in _runs(self.coord):
                    res.kinds_to_target[rec.kind] = res.kinds_to_target.get(rec.kind, 0) + 1
                    if rec.kind == "experiment":
                        res.ids_to_target.add(id)
        res.runs = len(self.log)

    def finish(self, res: ArmResult) -> ArmResult:
        c = self.coord
        res.gain = self.gain_now()
        b = c.best(self.hw)
        res.measured_best = b.val_bpb if b else float("nan")
        res.best_trained_gain = max((self.land.baseline - t for _, _, t, _ in self.log.runs), default=0.0)
        for _id, rec in _runs(c):
            res.kinds[rec.kind] = res.kinds.get(rec.kind, 0) + 1
            if rec.kind == "baseline":
                if rec.commit == c.root:
                    res.baseline_root += 1
                else:
                    res.remeasures += 1
        audit(c, self.land, self.cfg, res)
        c.flush_refs()
        self.rounds.close()
        return res


def _runs(c: Coordinator) -> list[tuple[str, ExperimentRecord]]:
    """The coordinator's records that ran (an invalid edit, a state already tried or a refused
    proposal, never trained: not a run), by experiment id."""
    return [(id, rec) for id, rec in list(c.records.items()) if rec.status != "invalid"]


def audit(c: Coordinator, land: Landscape, cfg: PromotionConfig, res: ArmResult) -> None:
    """Replay the ledger: for each ok experiment, best and its mean when it was first decided;
    then count lost winners (beat that best by the margin, not on the final best, no recorded
    reason), true wins (truly better than that best by 2 sigma) and how many reached best."""
    repo = c.repo
    final = repo.ref(f"refs/heads/best/{land.hardware_class}")
    on_best = set(repo.git("rev-list", final).split())
    chain_blobs = {c.commits.blob(x) for x in repo.first_parent_history(final)}
    blob_of: dict[str, str] = {}

    def blob(commit: str) -> str:
        if commit not in blob_of:
            blob_of[commit] = c.commits.blob(commit)
        return blob_of[commit]

    final_dec = dict(c.decisions)
    records: dict[str, ExperimentRecord] = {}
    samples: dict[str, list[float]] = {}
    seen: set[str] = set()
    best = c.root
    sigma = cfg.sigma_prior
    at_start: dict[str, str] = {}   # best when each run started
    for typ, id, js in c.ledger.events():
        if typ == "started":
            at_start[id] = best
            continue
        if typ == "record":
            records[id] = ExperimentRecord.model_validate_json(js)
            continue
        if typ != "decision":
            continue
        d = Decision.model_validate_json(js)
        rec = records.get(id)
        if rec is not None and id not in seen and getattr(d, "stage", None) != "sigma":  # a wait: no judgment
            seen.add(id)
            if rec.status == "ok" and d.decision != "rejected" and rec.val_bpb is not None:
                samples.setdefault(blob(rec.commit), []).append(rec.val_bpb)
            if rec.kind == "experiment":
                # trained ones: an invalid edit (a state already tried, a refused proposal) is
                # never judged and cannot move best, so it does not dilute the false promotions
                res.experiments += rec.status != "invalid"
                if id in res.ids_to_target and blob(at_start.get(id, best)) != blob(best):
                    res.stale_to_target += 1   # best moved while it trained or waited
                fd = final_dec.get(id, d)
                res.decisions[fd.decision] = res.decisions.get(fd.decision, 0) + 1
                if fd.decision in MOVED:
                    res.moves += 1
                if rec.status == "ok" and rec.val_bpb is not None:
                    _judge_audit(rec, d, fd, best, samples.get(blob(best), []), sigma, cfg, land,
                                 on_best, chain_blobs, blob, repo, res)
        if d.sigma:
            sigma = d.sigma
        if d.best_after:
            best = d.best_after


def _judge_audit(rec, d, fd, best, best_samples, sigma, cfg, land, on_best, chain_blobs, blob, repo,
                 res: ArmResult) -> None:
    reached = rec.commit in on_best or blob(rec.commit) in chain_blobs
    # The coordinator's own judgment against best when its decision records one (it does since
    # every result is judged against best: delta, margin, samples of best); else (the code
    # before) what its rule gave against the best of that moment, replayed here.
    if getattr(d, "samples_best", 0) and d.delta is not None and d.margin is not None:
        delta, margin = d.delta, d.margin
    elif best_samples:
        n_b = len(best_samples)
        delta = sum(best_samples) / n_b - rec.val_bpb
        margin = margin_for(cfg, standard_error(sigma, 1, n_b), rec.lines_added - rec.lines_removed)
    else:
        delta = margin = None
    if delta is not None and delta > margin and not reached and fd.decision not in REASONS:
        res.lost_winners += 1
        res.lost.append((rec.experiment_id, round(delta, 4), round(margin, 4), fd.decision, fd.reason[:60]))
    true_best = land.true_bpb(repo.show(best))
    if land.true_bpb(repo.show(rec.commit)) < true_best - 2 * land.sigma:
        res.true_wins += 1
        res.true_wins_reached += reached
        if not reached:
            res.true_missed[fd.decision] = res.true_missed.get(fd.decision, 0) + 1
