"""The research bench's landscapes and its fake runner.

A landscape is any object with this interface (bench/research.py takes one; the synthetic bowls
below implement it, bench/real_landscape.py's RealLandscape fits the real trainer's measurements):
    sigma, baseline, optimum, max_gain: float; null: bool; hardware_class: str
    baseline_text() -> str                          the train.py every repo starts from
    true_bpb(text) -> float; gain(text) -> float    true val_bpb, and baseline - true_bpb
    sample(text, rng) -> ("ok", val) | ("crash", None)   one run
    program_text(name, adopt=None) -> str           a program with a mutate/optuna search space
    programs_for(n) -> list[str]                    program names for n agents (the swarm's mix)
    single_program: str                             the program covering every knob (single arm)
    seconds_per_run: float                          simulated wall clock of one run

The synthetic bowls: a train.py of ten UPPER_CASE knobs whose true val_bpb is known.

The true val_bpb is BASE plus a sum of penalties, each zero at the knob's optimum:
  LR            log-scale bowl (a learning rate: steps multiply)          up to 0.030
  DEPTH, WIDTH  shifted quadratic bowls (sizes)                         0.025, 0.020
  WEIGHT_DECAY, WARMUP, GRAD_CLIP  smaller bowls                  0.010, 0.008, 0.004
  QK_NORM, SOFTCAP  a pair that does not add up: either one removes the 0.020 penalty,
                    both together remove it once
  LOG_EVERY, EVAL_EVERY  do nothing
Each knob sits on its own line with filler lines around it, so edits to different knobs merge
cleanly (the in-process 3-way merge wants 3 unchanged lines between the two sides' changes).
`null=True` gives the null landscape: every effect zero, only the run noise is left.
Used by bench/research.py and by the tests.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
import threading
from pathlib import Path
from typing import Callable, Protocol

from trainer.schema import ExperimentResult

BASE = 1.500
SIGMA = 0.010  # Gaussian run noise of val_bpb (bpb)

# name: (baseline value, line comment)
KNOBS: dict[str, tuple[object, str]] = {
    "LR": (0.01, "peak learning rate"),
    "DEPTH": (4, "transformer layers"),
    "WIDTH": (256, "model width (channels)"),
    "WEIGHT_DECAY": (0.0, "AdamW decoupled weight decay"),
    "WARMUP": (0, "warmup steps"),
    "GRAD_CLIP": (0.0, "max grad norm (0 = off)"),
    "QK_NORM": (0, "1 = normalise queries and keys"),
    "SOFTCAP": (0, "1 = tanh soft-cap on the logits"),
    "LOG_EVERY": (10, "steps between log lines"),
    "EVAL_EVERY": (250, "steps between in-loop evals"),
}


def _bowl(x: float, opt: float, scale: float, depth: float) -> float:
    return depth * ((x - opt) / scale) ** 2


def penalties(c: dict[str, float]) -> dict[str, float]:
    """Per-knob penalty (bpb above the optimum) of a set of constant values."""
    return {
        "LR": 0.030 * (math.log(max(c["LR"], 1e-9) / 0.04) / math.log(4)) ** 2,
        "DEPTH": _bowl(c["DEPTH"], 8, 4, 0.025),
        "WIDTH": _bowl(c["WIDTH"], 512, 256, 0.020),
        "WEIGHT_DECAY": _bowl(c["WEIGHT_DECAY"], 0.1, 0.1, 0.010),
        "WARMUP": _bowl(c["WARMUP"], 200, 200, 0.008),
        "GRAD_CLIP": _bowl(c["GRAD_CLIP"], 1.0, 1.0, 0.004),
        # Two fixes for the same problem: their wins do not add up.
        "QK_NORM+SOFTCAP": 0.020 * (1 - max(min(c["QK_NORM"], 1), min(c["SOFTCAP"], 1))),
    }


def baseline_text() -> str:
    lines = ['"""synthetic train.py: the research bench reads its constants"""', "", "# filler"]
    for name, (value, comment) in KNOBS.items():
        lines += [f"# --- {name.lower()} ---", f"{name} = {value!r}  # {comment}",
                  "# filler", "# filler", "# filler"]
    lines += ["", "def main():", "    pass", ""]
    return "\n".join(lines)


_CONST = re.compile(r"^([A-Z][A-Z0-9_]*) = ([-+.\deE]+)", re.M)


def constants(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in _CONST.finditer(text)}


class Landscape(Protocol):
    """What bench/research.py needs of a landscape (see the module docstring)."""

    sigma: float
    baseline: float
    optimum: float
    max_gain: float
    null: bool
    hardware_class: str
    single_program: str
    seconds_per_run: float

    def baseline_text(self) -> str: ...
    def true_bpb(self, text: str) -> float: ...
    def gain(self, text: str) -> float: ...
    def sample(self, text: str, rng: random.Random) -> tuple[str, float | None]: ...
    def program_text(self, name: str, adopt: str | None = None) -> str: ...
    def programs_for(self, n: int) -> list[str]: ...


class Bowls:
    """The synthetic bowls: true val_bpb of a train.py text (cached by text), Gaussian run noise,
    never a crash. The landscape the defaults were first tuned on (the real one is held out)."""

    hardware_class = "bench-sim"
    single_program = "explore"

    def __init__(self, null: bool = False, sigma: float = SIGMA, seconds_per_run: float = 300.0):
        self.null, self.sigma, self.seconds_per_run = null, sigma, seconds_per_run
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()
        self.baseline = self.true_bpb(self.baseline_text())
        self.optimum = BASE  # every penalty is zero at the optimum
        self.max_gain = self.baseline - self.optimum

    def baseline_text(self) -> str:
        return baseline_text()

    def true_bpb(self, text: str) -> float:
        with self._lock:
            v = self._cache.get(text)
        if v is None:
            c = {n: v0 for n, (v0, _) in KNOBS.items()}
            c.update({k: v for k, v in constants(text).items() if k in KNOBS})
            v = BASE if self.null else BASE + sum(penalties(c).values())
            with self._lock:
                self._cache[text] = v
        return v

    def gain(self, text: str) -> float:
        """True improvement over the baseline (bpb, + = better)."""
        return self.baseline - self.true_bpb(text)

    def sample(self, text: str, rng: random.Random) -> tuple[str, float | None]:
        return "ok", self.true_bpb(text) + rng.gauss(0.0, self.sigma)

    def program_text(self, name: str, adopt: str | None = None) -> str:
        return program_text(name, adopt)

    def programs_for(self, n: int) -> list[str]:
        return programs_for(n)


# --- research programs (the `mutate` backend's search spaces) --------------------------------
_SPACE_COARSE = {
    "LR": "{type: log, min: 0.002, max: 0.2, step: 1.5}",
    "DEPTH": "{type: int, min: 2, max: 12, step: 1}",
    "WIDTH": "{type: int, min: 128, max: 1024, step: 64}",
    "WEIGHT_DECAY": "{type: float, min: 0.0, max: 0.3, step: 0.05}",
    "WARMUP": "{type: int, min: 0, max: 600, step: 50}",
    "GRAD_CLIP": "{type: float, min: 0.0, max: 3.0, step: 0.25}",
    "QK_NORM": "{type: int, min: 0, max: 1, step: 1}",
    "SOFTCAP": "{type: int, min: 0, max: 1, step: 1}",
    "LOG_EVERY": "{type: int, min: 1, max: 100, step: 5}",
    "EVAL_EVERY": "{type: int, min: 50, max: 1000, step: 50}",
}
PROGRAM_KNOBS = {
    "optimizer": ["LR", "WEIGHT_DECAY", "WARMUP", "GRAD_CLIP", "LOG_EVERY"],
    "architecture": ["DEPTH", "WIDTH", "QK_NORM", "SOFTCAP", "EVAL_EVERY"],
    "explore": list(KNOBS),
    "sizes": ["DEPTH", "WIDTH", "LR", "WARMUP", "EVAL_EVERY"],
}


def program_text(name: str, adopt: str | None = None) -> str:
    space = "\n".join(f"  {k}: {_SPACE_COARSE[k]}" for k in PROGRAM_KNOBS[name])
    head = f"adopt: {adopt}\n" if adopt else ""
    return (f"# {name}\nTune the {name} knobs of the synthetic train.py.\n\n"
            f"```yaml\n{head}search_space:\n{space}\n```\n")


def programs_for(n: int) -> list[str]:
    """Program names for n agents, round robin (the swarm's several programs)."""
    names = list(PROGRAM_KNOBS)
    return [names[i % len(names)] for i in range(n)]


# --- the fake runner ---------------------------------------------------------------------------
class RunLog:
    """Every run any fake runner of one arm made: (agent, text, true, measured); measured is
    None for a run that crashed or was stopped (it took its slot all the same)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, float, float | None]] = []
        self.lock = threading.Lock()

    def add(self, agent: str, text: str, true: float, val: float | None) -> None:
        with self.lock:
            self.runs.append((agent, text, true, val))

    def __len__(self) -> int:
        return len(self.runs)


class Drift:
    """The machine's speed drift as a share of the run noise (bench/drift.py measures it on real
    runs): runs of one round (concurrent, as a swarm's agents train side by side) share a part
    of their noise, and that part persists from round to round (AR(1) over rounds). A run's
    noise is shared(round) + own, with var(shared) = share * sigma^2 and var(own) =
    (1 - share) * sigma^2, so sigma is unchanged and only its structure moves. Of the shared
    part, `cross` (default: all of it) is common to every run of the round, the rest to the runs
    of one train.py only (bench/drift.py --partner: val_bpb of other code answers the machine's
    speed a little differently). The shared sequence depends on `seed` only: every arm of one
    bench seed meets the same machine."""

    def __init__(self, share: float, lag1: float, seed: int = 0, cross: float | None = None):
        if not (0.0 <= share < 1.0 and -1.0 < lag1 < 1.0):
            raise ValueError(f"drift: share {share} must be in [0, 1) and lag1 {lag1} in (-1, 1)")
        cross = share if cross is None else cross
        if not 0.0 <= cross <= share:
            raise ValueError(f"drift: cross {cross} must be in [0, share {share}]")
        self.share, self.lag1, self.seed, self.cross = share, lag1, seed, cross
        self._z: list[float] = []
        self._rng = random.Random(f"drift/{seed}")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Drift({self.share:g},{self.lag1:g},{self.cross:g})"

    @classmethod
    def parse(cls, text: str) -> "Drift":
        """`SHARE,LAG1[,CROSS]` (`SHARE` alone: no carry-over; CROSS: SHARE unless given), as the
        benches' --drift takes it;
        ValueError names what is wrong."""
        share, _, rest = text.partition(",")
        lag1, _, cross = rest.partition(",")
        return cls(float(share), float(lag1 or 0.0), cross=float(cross) if cross else None)

    def at(self, seed: int) -> "Drift":
        return Drift(self.share, self.lag1, seed, self.cross)

    def z(self, period: int) -> float:
        """The shared part of round `period` in units of its own std (N(0, 1) marginally)."""
        with self._lock:
            while len(self._z) <= period:
                e = self._rng.gauss(0.0, 1.0)
                self._z.append(e if not self._z else self.lag1 * self._z[-1] + math.sqrt(1 - self.lag1 ** 2) * e)
            return self._z[period]

    def noise(self, own: float, period: int, sigma: float, code: str = "") -> float:
        """A run's noise from its own draw `own` (sigma's scale) in round `period`; `code` (the
        train.py's text) draws the part of the shared noise that only runs of that code share
        (share - cross of sigma^2: other code meets the machine's drift differently)."""
        shared = self.z(period) * math.sqrt(self.cross)
        if self.cross < self.share:
            u = random.Random(f"drift/{self.seed}/{period}/{hashlib.sha1(code.encode()).hexdigest()}").gauss(0.0, 1.0)
            shared += u * math.sqrt(self.share - self.cross)
        return own * math.sqrt(1.0 - self.share) + shared * sigma


def fake_runner(landscape: Landscape, rng: random.Random, agent: str = "", log: RunLog | None = None,
                gate: Callable[[], None] | None = None, drift: Drift | None = None,
                period: Callable[[], int] | None = None):
    """A runner with the real runner's signature and result: one landscape.sample() per run.

    `gate()` is called after the run "started" and before it returns (the bench holds every
    agent of a round there, so that all of them start from the same state). After the gate the
    run reports progress (as the real runner does while it trains) and honours `cancel` (an
    agent stops a verification whose best moved). The noise comes from `rng` (one per agent),
    so a bench run is reproducible for a given seed. With `drift`, part of the noise is the
    machine's, shared by the runs of one round (`period()`: the round's index) and carried over
    from round to round."""

    def run(train_py, run_dir, *, budget=None, seed=0, profile=None, device="cpu",
            cuda_visible_devices=None, data_dir=None, max_steps=None, hard_limit=None,
            confirm_below=None, threads=None, cancel=None, on_event=None,
            standby=False, swarm_home=None) -> ExperimentResult:
        text = Path(train_py).read_text(encoding="utf-8")
        if gate is not None:
            gate()
        if on_event is not None:
            on_event({"event": "progress", "progress": 0.5, "steps": 1, "tokens": 1})
        true = landscape.true_bpb(text)
        b = float(budget or landscape.seconds_per_run)
        hw = landscape.hardware_class
        log_path = Path(run_dir) / "run.log"
        if cancel is not None and cancel.is_set():
            if log is not None:
                log.add(agent, text, true, None)
            return ExperimentResult(status="crash", error="cancelled", seed=seed, budget=b,
                                    profile="bench", hardware_class=hw)
        status, val = landscape.sample(text, rng)
        if drift is not None and status == "ok" and val is not None:
            val = true + drift.noise(val - true, period() if period is not None else 0, landscape.sigma, text)
        if log is not None:
            log.add(agent, text, true, val if status == "ok" else None)
        if status != "ok" or val is None:
            log_path.write_text("crash\n")
            return ExperimentResult(status="crash", error="RuntimeError: the landscape's crash",
                                    log_tail="RuntimeError", log_path=str(log_path), seed=seed,
                                    budget=b, profile="bench", hardware_class=hw)
        confirm = None
        if confirm_below is not None and val < confirm_below:
            confirm = true + rng.gauss(0.0, landscape.sigma)
        log_path.write_text(f"val_bpb: {val:.6f}\n")
        return ExperimentResult(
            status="ok", val_bpb=val, confirm_bpb=confirm, log_path=str(log_path),
            log_tail=f"val_bpb: {val:.6f}", training_seconds=b, startup_seconds=5.0,
            eval_seconds=10.0, total_seconds=b + 15.0, tokens=int(b * 1000), steps=int(b),
            seed=seed, budget=b, profile="bench", hardware_class=hw)

    return run
