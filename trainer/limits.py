"""The sandbox's resource limits (locked): the cgroups it gets (tasks, memory, CPU), its seccomp
filter, and the stdlib-only supervisor that applies them between the caller and bubblewrap.

How each limit holds, as measured on the dev machine (kernel 6.18, cgroup v1 hybrid, bwrap 0.8
run as root):
- RLIMIT_NPROC does not work: bwrap run as root maps the inside uid 65534 to uid 0 outside,
  and the kernel never applies RLIMIT_NPROC to uid 0 (100 forks passed under `--nproc=20`).
- So tasks (threads count) are capped by a pids cgroup made under the caller's own cgroup (v2
  where it delegates `pids`, else v1): a fork bomb gets EAGAIN. Where no cgroup is writable, a
  watchdog outside the sandbox counts its tasks every 20 ms and kills it past the cap (a Python
  fork bomb reached 121 tasks under a cap of 64 before it was killed, 0.45 s after start).
- Memory: RLIMIT_DATA on every process (malloc fails: a readable MemoryError; not RLIMIT_AS:
  CUDA reserves terabytes of address space) and a memory cgroup for the total, tmpfs pages
  (the scratch, /tmp, /dev/shm) and MAP_SHARED included.
- CPU: the agent's share (its threads) as a CFS quota: cgroup v2 `cpu.max` where `cpu` is
  delegated, else v1 `cpu.cfs_quota_us`; more threads than the share are throttled, so they
  buy no steps. Where no cpu cgroup is writable, the supervisor pins the sandbox to
  ceil(share) cores of its own affinity instead, preferring cores no other sandbox holds (one
  flock per core, released when the supervisor dies), and the seccomp filter refuses
  sched_setaffinity so the sandbox cannot widen it.
- The supervisor (`python -I -S -c`) makes the cgroups per launch and removes them after,
  exits with bwrap's status and, when a limit ended the run, writes one line `sandbox: ...
  limit ...` to stderr (so into run.log). It starts bwrap with an empty environment: bwrap's
  own init is PID 1 inside, and its /proc/1/environ would otherwise show the caller's secrets.
"""
from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

CGROUP_PREFIX = "swarm-sandbox-"
CPU_PERIOD_US = 100_000          # the CFS period of the CPU quota (the kernel's default)


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


def cpu_quota_us(cpus: float) -> int:
    return max(1000, int(round(cpus * CPU_PERIOD_US)))  # the kernel refuses quotas under 1 ms


def cgroup_plan(spec) -> list[dict]:
    """Where the sandbox's cgroups would go and the limits to write there (no side effects:
    the supervisor makes them per launch, so one wrap() argv can be started again).
    [{parent, kind: v2|pids|memory|cpu, controls: [...], limits: {file: value}, optional: {...}}]."""
    want = {c: v for c, v in (("pids", spec.max_procs), ("memory", spec.memory_mb), ("cpu", spec.cpus)) if v}
    if not want:
        return []
    own = _own_cgroups()
    root = Path("/sys/fs/cgroup")
    limits = {"pids": {"pids.max": str(spec.max_procs + 3)} if spec.max_procs else {},  # + supervisor, bwrap's two
              "memory": {"memory.max": str(spec.memory_mb << 20)} if spec.memory_mb else {},
              "cpu": {"cpu.max": f"{cpu_quota_us(spec.cpus)} {CPU_PERIOD_US}"} if spec.cpus else {}}
    plan = []
    v2 = root if (root / "cgroup.controllers").exists() else root / "unified"
    if "v2" in own and (v2 / "cgroup.controllers").exists():
        parent = v2 / own["v2"].lstrip("/")
        try:
            have = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            have = []
        on = [c for c in want if c in have]
        if on:
            plan.append({"parent": str(parent), "kind": "v2", "controls": on,
                         "limits": {k: v for c in on for k, v in limits[c].items()},
                         "optional": {"memory.swap.max": "0"} if "memory" in on else {}})
            want = {c: v for c, v in want.items() if c not in on}
    if "pids" in want and "pids" in own:
        plan.append({"parent": str(root / "pids" / own["pids"].lstrip("/")), "kind": "pids", "controls": ["pids"],
                     "limits": limits["pids"], "optional": {}})
    if "memory" in want and "memory" in own:
        plan.append({"parent": str(root / "memory" / own["memory"].lstrip("/")), "kind": "memory",
                     "controls": ["memory"], "limits": {"memory.limit_in_bytes": str(spec.memory_mb << 20)},
                     "optional": {"memory.memsw.limit_in_bytes": str(spec.memory_mb << 20)}})
    if "cpu" in want and "cpu" in own:
        mount = root / "cpu" if (root / "cpu").exists() else root / "cpu,cpuacct"
        plan.append({"parent": str(mount / own["cpu"].lstrip("/")), "kind": "cpu", "controls": ["cpu"],
                     "limits": {"cpu.cfs_period_us": str(CPU_PERIOD_US),
                                "cpu.cfs_quota_us": str(cpu_quota_us(spec.cpus))}, "optional": {}})
    return plan


def cgroup_kinds_available(spec) -> list[str]:
    """The cgroup kinds a sandbox with `spec`'s limits would get here (tries mkdir + rmdir)."""
    out = []
    for cg in cgroup_plan(spec):
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


def pinned_cores(cpus: float | None) -> int:
    """How many cores the affinity fallback pins a sandbox with this CPU share to."""
    return max(1, math.ceil(cpus)) if cpus else 0


# --- seccomp: no AF_UNIX sockets, no io_uring, and (with a CPU share) no sched_setaffinity -----
# A network namespace does not cover path-based unix sockets, and the sandbox's uid is root
# outside (see above), so any socket it can see would answer it, mode 0600 or not: the filter
# refuses socket(AF_UNIX, ...) (EACCES). socketpair() stays allowed (multiprocessing's pipes),
# and its sockets cannot connect elsewhere. io_uring is refused too: it can open sockets
# without the socket() system call. Foreign-ABI calls (i386, x32) are refused.

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_NR_SOCKET = {"x86_64": 41, "aarch64": 198}
_NR_SETAFFINITY = {"x86_64": 203, "aarch64": 122}
_NR_IO_URING = (425, 426, 427)   # setup, enter, register: the same on both
_AF_UNIX = 1


def seccomp_filter(machine: str | None = None, deny_affinity: bool = False) -> bytes | None:
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
    for nr in _NR_IO_URING + ((_NR_SETAFFINITY[machine],) if deny_affinity else ()):
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

SUPERVISOR = r'''
import fcntl, json, os, resource, signal, sys, time
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
        made.append({"dir": d, "kind": cg["kind"], "controls": cg["controls"]})
    except OSError:
        try:
            os.rmdir(d)
        except OSError:
            pass
controlled = {c for cg in made for c in cg["controls"]}
held = []

def pin(n):
    # no cpu cgroup: n cores of our affinity, those no other sandbox holds first (one flock each)
    allowed = sorted(os.sched_getaffinity(0))
    if n >= len(allowed):
        return
    chosen = []
    try:
        os.makedirs(cfg["cpu_locks"], exist_ok=True)
    except OSError:
        pass
    for c in allowed:
        if len(chosen) == n:
            break
        try:
            fd = os.open(os.path.join(cfg["cpu_locks"], "cpu%d.lock" % c), os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        held.append(fd)
        chosen.append(c)
    for c in allowed:  # every core is held: share the first ones
        if len(chosen) < n and c not in chosen:
            chosen.append(c)
    os.sched_setaffinity(0, chosen)

if cfg["pin"] and "cpu" not in controlled:
    pin(cfg["pin"])
# no pids cgroup: the watchdog (it counts bwrap's outer and inner processes too)
watch = cfg["max_procs"] + 2 if cfg["max_procs"] and "pids" not in controlled else 0
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
            elif cg["kind"] == "v2":
                if "memory" in cg["controls"]:
                    with open(os.path.join(cg["dir"], "memory.events")) as f:
                        ev = dict(l.split() for l in f if l.strip())
                    if int(ev.get("oom_kill", 0)):
                        return "memory limit of %d MB reached" % cfg["memory_mb"]
                if "pids" in cg["controls"]:
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
