"""The sandbox itself (trainer.sandbox), with real bubblewrap and a real `python -c` inside."""
from __future__ import annotations

import json
import os
import signal
import site
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.busy_children import BUSY_CHILDREN, cpu_share
from trainer import sandbox
from trainer.sandbox import SandboxSpec, SandboxUnavailable, check_sandbox, wrap

PY_ENV = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}


def run_in(spec: SandboxSpec, code: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    argv = wrap([sys.executable, "-I", "-c", textwrap.dedent(code)], spec)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, start_new_session=True, **kw)


def out_json(p: subprocess.CompletedProcess):
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def spec(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return SandboxSpec(scratch=scratch, env=dict(PY_ENV))


def test_check_sandbox_passes_here():
    check_sandbox()


def test_runs_as_nobody_with_exactly_its_env(spec):
    spec.env["ONLY_THIS"] = "yes"
    p = run_in(spec, "import os, json; print(json.dumps([os.getuid(), os.getgid()]))")
    assert out_json(p) == [65534, 65534]
    env = subprocess.run(wrap(["/usr/bin/env", "-0"], spec), capture_output=True, timeout=60)
    got = dict(kv.split("=", 1) for kv in env.stdout.decode().split("\0") if kv)
    # bwrap sets PWD to the working directory (scratch); nothing else is added
    assert got == {**spec.env, "PWD": str(spec.scratch.resolve())}


def test_proc_shows_only_the_sandbox(spec, monkeypatch):
    monkeypatch.setenv("SWARM_TEST_PARENT_SECRET", "sk-parent-secret-123")
    p = run_in(spec, """
        import os, json
        pids = sorted(int(d) for d in os.listdir('/proc') if d.isdigit())
        environs = []
        for pid in pids:
            try:
                environs.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin1'))
            except OSError:
                pass
        print(json.dumps({'pids': pids, 'ppid': os.getppid(), 'env': environs}))
    """, env={**os.environ, "SWARM_TEST_PARENT_SECRET": "sk-parent-secret-123"})
    got = out_json(p)
    assert max(got["pids"]) < 10 and os.getpid() not in got["pids"]  # own PID namespace
    assert "sk-parent-secret-123" not in json.dumps(got["env"]) + p.stdout + p.stderr


def test_writes_outside_scratch_fail(spec, tmp_path, prepared_data_dir):
    targets = [site.getsitepackages()[0], str(Path(sandbox.__file__).parent), str(prepared_data_dir),
               str(Path.home()), str(tmp_path), "/usr/lib", "/etc", "/dev", "/sys/fs/cgroup"]
    p = run_in(spec, f"""
        import os, json
        res = {{}}
        for d in {targets!r}:
            try:
                with open(os.path.join(d, 'sandbox-wrote-here'), 'w') as f:
                    f.write('x')
                res[d] = 'wrote'
            except OSError as e:
                res[d] = type(e).__name__
        with open('in-scratch', 'w') as f:
            f.write('ok')
        with open('/tmp/in-tmp', 'w') as f:
            f.write('ok')
        print(json.dumps(res))
    """)
    res = out_json(p)
    # scratch's parent lies in the sandbox's own /tmp tmpfs: a write there lands in that tmpfs
    assert all(v != "wrote" for d, v in res.items() if d != str(tmp_path)), res
    assert not any(Path(t, "sandbox-wrote-here").exists() for t in targets)
    assert (spec.scratch / "in-scratch").read_text() == "ok"


def test_hidden_paths_look_empty_and_readable_shows_one_file(spec, tmp_path):
    secret_dir = tmp_path / "home"
    (secret_dir / "repo").mkdir(parents=True)
    (secret_dir / "repo" / "HEAD").write_text("ref")
    (secret_dir / "token.bin").write_text("val-data")
    spec.hidden = [secret_dir]
    spec.readable = [secret_dir / "token.bin"]
    p = run_in(spec, f"""
        import os, json
        print(json.dumps([sorted(os.listdir({str(secret_dir)!r})), open({str(secret_dir / 'token.bin')!r}).read()]))
    """)
    assert out_json(p) == [["token.bin"], "val-data"]


def test_hidden_paths_inside_something_shown_are_masked(spec, monkeypatch):
    """The allow-list shows a folder (in a run: the Python install, whose site-packages hold the
    bundled corpus; here one more folder); hidden paths inside it are masked: a folder empty, a
    file inside a masked folder not even a /dev/null stand-in. A hidden path outside everything
    shown is simply not there (a /dev/null bind would make it appear)."""
    data = Path("/var/tmp") / f"swarm-hidden-{os.getpid()}"
    (data / "prep").mkdir(parents=True, exist_ok=True)
    (data / "prep" / "val.tokens.npy").write_bytes(b"held-out")
    (data / "lone.txt").write_text("x")
    (data / "raw.txt").write_text("raw corpus")
    roots = sandbox.visible_roots()
    monkeypatch.setattr(sandbox, "visible_roots", lambda: [*roots, data.resolve()])
    spec.hidden = [data / "prep" / "val.tokens.npy", data / "prep", data / "raw.txt", Path("/etc/hostname")]
    try:
        p = run_in(spec, f"""
            import os, json
            out = {{}}
            for f in ('/etc/hostname', {str(data / 'raw.txt')!r}, {str(data / 'lone.txt')!r}):
                try:
                    out[f] = open(f).read()
                except OSError as e:
                    out[f] = type(e).__name__
            print(json.dumps([sorted(os.listdir({str(data)!r})), os.listdir({str(data / 'prep')!r}),
                              os.path.exists({str(data / 'prep' / 'val.tokens.npy')!r}), out]))
        """)
        got = out_json(p)
        assert got[:3] == [["lone.txt", "prep", "raw.txt"], [], False]
        # a masked file is /dev/null on a nodev mount: unreadable
        assert got[3] == {"/etc/hostname": "FileNotFoundError", str(data / "raw.txt"): "PermissionError",
                          str(data / "lone.txt"): "x"}
    finally:
        import shutil
        shutil.rmtree(data)


def test_the_home_shows_only_the_way_to_the_python_install(spec):
    """~/.cache, ~/.bashrc, ~/.ssh and everything else in the user's home are not there; only
    the folders leading to what the sandbox needs (a Python install under the home)."""
    home = Path.home().resolve()
    roots = sandbox.visible_roots()
    needed = sorted({r.relative_to(home).parts[0] for r in roots if home in r.parents})
    p = run_in(spec, f"""
        import os, json
        try:
            ls = sorted(os.listdir({str(home)!r}))
        except OSError as e:
            ls = type(e).__name__
        out = {{}}
        for n in ('.bashrc', '.profile', '.cache', '.ssh', '.env'):
            out[n] = os.path.exists(os.path.join({str(home)!r}, n))
        print(json.dumps([ls, out]))
    """)
    ls, out = out_json(p)
    assert ls == (needed if needed else "FileNotFoundError"), ls
    assert not any(out.values()), out


def test_the_root_is_an_allow_list(spec):
    """Only the system's programs and libraries, a few files of /etc, the CPU topology, the
    Python install and the trainer package (and the ways to them) are there, read-only."""
    roots = sandbox.visible_roots()
    firsts = {r.parts[1] for r in roots} | {Path(spec.scratch).resolve().parts[1]}
    allowed = firsts | {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp", "sys"}
    p = run_in(spec, """
        import os, json
        out = {"/": sorted(os.listdir("/")), "/etc": sorted(os.listdir("/etc")), "/sys": sorted(os.listdir("/sys"))}
        for d in ("/", "/etc", "/usr"):
            try:
                open(os.path.join(d, "sandbox-wrote-here"), "w")
                out["write " + d] = "wrote"
            except OSError as e:
                out["write " + d] = type(e).__name__
        print(json.dumps(out))
    """)
    got = out_json(p)
    assert set(got["/"]) <= allowed, set(got["/"]) - allowed
    for gone in ("home", "root", "var", "opt", "srv", "mnt", "media", "work", "run", "boot"):
        assert gone not in got["/"] or gone in firsts, gone
    assert set(got["/etc"]) <= set(sandbox.ETC_FILES), got["/etc"]
    assert got["/sys"] == ["devices"]
    assert all(v != "wrote" for k, v in got.items() if k.startswith("write ")), got


def test_no_network(spec):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        p = run_in(spec, f"""
            import socket, json
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=3)
                print(json.dumps('connected'))
            except OSError as e:
                print(json.dumps(type(e).__name__))
        """)
        assert out_json(p) != "connected"
        srv.settimeout(0.5)
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()


def test_host_unix_sockets_are_unreachable(spec):
    """A network namespace does not cover path-based unix sockets, and the sandbox's uid is root
    outside: a visible socket (docker.sock, containerd, dbus...) would be a way out. The sandbox
    cannot create AF_UNIX sockets (seccomp) and /run is empty inside."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="swarm-sock-", dir="/var/tmp"))
    path = d / "host.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    path.chmod(0o600)
    try:
        p = run_in(spec, f"""
            import json, os, socket
            out = {{}}
            try:
                c = socket.socket(socket.AF_UNIX)
                c.connect({str(path)!r})
                out["unix"] = "CONNECTED"
            except OSError as e:
                out["unix"] = type(e).__name__
            a, b = socket.socketpair()  # multiprocessing's pipes still work
            a.send(b"x")
            out["pair"] = b.recv(1).decode()
            out["run"] = sorted(os.listdir("/run")) if os.path.isdir("/run") else None
            print(json.dumps(out))
        """)
        got = out_json(p)
        assert got["unix"] != "CONNECTED" and got["pair"] == "x" and got["run"] in ([], None), got
        srv.settimeout(0.2)
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()
        path.unlink()
        d.rmdir()


def test_no_nested_user_namespaces(spec):
    """A user namespace inside would give the hostile code capabilities there: mounts, netfilter,
    and much more kernel to attack."""
    p = run_in(spec, """
        import ctypes, json
        libc = ctypes.CDLL(None, use_errno=True)
        print(json.dumps(libc.unshare(0x10000000)))  # CLONE_NEWUSER
    """)
    assert out_json(p) == -1


def test_passed_fd_stays_usable(spec):
    r, w = os.pipe()
    argv = wrap([sys.executable, "-I", "-c", f"import os; os.write({w}, b'hello')"], spec)
    p = subprocess.Popen(argv, pass_fds=(w,), start_new_session=True)
    os.close(w)
    assert p.wait(timeout=60) == 0
    assert os.read(r, 100) == b"hello"
    os.close(r)


def test_double_fork_setsid_grandchild_dies_with_the_group(spec):
    marker = spec.scratch / "grandchild.pid"
    code = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open({str(marker)!r}, 'w') as f:
                    f.write(str(os.getpid()))
                while True:
                    time.sleep(0.1)
                    with open({str(spec.scratch / 'alive')!r}, 'w') as f:
                        f.write(str(time.time()))
            os._exit(0)
        time.sleep(600)
    """
    before = set(_all_pids())
    p = subprocess.Popen(wrap([sys.executable, "-I", "-c", textwrap.dedent(code)], spec), start_new_session=True)
    t = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < t:
        time.sleep(0.05)
    assert marker.exists()
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    time.sleep(0.5)
    alive = spec.scratch / "alive"
    stamp = alive.read_text() if alive.exists() else None
    time.sleep(0.5)
    assert (alive.read_text() if alive.exists() else None) == stamp  # nobody writes any more
    assert _new_descendants(before) == set() and _with_cmdline(str(marker)) == []


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _with_cmdline(text: str) -> list[int]:
    """Live (non-zombie) processes anywhere on the machine whose command line contains `text`."""
    found = []
    for pid in _all_pids():
        try:
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def _new_descendants(before: set[int]) -> set[int]:
    """New processes still alive whose ancestry leads to this test process (a process that
    vanishes while we look is not left behind)."""
    me, out = os.getpid(), set()
    for pid in set(_all_pids()) - before:
        p = pid
        for _ in range(64):
            try:
                p = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
            if p == me:
                out.add(pid)
                break
            if p <= 1:
                break
    return out


def test_fork_bomb_ends_and_machine_keeps_pids(spec):
    spec.max_procs = 64
    before = set(_all_pids())
    tag = f"# bomb {spec.scratch}"
    argv = wrap([sys.executable, "-I", "-c", f"import os\nwhile True:\n    os.fork()\n{tag}"], spec)
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        # a bomb held at the cap runs until its owner kills the group (the runner's hard limit)
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait(timeout=10)
    err = proc.stderr.read()
    assert rc != 0
    time.sleep(0.5)
    assert _new_descendants(before) == set() and _with_cmdline(tag) == []
    assert "process limit of 64 tasks reached" in err or "BlockingIOError" in err, err[-2000:]


def test_memory_hog_ends_with_a_reason(spec):
    spec.memory_mb = 300
    p = run_in(spec, """
        chunks = []
        while True:
            chunks.append(bytearray(20 << 20))
    """, timeout=60)
    assert p.returncode != 0
    assert "MemoryError" in p.stderr or "memory limit of 300 MB" in p.stderr


def test_shared_memory_bomb_is_stopped_by_the_memory_cgroup(spec):
    """MAP_SHARED anonymous memory is not counted by RLIMIT_DATA; the memory cgroup counts it."""
    spec.memory_mb, spec.max_procs = 400, 64
    argv = wrap([sys.executable, "-I", "-c", "import mmap\nm = mmap.mmap(-1, 2 << 30)\n"
                 "for i in range(0, 2 << 30, 4096):\n    m[i] = 1\nprint('survived')"], spec)
    if not {"memory", "v2"} & set(sandbox.cgroup_kinds_available(spec)):
        pytest.skip("no writable memory cgroup here")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert p.returncode == 137 and "survived" not in p.stdout
    assert p.stderr.strip().splitlines()[-1] == "sandbox: memory limit of 400 MB reached"


def test_torch_trains_under_the_limits(spec):
    spec.memory_mb, spec.max_procs = 2000, 256
    spec.env["OMP_NUM_THREADS"] = "2"
    p = run_in(spec, """
        import json, torch, torch.nn as nn
        m = nn.Sequential(nn.Embedding(1024, 128), nn.Linear(128, 1024))
        opt = torch.optim.AdamW(m.parameters())
        x = torch.randint(0, 1024, (16, 256))
        for _ in range(3):
            loss = nn.functional.cross_entropy(m(x).view(-1, 1024), x.view(-1))
            loss.backward(); opt.step(); opt.zero_grad()
        print(json.dumps(loss.item()))
    """, timeout=180)
    assert out_json(p) > 0


def test_scratch_quota_refuses_8_gib_and_the_runner_reads_what_was_written(spec):
    """With quota_mb the scratch is a private tmpfs of that size: an 8 GiB fallocate fails there
    (and in /tmp, /dev/shm and the read-only rest); the files a run wrote are read from outside
    through open_scratch's fd after the sandbox is dead, and nothing lands in the host folder."""
    import threading

    from trainer import proctree
    spec.quota_mb = 64
    code = """
        import json, os, time
        out = {"cwd": os.getcwd()}
        for d in ("/scratch", "/tmp", "/dev/shm", "/", os.environ.get("HOME", "/")):
            try:
                fd = os.open(os.path.join(d, "big"), os.O_CREAT | os.O_WRONLY, 0o600)
                try:
                    os.posix_fallocate(fd, 0, 8 << 30)
                    out[d] = "allocated"
                finally:
                    os.close(fd)
                    os.unlink(os.path.join(d, "big"))
            except OSError as e:
                out[d] = e.errno
        try:
            with open("/scratch/fill", "wb") as f:
                for _ in range(80):
                    f.write(bytes(1 << 20))
            out["fill"] = "wrote 80 MB"
        except OSError as e:
            out["fill"] = e.errno
        os.unlink("/scratch/fill")
        with open("/scratch/model.pt2", "w") as f:
            f.write("MODEL")
        print(json.dumps(out), flush=True)
        time.sleep(0.5)
    """
    argv = wrap([sys.executable, "-I", "-c", textwrap.dedent(code)], spec)
    p = subprocess.Popen(argv, cwd=spec.scratch, stdout=subprocess.PIPE, text=True, start_new_session=True)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(p.stdout.read()), daemon=True)
    reader.start()
    pid = proctree.wait_for(p.pid, lambda a: a[1:3] == [b"-I", b"-c"] and b"posix_fallocate" in a[3], 60)
    assert pid is not None
    fd = sandbox.open_scratch(pid, 64)
    try:
        assert p.wait(timeout=120) == 0
        reader.join(timeout=10)
        out = json.loads(got[0].strip().splitlines()[-1])
        assert out["cwd"] == "/scratch"
        assert out["/scratch"] == 28 and out["/tmp"] == 28 and out["/dev/shm"] == 28, out  # ENOSPC
        assert out["/"] == 30 and out["fill"] == 28, out  # EROFS, ENOSPC
        assert open(os.open("model.pt2", os.O_RDONLY, dir_fd=fd)).read() == "MODEL"
        assert list(spec.scratch.iterdir()) == []
    finally:
        os.close(fd)


def test_cpu_share_caps_what_threads_can_take(spec):
    """Two busy processes in a sandbox with a share of 0.5 CPU get about 0.5 CPU between them,
    however many cores are free (a CFS quota; where no cpu cgroup is writable, the affinity
    fallback below)."""
    if not sandbox.cgroup_kinds_available(SandboxSpec(spec.scratch, cpus=0.5)):  # a plan of the cpu cgroup only
        pytest.skip("no writable cpu cgroup here")
    spec.cpus = 0.5
    p = run_in(spec, BUSY_CHILDREN, timeout=120)
    assert p.returncode == 0, p.stderr
    share = cpu_share(p.stdout)
    assert share < 0.65, share  # unlimited: up to 2.0 where two cores are free


def test_cpu_share_without_a_cgroup_pins_the_sandbox_and_refuses_widening(spec, monkeypatch):
    """The fallback: ceil(share) cores of the caller's affinity, and sched_setaffinity refused
    inside (seccomp), so more threads cannot spread over more cores."""
    monkeypatch.setattr(sandbox, "_cgroup_plan", lambda spec: [])
    spec.cpus = 1
    p = run_in(spec, """
        import json, os
        before = sorted(os.sched_getaffinity(0))
        try:
            os.sched_setaffinity(0, set(range(os.cpu_count())))
            widened = sorted(os.sched_getaffinity(0))
        except OSError as e:
            widened = e.errno
        print(json.dumps([before, widened]))
    """)
    before, widened = out_json(p)
    assert len(before) == 1 and set(before) <= os.sched_getaffinity(0)
    assert widened == 13  # EACCES


def test_cgroups_are_removed_after_the_run_and_argv_can_be_reused(spec):
    spec.memory_mb, spec.max_procs, spec.cpus = 500, 32, 1
    argv = wrap([sys.executable, "-I", "-c", "pass"], spec)
    parents = [Path(c["parent"]) for c in json.loads(argv[5])["cgroups"]]
    for _ in range(2):  # the supervisor makes the cgroups per launch
        p = subprocess.Popen(argv)
        assert p.wait(timeout=60) == 0
        assert not [d for parent in parents for d in parent.glob(f"{sandbox.CGROUP_PREFIX}{p.pid}-*")]


def test_unsafe_returns_argv_unchanged(spec):
    spec.unsafe = True
    assert wrap(["python", "-c", "pass"], spec) == ["python", "-c", "pass"]
    assert sandbox.unsafe_from_env({"SWARM_UNSAFE_NO_SANDBOX": "1"})
    assert not sandbox.unsafe_from_env({})


def test_check_sandbox_names_cause_and_fix(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(fake))
    with pytest.raises(SandboxUnavailable) as e:
        check_sandbox()
    msg = str(e.value)
    assert "\n" not in msg and "cannot make namespaces" in msg and "seccomp" in msg
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(tmp_path / "missing"))
    with pytest.raises(SandboxUnavailable, match="not executable"):
        check_sandbox()


def test_fork_bomb_without_cgroups_is_killed_by_the_watchdog(spec, monkeypatch, tmp_path):
    """Where no cgroup is writable, the supervisor's watchdog kills the sandbox past the cap. The
    test itself runs inside a pids cgroup of 1000 as a safety net for the machine."""
    net = Path("/sys/fs/cgroup/pids") / f"swarm-test-net-{os.getpid()}"
    try:
        net.mkdir()
        (net / "pids.max").write_text("1000")
    except OSError:
        pytest.skip("no writable pids cgroup for the safety net")
    monkeypatch.setattr(sandbox, "_cgroup_plan", lambda spec: [])
    spec.max_procs = 64
    argv = wrap([sys.executable, "-I", "-c", "import os\nwhile True:\n    os.fork()"], spec)
    assert json.loads(argv[5])["cgroups"] == []

    def join():
        (net / "cgroup.procs").write_text(str(os.getpid()))
    try:
        proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.PIPE, text=True, preexec_fn=join)
        rc = proc.wait(timeout=60)
        err = proc.stderr.read()
        assert rc == 137 and "sandbox: process limit of 64 tasks reached; the sandbox was killed" in err
        t = time.monotonic() + 10
        while int((net / "pids.current").read_text()) and time.monotonic() < t:
            time.sleep(0.05)
        assert int((net / "pids.current").read_text()) == 0
    finally:
        for _ in range(100):
            try:
                net.rmdir()
                break
            except OSError:
                time.sleep(0.05)


# --- the CLI gate: no sandbox, no run (unless --unsafe-no-sandbox, which is recorded) ---------

ROOT = Path(__file__).resolve().parent.parent


def swarm_cli(args: list[str], env_extra: dict[str, str], tmp_path: Path, timeout: float = 300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    env.pop(sandbox.UNSAFE_ENV, None)
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def failing_bwrap(tmp_path):
    fake = tmp_path / "fake-bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    return {sandbox.BWRAP_ENV: str(fake)}


def test_swarm_train_exits_2_with_one_line_where_bwrap_fails(tmp_path, failing_bwrap, prepared_data_dir):
    p = swarm_cli(["train", "--budget", "3", "--data-dir", str(prepared_data_dir)], failing_bwrap, tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swarm train: error: bubblewrap cannot make namespaces")
    assert "Operation not permitted" in lines[0] and "--unsafe-no-sandbox" in lines[0]
    assert not (tmp_path / ".swarm").exists()


def test_swarm_train_exits_2_where_bwrap_is_not_installed(tmp_path, prepared_data_dir):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "git").symlink_to("/usr/bin/git")
    p = swarm_cli(["train", "--budget", "3", "--data-dir", str(prepared_data_dir)],
                  {"PATH": str(bindir)}, tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "bubblewrap (bwrap) is not installed" in lines[0] and "apt-get install" in lines[0]


def test_swarm_run_exits_2_before_creating_anything(tmp_path, failing_bwrap):
    home = tmp_path / "home"
    p = swarm_cli(["run", "--agents", "1", "--budget", "3", "--max-experiments", "1", "--plain",
                   "--swarm-home", str(home)], failing_bwrap, tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("swarm run: error: bubblewrap cannot make namespaces"), p.stderr
    assert not home.exists()


def test_swarm_train_unsafe_runs_without_the_sandbox(tmp_path, failing_bwrap, prepared_data_dir):
    # the tiny bigram on one thread (the baseline on every core took 97 s on a loaded machine):
    # the claim is the unsandboxed path, not the baseline
    from test_runner import TINY
    (tmp_path / "tiny.py").write_text(TINY)
    p = swarm_cli(["train", str(tmp_path / "tiny.py"), "--unsafe-no-sandbox", "--budget", "3", "--max-steps", "3",
                   "--threads", "1",
                   "--data-dir", str(prepared_data_dir), "--run-dir", str(tmp_path / "run")],
                  failing_bwrap, tmp_path)
    assert "--unsafe-no-sandbox: train.py runs without the sandbox" in p.stderr
    assert p.returncode == 0, p.stderr[-3000:]
    assert "val_bpb" in p.stdout


def test_unsafe_flag_is_planned_recorded_and_shown(tmp_path, failing_bwrap, monkeypatch, capsys, redis_url):
    from coordinator.cli import build_parser, main
    from coordinator.run.swarm import plan
    from coordinator.state.home import SwarmHome

    for k, v in failing_bwrap.items():
        monkeypatch.setenv(k, v)
    home = SwarmHome(tmp_path / "home")
    args = build_parser().parse_args(["run", "--unsafe-no-sandbox", "--agents", "1", "--budget", "3",
                                      "--profile", "cpu", "--swarm-home", str(home.root)])
    p = plan(args)  # the failing bwrap is not even tried
    assert p.unsafe
    args = build_parser().parse_args(["run", "--agents", "1", "--budget", "3", "--profile", "cpu",
                                      "--swarm-home", str(home.root)])
    with pytest.raises(SandboxUnavailable):
        plan(args)

    home.create_or_resume(None, profile="cpu", budget=3.0, unsafe=True)
    assert json.loads(home.info_path.read_text())["unsafe_no_sandbox"] is True
    home.create_or_resume(None, profile="cpu", budget=3.0)  # a later safe run does not erase it
    assert home.info()["unsafe_no_sandbox"] is True and home.info()["unsafe_runs"] == [1]
    capsys.readouterr()
    assert main(["status", "--swarm-home", str(home.root), "--redis-url", redis_url]) == 0
    out = capsys.readouterr().out
    assert "--unsafe-no-sandbox" in out and "WARNING" in out
    assert main(["status", "--json", "--swarm-home", str(home.root), "--redis-url", redis_url]) == 0
    assert json.loads(capsys.readouterr().out)["unsafe_no_sandbox"] is True


def test_report_shows_the_unsafe_warning(tmp_path):
    import networkx as nx

    from coordinator.review.report.html import build_report
    from coordinator.state.home import unsafe_warning
    from coordinator.state.repo import ResearchRepo

    repo = ResearchRepo(tmp_path / "repo.git")
    root = repo.create("print('x')\n")
    rows = [{"experiment_id": "e1", "status": "crash", "commit": root, "agent": "a0", "program": "baseline",
             "hardware_class": "cpu-x", "ts": 1.0}]
    G = nx.DiGraph()
    warning = unsafe_warning({"unsafe_no_sandbox": True, "unsafe_runs": [2]})
    page = build_report(rows, G, repo_path=repo.path, swarm_home=tmp_path, out_dir=tmp_path / "r",
                        warning=warning).read_text()
    assert 'id="unsafe-warning"' in page and "run(s) 2 of this swarm used --unsafe-no-sandbox" in page
    safe = build_report(rows, G, repo_path=repo.path, swarm_home=tmp_path, out_dir=tmp_path / "s").read_text()
    assert 'id="unsafe-warning"' not in safe


def test_an_older_bwrap_gets_only_the_options_it_knows(tmp_path, monkeypatch, spec):
    """Ubuntu 22.04 ships bwrap 0.6: no --size, no --disable-userns."""
    old = tmp_path / "bwrap-0.6"
    old.write_text("#!/bin/sh\necho 'usage: bwrap [OPTIONS...] [--] COMMAND [ARGS...]\n"
                   "    --unshare-all --uid UID --tmpfs DEST --seccomp FD'\n")
    old.chmod(0o755)
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(old))
    argv = wrap(["true"], spec)
    assert str(old) in argv and "--size" not in argv and "--disable-userns" not in argv
    monkeypatch.setenv(sandbox.BWRAP_ENV, "/usr/bin/bwrap")
    argv = wrap(["true"], spec)
    assert "--size" in argv and "--disable-userns" in argv


def test_code_under_tmp_stays_visible_but_the_checkout_around_it_does_not(tmp_path):
    """A checkout under /tmp (a CI clone) must still import inside the sandbox, whose /tmp is
    private; of the checkout only the trainer package is there (not its .swarm, not its .env)."""
    import shutil

    import trainer
    clone = tmp_path / "clone"
    shutil.copytree(Path(trainer.__file__).parent, clone / "trainer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (clone / ".swarm").mkdir()
    (clone / ".swarm" / "secret.txt").write_text("s3cret")
    (clone / ".env").write_text("OPENAI_API_KEY=sk-in-dot-env\n")
    (tmp_path / "scratch").mkdir()
    probe = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(clone)!r})
        from trainer import sandbox
        spec = sandbox.SandboxSpec(scratch=sandbox.Path({str(tmp_path / 'scratch')!r}),
                                   hidden=[sandbox.Path({str(clone / '.swarm')!r})])
        inner = ("import sys, os; sys.path.insert(0, {str(clone)!r}); import trainer; "
                 "print(trainer.__file__); print(sorted(os.listdir({str(clone)!r})))")
        os.execv(sys.executable, sandbox.wrap([sys.executable, "-I", "-c", inner], spec))
    """)
    p = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split("\n")[0] == str(clone / "trainer" / "__init__.py")
    assert p.stdout.split("\n")[1] == "['trainer']"  # not the checkout's .swarm nor its .env
