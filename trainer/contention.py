"""The machine's own speed during a run (locked): how much of the sandbox's CPU demand other
load took, measured by the runner from the kernel's accounting of the sandbox's threads, never
from train.py's step count (a genuinely faster train.py must not look like a quiet machine).

Every SAMPLE_S of the training window the runner reads, for every thread in the sandbox,
/proc/<pid>/task/<tid>/schedstat: the time it ran and the time it sat runnable on a run queue
waiting for a CPU. Per interval, the demand is what it ran plus what it waited, capped at its
CPU share (the threads of its hardware class: waiting caused by running more threads than the
share, which the CPU quota throttles, is its own doing, not the machine's); what it did not run
of that demand is lost. Steal time of the CPUs it may use (/proc/stat: a hypervisor running
someone else) adds its share of the demand. contention = lost / demand over the window:
0 on a quiet machine, 0.5 when the run got half the CPU it asked for.

Why 0.1: 10% of the CPU lost is about 10% fewer steps; on the CPU profile 3x the steps moved
val_bpb by ~0.3 (ENV-NOTES), so 10% fewer is ~0.03 bpb, ~2.5 sigma of the 30 s baseline
(sigma ~0.011): a shift the coordinator's margin would mistake for an idea.
Measured here (2 cores shared with other developers' swarms, every process pinned to one core,
so never quiet): a busy loop alone on a core read 0.88 (load ~8 on that core), with a second
busy loop on the same core 0.93 (the load predicts 0.89). Checked against the steps the runner
counted (which the measure does not use): the CPU baseline, 1 thread, trained 3.75 steps/s in a
quiet moment; at 1.8 steps/s (52% lost) it read 0.45-0.48, at 1.0 (73%) 0.70, at 0.6 (83%) 0.77.
"""
from __future__ import annotations

import os
import time

from trainer import proctree

SAMPLE_S = 0.5           # seconds between samples (each reads a few /proc files: < 1 ms)
CONTENDED_ABOVE = 0.1    # share of the demand lost above which a run is flagged `contended`
MIN_DEMAND_S = 0.5       # CPU seconds of demand below which there is nothing to say (None)


def _steal(cpus: set[int]) -> tuple[int, int]:
    """(steal, total) jiffies of these CPUs since boot."""
    steal = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *vals = line.split()
                if int(name[3:]) in cpus:
                    nums = [int(v) for v in vals[:8]]  # user nice system idle iowait irq softirq steal
                    total += sum(nums)
                    steal += nums[7] if len(nums) > 7 else 0
    except (OSError, ValueError):
        pass
    return steal, total


def _schedstat(pid: int, tid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            run, wait, _ = f.read().split()
        return int(run), int(wait)
    except (OSError, ValueError):
        return None


class ContentionMeter:
    """Samples one sandbox (every thread below `root`, `root` included) against its CPU share."""

    def __init__(self, root: int, share: float, cpus: set[int] | None = None):
        self.root, self.share = root, max(0.01, float(share))
        self.cpus = cpus if cpus is not None else os.sched_getaffinity(0)
        self.prev: dict[int, tuple[int, int]] | None = None
        self.prev_steal = (0, 0)
        self.t_prev = 0.0
        self.t_last = float("-inf")
        self.demand = self.lost = 0.0   # CPU seconds over the counted intervals

    def sample(self, counting: bool, now: float | None = None) -> None:
        """Read the counters; the interval since the last sample counts when `counting` (the
        training window). Cheap enough to call every loop turn: it reads at most every SAMPLE_S."""
        now = time.monotonic() if now is None else now
        if now - self.t_last < SAMPLE_S:
            return
        self.t_last = now
        cur = {}
        for pid, tid in proctree.threads([self.root, *proctree.descendants(self.root)]):
            st = _schedstat(pid, tid)
            if st is not None:
                cur[tid] = st
        steal = _steal(self.cpus)
        if self.prev is not None and counting:
            ran = waited = 0
            for tid, (run, wait) in cur.items():
                r0, w0 = self.prev.get(tid, (0, 0))  # a thread born since: all of it is new
                ran += max(0, run - r0)
                waited += max(0, wait - w0)
            ran_s, waited_s = ran / 1e9, waited / 1e9
            demand = min(ran_s + waited_s, self.share * (now - self.t_prev))
            ds, dt = steal[0] - self.prev_steal[0], steal[1] - self.prev_steal[1]
            stolen = demand * ds / dt if dt > 0 else 0.0
            self.demand += demand
            self.lost += min(demand, max(0.0, demand - ran_s) + stolen)
        self.prev, self.prev_steal, self.t_prev = cur, steal, now

    def value(self) -> float | None:
        """Share of the CPU demand lost to other load over the counted intervals (None: too
        little was counted to say)."""
        if self.demand < MIN_DEMAND_S:
            return None
        return max(0.0, min(1.0, self.lost / self.demand))
