"""A synthetic research landscape: a train.py of ten UPPER_CASE knobs whose true val_bpb is
known, research programs over them, and a fake runner that returns what the real one returns.

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

import math
import random
import re
import threading
from pathlib import Path
from typing import Callable

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


class Landscape:
    """True val_bpb of a train.py text (cached by text), and the best value reachable."""

    def __init__(self, null: bool = False, sigma: float = SIGMA):
        self.null, self.sigma = null, sigma
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()
        self.baseline = self.true_bpb(baseline_text())
        self.optimum = BASE  # every penalty is zero at the optimum
        self.max_gain = self.baseline - self.optimum

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
    """Every run any fake runner of one arm made: (agent, text, true, measured)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, float, float]] = []
        self.lock = threading.Lock()

    def add(self, agent: str, text: str, true: float, val: float) -> None:
        with self.lock:
            self.runs.append((agent, text, true, val))

    def __len__(self) -> int:
        return len(self.runs)


def fake_runner(landscape: Landscape, rng: random.Random, agent: str = "", log: RunLog | None = None,
                gate: Callable[[], None] | None = None):
    """A runner with the real runner's signature and result: val_bpb = true + N(0, sigma).

    `gate()` is called after the run "started" and before it returns (the bench holds every
    agent of a round there, so that all of them start from the same state). The noise comes
    from `rng` (one per agent), so a bench run is reproducible for a given seed."""

    def run(train_py, run_dir, *, budget=None, seed=0, profile=None, device="cpu",
            cuda_visible_devices=None, data_dir=None, max_steps=None, hard_limit=None,
            confirm_below=None, threads=None, cancel=None, on_event=None,
            standby=False) -> ExperimentResult:
        text = Path(train_py).read_text(encoding="utf-8")
        if gate is not None:
            gate()
        true = landscape.true_bpb(text)
        val = true + rng.gauss(0.0, landscape.sigma)
        confirm = None
        if confirm_below is not None and val < confirm_below:
            confirm = true + rng.gauss(0.0, landscape.sigma)
        if log is not None:
            log.add(agent, text, true, val)
        log_path = Path(run_dir) / "run.log"
        log_path.write_text(f"val_bpb: {val:.6f}\n")
        b = float(budget or 300.0)
        return ExperimentResult(
            status="ok", val_bpb=val, confirm_bpb=confirm, log_path=str(log_path),
            log_tail=f"val_bpb: {val:.6f}", training_seconds=b, startup_seconds=5.0,
            eval_seconds=10.0, total_seconds=b + 15.0, tokens=int(b * 1000), steps=int(b),
            seed=seed, budget=b, profile="bench", hardware_class="bench-sim")

    return run
