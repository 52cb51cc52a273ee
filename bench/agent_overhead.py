"""Seconds per experiment an agent spends outside the training budget, and the duty cycle.

Runs a real ResearchAgent (real git worktree, real validation, mutate proposals delayed like
an LLM, in-process coordinator) against a fake runner that sleeps the budget. Budget and
backend delay are scaled down by --scale so it finishes in seconds; the fixed overhead (git,
validation, report, run-dir copy) is measured unscaled, the time the loop waited on the
backend is scaled back up, and the runner's own start-up and evaluation (not part of the
agent; measure them with the trainer's bench) are added from --startup-s/--eval-s.

    python bench/agent_overhead.py [--budget 300] [--backend-delay 60] [--scale 0.01]

Last line: overhead_s=N duty_cycle=N for the unscaled budget and delay.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.agent import ResearchAgent  # noqa: E402
from agents.backends.mutate import MutateBackend  # noqa: E402
from agents.config import AgentConfig  # noqa: E402
from tests.fake_coordinator import TINY_PROGRAM, FakeCoordinator, make_research_repo  # noqa: E402
from trainer.schema import ExperimentResult  # noqa: E402


class SlowBackend:
    """mutate, answering after `delay` seconds like a remote LLM; times calls per thread."""
    name = "slow-mutate"

    def __init__(self, delay: float, seed: int):
        self.inner = MutateBackend(seed=seed)
        self.delay = delay
        self.loop_thread = threading.current_thread()
        self.sync_calls = 0
        self.calls = 0

    def propose(self, ctx):
        self.calls += 1
        if threading.current_thread() is self.loop_thread:
            self.sync_calls += 1
        time.sleep(self.delay)
        return self.inner.propose(ctx)

    def fix(self, ctx, log_tail):
        return self.inner.fix(ctx, log_tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per run (unscaled)")
    ap.add_argument("--backend-delay", type=float, default=60.0, help="seconds a proposal takes (unscaled)")
    ap.add_argument("--scale", type=float, default=0.01, help="time scale for budget and delay")
    ap.add_argument("--experiments", type=int, default=15)
    ap.add_argument("--startup-s", type=float, default=0.0, help="runner start-up per run, added")
    ap.add_argument("--eval-s", type=float, default=0.0, help="runner evaluation per run, added")
    ap.add_argument("--sigma", type=float, default=0.01, help="noise of the fake val_bpb")
    a = ap.parse_args(argv)
    budget_s, delay_s = a.budget * a.scale, a.backend_delay * a.scale
    rng = random.Random(0)
    trained = []

    def runner(train_py, run_dir, *, budget=None, seed=0, cancel=None, on_event=None, **kw):
        t0 = time.monotonic()
        time.sleep(budget)
        trained.append(time.monotonic() - t0)
        return ExperimentResult(status="ok", val_bpb=2.0 + rng.gauss(0, a.sigma), seed=seed,
                                budget=budget, training_seconds=budget,
                                total_seconds=time.monotonic() - t0)

    with tempfile.TemporaryDirectory() as d:
        home = Path(d) / "home"
        make_research_repo(home)
        cfg = AgentConfig(name="bench", program_name="tiny", program_text=TINY_PROGRAM,
                          swarm_home=home, hardware_class="bench", budget=budget_s, recent_n=8)
        backend = SlowBackend(delay_s, seed=1)
        agent = ResearchAgent(cfg, FakeCoordinator(), runner=runner, backend=backend)
        # The self-baseline is not an experiment: measure the loop after it.
        agent.run(max_experiments=0)
        agent._iteration()
        n_runs0, calls0, sync0 = len(trained), backend.calls, backend.sync_calls
        t0 = time.monotonic()
        agent.run(max_experiments=a.experiments)
        wall = time.monotonic() - t0
    n = len(trained) - n_runs0
    train = sum(trained[n_runs0:])
    sync = backend.sync_calls - sync0
    waited_backend = sync * delay_s
    fixed = (wall - train - waited_backend) / n
    kept = agent.kept
    sync_per_exp = sync / n
    overhead = fixed + sync_per_exp * a.backend_delay + a.startup_s + a.eval_s
    duty = a.budget / (a.budget + overhead)
    print(f"measured at scale {a.scale}: {n} experiments, budget {budget_s:.2f}s, backend delay {delay_s:.2f}s")
    print(f"  wall {wall:.2f}s, training {train:.2f}s, measured duty cycle {train / wall:.3f}")
    print(f"  kept {kept}/{n}; proposals {backend.calls - calls0}, of which the loop waited on {sync} "
          f"(after a keep the prepared proposal's base moved; the rest were prepared during a run)")
    print("per experiment, unscaled:")
    print(f"  agent fixed overhead (git, validate, run dir, report): {fixed:.3f}s (measured)")
    print(f"  waiting on the backend: {sync_per_exp:.2f} x {a.backend_delay:g}s = "
          f"{sync_per_exp * a.backend_delay:.2f}s")
    print(f"  runner start-up + evaluation (given): {a.startup_s + a.eval_s:.2f}s")
    print(f"  duty cycle = budget / (budget + overhead) = {a.budget:g} / ({a.budget:g} + {overhead:.2f})")
    print(f"overhead_s={overhead:.2f} duty_cycle={duty:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
