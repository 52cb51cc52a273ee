"""A fake runner and fake agents for coordinator tests: val_bpb is a known function of train.py plus noise.

train.py is a list of `NAME = value` constants with filler lines between them (so edits to
different constants merge cleanly). True val_bpb = BASE - 0.05*A - 0.05*B - 0.05*max(X, Y)
- 0.01*C; X and Y are two wins that do not add up; PAD_* lines have no effect (removing them
is a simplification). Fake agents commit into worktrees of the coordinator's bare repo.
"""
from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

from agents.edits import line_delta  # what a real agent puts in its record
from agents.messages import ExperimentRecord, Job, StartedExperiment, new_experiment_id

BASE = 2.0
EFFECTS = {"A": 0.05, "B": 0.05, "C": 0.01}
NAMES = ["A", "B", "X", "Y", "C", "Z"]


_TEXTS: dict[str, str] = {}  # commit -> train.py; commits are immutable, so the cache is exact


def baseline_text(pads: int = 4) -> str:
    lines = ['"""fake train.py: constants only"""']
    for n in NAMES:
        lines += [f"# --- {n} ---", f"{n} = 0", "# filler", "# filler", "# filler"]
    lines += [f"PAD_{i} = 0  # no effect" for i in range(pads)]
    return "\n".join(lines) + "\n"


def constants(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) = ([-\d.]+)", text, re.M)}


def true_bpb(text: str) -> float:
    c = constants(text)
    v = BASE - sum(e * c.get(n, 0.0) for n, e in EFFECTS.items())
    v -= 0.05 * max(c.get("X", 0.0), c.get("Y", 0.0))
    # Z is a zero-effect knob: null experiments edit it.
    return v


def set_constants(text: str, **values) -> str:
    for n, v in values.items():
        text, k = re.subn(rf"^{n} = .*$", f"{n} = {v}", text, flags=re.M)
        assert k == 1, n
    return text


def drop_pads(text: str) -> str:
    return "".join(l for l in text.splitlines(keepends=True) if not l.startswith("PAD_"))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class FakeAgent:
    """An in-process agent with its own worktree of the bare repo and a seeded noise source."""

    def __init__(self, name: str, repo_git: Path, workdir: Path, hw: str = "cpu-fake",
                 sigma: float = 0.005, seed: int = 0, program: str = "test"):
        self.name, self.hw, self.sigma, self.program = name, hw, sigma, program
        self.rng = random.Random(seed)
        self.repo_git = Path(repo_git)
        self.wt = Path(workdir) / name
        root = subprocess.run(["git", "--git-dir", str(repo_git), "rev-parse", "refs/swarm/root"],
                              check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(["git", "--git-dir", str(repo_git), "worktree", "add", "-q", "--detach",
                        str(self.wt), root], check=True, capture_output=True)

    def text_at(self, commit: str) -> str:
        t = _TEXTS.get(commit)
        if t is None:
            t = _TEXTS[commit] = git(self.wt, "show", f"{commit}:train.py") + "\n"
        return t

    def commit(self, parent: str, text: str, description: str) -> str:
        git(self.wt, "checkout", "-q", "--detach", parent)
        (self.wt / "train.py").write_text(text)
        git(self.wt, "commit", "-q", "-am", description, "--allow-empty")
        c = git(self.wt, "rev-parse", "HEAD")
        _TEXTS[c] = text
        return c

    def measure(self, commit: str) -> tuple[float, float]:
        """(val_bpb, confirm_bpb) with Gaussian noise; confirm shares the true value.

        Noise comes from the agent's own seeded stream (not the job's seed, which the
        coordinator draws at random) so that a test run is reproducible."""
        text = self.text_at(commit)
        t = true_bpb(text)
        return t + self.rng.gauss(0, self.sigma), t + self.rng.gauss(0, self.sigma) + confirm_shift(text)

    def record(self, commit: str, parent: str, kind: str = "experiment", description: str = "",
               job: Job | None = None, val: float | None = None, exp_id: str | None = None,
               confirm: float | None = None) -> ExperimentRecord:
        v, cf = self.measure(commit)
        added, removed = line_delta(self.text_at(parent), self.text_at(commit))
        return ExperimentRecord(
            experiment_id=exp_id or new_experiment_id(self.name), kind=kind, agent=self.name,
            program=self.program, hardware_class=self.hw, parent=parent, commit=commit,
            description=description or (job.description if job else ""), status="ok",
            val_bpb=v if val is None else val, confirm_bpb=cf if confirm is None else confirm,
            lines_added=added, lines_removed=removed, seed=job.seed if job else 0,
            job_id=job.job_id if job else None)

    def started(self, rec: ExperimentRecord) -> StartedExperiment:
        return StartedExperiment(experiment_id=rec.experiment_id, agent=rec.agent, program=rec.program,
                                 hardware_class=rec.hardware_class, parent=rec.parent,
                                 commit=rec.commit, kind=rec.kind, seed=rec.seed,
                                 description=rec.description, job_id=rec.job_id)

    def run_job(self, coord, job: Job):
        rec = self.record(job.commit, job.parent, kind=job.kind, job=job)
        coord.begin(self.started(rec))
        return coord.report(rec).decision

    def experiment(self, coord, parent: str, description: str, **values):
        """Edit constants on `parent`, commit, measure, report; returns (record, decision)."""
        text = set_constants(self.text_at(parent), **values)
        c = self.commit(parent, text, description)
        rec = self.record(c, parent, description=description)
        coord.begin(self.started(rec))
        return rec, coord.report(rec).decision


def confirm_shift(text: str) -> float:
    """A knob that overfits val: Y > 1 makes the held-out confirm split worse."""
    return 0.2 if constants(text).get("Y", 0) > 1 else 0.0


def drain_jobs(coord, agents: list[FakeAgent], hw: str = "cpu-fake", rounds: int = 20) -> list:
    """Let idle agents run every job the coordinator hands out; returns the decisions."""
    out = []
    for _ in range(rounds):
        got = False
        for a in agents:
            job = coord.next_job(a.name, hw)
            if job is not None:
                got = True
                out.append((job, a.run_job(coord, job)))
        if not got:
            break
    return out


def warm_up(coord, agents: list[FakeAgent], vals=(2.0, 2.002, 1.998), hw: str = "cpu-fake",
            check_sample: bool = False) -> int:
    """The first round (every agent runs the unchanged baseline) and the repeats of it the
    coordinator schedules until sigma has min_dof degrees of freedom; `vals` are the measured
    values, used in turn. check_sample: assert each baseline report is decided `sample`.
    Returns how many baseline runs there were."""
    n = 0
    for _ in range(50):
        got = False
        for a in agents:
            job = coord.next_job(a.name, hw)
            if job is None:
                continue
            assert job.kind == "baseline", job
            got = True
            rec = a.record(job.commit, job.parent, kind="baseline", job=job, val=vals[n % len(vals)])
            coord.begin(a.started(rec))
            reply = coord.report(rec)
            if check_sample:
                assert reply.decision.decision == "sample", reply
            n += 1
        if not got:
            return n
    raise AssertionError("baseline jobs never stopped")


KEPT = ("promote", "merge", "simplification")


def check_invariants(coord, best_seen: dict[str, list[str]]) -> None:
    """docs/architecture.md invariants 1, 3, 4, 5 on a coordinator's ledger and repo.

    best_seen: per hardware class, the best commits observed over time (in order).
    Invariant 1 is re-derived independently: the ledger stream is replayed, samples are pooled
    per (class, train.py blob) and every best move's delta is recomputed from them.
    """
    repo, led = coord.repo, coord.ledger
    decisions = {k.decode(): v for k, v in coord.r.hgetall(led.key("decisions")).items()}
    from agents.messages import Decision
    decisions = {k: Decision.model_validate_json(v) for k, v in decisions.items()}
    blob = lambda c: repo.commit_files([c])[0][1]
    # Per (class, train.py blob): every sample, and the ones that are not experiment runs (best
    # is compared by those once it has any, and a merge is verified by them only: an experiment
    # run was selected for looking good). Contended runs count nowhere.
    samples: dict[tuple[str, str], list[float]] = {}
    unselected: dict[tuple[str, str], list[float]] = {}
    record_ids: list[str] = []
    moves = []
    for typ, id, js in led.events():
        if typ == "record":
            record_ids.append(id)
            rec = ExperimentRecord.model_validate_json(js)
            d = decisions.get(id)
            contended = rec.result is not None and rec.result.contended
            if rec.status == "ok" and d is not None and d.decision != "rejected" and not contended:
                key = (rec.hardware_class, blob(rec.commit))
                samples.setdefault(key, []).append(rec.val_bpb)
                if rec.kind != "experiment":
                    unselected.setdefault(key, []).append(rec.val_bpb)
        elif typ == "decision":
            d = Decision.model_validate_json(js)
            if d.best_after:
                hw = d.hardware_class
                kb, ka = (hw, blob(d.best_before)), (hw, blob(d.best_after))
                new = unselected.get(ka, []) if d.decision == "merge" else samples.get(ka, [])
                old = unselected.get(kb) or samples.get(kb, [])
                moves.append(d)
                # 1: the move beat its first parent by the margin, with samples of that class only (5).
                assert d.decision in KEPT, d
                assert repo.parents(d.best_after)[0] == d.best_before, d
                assert new and old, d
                delta = sum(old) / len(old) - sum(new) / len(new)
                assert abs(delta - d.delta) < 1e-9, (delta, d)
                if d.decision == "simplification":
                    a, r = line_delta(repo.show(d.best_before), repo.show(d.best_after))
                    assert a < r, d
                else:
                    assert delta >= d.margin > 0, d
    # 3: every started experiment has exactly one record.
    assert len(record_ids) == len(set(record_ids))
    started = set(k.decode() for k in coord.r.hkeys(led.key("started")))
    assert started <= set(record_ids), started - set(record_ids)
    for hw, seen in best_seen.items():
        cur = repo.ref(f"refs/heads/best/{hw}")
        # 4: best never moved backwards, and no promotion in the ledger was lost.
        for a, b in zip(seen, seen[1:] + [cur]):
            assert a and b and repo.is_ancestor(a, b), (hw, a, b, seen)
        chain = repo.first_parent_history(cur)
        for d in moves:
            if d.hardware_class == hw:
                assert repo.is_ancestor(d.best_after, cur), d
                assert d.best_after in chain, d  # 5: a class's best holds only its own promotions
        # 1: every commit on best (but the root) got there through a recorded move.
        moved_to = {d.best_after for d in moves if d.hardware_class == hw}
        assert set(chain[:-1]) <= moved_to, set(chain[:-1]) - moved_to


# --- a fake of trainer.runner.run_experiment for agent tests ----------------------------------

def fake_run_experiment(score=None, sleep: float = 0.0):
    """A runner that reads the constants of train.py: CRASH=True crashes; val_bpb is a smooth
    function of LEARNING_RATE and DEPTH (best near 0.02 and 6) unless `score` is given.

    It sends only the events the real runner sends, with the same fields (tests/
    test_runner_contract.py runs both through the same assertions): `started` with the process
    group of a real stand-in process working in the run dir (ended when the run ends, as the
    real sandbox is), `progress` with the runner's counts, `evaluating` before an ok result."""
    import math
    import os
    import signal
    import sys
    import time

    from trainer.events import Evaluating, Progress, Started
    from trainer.schema import ExperimentResult

    def run(train_py, run_dir, *, budget=None, seed=0, cancel=None, on_event=None, **kw):
        src = Path(train_py).read_text()
        run_dir = Path(run_dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        emit = (lambda e: on_event(e.model_dump())) if on_event else (lambda e: None)
        stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(run_dir)],
                                    cwd=run_dir, start_new_session=True)
        try:
            emit(Started(pgid=stand_in.pid, run_dir=str(run_dir)))
            end = t0 + sleep
            steps = 0
            while time.time() < end:
                if cancel is not None and cancel.is_set():
                    return ExperimentResult(status="crash", error="cancelled", seed=seed)
                time.sleep(min(0.05, max(0.0, end - time.time())))
                steps += 1
                emit(Progress(progress=min(1.0, (time.time() - t0) / max(sleep, 1e-9)), steps=steps,
                              tokens=steps * 512))
        finally:
            try:
                os.killpg(stand_in.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stand_in.wait()
        (run_dir / "run.log").write_text(src)
        common = dict(seed=seed, budget=budget or 0.0, log_path=str(run_dir / "run.log"),
                      total_seconds=time.time() - t0, profile="cpu", hardware_class="cpu-fake")
        if re.search(r"^CRASH = True", src, re.M):
            return ExperimentResult(status="crash", error="RuntimeError: boom",
                                    log_tail="Traceback...\nRuntimeError: boom", **common)
        emit(Evaluating())
        if score is not None:
            val = score(src)
        else:
            lr = float(re.search(r"^LEARNING_RATE = ([\d.e-]+)", src, re.M).group(1))
            depth = int(re.search(r"^DEPTH = (\d+)", src, re.M).group(1))
            val = 2.0 + (math.log(lr / 0.02)) ** 2 * 0.05 + (depth - 6) ** 2 * 0.01
        return ExperimentResult(status="ok", val_bpb=val, training_seconds=sleep, startup_seconds=0.0,
                                eval_seconds=0.0, steps=max(steps, 1), tokens=max(steps, 1) * 512,
                                num_params=1, peak_memory_mb=1.0, unigram_bpb=3.5,
                                timings={"total": time.time() - t0}, **common)

    return run
