"""The experiment sandbox (locked): bubblewrap around every train.py run and every evaluation.

`wrap(argv, spec)` returns the command line that runs `argv` with new user, PID, network, IPC
and UTS namespaces, uid 65534, exactly `spec.env` as the environment, and limits on memory,
tasks and CPU (trainer/limits.py). Start it with `Popen(wrap(...), start_new_session=True,
pass_fds=...)` and end it by killing that process group: the sandbox's PID namespace dies with
it, so nothing the run started (double fork + setsid included) outlives it.

What the sandbox sees is an allow-list, not the machine minus a deny-list: an empty root
(read-only) holding only what a run needs, read-only: the system's programs and libraries
(/usr, /bin, /lib*), a few files of /etc (the loader's cache, passwd, timezone), the CPU
topology under /sys (all of /sys on GPU: the driver reads PCI state there), the Python install
and its site-packages, and the `trainer` package folder (not the checkout around it: a project's
`.env`, `./.swarm` and data stay out). Then its own /proc, a minimal /dev (plus the run's GPU
nodes), size-capped private /tmp and /dev/shm, and its scratch. So the user's home, other
copies of prepared data, the swarm's home (wherever --swarm-home, SWARM_HOME or swarm.yaml put
it) and the data dir are simply not there. `spec.hidden` (and default_hidden()) are masked only
where they lie inside something bound (the raw corpus inside site-packages, a data dir inside
the Python install): an empty tmpfs for a folder, /dev/null for a file.

The scratch: with `spec.quota_mb` it is a private tmpfs of that size at SCRATCH_INSIDE (the
disk quota: an 8 GiB fallocate fails with ENOSPC), never a host folder; the runner reaches it
from outside through the harness's root (open_scratch): it writes train.py and the tokenizer in before
the run, through a directory fd; nothing is ever read out of it (the graph and the weights come
over the submit pipe). `spec.scratch` is then only the supervisor's working directory on the host (how a
restarted agent recognises the group as its run's). Without quota_mb, `spec.scratch` is bound
read-write at its own path (the evaluator's scratch).

The escape hatch: `swarm run/train --unsafe-no-sandbox` skips `check_sandbox()`, records the
flag in swarm.json and sets `SWARM_UNSAFE_NO_SANDBOX=1` for the agents; the runner reads it
(`unsafe_from_env()`) into `SandboxSpec.unsafe`, and `wrap()` then returns argv unchanged.

Kernel surface: a seccomp filter and --disable-userns (no nested user namespaces).
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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import TrainerError
from trainer.limits import CGROUP_PREFIX, SUPERVISOR, cgroup_kinds_available, pinned_cores, seccomp_filter
from trainer.limits import cgroup_plan as _cgroup_plan

__all__ = ["SandboxSpec", "SandboxUnavailable", "wrap", "check_sandbox", "open_scratch", "unsafe_from_env",
           "default_hidden", "visible_roots", "cgroup_kinds_available", "CGROUP_PREFIX", "SCRATCH_INSIDE"]

UNSAFE_ENV = "SWARM_UNSAFE_NO_SANDBOX"   # "1": the swarm was started with --unsafe-no-sandbox
BWRAP_ENV = "SWARM_BWRAP"                # path of the bwrap binary (default: bwrap on PATH)
TMPFS_MB = 512                           # size of the sandbox's /tmp and /dev/shm each
SCRATCH_INSIDE = "/scratch"              # where a quota'd scratch appears inside
CPU_LOCKS = "swarm-cpu-locks"            # the affinity fallback's per-core lock files, in the host's temp dir
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd", "group",
             "alternatives")
SYS_CPU = ("/sys/devices/system/cpu", "/sys/devices/system/node")  # torch's cpuinfo, os.cpu_count()
FIX = ("install bubblewrap (apt-get install -y bubblewrap); in Docker run with "
       "--security-opt seccomp=unconfined (or a seccomp profile allowing unshare/clone with "
       "namespace flags) and --security-opt apparmor=unconfined; in Kubernetes set "
       "securityContext.seccompProfile.type: Unconfined and allow user namespaces "
       "(or run the pod privileged); or pass --unsafe-no-sandbox to run train.py unconfined")


class SandboxUnavailable(TrainerError):
    """bubblewrap is missing or cannot make namespaces here (one line: cause and fix)."""


@dataclass
class SandboxSpec:
    scratch: Path                                        # host folder: bound read-write, or (quota_mb) only the cwd
    readable: list[Path] = field(default_factory=list)   # extra paths shown read-only
    hidden: list[Path] = field(default_factory=list)     # never shown, masked inside anything bound
    env: dict[str, str] = field(default_factory=dict)    # the ONLY environment inside
    gpu_devices: list[int] = field(default_factory=list) # /dev/nvidiaN for these, plus the control nodes
    memory_mb: int | None = None                         # per process (RLIMIT_DATA) and total (cgroup)
    max_procs: int | None = None                         # tasks (threads included) in the sandbox
    quota_mb: int | None = None                          # the scratch is a private tmpfs of this size
    cpus: float | None = None                            # CPU share: a CFS quota, else affinity
    unsafe: bool = False                                 # --unsafe-no-sandbox: wrap() returns argv unchanged

    @property
    def inside(self) -> str:
        """The scratch's path as the sandboxed process sees it."""
        return SCRATCH_INSIDE if self.quota_mb and not self.unsafe else str(Path(self.scratch).resolve())


def unsafe_from_env(env: dict[str, str] | None = None) -> bool:
    """True when the swarm was started with --unsafe-no-sandbox (SWARM_UNSAFE_NO_SANDBOX=1)."""
    return (env if env is not None else os.environ).get(UNSAFE_ENV, "") == "1"


def default_hidden() -> list[Path]:
    """Places with credentials, masked should one lie inside something the sandbox sees (a Python
    install under the home, say): the home's caches and configs, cloud and cluster credentials,
    and the machine's sockets and Kubernetes secrets under /run."""
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


def _system_args(gpu: bool) -> list[str]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for d in (("/sys",) if gpu else SYS_CPU):
        if os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return args


def visible_roots() -> list[Path]:
    """The folders outside the system's own that a sandbox sees (read-only): the Python install
    (prefixes, site-packages, the interpreter's folder) and the `trainer` package folder, each
    once (none inside another, none under the system folders, which are bound anyway)."""
    import site

    import trainer

    exe = Path(sys.executable).resolve().parent
    found = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                         *site.getsitepackages())}
    found |= {exe, Path(trainer.__file__).resolve().parent}
    system = [Path(d).resolve() for d in SYSTEM_DIRS if os.path.isdir(d)]
    found = {r for r in found if r.is_dir() and not any(r == s or s in r.parents for s in system)}
    return sorted(r for r in found if not any(a in found for a in r.parents))


def _masks(hidden: list[Path], roots: list[Path]) -> list[str]:
    """Mask the hidden paths that lie inside a bound root (elsewhere they are not there at all)."""
    wanted = {Path(h).resolve() for h in [*default_hidden(), *hidden] if os.path.lexists(h)}
    inside = {h for h in wanted if any(h == r or r in h.parents for r in roots)}
    args: list[str] = []
    # a path inside a masked folder is masked already: a /dev/null stand-in would make it appear
    for h in sorted(p for p in inside if not any(a in inside for a in p.parents)):
        args += ["--tmpfs", str(h)] if h.is_dir() else ["--ro-bind", "/dev/null", str(h)]
    return args


def _gpu_args(spec: SandboxSpec) -> list[str]:
    if not spec.gpu_devices:
        return []
    args = []
    for i in spec.gpu_devices:
        args += ["--dev-bind", f"/dev/nvidia{int(i)}", f"/dev/nvidia{int(i)}"]
    for n in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps"):
        args += ["--dev-bind-try", f"/dev/{n}", f"/dev/{n}"]
    return args


def wrap(argv: list[str], spec: SandboxSpec) -> list[str]:
    """The full command line that runs argv in the sandbox (argv unchanged when spec.unsafe).
    Fds passed with Popen(pass_fds=...) stay usable inside; the sandbox's working directory is
    its scratch. Raises SandboxUnavailable when bwrap is missing."""
    if spec.unsafe:
        return list(argv)
    bwrap = _bwrap()
    if not bwrap:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {FIX}")
    size = functools.partial(_opt, bwrap, "--size")
    roots = visible_roots()
    code = [a for r in roots for a in ("--ro-bind", str(r), str(r))]
    if spec.quota_mb:
        scratch = [*size(str(spec.quota_mb << 20)), "--tmpfs", SCRATCH_INSIDE]
    else:
        s = str(Path(spec.scratch).resolve())
        scratch = ["--bind", s, s]
    readable = [a for r in spec.readable for a in ("--ro-bind", str(Path(r).resolve()), str(Path(r).resolve()))]
    # Order: the system, /proc, /dev, /tmp, then the code (a checkout or venv may live under
    # /tmp), the masks inside it, the scratch and the readable files (which may lie inside a
    # masked folder), and last the root itself made read-only.
    inner = [bwrap, "--unshare-all", "--unshare-user", *_opt(bwrap, "--disable-userns"),
             "--die-with-parent", "--new-session", *_system_args(bool(spec.gpu_devices)),
             "--proc", "/proc", "--dev", "/dev", *size(str(TMPFS_MB << 20)), "--tmpfs", "/dev/shm",
             *_gpu_args(spec), "--remount-ro", "/dev", *size(str(TMPFS_MB << 20)), "--tmpfs", "/tmp",
             *code, *_masks(spec.hidden, roots), *scratch, *readable, "--remount-ro", "/",
             "--chdir", spec.inside, "--uid", "65534", "--gid", "65534", "--clearenv"]
    for k, v in spec.env.items():
        inner += ["--setenv", k, v]
    inner += ["--", *argv]
    bpf = seccomp_filter(deny_affinity=bool(spec.cpus))
    cfg = {"cgroups": _cgroup_plan(spec), "prefix": CGROUP_PREFIX,
           "data": (spec.memory_mb << 20) if spec.memory_mb else 0, "seccomp": bpf.hex() if bpf else "",
           "memory_mb": spec.memory_mb, "max_procs": spec.max_procs, "pin": pinned_cores(spec.cpus),
           "cpu_locks": os.path.join(tempfile.gettempdir(), CPU_LOCKS)}
    return [sys.executable, "-I", "-S", "-c", SUPERVISOR, json.dumps(cfg), *inner]


def open_scratch(pid: int, quota_mb: int) -> int:
    """A directory fd on the private scratch of the sandbox that process `pid` (on this side's
    PID numbering) lives in, opened through its root. Open it before any of train.py's code ran
    there (the harness waiting for its spec): the fd then is the tmpfs bubblewrap mounted, and it
    keeps that tmpfs readable after the sandbox is dead. Raises OSError naming what is wrong."""
    fd = os.open(f"/proc/{pid}/root{SCRATCH_INSIDE}", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    st = os.fstatvfs(fd)
    if (st.f_blocks * st.f_frsize) >> 20 != quota_mb and "--size" in _options(_bwrap() or ""):
        os.close(fd)
        raise OSError(f"the sandbox's scratch is not its {quota_mb} MB tmpfs")
    return fd
