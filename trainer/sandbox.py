"""The experiment sandbox (locked): bubblewrap around every train.py run and every evaluation.

`wrap(argv, spec)` returns the command line that runs `argv` with new user, PID, network, IPC
and UTS namespaces, uid 65534, a read-only root, `spec.scratch` as the only writable place,
`spec.hidden` replaced by empty tmpfs, exactly `spec.env` as the environment, and limits on
memory and tasks. Start it with `Popen(wrap(...), start_new_session=True, pass_fds=...)` and end
it by killing that process group: the sandbox's PID namespace dies with it, so nothing the run
started (double fork + setsid included) outlives it.

The escape hatch: `swarm run/train --unsafe-no-sandbox` skips `check_sandbox()`, records the
flag in swarm.json and sets `SWARM_UNSAFE_NO_SANDBOX=1` for the agents; the runner reads it
(`unsafe_from_env()`) into `SandboxSpec.unsafe`, and `wrap()` then returns argv unchanged.

How the limits are enforced, as measured on the dev machine (kernel 6.18, cgroup v1 hybrid,
bwrap 0.8 run as root):
- RLIMIT_NPROC does not work: bwrap run as root maps the inside uid 65534 to uid 0 outside,
  and the kernel never applies RLIMIT_NPROC to uid 0 (100 forks passed under `--nproc=20`).
  Running bwrap as an unprivileged uid instead would need the Python install readable by that
  uid (here it lives under /root, mode 700).
- So tasks (threads count: the pids controller counts tasks) are capped by a pids cgroup made
  under the caller's own cgroup (v2 if it delegates `pids`, else v1 `/sys/fs/cgroup/pids`): a
  fork bomb gets EAGAIN and the machine (pid_max 32768 here) keeps its PIDs. Where no cgroup
  is writable, a watchdog outside the sandbox counts its tasks every 20 ms and kills it past
  the cap: the last resort (measured: a Python fork bomb reached 121 tasks under a cap of 64
  before it was killed, 0.45 s after start).
- Memory: RLIMIT_DATA = memory_mb on every process in the sandbox (portable; malloc fails, so
  Python raises MemoryError, a readable crash). Not RLIMIT_AS: CUDA reserves terabytes of
  address space. `import torch` plus a small AdamW step peaks at ~440 MB RSS and runs under
  RLIMIT_DATA = 1000 MB. RLIMIT_DATA misses MAP_SHARED anonymous memory and many processes
  together, so a memory cgroup (same places as pids) also caps the sandbox's total, tmpfs pages
  included (an mmap bomb ends in an OOM kill of the sandbox); /tmp and /dev/shm are size-capped
  tmpfs either way. Without a writable cgroup only RLIMIT_DATA and the tmpfs sizes hold.
- The supervisor that applies these is a stdlib-only `python -I -S -c` between the caller and
  bwrap; it makes the cgroups per launch and removes them after, exits with bwrap's status
  and, when a limit ended the run, writes one line `sandbox: ... limit ...` to stderr (so into
  run.log) first. It starts bwrap with an empty environment: bwrap's own init is PID 1 inside,
  and its /proc/1/environ would otherwise show the caller's secrets.
Kernel surface: a seccomp filter (below) and --disable-userns (no nested user namespaces).
Cost, measured: `python -c pass` takes ~100-150 ms here plain; bare bwrap adds ~5 ms, the
supervisor, mounts and seccomp ~100 ms, the cgroups ~30 ms more; `import torch` 3.4 s -> 3.7 s.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import TrainerError

UNSAFE_ENV = "SWARM_UNSAFE_NO_SANDBOX"   # "1": the swarm was started with --unsafe-no-sandbox
BWRAP_ENV = "SWARM_BWRAP"                # path of the bwrap binary (default: bwrap on PATH)
TMPFS_MB = 512                           # size of the sandbox's /tmp and /dev/shm each
CGROUP_PREFIX = "swarm-sandbox-"
FIX = ("install bubblewrap (apt-get install -y bubblewrap); in Docker run with "
       "--security-opt seccomp=unconfined (or a seccomp profile allowing unshare/clone with "
       "namespace flags) and --security-opt apparmor=unconfined; in Kubernetes set "
       "securityContext.seccompProfile.type: Unconfined and allow user namespaces "
       "(or run the pod privileged); or pass --unsafe-no-sandbox to run train.py unconfined")


class SandboxUnavailable(TrainerError):
    """bubblewrap is missing or cannot make namespaces here (one line: cause and fix)."""


@dataclass
class SandboxSpec:
    scratch: Path                                        # the only writable place, same path inside
    readable: list[Path] = field(default_factory=list)   # extra paths shown read-only (even inside hidden ones)
    hidden: list[Path] = field(default_factory=list)     # replaced by an empty tmpfs (dirs) or /dev/null (files)
    env: dict[str, str] = field(default_factory=dict)    # the ONLY environment inside
    gpu_devices: list[int] = field(default_factory=list) # /dev/nvidiaN for these, plus the control nodes
    memory_mb: int | None = None                         # per process (RLIMIT_DATA) and total (cgroup)
    max_procs: int | None = None                         # tasks (threads included) in the sandbox
    unsafe: bool = False                                 # --unsafe-no-sandbox: wrap() returns argv unchanged


def unsafe_from_env(env: dict[str, str] | None = None) -> bool:
    """True when the swarm was started with --unsafe-no-sandbox (SWARM_UNSAFE_NO_SANDBOX=1)."""
    return (env if env is not None else os.environ).get(UNSAFE_ENV, "") == "1"


def default_hidden() -> list[Path]:
    """Places with credentials that a read-only root would otherwise show: the home's caches and
    configs, cloud and cluster credentials, and the Kubernetes service-account token."""
    home = Path.home()
    names = [".cache", ".ssh", ".config", ".ray", ".aws", ".azure", ".kube", ".docker", ".gnupg",
             ".netrc", ".git-credentials", ".gitconfig", ".pypirc", ".bash_history", ".python_history",
             ".redis", ".rediscli_history", ".huggingface"]
    # /run holds the machine's unix sockets (docker, containerd, dbus, systemd) and k8s secrets
    paths = [home / n for n in names] + [Path("/run"), Path("/var/run")]
    return [p for p in paths if os.path.lexists(p)]


def _bwrap() -> str | None:
    return os.environ.get(BWRAP_ENV) or shutil.which("bwrap")


@functools.cache
def _check(bwrap: str | None) -> str | None:
    if not bwrap:
        return "bubblewrap (bwrap) is not installed"
    if not os.access(bwrap, os.X_OK):
        return f"{bwrap} is not executable"
    argv = [bwrap, "--unshare-all", "--unshare-user", *_opt(bwrap, "--disable-userns"), "--die-with-parent",
            "--new-session", "--ro-bind", "/", "/",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--uid", "65534", "--gid", "65534",
            "--", "/bin/sh", "-c", "test \"$(id -u)\" = 65534"]
    try:
        p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{bwrap} could not run ({e})"
    if p.returncode != 0:
        msg = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return f"bubblewrap cannot make namespaces here ({msg})"
    return None


@functools.cache
def _options(bwrap: str) -> frozenset[str]:
    """The options this bwrap knows (Ubuntu 22.04 ships 0.6, without --size and --disable-userns)."""
    try:
        p = subprocess.run([bwrap, "--help"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(w for w in (p.stdout + p.stderr).split() if w.startswith("--"))


def _opt(bwrap: str, option: str, *args: str) -> list[str]:
    """[option, *args] if this bwrap has `option`, else nothing (an older bwrap: that layer is
    missing, the cgroups and the seccomp filter still hold)."""
    return [option, *args] if option in _options(bwrap) else []


def check_sandbox() -> None:
    """Run a trivial bwrap once (cached per bwrap path). Raises SandboxUnavailable with one
    line naming the cause and the fix."""
    cause = _check(_bwrap())
    if cause:
        raise SandboxUnavailable(f"{cause}: {FIX}")


# --- cgroups ---------------------------------------------------------------------------------

def _own_cgroups() -> dict[str, str]:
    out = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else ["v2"]:
                out[c] = path
    except OSError:
        pass
    return out


def _cgroup_plan(spec: SandboxSpec) -> list[dict]:
    """Where this sandbox's cgroups would go and the limits to write there (no side effects:
    the supervisor makes them per launch, so one wrap() argv can be started again).
    [{parent, kind: v2|pids|memory, limits: {file: value}, optional: {file: value}}]."""
    if spec.max_procs is None and spec.memory_mb is None:
        return []
    own = _own_cgroups()
    root = Path("/sys/fs/cgroup")
    pids = {"pids.max": str(spec.max_procs + 3)} if spec.max_procs else {}  # + supervisor, bwrap's two
    v2 = root if (root / "cgroup.controllers").exists() else root / "unified"
    if "v2" in own and (v2 / "cgroup.controllers").exists():
        parent = v2 / own["v2"].lstrip("/")
        try:
            have = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            have = []
        want = [c for c, on in (("pids", spec.max_procs), ("memory", spec.memory_mb)) if on]
        if want and all(c in have for c in want):
            mem = {"memory.max": str(spec.memory_mb << 20)} if spec.memory_mb else {}
            return [{"parent": str(parent), "kind": "v2", "limits": {**pids, **mem},
                     "optional": {"memory.swap.max": "0"} if spec.memory_mb else {}}]
    plan = []
    if spec.max_procs and "pids" in own:
        plan.append({"parent": str(root / "pids" / own["pids"].lstrip("/")), "kind": "pids",
                     "limits": pids, "optional": {}})
    if spec.memory_mb and "memory" in own:
        plan.append({"parent": str(root / "memory" / own["memory"].lstrip("/")), "kind": "memory",
                     "limits": {"memory.limit_in_bytes": str(spec.memory_mb << 20)},
                     "optional": {"memory.memsw.limit_in_bytes": str(spec.memory_mb << 20)}})
    return plan


def cgroup_kinds_available(spec: SandboxSpec) -> list[str]:
    """The cgroup kinds a sandbox with `spec`'s limits would get here (tries mkdir + rmdir)."""
    out = []
    for cg in _cgroup_plan(spec):
        d = Path(cg["parent"]) / f"{CGROUP_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            d.mkdir()
        except OSError:
            continue
        try:
            out.append(cg["kind"])
        finally:
            d.rmdir()
    return out


# --- seccomp: no AF_UNIX sockets, no io_uring ----------------------------------------------------
# A network namespace does not cover path-based unix sockets, and the sandbox's uid is root
# outside (see above), so any socket it can see (docker.sock, containerd, dbus, a redis socket)
# would answer it, mode 0600 or not. /run is hidden, but a socket can live anywhere: the filter
# refuses socket(AF_UNIX, ...) (EACCES). socketpair() stays allowed (multiprocessing's pipes),
# and its sockets cannot connect elsewhere. io_uring is refused too: it can open sockets
# without the socket() system call. Foreign-ABI calls (i386, x32) are refused.

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_NR_SOCKET = {"x86_64": 41, "aarch64": 198}
_NR_IO_URING = (425, 426, 427)   # setup, enter, register: the same on both
_AF_UNIX = 1


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The compiled cBPF program bwrap loads with --seccomp (None on an unknown architecture)."""
    import platform
    import struct

    machine = machine or platform.machine()
    if machine not in _AUDIT_ARCH:
        return None
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06   # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
    allow, deny = 0x7FFF0000, 0x00050000 | 13    # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EACCES
    prog: list[tuple] = [
        ("ld", 4), ("jeq", _AUDIT_ARCH[machine], "nr", "deny"),
        ("nr:ld", 0),
    ]
    if machine == "x86_64":
        prog.append(("jge", 0x40000000, "deny", None))
    prog.append(("jeq", _NR_SOCKET[machine], "sock", None))
    for nr in _NR_IO_URING:
        prog.append(("jeq", nr, "deny", None))
    prog += [("ret", allow), ("sock:ld", 16), ("jeq", _AF_UNIX, "deny", None), ("ret", allow),
             ("deny:ret", deny)]
    labels = {}
    for i, ins in enumerate(prog):
        if ":" in ins[0]:
            labels[ins[0].split(":")[0]] = i
    out = b""
    for i, ins in enumerate(prog):
        op = ins[0].split(":")[-1]

        def rel(target, i=i):
            return 0 if target is None else labels[target] - i - 1
        if op == "ld":
            out += struct.pack("<HBBI", ld, 0, 0, ins[1])
        elif op == "ret":
            out += struct.pack("<HBBI", ret, 0, 0, ins[1])
        else:
            out += struct.pack("<HBBI", jeq if op == "jeq" else jge, rel(ins[2]), rel(ins[3]), ins[1])
    return out


# --- the supervisor: stdlib only, runs as `python -I -S -c` between the caller and bwrap --------

_SUPERVISOR = r'''
import json, os, resource, signal, sys, time
cfg = json.loads(sys.argv[1]); argv = sys.argv[2:]
me = str(os.getpid())
PREFIX = cfg["prefix"]
made, child = [], None

def cleanup():
    for cg in made:
        try:
            with open(os.path.join(os.path.dirname(cg["dir"]), "cgroup.procs"), "w") as f:
                f.write(me)
        except OSError:
            pass
    for _ in range(50):
        left = [cg for cg in made if os.path.isdir(cg["dir"])]
        for cg in left:
            try:
                os.rmdir(cg["dir"])
            except OSError:
                pass
        if not left:
            break
        time.sleep(0.02)

def stop(signum, frame):
    # the caller's SIGTERM: end the sandbox and remove the cgroups (SIGKILL leaves them to sweep)
    if child:
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except OSError:
            pass
    cleanup()
    os._exit(128 + signum)

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

def sweep(parent):
    # cgroups left by supervisors that were SIGKILLed: rmdir succeeds only on an empty one
    try:
        for n in os.listdir(parent):
            d = os.path.join(parent, n)
            if n.startswith(PREFIX) and time.time() - os.stat(d).st_mtime > 120:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
    except OSError:
        pass

for cg in cfg["cgroups"]:
    sweep(cg["parent"])
    d = os.path.join(cg["parent"], "%s%s-%s" % (PREFIX, me, os.urandom(3).hex()))
    try:
        os.mkdir(d)
    except OSError:
        continue
    try:
        for k, v in cg["limits"].items():
            with open(os.path.join(d, k), "w") as f:
                f.write(v)
        for k, v in cg["optional"].items():
            try:
                with open(os.path.join(d, k), "w") as f:
                    f.write(v)
            except OSError:
                pass
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(me)
        made.append({"dir": d, "kind": cg["kind"]})
    except OSError:
        try:
            os.rmdir(d)
        except OSError:
            pass
# no pids cgroup: the watchdog (it counts bwrap's outer and inner processes too)
watch = cfg["max_procs"] + 2 if cfg["max_procs"] and not any(c["kind"] in ("pids", "v2") for c in made) else 0
if cfg["data"]:
    resource.setrlimit(resource.RLIMIT_DATA, (cfg["data"], cfg["data"]))
if cfg["seccomp"]:
    sfd = os.memfd_create("swarm-seccomp", 0)
    os.write(sfd, bytes.fromhex(cfg["seccomp"]))
    os.lseek(sfd, 0, 0)
    os.set_inheritable(sfd, True)
    argv[1:1] = ["--seccomp", str(sfd)]
child = os.fork()
if child == 0:
    try:  # bwrap's own init (PID 1 inside) keeps the environment it was started with: none
        os.execve(argv[0], argv, {})
    finally:
        os._exit(127)

def tasks(root):
    n, todo, seen = 0, [root], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for t in os.listdir("/proc/%d/task" % p):
                n += 1
                try:
                    with open("/proc/%d/task/%s/children" % (p, t)) as f:
                        todo.extend(int(c) for c in f.read().split())
                except OSError:
                    pass
        except OSError:
            pass
    return n

def reason():
    for cg in made:
        try:
            if cg["kind"] == "memory":  # failcnt also counts reclaim at the limit: OOM kills only
                with open(os.path.join(cg["dir"], "memory.oom_control")) as f:
                    ev = dict(l.split() for l in f if l.strip())
                if int(ev.get("oom_kill", ev.get("under_oom", 0))) > 0:
                    return "memory limit of %d MB reached" % cfg["memory_mb"]
            elif cg["kind"] == "pids":
                with open(os.path.join(cg["dir"], "pids.events")) as f:
                    if int(f.read().split()[-1]) > 0:
                        return "process limit of %d tasks reached" % cfg["max_procs"]
            else:
                with open(os.path.join(cg["dir"], "memory.events")) as f:
                    ev = dict(l.split() for l in f if l.strip())
                if int(ev.get("oom_kill", 0)):
                    return "memory limit of %d MB reached" % cfg["memory_mb"]
                with open(os.path.join(cg["dir"], "pids.events")) as f:
                    if int(f.read().split()[-1]) > 0:
                        return "process limit of %d tasks reached" % cfg["max_procs"]
        except (OSError, ValueError, IndexError):
            pass
    return None

while True:
    pid, status = os.waitpid(child, 0 if not watch else os.WNOHANG)  # blocking: no exit latency
    if pid:
        break
    if tasks(child) > watch:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        sys.stderr.write("sandbox: process limit of %d tasks reached; the sandbox was killed\n" % (watch - 2))
        cleanup()
        os._exit(137)
    time.sleep(0.02)
why = reason()
cleanup()
code = os.waitstatus_to_exitcode(status)
code = 128 - code if code < 0 else code
if why and code != 0:
    sys.stderr.write("sandbox: %s\n" % why)
sys.exit(code)
'''


def _code_binds() -> list[str]:
    """Read-only binds that put back the code the sandbox runs where the private /tmp would
    hide it: the folder holding the `trainer` package (a checkout or clone under /tmp, as a CI
    clone may be) and the Python install with its site-packages (a venv under /tmp). They come
    before the hidden paths, so a hidden path inside one (a ./.swarm in a checkout) stays hidden."""
    import site

    import trainer

    roots = {Path(trainer.__file__).resolve().parent.parent, Path(sys.prefix).resolve(),
             Path(sys.base_prefix).resolve(), *(Path(s).resolve() for s in site.getsitepackages())}
    tmp = Path("/tmp")
    under = sorted(r for r in roots if tmp in r.parents and r.is_dir())
    args: list[str] = []
    for r in under:
        if not any(a in under for a in r.parents):
            args += ["--ro-bind", str(r), str(r)]
    return args


def _bind_args(spec: SandboxSpec) -> list[str]:
    args: list[str] = []
    scratch = Path(spec.scratch).resolve()
    wanted = {Path(h).resolve() for h in [*default_hidden(), *spec.hidden] if os.path.lexists(h)}
    # a path inside a hidden folder is hidden already: a /dev/null stand-in would make it appear
    for h in sorted(p for p in wanted if not any(a in wanted for a in p.parents)):
        if h == scratch or h in scratch.parents:
            # hiding a parent of scratch: the tmpfs first, scratch is bound back on top below
            args += ["--tmpfs", str(h)]
        elif h.is_dir():
            args += ["--tmpfs", str(h)]
        else:
            args += ["--ro-bind", "/dev/null", str(h)]
    args += ["--bind", str(scratch), str(scratch)]
    for r in spec.readable:
        r = Path(r).resolve()
        args += ["--ro-bind", str(r), str(r)]
    return args


def _gpu_args(spec: SandboxSpec) -> list[str]:
    if not spec.gpu_devices:
        return []
    args = []
    for i in spec.gpu_devices:
        args += ["--dev-bind", f"/dev/nvidia{int(i)}", f"/dev/nvidia{int(i)}"]
    for n in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"):
        args += ["--dev-bind-try", f"/dev/{n}", f"/dev/{n}"]
    return args


def wrap(argv: list[str], spec: SandboxSpec) -> list[str]:
    """The full command line that runs argv in the sandbox (argv unchanged when spec.unsafe).
    Fds passed with Popen(pass_fds=...) stay usable inside; the working directory must be
    visible inside (scratch is). Raises SandboxUnavailable when bwrap is missing."""
    if spec.unsafe:
        return list(argv)
    bwrap = _bwrap()
    if not bwrap:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {FIX}")
    size = _opt(bwrap, "--size", str(TMPFS_MB << 20))
    inner = [bwrap, "--unshare-all", "--unshare-user", *_opt(bwrap, "--disable-userns"),
             "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             *size, "--tmpfs", "/dev/shm", *_gpu_args(spec), "--remount-ro", "/dev", *size, "--tmpfs", "/tmp",
             *_code_binds(), *_bind_args(spec), "--chdir", str(Path(spec.scratch).resolve()),
             "--uid", "65534", "--gid", "65534", "--clearenv"]
    for k, v in spec.env.items():
        inner += ["--setenv", k, v]
    inner += ["--", *argv]
    bpf = seccomp_filter()
    cfg = {"cgroups": _cgroup_plan(spec), "prefix": CGROUP_PREFIX,
           "data": (spec.memory_mb << 20) if spec.memory_mb else 0, "seccomp": bpf.hex() if bpf else "",
           "memory_mb": spec.memory_mb, "max_procs": spec.max_procs}
    return [sys.executable, "-I", "-S", "-c", _SUPERVISOR, json.dumps(cfg), *inner]
