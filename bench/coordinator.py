"""Coordinator throughput bench: N simulated agents with sub-second fake experiments.

The coordinator runs as it does in a swarm: the one named Ray actor (coordinator/decide/actor.py), in
its own process. The agents are threads spread over --hosts Ray actors (256 agent processes
would not fit in 24 GiB and 2 cores), and each agent does what a ResearchAgent does at every
iteration, through the actor handle: next_job, then (no job) take the latest best from the
last report's reply (best() when it has none) and commit a one-line edit onto it, begin,
"train" (a random sub-second sleep; val_bpb is a known function of the edit plus Gaussian
noise), report.
--in-process puts the Coordinator and all agents in this one process instead (for profiling;
there the agents' own work shares the coordinator's interpreter lock).

Prints decisions/s; the decision latency measured in the coordinator (Coordinator.perf():
from a report's arrival in Coordinator.report to its decision, durable in redis: the wait
behind other decisions included, the Ray transport and the wait for a free actor thread not);
each call's round trip as the agent sees it (Ray call + queue + decision); CPU per call; the
time the decision lock was held per batch; how long a best move takes to reach every agent
(from the coordinator's move to the last agent's first best()/report reply that shows it or a
newer best: this includes the agents' sleeps between calls); and one final line
    agents=N decisions_per_s=N p50_ms=N p99_ms=N broadcast_all_ms=N
whose p50/p99 are the decision latency in the coordinator (--in-process: the same thing).
On a 2-core machine the 256 simulated agents' own Ray calls (about 0.8 ms of CPU each, on
each side) share the cores with the coordinator, which agents on their own GPU nodes do not:
the agent round trip printed above the final line is the figure that carries that cost.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

# This file is named like the package it benchmarks: drop bench/ from the path so that
# `import coordinator` finds the package, not this script.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.decide.core import Coordinator  # noqa: E402
from coordinator.state.procs import alive  # noqa: E402
from coordinator.state.redisd import RedisDaemon  # noqa: E402
from coordinator.state.repo import ResearchRepo  # noqa: E402
from agents.messages import (Broadcast, ExperimentRecord, PromotionConfig,  # noqa: E402
                             StartedExperiment, new_experiment_id)

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


def agent_commit(repo: ResearchRepo, parent: str, text: str, message: str) -> str:
    """What an agent does on its own node, done here without forking git (ResearchRepo writes
    loose objects in process): 256 agent threads forking git would measure fork(), not the
    coordinator."""
    blob = repo.write_object("blob", text.encode())
    tree = repo.write_object("tree", b"100644 train.py\0" + bytes.fromhex(blob))
    who = f"bench <bench@localhost> {int(time.time())} +0000"
    body = f"tree {tree}\nparent {parent}\nauthor {who}\ncommitter {who}\n\n{message}\n"
    return repo.write_object("commit", body.encode())


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class AgentHost:
    """Runs simulated agents as threads; `coord` is the Coordinator itself (in-process) or the
    coordinator actor's handle (then every call is a Ray call, as from a real agent)."""

    def __init__(self, coord, repo_path: str, agent_ids: list[int], seconds: float,
                 exp_min: float, exp_max: float, via_ray: bool):
        self.coord, self.via_ray = coord, via_ray
        self.ids, self.seconds, self.exp = agent_ids, seconds, (exp_min, exp_max)
        self.repo = ResearchRepo(Path(repo_path))  # the agents' view (a shared object store)
        self.repo_lock = threading.Lock()
        self.texts: dict[str, str] = {}  # an agent knows the train.py it wrote
        self.lock = threading.Lock()
        self.lat: dict[str, list[float]] = {"report": [], "begin": [], "next_job": [], "best": []}
        self.counts: dict[str, int] = defaultdict(int)
        # Per agent, each best it saw for the first time: (seq, unix time seen); and per seq,
        # the unix time the coordinator moved best there.
        self.seen: dict[int, list[tuple[int, float]]] = {i: [] for i in agent_ids}
        self.moved: dict[int, float] = {}
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []

    def _saw(self, i: int, b: Broadcast | None) -> None:
        t = time.time()
        if b is None:
            return
        with self.lock:
            mine = self.seen[i]
            if not mine or b.seq > mine[-1][0]:
                mine.append((b.seq, t))
            self.moved.setdefault(b.seq, b.published_at)

    def _call(self, name: str, *args):
        t0 = time.perf_counter()
        if self.via_ray:
            import ray
            out = ray.get(getattr(self.coord, name).remote(*args))
        else:
            out = getattr(self.coord, name)(*args)
        dt = time.perf_counter() - t0
        with self.lock:
            self.lat[name].append(dt)
        return out

    def _read(self, commit: str) -> str:
        with self.repo_lock:
            if commit not in self.texts:
                self.texts[commit] = self.repo.show(commit)
            return self.texts[commit]

    def _agent(self, i: int, stop_at: float) -> None:
        rng = random.Random(i)
        name = f"agent{i:03d}"
        reply = None  # the last report's answer stands in for next_job/best, as in agents/ports.py
        try:
            while time.monotonic() < stop_at:
                job = self._call("next_job", name, HW) if reply is None or reply.job_waiting else None
                if job is not None:
                    commit, parent, kind, desc = job.commit, job.parent, job.kind, job.description
                    text = self._read(commit)
                else:
                    b = reply.best if reply is not None and reply.best is not None else self._call("best", HW)
                    self._saw(i, b)
                    parent = b.commit if b else self.repo.root()
                    k = rng.choice(KNOBS)
                    text = re.sub(rf"^{k} = .*$", f"{k} = {rng.choice([0, 1])}", self._read(parent), flags=re.M)
                    commit = agent_commit(self.repo, parent, text, f"{name}: {k}")
                    with self.repo_lock:
                        self.texts[commit] = text
                    kind, desc = "experiment", f"set {k}"
                eid = new_experiment_id(name)
                common = dict(experiment_id=eid, kind=kind, agent=name, program="bench", hardware_class=HW,
                              parent=parent, commit=commit, description=desc,
                              job_id=job.job_id if job else None, seed=job.seed if job else 0)
                self._call("begin", StartedExperiment(**common))
                time.sleep(rng.uniform(*self.exp))  # "training"
                val = true_bpb(text) + rng.gauss(0, 0.004)
                reply = self._call("report", ExperimentRecord(**common, status="ok", val_bpb=val,
                                                                   confirm_bpb=val))
                self._saw(i, reply.best)
                with self.lock:
                    self.counts[reply.decision.decision] += 1
        except Exception as e:  # a bench thread must not die silently
            self.errors.append(f"{name}: {type(e).__name__}: {e}")

    def ready(self) -> bool:
        return True

    def nice(self, n: int) -> int:
        """Lower this process's CPU priority by n: every thread of it (Ray's own included; Linux
        keeps a nice value per thread), so agent threads started later inherit it. Returns the pid."""
        for tid in os.listdir("/proc/self/task"):
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), os.getpriority(os.PRIO_PROCESS, int(tid)) + n)
            except (ProcessLookupError, PermissionError):
                pass  # a thread that ended meanwhile
        return os.getpid()

    def start(self) -> None:
        self.cpu0 = time.process_time()
        stop_at = time.monotonic() + self.seconds
        self.threads = [threading.Thread(target=self._agent, args=(i, stop_at), daemon=True)
                        for i in self.ids]
        for t in self.threads:
            t.start()

    def results(self) -> dict:
        for t in self.threads:
            t.join(timeout=self.seconds + 120)
        with self.lock:
            return {"lat": {k: list(v) for k, v in self.lat.items()}, "counts": dict(self.counts),
                    "cpu_s": time.process_time() - self.cpu0,
                    "seen": {i: list(v) for i, v in self.seen.items()}, "moved": dict(self.moved),
                    "errors": list(self.errors)}


def reach_all(seen: dict[int, list[tuple[int, float]]], moved: dict[int, float]) -> tuple[list[float], int]:
    """Per best move: seconds until every agent had seen it or a newer best (its first
    best()/report reply showing one). Returns those times and how many moves some agent never saw."""
    full, partial = [], 0
    for seq, at in sorted(moved.items()):
        firsts = [next((t for s, t in mine if s >= seq), None) for mine in seen.values()]
        if firsts and all(t is not None for t in firsts):
            full.append(max(0.0, max(firsts) - at))
        else:
            partial += 1
    return full, partial


T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the agents run")
    ap.add_argument("--exp-min", type=float, default=0.3, help="shortest fake experiment (s)")
    ap.add_argument("--exp-max", type=float, default=0.9, help="longest fake experiment (s)")
    ap.add_argument("--hosts", type=int, default=4, help="processes (Ray actors) the agents are spread over")
    ap.add_argument("--hosts-nice", type=int, default=0,
                    help="run the agent hosts at this nice value (10: they yield the cores to the coordinator, "
                         "redis and Ray's daemons, as agents on their own nodes would; 0: equal shares)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="the coordinator actor's max_concurrency (default: coordinator/decide/actor.py's)")
    ap.add_argument("--in-process", action="store_true",
                    help="the Coordinator and every agent in this process, no Ray (for profiling)")
    ap.add_argument("--fsync", default="always", choices=["always", "everysec"],
                    help="redis appendfsync (the product uses always)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="benchcoord"))
    daemon = RedisDaemon(tmp / "redis", fsync=args.fsync).start()
    hosts: list = []
    actors: list = []   # Ray actors started here (the coordinator, the hosts): stopped at the end
    ray_tmp: Path | None = None
    try:
        cfg = PromotionConfig(sigma_prior=0.004)
        repo_path = str(tmp / "home" / "repo.git")
        shards = [list(range(args.agents))[h::args.hosts] for h in range(args.hosts)]
        if args.in_process:
            coord = Coordinator(tmp / "home", daemon.url, cfg, "bench", baseline())
            hosts = [AgentHost(coord, repo_path, list(range(args.agents)), args.seconds,
                               args.exp_min, args.exp_max, via_ray=False)]
            call = lambda name, *a: getattr(coord, name)(*a)  # noqa: E731
            remote = lambda h, name, *a: getattr(h, name)(*a)  # noqa: E731
        else:
            import ray
            from agents.raylocal import start_local_ray
            from coordinator.decide.actor import coordinator_actor
            # a short path of its own (Ray's socket paths must fit AF_UNIX's 107 bytes); removed
            # at the end with the rest (every run used to leave its Ray session's logs in /tmp)
            ray_tmp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
            start_local_ray(num_cpus=2, object_store_mb=200, temp_dir=ray_tmp)
            extra = {} if args.concurrency is None else {"max_concurrency": args.concurrency}
            handle = coordinator_actor(tmp / "home", daemon.url, cfg, "bench", baseline(), **extra)
            actors.append(handle)
            call = lambda name, *a: ray.get(getattr(handle, name).remote(*a))  # noqa: E731
            remote = lambda h, name, *a: ray.get(getattr(h, name).remote(*a))  # noqa: E731
            call("status")  # the actor is up and the repo exists
            say("coordinator actor up")
            Host = ray.remote(num_cpus=0, max_concurrency=4)(AgentHost)
            hosts = [Host.remote(handle, repo_path, ids, args.seconds, args.exp_min,
                                 args.exp_max, True) for ids in shards if ids]
            actors.extend(hosts)
            for h in hosts:
                remote(h, "ready")  # every host is up before the clock starts
            if args.hosts_nice:
                say(f"agent hosts at nice +{args.hosts_nice}: pids "
                    f"{', '.join(str(remote(h, 'nice', args.hosts_nice)) for h in hosts)}")
        say(f"{args.agents} agents ready; running {args.seconds:.0f} s")
        cpu0 = call("perf")["cpu_s"]
        t_start = time.monotonic()
        for h in hosts:
            remote(h, "start")
        results = [remote(h, "results") for h in hosts]
        elapsed = time.monotonic() - t_start
        coord_cpu = call("perf")["cpu_s"] - cpu0
        say("agents stopped")
        lat = {k: [x for r in results for x in r["lat"][k]] for k in ("report", "begin", "next_job", "best")}
        counts: dict[str, int] = defaultdict(int)
        seen: dict[int, list[tuple[int, float]]] = {}
        moved: dict[int, float] = {}
        errors = [e for r in results for e in r["errors"]]
        for r in results:
            for k, v in r["counts"].items():
                counts[k] += v
            seen.update({int(i): v for i, v in r["seen"].items()})
            moved.update({int(s): t for s, t in r["moved"].items()})
        full, partial = reach_all(seen, moved)
        st, perf = call("status"), call("perf")
        rep = lat["report"]
        n = len(rep)
        mode = ("in-process Coordinator" if args.in_process
                else f"Coordinator Ray actor, agents in {len(hosts)} Ray actors")
        print(f"mode: {mode}; "
              f"{args.agents} agents, experiments {args.exp_min}-{args.exp_max} s, {elapsed:.1f} s, "
              f"redis fsync {args.fsync}")
        print(f"decisions: {n} ({dict(counts)}); best now {st['classes'][HW]['best'][:10]}, "
              f"sigma {st['classes'][HW]['sigma']:.4f}")
        for k in ("report", "begin", "next_job", "best"):
            xs = lat[k]
            if not xs:  # best(): only when no reply has carried one yet
                continue
            print(f"{k} latency as the agent sees it: p50 {pct(xs, 50) * 1000:.1f} ms, "
                  f"p90 {pct(xs, 90) * 1000:.1f} ms, p99 {pct(xs, 99) * 1000:.1f} ms, "
                  f"max {max(xs, default=0) * 1000:.1f} ms ({len(xs)} calls)")
        calls = sum(len(v) for v in lat.values())
        print(f"CPU: coordinator {coord_cpu:.1f} s ({coord_cpu / max(calls, 1) * 1e3:.2f} ms per call, "
              f"{coord_cpu / elapsed * 100:.0f}% of a core); agent hosts {sum(r['cpu_s'] for r in results):.1f} s"
              f"{' (same process)' if args.in_process else ''}")
        if perf.get("decisions"):
            print(f"decision latency at the coordinator (arrival to durable decision): p50 "
                  f"{perf['decision_p50_ms']:.1f} ms, p99 {perf['decision_p99_ms']:.1f} ms "
                  f"({perf['decisions']} reports)")
        if perf.get("batches"):
            print(f"decision lock held per batch: p50 {perf['batch_p50_ms']:.1f} ms, "
                  f"p99 {perf['batch_p99_ms']:.1f} ms, {perf['mean_batch']:.1f} reports+begins per batch "
                  f"-> capacity ~{perf['capacity_per_s']:.0f}/s")
            print(f"decision work: p50 {perf['record_p50_ms']:.2f} ms a report or begin under the lock; the deciding "
                  f"thread ran {perf['batch_cpu_share']:.0%} of the time it held the lock, "
                  f"{perf['slow_batch_cpu_share']:.0%} in the slowest 1% of batches (the rest: waiting for redis, "
                  f"a core or the interpreter lock)")
        if "gc_collections" in perf:
            c = perf["gc_collections"]
            print(f"garbage collection in the coordinator's process (since it started): {c[2]} full "
                  f"(max {perf['gc_full_max_ms']:.1f} ms, {perf['gc_full_total_ms']:.0f} ms in all), "
                  f"{c[0] + c[1]} young ({perf['gc_young_total_ms']:.0f} ms in all)")
        under_load = max(full) * 1000 if full else float("nan")
        print(f"best moves seen by every agent (first reply or best() showing it or newer): {len(full)} "
              f"reached all {args.agents} agents, worst {under_load:.1f} ms, median "
              f"{statistics.median(full) * 1000 if full else float('nan'):.1f} ms"
              f"{f'; {partial} not seen by every agent before the end' if partial else ''}")
        if errors:
            print(f"{len(errors)} agent errors, first: {errors[0]}", file=sys.stderr)
        print(f"agent round trip of a report: p50 {pct(rep, 50) * 1000:.1f} ms, p99 {pct(rep, 99) * 1000:.1f} ms")
        print(f"agents={args.agents} decisions_per_s={n / elapsed:.1f} "
              f"p50_ms={perf.get('decision_p50_ms', float('nan')):.1f} "
              f"p99_ms={perf.get('decision_p99_ms', float('nan')):.1f} broadcast_all_ms={under_load:.1f}")
        return 1 if errors else 0
    finally:
        if ray_tmp is not None:   # Ray started here (an actor that failed to start included)
            stop_ray(actors)
        daemon.stop(kill=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if ray_tmp is not None:
            shutil.rmtree(ray_tmp, ignore_errors=True)


def stop_ray(actors: list, grace: float = 5.0) -> None:
    """Kill the actors this bench started and shut its private Ray down, then make sure their
    processes are gone: left to Ray's own exit, an idle agent host outlived the bench about one
    run in ten (tests/test_bench_coordinator.py)."""
    import ray
    pids = []
    for a in actors:
        try:
            pids.append(ray.get(a.__ray_call__.remote(lambda self: os.getpid()), timeout=10))
        except Exception:  # an actor already dead has no process to wait for
            pass
        ray.kill(a)
    ray.shutdown()
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        time.sleep(0.1)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


if __name__ == "__main__":
    from bench.signals import exit_on_signals

    exit_on_signals()   # SIGTERM/SIGHUP: the finally blocks still clean up
    sys.exit(main())
