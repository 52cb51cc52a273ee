"""Coordinator throughput bench: N simulated agents (threads) with sub-second fake experiments.

Each agent is a thread with its own redis pub/sub subscriber (coordinator.broadcast.
BroadcastListener), reading the latest best at iteration boundaries, committing a one-line edit
onto it, "training" for a random sub-second sleep, and reporting. The Coordinator runs in this
process (default) or as the one named Ray actor (--ray); 256 Ray actors would not fit on 2 cores.
Prints decisions/s, p50/p99 report latency (what an agent waits: lock queueing + the decision),
broadcast fan-out times, and one final line:
agents=N decisions_per_s=N p50_ms=N p99_ms=N broadcast_all_ms=N
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

# This file is named like the package it benchmarks: drop bench/ from the path so that
# `import coordinator` finds the package, not this script.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import redis  # noqa: E402

from coordinator.broadcast import BroadcastListener, next_seq, publish  # noqa: E402
from coordinator.core import Coordinator  # noqa: E402
from coordinator.redisd import RedisDaemon  # noqa: E402
from coordinator.repo import ResearchRepo  # noqa: E402
from trainer.schema import Broadcast, ExperimentRecord, PromotionConfig, new_experiment_id

HW = "bench-cpu"
KNOBS = [f"K{i}" for i in range(40)]
EFFECT = {k: random.Random(i).choice([0.0, 0.0, 0.0, 0.002, 0.004, -0.003]) for i, k in enumerate(KNOBS)}


def baseline() -> str:
    lines = ['"""bench train.py"""']
    for k in KNOBS:
        lines += [f"{k} = 0", "# filler", "# filler", "# filler"]
    return "\n".join(lines) + "\n"


def true_bpb(text: str) -> float:
    vals = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(K\d+) = ([-\d.]+)", text, re.M)}
    return 2.0 - sum(EFFECT[k] * min(v, 1.0) for k, v in vals.items())


def _write_object(git_dir: Path, kind: str, body: bytes) -> str:
    data = f"{kind} {len(body)}".encode() + b"\0" + body
    sha = hashlib.sha1(data).hexdigest()
    f = git_dir / "objects" / sha[:2] / sha[2:]
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{sha[2:]}.{threading.get_ident()}.tmp")
        tmp.write_bytes(zlib.compress(data, 1))
        os.replace(tmp, f)
    return sha


def agent_commit(git_dir: Path, parent: str, text: str, message: str) -> str:
    """What an agent does on its own node, done here without forking git: 256 agent threads
    forking git from one process would measure fork(), not the coordinator."""
    blob = _write_object(git_dir, "blob", text.encode())
    tree = _write_object(git_dir, "tree", b"100644 train.py\0" + bytes.fromhex(blob))
    who = f"bench <bench@localhost> {int(time.time())} +0000"
    body = f"tree {tree}\nparent {parent}\nauthor {who}\ncommitter {who}\n\n{message}\n"
    return _write_object(git_dir, "commit", body.encode())


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Port:
    """The coordinator in-process, or through one Ray actor."""

    def __init__(self, coord=None, handle=None):
        self.coord, self.h = coord, handle

    def __getattr__(self, name):
        if self.coord is not None:
            return getattr(self.coord, name)
        import ray
        return lambda *a, **k: ray.get(getattr(self.h, name).remote(*a, **k))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the agents run")
    ap.add_argument("--exp-min", type=float, default=0.3, help="shortest fake experiment (s)")
    ap.add_argument("--exp-max", type=float, default=0.9, help="longest fake experiment (s)")
    ap.add_argument("--ray", action="store_true", help="call the coordinator through its Ray actor")
    ap.add_argument("--fsync", default="always", choices=["always", "everysec"],
                    help="redis appendfsync (the product uses always)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="benchcoord"))
    daemon = RedisDaemon(tmp / "redis", fsync=args.fsync).start()
    listeners: list[BroadcastListener] = []
    service: list[float] = []
    try:
        cfg = PromotionConfig(sigma_prior=0.004)
        if args.ray:
            from agents.raylocal import start_local_ray
            from coordinator.actor import coordinator_actor
            start_local_ray(num_cpus=2, object_store_mb=200, temp_dir=Path(tempfile.mkdtemp(prefix="rb", dir="/tmp")))
            port = Port(handle=coordinator_actor(tmp / "home", daemon.url, cfg, "bench", baseline()))
            port.status()
        else:
            port = Port(coord=Coordinator(tmp / "home", daemon.url, cfg, "bench", baseline()))
            # Service time of one decision (inside the lock), apart from the wait for the lock.
            inner = port.coord._decide

            def timed(rec):
                t0 = time.perf_counter()
                try:
                    return inner(rec)
                finally:
                    service.append(time.perf_counter() - t0)
            port.coord._decide = timed
        repo = ResearchRepo(tmp / "home" / "repo.git")  # the agents' view (shared object store)
        repo_lock = threading.Lock()
        # An agent knows the train.py it wrote; only merge candidates are read from the repo.
        # (Real agents do this work on their own nodes: here it shares the coordinator's cores.)
        texts: dict[str, str] = {}

        def read(commit: str) -> str:
            with repo_lock:
                if commit not in texts:
                    texts[commit] = repo.show(commit)
                return texts[commit]
        client = redis.Redis.from_url(daemon.url)
        recv: dict[int, list[float]] = defaultdict(list)
        recv_lock = threading.Lock()

        def on_msg(b: Broadcast):
            t = time.time()
            with recv_lock:
                recv[b.seq].append(t - b.published_at)

        latencies: list[float] = []
        counts = defaultdict(int)
        stop_at = time.monotonic() + args.seconds
        errors: list[str] = []

        def agent(i: int, listener: BroadcastListener):
            rng = random.Random(i)
            name = f"agent{i:03d}"
            try:
                while time.monotonic() < stop_at:
                    job = port.next_job(name, HW)
                    if job is not None:
                        commit, parent, kind, desc = job.commit, job.parent, job.kind, job.description
                        text = read(commit)
                    else:
                        b = listener.latest(HW)
                        parent = b.commit if b else repo.root()
                        k = rng.choice(KNOBS)
                        text = re.sub(rf"^{k} = .*$", f"{k} = {rng.choice([0, 1])}", read(parent),
                                      flags=re.M)
                        commit = agent_commit(repo.path, parent, text, f"{name}: {k}")
                        with repo_lock:
                            texts[commit] = text
                        kind, desc = "experiment", f"set {k}"
                    time.sleep(rng.uniform(args.exp_min, args.exp_max))  # "training"
                    val = true_bpb(text) + rng.gauss(0, 0.004)
                    rec = ExperimentRecord(experiment_id=new_experiment_id(name), kind=kind, agent=name,
                                           program="bench", hardware_class=HW, parent=parent,
                                           commit=commit, description=desc, status="ok", val_bpb=val,
                                           confirm_bpb=val, job_id=job.job_id if job else None,
                                           seed=job.seed if job else 0)
                    t0 = time.perf_counter()
                    d = port.report(rec)
                    dt = time.perf_counter() - t0
                    with recv_lock:
                        latencies.append(dt)
                        counts[d.decision] += 1
            except Exception as e:  # a bench thread must not die silently
                errors.append(f"{name}: {type(e).__name__}: {e}")

        for i in range(args.agents):
            # Each agent has its own connection, as agents on other nodes would.
            listeners.append(BroadcastListener(redis.Redis.from_url(daemon.url), "bench", on_message=on_msg))
        threads = [threading.Thread(target=agent, args=(i, listeners[i]), daemon=True)
                   for i in range(args.agents)]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.seconds + 120)
        elapsed = time.monotonic() - t_start
        n = len(latencies)
        time.sleep(0.5)
        with recv_lock:
            full = [max(v) for v in recv.values() if len(v) >= args.agents]
            partial = sum(1 for v in recv.values() if len(v) < args.agents)
        # A probe on a quiet swarm: the fan-out time alone, without 256 threads competing for 2 cores.
        probe_seq = next_seq(client, "bench", "probe")
        publish(client, Broadcast(swarm_id="bench", hardware_class="probe", commit="0" * 40,
                                  val_bpb=0.0, seq=probe_seq))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with recv_lock:
                got = recv.get(probe_seq, [])
                if len(got) >= args.agents:
                    break
            time.sleep(0.01)
        with recv_lock:
            probe = recv.get(probe_seq, [])
        probe_ms = max(probe) * 1000 if len(probe) >= args.agents else float("nan")
        st = port.status()
        print(f"mode: {'one Ray actor' if args.ray else 'in-process Coordinator'}; {args.agents} agent "
              f"threads, experiments {args.exp_min}-{args.exp_max} s, {elapsed:.1f} s, redis fsync {args.fsync}")
        print(f"decisions: {n} ({dict(counts)}); best now {st['classes'][HW]['best'][:10]}, "
              f"sigma {st['classes'][HW]['sigma']:.4f}")
        print(f"report latency (agent waits: lock queue + decision): p50 {pct(latencies, 50) * 1000:.1f} ms, "
              f"p90 {pct(latencies, 90) * 1000:.1f} ms, p99 {pct(latencies, 99) * 1000:.1f} ms, "
              f"max {max(latencies, default=0) * 1000:.1f} ms")
        if service:
            print(f"decision service time (in the lock, in-process only): p50 {pct(service, 50) * 1000:.1f} ms, "
                  f"p99 {pct(service, 99) * 1000:.1f} ms -> capacity ~{1 / statistics.mean(service):.0f} decisions/s")
        under_load = max(full) * 1000 if full else float("nan")
        print(f"broadcasts under load: {len(full)} reached all {args.agents} agents, worst "
              f"{under_load:.1f} ms, median {statistics.median(full) * 1000 if full else float('nan'):.1f} ms"
              f"{f'; {partial} did not reach all' if partial else ''}")
        print(f"broadcast probe on the quiet swarm: all {args.agents} agents in {probe_ms:.1f} ms")
        if errors:
            print(f"{len(errors)} agent errors, first: {errors[0]}", file=sys.stderr)
        print(f"agents={args.agents} decisions_per_s={n / elapsed:.1f} p50_ms={pct(latencies, 50) * 1000:.1f} "
              f"p99_ms={pct(latencies, 99) * 1000:.1f} broadcast_all_ms={under_load:.1f}")
        return 1 if errors else 0
    finally:
        for l in listeners:
            l.close()
        daemon.stop(kill=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
