"""Isolation attacks: hostile code tries to leave the sandbox, keep a process alive, rewrite the
apparatus or the data, read secrets or held-out data, reach the network, exhaust the machine,
or get the agent's git to run its code. Each runs through the real code path (the runner and
its sandbox; the agent's and coordinator's git) and asserts that nothing persisted."""
from __future__ import annotations

import hashlib
import json
import os
import site
import socket
import time
from pathlib import Path

import pytest
from test_runner import TINY, small_eval, write

import trainer
from agents.worktree import Worktree
from coordinator.review.report.gitdata import train_py_diffs
from coordinator.state.repo import ResearchRepo, git_merge_texts

__all__ = ["small_eval"]  # a fixture, imported for this module's tests
pytestmark = pytest.mark.usefixtures("small_eval")  # 2 eval batches: see test_runner.small_eval

BASELINE = "print('baseline')\n"

# --- helpers ---------------------------------------------------------------------------------


def tree_digest(root: Path) -> str:
    """One hash over every file's path, mode and content under `root` (symlinks by target)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            if "__pycache__" in p.parts:
                continue
            h.update(str(p.relative_to(root)).encode())
            try:
                st = p.lstat()
                h.update(oct(st.st_mode).encode())
                h.update(os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            except OSError:
                h.update(b"?")
    return h.hexdigest()


def all_pids() -> set[int]:
    return {int(d) for d in os.listdir("/proc") if d.isdigit()}


def processes_with(marker: str) -> list[int]:
    """PIDs (anywhere on the machine) whose command line contains `marker`."""
    found = []
    for pid in all_pids():
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- 10. git hooks and fsmonitor planted in the research repo ---------------------------------

HOOKS = ("pre-commit", "post-commit", "commit-msg", "prepare-commit-msg", "post-checkout", "post-merge",
         "post-rewrite", "reference-transaction", "pre-auto-gc", "post-index-change")


def plant(git_dir: Path, markers: Path, tag: str) -> None:
    """Hooks, a hooksPath and an fsmonitor that each write a marker file when git runs them."""
    hooks = git_dir / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    evil = markers / f"evil-hooks-{tag}"
    evil.mkdir(parents=True, exist_ok=True)
    for d in (hooks, evil):
        for h in HOOKS:
            f = d / h
            f.write_text(f"#!/bin/sh\ntouch {markers}/{tag}-{d.name}-{h}\nexit 0\n")
            f.chmod(0o755)
    mon = markers / f"fsmonitor-{tag}"
    mon.write_text(f"#!/bin/sh\ntouch {markers}/{tag}-fsmonitor\nexit 1\n")
    mon.chmod(0o755)
    return mon, evil


def test_git_never_runs_planted_hooks_or_fsmonitor(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    repo = ResearchRepo(tmp_path / "repo.git")
    root = repo.create(BASELINE)
    mon, _ = plant(repo.path, markers, "repo")
    os.system(f"git --git-dir {repo.path} config core.fsmonitor {mon}")
    os.system(f"git --git-dir {repo.path} config extensions.worktreeConfig true")

    wt = Worktree(tmp_path / "wt" / "a", repo.path, "a")
    wt.open(root)
    # the worktree's own git dir: a per-worktree config naming a hooks dir and an fsmonitor
    wt_git = repo.path / "worktrees" / "a"
    assert wt_git.is_dir()
    mon2, evil2 = plant(wt_git, markers, "wt")
    (wt_git / "config.worktree").write_text(f"[core]\n\tbare = false\n\tfsmonitor = {mon2}\n"
                                           f"\thooksPath = {evil2}\n")

    # the agent's paths: commit, reset, clean, status, bundle, reopen
    c1 = wt.commit("print('one')\n", "one", root)
    assert wt.is_clean()
    c2 = wt.commit("print('two')\n", "two", c1)
    wt.reset_hard(c1)
    (wt.path / "junk.txt").write_text("x")
    wt.clean()
    data = wt.bundle(c2, basis=root)
    Worktree(tmp_path / "wt" / "a", repo.path, "a").open(root)

    # the coordinator's paths: refs (compare-and-swap and plain), merges, bundles, report diffs
    assert repo.update_ref("refs/heads/best-cpu", c1, None)
    repo.set_ref("refs/heads/best-cpu", c2)
    merged, _ = git_merge_texts(repo.show(root), repo.show(c1), repo.show(c2))
    m = repo.commit_tree(merged, [c2, c1], "merge", base=c2)
    assert repo.update_ref("refs/heads/best-cpu", m, c2)
    repo.fetch_bundle(data)
    repo.fetch_bundle(repo.bundle(m))
    assert repo.is_ancestor(c1, m) and repo.first_parent_history("refs/heads/best-cpu")
    assert train_py_diffs(repo.path, [(root, c1), (c1, c2)])

    # a clone on another node: hooks planted in its .git
    clone = Worktree(tmp_path / "node2" / "b", tmp_path / "not-here.git", "b")
    clone.open(m, fetch=lambda commit: repo.bundle(commit))
    mon3, _ = plant(clone.path / ".git", markers, "clone")
    os.system(f"git -C {clone.path} config core.fsmonitor {mon3}")
    c3 = clone.commit("print('three')\n", "three", m)
    clone.reset_hard(m)
    clone.is_clean()
    clone.bundle(c3, basis=m)

    fired = sorted(p.name for p in markers.iterdir() if p.is_file() and not p.name.startswith("fsmonitor-"))
    assert fired == [], f"git ran planted code: {fired}"


# --- attacks through the real runner in the real sandbox ---------------------------------------
# The world lives under /var/tmp, not /tmp: the sandbox's /tmp is its own tmpfs, so anything
# under /tmp would be out of sight anyway and prove nothing about what the runner hides.

PLANTED_KEY = "sk-planted-attack-key-7f3a9c"
PLANTED_REDIS_PW = "planted-redis-pw-51d2"


class World:
    """A SWARM_HOME with a research repo, another agent's worktree and redis secrets, a data dir,
    planted secrets in this process's environment, and checksums of what must not change."""

    def __init__(self, root: Path, data_dir: Path):
        self.root, self.data_dir = root, data_dir
        self.home = root / "home"
        self.repo = self.home / "repo.git"
        self.other_wt = self.home / "worktrees" / "a1-other"
        self.run_dir = self.home / "runs" / f"exp-{os.getpid()}-{time.monotonic_ns()}"
        self.repo.mkdir(parents=True)
        (self.repo / "HEAD").write_text("ref: refs/heads/main\n")
        (self.repo / "SECRET-REPO-CONTENT").write_text("repo-content-3b7e\n")
        self.other_wt.mkdir(parents=True)
        (self.other_wt / "train.py").write_text("# OTHER-WORKTREE-CONTENT-9c1d\n")
        (self.home / "redis").mkdir()
        (self.home / "redis" / "redis.secret").write_text(f"{PLANTED_REDIS_PW} 6399\n")
        (self.home / "swarm.json").write_text('{"swarm_id": "sw-attack"}\n')

    def prepared(self) -> Path:
        from trainer.prepare import locate
        from trainer.profiles import get_profile
        return locate(get_profile("cpu"), self.data_dir).dir

    def val_files(self) -> list[str]:
        from trainer.prepare import locate
        from trainer.profiles import get_profile
        return [p for p in locate(get_profile("cpu"), self.data_dir).forbidden if os.path.isfile(p)]


def site_packages() -> Path:
    return Path(site.getsitepackages()[0])


def guarded_digests(world: World) -> dict[str, str]:
    sp = site_packages()
    import torch
    return {
        "data": tree_digest(world.data_dir),
        "trainer": tree_digest(Path(trainer.__file__).parent),
        "home (all but the run)": tree_digest_except(world.home, world.run_dir),
        "site-packages listing": hashlib.sha256("\n".join(sorted(os.listdir(sp))).encode()).hexdigest(),
        "torch/__init__.py": hashlib.sha256(Path(torch.__file__).read_bytes()).hexdigest(),
    }


def tree_digest_except(root: Path, skip: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def attack_data_dir():
    """The bundled corpus prepared under /var/tmp (visible to the sandbox unless hidden)."""
    import shutil
    import tempfile

    from trainer.prepare import prepare

    d = Path(tempfile.mkdtemp(prefix="swarm-attack-data-", dir="/var/tmp"))
    prepare("bundled", ["cpu"], data_dir=d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def world(attack_data_dir, monkeypatch):
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="swarm-attack-", dir="/var/tmp"))
    w = World(root, attack_data_dir)
    monkeypatch.setenv("SWARM_HOME", str(w.home))
    monkeypatch.setenv("FAKE_PROVIDER_API_KEY", PLANTED_KEY)
    monkeypatch.setenv("SWARM_REDIS_URL", f"redis://:{PLANTED_REDIS_PW}@127.0.0.1:6399/0")
    monkeypatch.delenv("SWARM_UNSAFE_NO_SANDBOX", raising=False)
    w.before = guarded_digests(w)
    yield w
    shutil.rmtree(root, ignore_errors=True)


def attack(world: World, code: str, *, at: str = "model = Bigram()", **kw):
    """Run TINY with `code` inserted before `at` through the real runner; returns (result, run.log)."""
    from trainer.runner import run_experiment

    assert at in TINY
    src = TINY.replace(at, code.strip("\n") + "\n" + at, 1)
    train_py = write(world.root, src)
    kw.setdefault("budget", 3)
    kw.setdefault("threads", 1)
    r = run_experiment(train_py, world.run_dir, data_dir=world.data_dir, **kw)
    log = Path(r.log_path).read_text(errors="replace") if Path(r.log_path).exists() else ""
    return r, log


def assert_nothing_persisted(world: World) -> None:
    """No process of the run is alive; nothing outside the run's scratch changed."""
    time.sleep(0.3)
    marker = str(world.run_dir)
    left = [p for p in processes_with(marker) if not is_zombie(p)]
    left += [p for p in processes_with("ATTACK-SURVIVOR") if not is_zombie(p)]
    assert left == [], f"processes of the run still alive: {left}"
    after = guarded_digests(world)
    changed = [k for k in after if after[k] != world.before[k]]
    assert changed == [], f"changed outside the scratch: {changed}"


def assert_honest_ok(r) -> None:
    assert r.status == "ok", (r.status, r.error, r.log_tail[-2000:])
    assert r.val_bpb is not None and 1.0 < r.val_bpb < r.unigram_bpb + 0.5


# (a) a double fork + setsid survivor that keeps running and tries to rewrite files

SURVIVOR = r'''
import os, sys, time
targets = sys.argv[1:]
end = time.time() + 120
while time.time() < end:
    for t in targets:
        try:
            with open(t, "w") as f:
                f.write('{"val_bpb": 0.01, "FORGED": true}')
        except OSError:
            pass
    time.sleep(0.05)
'''


def test_a_double_fork_setsid_survivor_dies_with_the_run(world):
    targets = [str(world.run_dir / n) for n in ("eval_result.json", "graph.json", "weights.bin", "run.log")]
    targets += [str(world.home / "swarm.json"), str(world.prepared() / "meta.json"),
                str(world.other_wt / "train.py")]
    code = f"""
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", {SURVIVOR!r}, *{targets!r}, "ATTACK-SURVIVOR"])
    os._exit(0)
os.wait()
print("survivor launched", flush=True)
"""
    r, log = attack(world, code)
    assert "survivor launched" in log
    assert_honest_ok(r)
    assert "FORGED" not in log
    for t in targets:
        assert not Path(t).exists() or "FORGED" not in Path(t).read_text(errors="replace"), t
    assert_nothing_persisted(world)


# (b) writing the installed trainer package, site-packages, the data dir, the research repo

def test_b_apparatus_site_packages_and_data_are_read_only(world):
    import torch

    pkg = Path(trainer.__file__).parent
    sp = site_packages()
    targets = [pkg / "metric.py", pkg / "evil.py", pkg / "__pycache__" / "metric.cpython-311.pyc",
               sp / "zz-evil.pth", Path(torch.__file__), world.prepared() / "meta.json",
               world.prepared() / "token_bytes.npy", world.data_dir / "evil.txt",
               world.repo / "hooks" / "pre-commit", world.other_wt / "train.py"]
    targets += [Path(p) for p in world.val_files()]
    # Opening for append (writing nothing) proves a file writable without changing this shared
    # machine's files should the sandbox fail; new files are empty and removed below.
    code = f"""
import os
for t in {[str(t) for t in targets]!r}:
    try:
        with open(t, "a") as f:
            pass
        print("WROTE", t, flush=True)
    except OSError as e:
        print("DENIED", t, type(e).__name__, flush=True)
"""
    made = [t for t in targets if not t.exists()]
    try:
        r, log = attack(world, code)
        assert_honest_ok(r)
        # the data dir, the repo and the other worktree are not there at all (the root is read-only)
        wrote = [ln for ln in log.splitlines() if ln.startswith("WROTE")]
        assert wrote == [] and log.count("DENIED") == len(targets), log[-3000:]
        assert not any(t.exists() for t in made)
        assert_nothing_persisted(world)
    finally:
        for t in made:
            t.unlink(missing_ok=True)


# (c) the parent's environment, SWARM_HOME, the research repo, other worktrees

def test_c_secrets_and_swarm_files_are_out_of_sight(world):
    paths = [world.home, world.repo, world.other_wt, world.home / "redis", world.data_dir, world.prepared(),
             Path.home() / ".ray", Path.home() / ".cache"]
    code = f"""
import os, json
found = {{"env": dict(os.environ), "environs": {{}}, "listings": {{}}, "files": {{}}}}
for pid in os.listdir("/proc"):
    if pid.isdigit() or pid == "self":
        for what in ("environ", "cmdline"):
            try:
                found["environs"][pid + "/" + what] = open(f"/proc/{{pid}}/{{what}}", "rb").read().decode("latin1")
            except OSError as e:
                found["environs"][pid + "/" + what] = type(e).__name__
try:
    found["ppid_environ"] = open(f"/proc/{{os.getppid()}}/environ", "rb").read().decode("latin1")
except OSError as e:
    found["ppid_environ"] = type(e).__name__
for p in {[str(p) for p in paths]!r}:
    try:
        found["listings"][p] = sorted(os.listdir(p))
    except OSError as e:
        found["listings"][p] = type(e).__name__
for f in {[str(world.repo / "SECRET-REPO-CONTENT"), str(world.other_wt / "train.py"),
           str(world.home / "redis" / "redis.secret")]!r}:
    try:
        found["files"][f] = open(f).read()
    except OSError as e:
        found["files"][f] = type(e).__name__
print("LOOT " + json.dumps(found), flush=True)
"""
    r, log = attack(world, code)
    assert_honest_ok(r)
    loot = json.loads(next(ln for ln in log.splitlines() if ln.startswith("LOOT "))[5:])
    everything = log + r.log_tail
    for secret in (PLANTED_KEY, PLANTED_REDIS_PW, "repo-content-3b7e", "OTHER-WORKTREE-CONTENT-9c1d"):
        assert secret not in everything, secret
    assert not any(k in loot["env"] for k in ("FAKE_PROVIDER_API_KEY", "SWARM_REDIS_URL", "SWARM_HOME"))
    # the sandbox shows an allow-list: the home, the data and the home's caches are not there
    assert all(v == "FileNotFoundError" for v in loot["listings"].values()), loot["listings"]
    assert all(v == "FileNotFoundError" for v in loot["files"].values()), loot["files"]
    assert_nothing_persisted(world)


def test_c_a_secret_printed_anyway_is_redacted_from_the_tail(world, monkeypatch):
    """Second line of defence: a secret value train.py somehow holds is masked in the tail."""
    monkeypatch.setenv("OTHER_SERVICE_TOKEN", "tok-leaked-through-source-42")
    r, _ = attack(world, "print('leak: tok-leaked-through-source-42 and sk-planted-attack-key-7f3a9c')\n")
    assert_honest_ok(r)
    assert "leak: *** and ***" in r.log_tail
    assert "tok-leaked-through-source-42" not in r.log_tail and PLANTED_KEY not in r.log_tail


# (d) the five ways past the old read guard, on the val/confirm token files

def test_d_read_guard_bypasses_find_no_val_or_confirm_files(world):
    vals = world.val_files()
    assert len(vals) >= 2
    code = f"""
import ctypes, gc, os, subprocess, torch
VALS = {vals!r}
res = []
class P:
    def __init__(self, p): self.p = p
    def __fspath__(self): return self.p
cands = set(VALS)
for o in gc.get_objects():  # 1. whatever the process holds that names held-out data
    if isinstance(o, dict):
        for v in list(o.values())[:50]:
            if isinstance(v, str) and ("val." in v or "confirm." in v) and v.startswith("/"):
                cands.add(v)
libc = ctypes.CDLL(None, use_errno=True)
for v in sorted(cands):
    for how, fn in (("gc-open", lambda: open(v, "rb").read(16)),
                    ("fspath", lambda: open(P(v), "rb").read(16)),
                    ("torch.from_file", lambda: torch.from_file(v, size=16, dtype=torch.uint8))):
        try:
            fn(); res.append(("OPENED", how, v))
        except Exception as e:
            res.append(("absent", how, v, type(e).__name__))
    fd = libc.open(v.encode(), os.O_RDONLY)
    res.append(("OPENED" if fd >= 0 else "absent", "ctypes", v, ctypes.get_errno()))
    p = subprocess.run(["sh", "-c", f"cat '{{v}}' | head -c 16 | wc -c; ls -la '{{os.path.dirname(v)}}'"],
                       capture_output=True, text=True)
    res.append(("OPENED" if p.stdout.split()[:1] != ["0"] else "absent", "shell", v, p.stdout[:200]))
for r in res:
    print("PROBE", *r, flush=True)
"""
    r, log = attack(world, code)
    assert_honest_ok(r)
    probes = [ln for ln in log.splitlines() if ln.startswith("PROBE ")]
    assert len(probes) >= 5 * len(vals)
    assert not any(ln.startswith("PROBE OPENED") for ln in probes), [p for p in probes if "OPENED" in p]
    assert_nothing_persisted(world)


# (e) network

def test_e_no_network_even_to_loopback(world):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    try:
        code = f"""
import socket
for host in ("127.0.0.1", "localhost", "::1"):
    try:
        socket.create_connection((host, {port}), timeout=2)
        print("CONNECTED", host, flush=True)
    except OSError as e:
        print("NONET", host, type(e).__name__, flush=True)
try:
    socket.getaddrinfo("example.com", 80)
    print("CONNECTED dns", flush=True)
except OSError as e:
    print("NONET dns", type(e).__name__, flush=True)
"""
        r, log = attack(world, code)
        assert_honest_ok(r)
        assert "CONNECTED" not in log and log.count("NONET") == 4
        srv.settimeout(0.2)
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()
    assert_nothing_persisted(world)


# (f) fork bomb and memory bombs

class PidWatch:
    """Samples how many processes of one run (by its run dir in their command line) are alive.
    The machine's own count would include the other users of this shared machine."""

    def __init__(self, marker: str):
        import threading
        self.marker, self.peak, self.stop = marker, 0, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, len(processes_with(self.marker)))
            time.sleep(0.02)

    def done(self) -> int:
        self.stop.set()
        self.t.join()
        return self.peak


@pytest.fixture
def few_procs(monkeypatch):
    """The cpu profile with a cap of 64 tasks: held to one CPU's share (its CFS quota) on a loaded
    machine the bomb made only 51 processes in 12 s, never reaching the profile's 256."""
    import dataclasses

    from trainer import profiles
    monkeypatch.setitem(profiles.PROFILES, "cpu", dataclasses.replace(profiles.PROFILES["cpu"], max_procs=64))
    return 64


def test_f_fork_bomb_is_a_timeout_and_the_machine_keeps_its_pids(world, few_procs):
    cap = few_procs
    marker = f"BOMB-{world.run_dir}"
    # a bare interpreter forks in about a millisecond (one that imported torch is far slower):
    # the bomb reaches the cap within a second, then waits at it until the runner kills the run
    bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.05)"
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-I", "-S", "-c", {bomb!r}, {marker!r}])
while True:
    time.sleep(1)
"""
    watch = PidWatch(marker)
    r, _ = attack(world, code, hard_limit=12)
    peak = watch.done()
    assert r.status == "timeout" and "hard limit" in r.error, (r.status, r.error)
    # The pids cgroup counts tasks (threads too) of the whole sandbox, harness included. One scan
    # of /proc is not atomic: a process dying and a new one born during it count twice, so allow
    # a few over the cap (uncapped, this bomb filled a 1,500-task safety net within 3 s).
    assert cap // 2 < peak <= cap + 16, f"the bomb had up to {peak} processes (cap {cap})"
    assert_nothing_persisted(world)
    assert processes_with(marker) == []


@pytest.fixture
def small_memory(monkeypatch):
    import dataclasses

    from trainer import profiles
    monkeypatch.setitem(profiles.PROFILES, "cpu", dataclasses.replace(profiles.PROFILES["cpu"], memory_mb=1500))
    return 1500


def test_f_memory_bomb_is_a_crash_with_memory_error(world, small_memory):
    code = """
hoard = []
while True:
    hoard.append(bytearray(64 << 20))
"""
    r, _ = attack(world, code)
    assert r.status == "crash" and "MemoryError" in r.error, (r.status, r.error)
    assert_nothing_persisted(world)


def test_f_shared_memory_bomb_is_a_crash_with_the_limit_named(world, small_memory):
    """MAP_SHARED anonymous memory escapes RLIMIT_DATA; the sandbox's memory cgroup ends it."""
    from trainer import sandbox
    if not {"memory", "v2"} & set(sandbox.cgroup_kinds_available(sandbox.SandboxSpec(world.root, memory_mb=64))):
        pytest.skip("no writable memory cgroup here: RLIMIT_DATA alone cannot stop this one")
    code = """
import mmap
m = mmap.mmap(-1, 8 << 30)
for i in range(0, 8 << 30, 4096):
    m[i] = 1
"""
    r, _ = attack(world, code)
    assert r.status == "crash" and f"memory limit of {small_memory} MB reached" in r.error, (r.status, r.error)
    assert_nothing_persisted(world)
