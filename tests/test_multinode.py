"""A swarm across Ray nodes on this machine, as on a cluster with no shared filesystem.

The head node (`ray start --head`) has no agent resource: the coordinator, the embedded redis
and `swarm run` live there. Worker nodes offer `swarm_gpu`, a custom resource standing in for
GPUs (swarm.yaml `agents.resource`), and each has its own temp dir, its own SWARM_NODE_HOME
and its own data dir. Every node runs in a process group of its own, so a test kills a node
the way a machine dies: SIGKILL to that group.

Everything stays on 127.0.0.1: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 Ray would resolve
127.0.0.1 to the machine's external address, and with 0 `ray start --address` refuses to
start a second node, so a worker node is started the way `ray start` and ray.cluster_utils
start one (a `ray._private.node.Node`), in its own process: `python -m tests.test_multinode
worker-node ...`.

The agents train with FakeRunner (a few seconds, val_bpb a known function of train.py): the
real trainer's locked evaluation alone took 32-39 s per run on this 2-core machine, too slow
for a test that needs several rounds of promotions and a node loss. Run as
`python -m tests.test_multinode run ...`, this module is the `swarm run` those tests start: the
real CLI and supervisor, with each agent actor given the fake runner (ResearchAgent's `runner=`).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGENT_RESOURCE = "swarm_gpu"
# cpu-smoke: the cpu profile scoring 2 eval batches (trainer/profiles.py); the claims here are not the score's
SWARM_YAML = f"""\
profile: cpu-smoke
backend: {{type: mutate}}
programs:
  - {{name: optimizer, adopt: always}}  # every agent takes each new best at once
agents: {{cpus_per_agent: 1, resource: {AGENT_RESOURCE}}}
"""
# The job tests train with the real trainer and check the way in, not the noise estimate: one
# baseline repeat instead of the eight degrees of freedom a promotion needs by default.
JOB_YAML = SWARM_YAML + "promotion: {min_dof: 1}\n"


# --- the fake runner and the `swarm run` driver ----------------------------------------------

class FakeRunner:
    """Sleeps `seconds` (cancellable), then scores train.py: each step of MATRIX_LR, EMBED_LR or
    SCALAR_LR away from the baseline's value lowers val_bpb, so mutate's edits promote often."""

    BASELINE = {"MATRIX_LR": 0.02, "EMBED_LR": 0.3, "SCALAR_LR": 0.02}

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, train_py, run_dir, *, budget=None, seed=0, cancel=None, on_event=None, **kw):
        import math
        import re as _re

        from trainer.schema import ExperimentResult

        src = Path(train_py).read_text()
        t0 = time.time()
        if on_event:
            on_event({"event": "started", "pgid": None})
        while time.time() - t0 < self.seconds:
            if cancel is not None and cancel.is_set():
                return ExperimentResult(status="crash", error="cancelled", seed=seed)
            time.sleep(0.1)
        (Path(run_dir) / "run.log").write_text("fake run\n")
        val = 3.0
        for name, base in self.BASELINE.items():
            m = _re.search(rf"^{name} = ([0-9.eE+-]+)\s*(#|$)", src, _re.M)
            if m:
                val -= 0.1 * abs(math.log(float(m.group(1)) / base))
        return ExperimentResult(status="ok", val_bpb=val, seed=seed, budget=budget or 0.0,
                                training_seconds=self.seconds, total_seconds=time.time() - t0)


def _worker_node(address: str, temp_dir: str, cpus: str, resources: str, agent_port: str) -> None:
    """A worker node joining `address`, as `ray start --address ... --block` starts one."""
    import ray._private.node
    from ray._private.parameter import RayParams

    params = RayParams(node_ip_address="127.0.0.1", gcs_address=address, temp_dir=temp_dir,
                       num_cpus=int(cpus), resources=json.loads(resources),
                       object_store_memory=80_000_000, min_worker_port=0, max_worker_port=0,
                       node_manager_port=0, dashboard_agent_listen_port=int(agent_port))
    ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print("Ray runtime started.", flush=True)
    while True:
        time.sleep(3600)


def _submit(dashboard: str, spec: str) -> int:
    """Submit a job through the Jobs API, print its logs as they grow, then `JOB STATUS: X`."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    job = client.submit_job(**json.loads(spec))
    print(f"JOB ID: {job}", flush=True)
    printed = 0
    while True:
        status = client.get_job_status(job)
        logs = client.get_job_logs(job)
        print(logs[printed:], end="", flush=True)
        printed = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            print(f"\nJOB STATUS: {status.value}", flush=True)
            return 0
        time.sleep(1)


def _driver(argv: list[str]) -> int:
    """`swarm run` with every agent actor built with FakeRunner(MN_RUN_S seconds)."""
    import agents.actor
    from coordinator import cli

    real = agents.actor.agent_actor
    seconds = float(os.environ.get("MN_RUN_S", "4"))

    def agent_actor(config, **kw):
        cls = real(config, **kw)

        class WithRunner:
            @staticmethod
            def remote(*args, **kwargs):
                return cls.remote(*args, runner=FakeRunner(seconds), **kwargs)
        return WithRunner

    agents.actor.agent_actor = agent_actor
    return cli.main(argv)


# --- nodes ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(base: Path) -> dict[str, str]:
    """Everyone's environment: loopback addresses, token auth with a token of our own under a
    private HOME (which also holds the local-provider file that stops cloud probing)."""
    home = base / "home"
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_DISABLE_DOCKER_CPU_WARNING="1")
    env.pop("RAY_ADDRESS", None)
    if not (home / ".ray" / "auth_token").exists():
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
                       env=env, check=True, capture_output=True)
    return env


def _session_members(sid: int) -> list[int]:
    """Every process of session `sid` and every descendant of one, read from /proc before any
    is killed (an orphan is re-parented to init and loses the link). Ray's raylet may put a
    worker in a process group of its own, so killing the node's group alone can leave an actor
    behind (one `ray::AgentHost` outlived its cluster in a CI run)."""
    stat: dict[int, tuple[int, int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stat[int(d)] = (int(fields[1]), int(fields[3]))  # ppid, session
    members = {pid for pid, (_pp, s) in stat.items() if s == sid}
    grew = True
    while grew:
        more = {pid for pid, (pp, _s) in stat.items() if pp in members} - members
        members |= more
        grew = bool(more)
    return sorted(members)


_NODES = iter(range(10**6))


class Node:
    """One Ray node in its own session: killing its session kills the node."""

    def __init__(self, name: str, base: Path, env: dict, args: list[str]):
        self.name = name
        # Ray's socket paths must stay short; unique per node of this process, so that a second
        # module's cluster never starts in a folder the first one's processes used
        self.temp = Path(f"/tmp/mn{os.getpid()}-{next(_NODES)}{name}")
        self.log = base / f"{name}.log"
        if args[0] == "--head":
            cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                   "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp}",
                   "--object-store-memory=80000000", "--min-worker-port=0", "--max-worker-port=0",
                   f"--dashboard-agent-listen-port={free_port()}", *args]
        else:
            cmd = [sys.executable, "-m", "tests.test_multinode", "worker-node", args[0], str(self.temp),
                   *args[1:], str(free_port())]
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.started_at: float | None = None

    def wait_started(self, timeout: float = 180) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                self.started_at = time.time()
                return self.started_at
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError(f"node {self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        # the node's session leader: its pid is the session's and the process group's id
        for pid in _session_members(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)


class Cluster:
    def __init__(self, base: Path):
        self.base = base
        self.env = ray_env(base)
        self.gcs = free_port()
        self.dashboard = free_port()
        self.nodes: list[Node] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    def head_alive(self) -> bool:
        head = next((n for n in self.nodes if n.name == "head"), None)
        if head is None or head.proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", self.gcs), timeout=5).close()
            return True
        except OSError:
            return False

    def ensure_head(self) -> None:
        """A head that died since the fixture started it (never seen to be the product's doing:
        no swarm had run on it) is started again on fresh ports, said as a warning with its log,
        instead of failing every test of the module on a worker that cannot join."""
        if self.head_alive():
            return
        head = next(n for n in self.nodes if n.name == "head")
        log = head.log.read_text(errors="replace")[-3000:]
        warnings.warn(f"the cluster's head was gone (rc {head.proc.poll()}); starting it again. Its log:\n{log}",
                      stacklevel=2)
        self.shutdown()
        self.nodes = []
        self.gcs, self.dashboard = free_port(), free_port()
        self.head(dashboard=head.dashboard)

    def head(self, dashboard: bool = False) -> Node:
        args = ["--head", f"--port={self.gcs}", "--num-cpus=1", f"--ray-client-server-port={free_port()}",
                "--disable-usage-stats"]
        args += (["--include-dashboard=true", "--dashboard-host=127.0.0.1",
                  f"--dashboard-port={self.dashboard}"] if dashboard else ["--include-dashboard=false"])
        node = Node("head", self.base, self.env, args)
        node.dashboard = dashboard
        self.nodes.append(node)
        node.wait_started()
        return node

    def worker(self, name: str, agents: int = 2) -> Node:
        """A node with `agents` agent slots, its own SWARM_NODE_HOME and data dir."""
        env = dict(self.env, SWARM_NODE_HOME=str(self.base / name / "home"),
                   SWARM_NODE_DATA_DIR=str(self.base / name / "data"))
        node = Node(name, self.base, env, [self.address, str(agents), json.dumps({AGENT_RESOURCE: agents})])
        node.env_home = env["SWARM_NODE_HOME"]
        self.nodes.append(node)
        return node

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        import shutil
        for node in self.nodes:
            shutil.rmtree(node.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("mn"))
    try:
        c.head(dashboard=True)  # the Jobs API (test_ray_job_submit) needs it
        yield c
    finally:
        c.shutdown()


# --- reading the swarm from the test ---------------------------------------------------------

def start_swarm(cluster: Cluster, name: str, *args: str, run_s: float = 3.0) -> tuple[subprocess.Popen, Path]:
    base = cluster.base / name
    base.mkdir()
    (base / "swarm.yaml").write_text(SWARM_YAML)
    env = dict(cluster.env, SWARM_HOME=str(base / "home"), SWARM_DATA_DIR=str(base / "data"),
               MN_RUN_S=str(run_s))
    cmd = [sys.executable, "-m", "tests.test_multinode", "run", "--address", cluster.address,
           "--config", str(base / "swarm.yaml"), "--agents", "2", "--budget", "5", "--plain", *args]
    proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=open(base / "out.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, base / "home"


def ledger(home: Path):
    """(counts, rows, started ids) of the swarm in `home`, from its redis (brought back from
    its AOF when the swarm has ended)."""
    from coordinator.state.home import SwarmHome, ledger_redis
    from coordinator.state.ledger import Ledger

    h = SwarmHome(home)
    with ledger_redis(h) as client:
        led = Ledger(client, h.info()["swarm_id"])
        started = {k.decode() for k in client.hkeys(led.key("started"))}
        return led.counts(), led.rows(), started


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, text=True).stdout.strip()


def best_ref(home: Path) -> str | None:
    refs = git(home / "repo.git", "for-each-ref", "--format=%(objectname)", "refs/heads/best/").split()
    return refs[0] if refs else None


class BestWatch:
    """Samples best while the swarm runs; each sample must descend from the one before."""

    def __init__(self, home: Path):
        self.home, self.seen = home, []

    def sample(self) -> None:
        b = best_ref(self.home)
        if b and (not self.seen or self.seen[-1] != b):
            if self.seen:
                anc = subprocess.run(["git", "--git-dir", str(self.home / "repo.git"), "merge-base",
                                      "--is-ancestor", self.seen[-1], b]).returncode
                assert anc == 0, f"best moved back: {self.seen[-1][:10]} -> {b[:10]}"
            self.seen.append(b)


def wait(proc, pred, what: str, timeout: float, watch: BestWatch | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if watch is not None:
            watch.sample()
        v = pred()
        if v:
            return v
        if proc.poll() is not None:
            raise AssertionError(f"swarm run ended (rc {proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def finish(proc, base: Path, watch: BestWatch, timeout: float = 300) -> str:
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        watch.sample()
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=150)
        raise AssertionError("swarm run did not finish:\n" + (base / "out.log").read_text()[-4000:])
    out = (base / "out.log").read_text()
    assert proc.returncode == 0, out[-4000:]
    watch.sample()
    return out


def safe_ledger(home: Path):
    try:
        return ledger(home)
    except Exception:
        return None


def clone_of(node_home: Path, rows: list[dict], agent: str) -> Path:
    """The agent's checkout on its node (one folder per swarm under SWARM_NODE_HOME)."""
    return node_home / rows[0]["swarm_id"] / "worktrees" / agent


# --- the tests ------------------------------------------------------------------------------

def live_worker(cluster: Cluster, name: str) -> Node:
    cluster.ensure_head()
    w = next((n for n in cluster.nodes if n.name != "head" and n.proc.poll() is None), None)
    if w is None:
        w = cluster.worker(name)
        w.wait_started()
    return w


@pytest.mark.slow
def test_swarm_across_nodes(cluster):
    live_worker(cluster, "w1")
    proc, home = start_swarm(cluster, "s1", "--max-experiments", "4")
    watch = BestWatch(home)
    finish(proc, home.parent, watch)

    counts, rows, started = ledger(home)
    ids = [r["experiment_id"] for r in rows]
    assert counts["started"] == counts["records"] == len(set(ids)) == len(ids), counts
    assert set(ids) == started
    agents = sorted({r["agent"] for r in rows})
    assert agents == ["a0-optimizer", "a1-optimizer"]

    # Nothing of the agents lives under the head's SWARM_HOME: they worked on the worker.
    assert not any((home / d).exists() and any((home / d).iterdir()) for d in ("worktrees", "agents", "runs"))
    node_home = cluster.base / "w1" / "home"
    baseline = git(home / "repo.git", "rev-list", "--max-parents=0", "best/" + rows[0]["hardware_class"])
    for agent in agents:
        wt = clone_of(node_home, rows, agent)
        # its own clone (a .git folder, no alternates), never a worktree of the head's repo
        assert (wt / ".git").is_dir() and not (wt / ".git" / "objects" / "info" / "alternates").exists()
        assert str(home) not in (wt / ".git" / "config").read_text()
        assert subprocess.run(["git", "cat-file", "-e", baseline], cwd=wt).returncode == 0
        assert (node_home / wt.parent.parent.name / "runs").is_dir()
    # The worker prepared the data on its own data dir.
    from trainer.prepare import locate
    assert locate("cpu", cluster.base / "w1" / "data").dir.is_dir()

    # Promotions made on the worker reached best on the head, as commits the head's repo has.
    moves = [r for r in rows if r.get("best_after") and r["best_after"] != r.get("best_before")]
    assert moves, [(r["kind"], r["status"], r.get("decision"), r.get("decision_reason")) for r in rows]
    chain = git(home / "repo.git", "rev-list", "best/" + rows[0]["hardware_class"]).split()
    assert all(m["best_after"] in chain for m in moves)
    assert watch.seen[-1] == chain[0]
    # A broadcast moved a worker's agent: it trained on top of a best that came from elsewhere
    # (the other agent's winner, or a merge the coordinator made), fetched into its clone.
    by_commit = {r["commit"]: r for r in rows if r.get("commit") and r["kind"] == "experiment"}
    adopted = [r for r in rows if r["kind"] == "experiment" and r["parent"] in {m["best_after"] for m in moves}
               and by_commit.get(r["parent"], {}).get("agent") != r["agent"]]
    assert adopted, "no agent ever built on a best it did not make"
    for r in adopted:
        assert subprocess.run(["git", "cat-file", "-e", r["parent"]],
                              cwd=clone_of(node_home, rows, r["agent"])).returncode == 0
    print(f"\nacross nodes: {len(rows)} records, {len(started)} started, best moved {len(moves)} times "
          f"({len(watch.seen)} distinct best commits seen)")


@pytest.mark.slow
def test_node_loss_mid_run(cluster):
    w = live_worker(cluster, "w1")
    proc, home = start_swarm(cluster, "s2", "--max-experiments", "2", run_s=5.0)
    watch = BestWatch(home)
    log = home / "logs" / "swarm.log"

    def mid_experiment():
        led = safe_ledger(home)
        if led is None:
            return None
        counts, rows, started = led
        recorded = {r["experiment_id"] for r in rows}
        # the baseline round is over and both agents are training their own experiment
        busy = [e for e in started - recorded if e]
        if len(busy) == 2 and any(r["kind"] == "experiment" for r in rows):
            return busy
        return None

    wait(proc, mid_experiment, "both agents mid-experiment", 240, watch)
    time.sleep(1.0)  # well inside the 5 s runs
    _, rows, started = ledger(home)
    inflight = started - {r["experiment_id"] for r in rows}
    w.kill()

    def crashes_recorded():
        led = safe_ledger(home)
        return led is not None and inflight <= {r["experiment_id"] for r in led[1]}

    wait(proc, crashes_recorded, "the lost runs' records", 120, watch)
    wait(proc, lambda: "waiting for capacity" in log.read_text(), "the waiting line", 60, watch)
    time.sleep(8)  # no capacity for a while: the supervisor must wait, not burn restarts
    text = log.read_text()
    assert len(re.findall(r"agent \S+ died", text)) == 2, text[-3000:]
    assert "not restarting" not in text
    counts_waiting, rows_waiting, _ = ledger(home)
    assert counts_waiting["started"] == counts_waiting["records"], counts_waiting

    w2 = cluster.worker("w2")
    joined = w2.wait_started()
    finish(proc, home.parent, watch)

    counts, rows, started = ledger(home)
    ids = [r["experiment_id"] for r in rows]
    assert len(ids) == len(set(ids)) and set(ids) == started, counts
    assert counts["started"] == counts["records"]
    lost = [r for r in rows if r["experiment_id"] in inflight]
    assert len(lost) == len(inflight) == 2
    assert all(r["status"] == "crash" for r in lost), [(r["status"], r["reason"]) for r in lost]
    # agents resumed on the new node and trained there
    text = log.read_text()
    resumed = re.findall(r"^(\S+ \S+) WARNING \S+: agent (\S+) resumed on a node", text, re.M)
    assert sorted(a for _, a in resumed) == ["a0-optimizer", "a1-optimizer"], text[-3000:]
    after = [r for r in rows if r["started_at"] and r["started_at"] > joined]
    assert {r["agent"] for r in after} == {"a0-optimizer", "a1-optimizer"}
    assert (clone_of(cluster.base / "w2" / "home", rows, "a0-optimizer") / ".git").is_dir()
    moves = [r for r in rows if r.get("best_after") and r["best_after"] != r.get("best_before")]
    import datetime
    lag = [datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp() - joined for t, _ in resumed]
    first_run = min(r["started_at"] for r in after) - joined
    print(f"\nnode loss: started {len(started)}, recorded {len(rows)}, lost in flight {len(inflight)} "
          f"(each one crash record), best moved {len(moves)} times, {len(watch.seen)} distinct best "
          f"commits seen, none backwards; agents set up again {min(lag):.1f}-{max(lag):.1f} s after "
          f"the new node joined, first run began after {first_run:.1f} s")


@pytest.mark.slow
def test_ray_job_submit(cluster):
    """`ray job submit -- swarm run --address auto` through the Jobs API, with the real trainer:
    the job's driver runs on the head, its agent on a worker."""
    w = live_worker(cluster, "w3")
    base = cluster.base / "job"
    base.mkdir()
    (base / "swarm.yaml").write_text(JOB_YAML)
    spec = {"entrypoint": f"swarm run --address auto --config {base / 'swarm.yaml'} --agents 1 "
                          "--budget 3 --max-experiments 1",
            # no SWARM_HOME: a job's swarm defaults to ~/.swarm on the head (HOME is the cluster's)
            "runtime_env": {"env_vars": {"PYTHONUNBUFFERED": "1", "SWARM_DATA_DIR": str(base / "data")}}}
    res = subprocess.run([sys.executable, "-m", "tests.test_multinode", "submit",
                          f"http://127.0.0.1:{cluster.dashboard}", json.dumps(spec)],
                         env=cluster.env, cwd=base, capture_output=True, text=True, timeout=800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "JOB STATUS: SUCCEEDED" in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]
    home = cluster.base / "home" / ".swarm"
    counts, rows, started = ledger(home)
    assert counts["started"] == counts["records"] >= 2, counts
    assert {r["kind"] for r in rows} >= {"baseline", "experiment"}
    assert all(r["agent"] == "a0-optimizer" for r in rows)
    assert "[swarm] " in res.stdout  # the job's log is the swarm's terminal
    # the agent trained on the worker, the swarm's state stayed on the head's SWARM_HOME
    assert (clone_of(Path(w.env_home), rows, "a0-optimizer") / ".git").is_dir()
    assert (home / "repo.git").is_dir() and not (home / "worktrees").exists()


@pytest.mark.slow
def test_ray_job_stop_is_a_clean_stop(cluster):
    """`ray job stop` (SIGTERM to the driver) stops the swarm as Ctrl-C does: in-flight runs
    record themselves, nothing is lost, the embedded redis is stopped."""
    live_worker(cluster, "w4")
    base = cluster.base / "jobstop"
    base.mkdir()
    (base / "swarm.yaml").write_text(JOB_YAML)
    home = base / "home"
    spec = {"entrypoint": f"python -m tests.test_multinode run --address auto --config {base / 'swarm.yaml'} "
                          "--agents 2 --budget 5",
            "runtime_env": {"env_vars": {"SWARM_HOME": str(home), "SWARM_DATA_DIR": str(base / "data"),
                                         "MN_RUN_S": "30", "RAY_JOB_STOP_WAIT_TIME_S": "120"}}}
    dash = f"http://127.0.0.1:{cluster.dashboard}"
    tail = subprocess.Popen([sys.executable, "-m", "tests.test_multinode", "submit", dash, json.dumps(spec)],
                            env=cluster.env, cwd=base, stdout=open(base / "job.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)

    def training():
        led = safe_ledger(home) if (home / "swarm.json").exists() else None
        return led is not None and led[0]["started"] >= 2 and led[0]["records"] == 0

    wait(tail, training, "the baseline runs to start", 240)
    redis_pid = int((home / "redis" / "redis.pid").read_text())
    job = re.search(r"JOB ID: (\S+)", (base / "job.log").read_text()).group(1)
    subprocess.run([sys.executable, "-m", "tests.test_multinode", "stop-job", dash, job],
                   env=cluster.env, check=True, capture_output=True, timeout=60)
    tail.wait(timeout=300)
    out = (base / "job.log").read_text()
    assert "JOB STATUS: STOPPED" in out, out[-3000:]
    assert "stopping: waiting for in-flight runs" in out, out[-3000:]
    assert not Path(f"/proc/{redis_pid}").exists(), "the embedded redis outlived the job"
    counts, rows, started = ledger(home)   # brought back from its AOF: swarm run stopped it
    assert counts["started"] == counts["records"] == len(rows) >= 2, counts
    assert {(r["status"], r["reason"]) for r in rows} == {("crash", "stopped")}


@pytest.mark.slow
def test_agent_resource_on_a_private_local_ray(tmp_path):
    """agents.resource without --address: the private local Ray offers one unit per agent."""
    (tmp_path / "swarm.yaml").write_text(SWARM_YAML)
    env = dict(os.environ, PYTHONPATH=str(ROOT), SWARM_HOME=str(tmp_path / "home"),
               SWARM_DATA_DIR=str(tmp_path / "data"), MN_RUN_S="1")
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-m", "tests.test_multinode", "run", "--config",
                        str(tmp_path / "swarm.yaml"), "--agents", "2", "--budget", "5",
                        "--max-experiments", "1", "--plain"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    counts, rows, _ = ledger(tmp_path / "home")
    assert counts["started"] == counts["records"] >= 4
    assert {r["agent"] for r in rows} == {"a0-optimizer", "a1-optimizer"}


if __name__ == "__main__":
    if sys.argv[1] == "worker-node":
        _worker_node(*sys.argv[2:])
    if sys.argv[1] == "submit":
        sys.exit(_submit(*sys.argv[2:]))
    if sys.argv[1] == "stop-job":
        from ray.job_submission import JobSubmissionClient
        sys.exit(0 if JobSubmissionClient(sys.argv[2]).stop_job(sys.argv[3]) else 1)
    sys.exit(_driver(sys.argv[1:]))
