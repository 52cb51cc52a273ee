"""The long-lived locked evaluator (one per agent process and data/device setting), in its own
sandbox, and the runner's client for it.

The server imports torch once, packs the val rows once (confirm's on first request that asks
for it) and then, per request, forks a fresh worker that loads one artifact and scores it.
Requests come as JSON lines on stdin, replies go as JSON lines on stdout, matched by a nonce the
runner chose: the score travels over a pipe, never a file. The sandbox sees, read-only, only
val/confirm/token_bytes and an inbox where the runner puts copies of one run's graph and weights.

Why a worker's reply can be trusted: no code from the artifact ever runs in it (the graph is
data: allowed aten ops called by trainer.artifact's interpreter, no names, no code generation),
so what writes the reply is locked code. And nothing a worker did survives it: it cannot touch
the server's memory (a forked copy; the server is not dumpable, so not ptrace-able); it never
holds the nonce (the server stamps it, on a reply that parses as statuses and numbers only);
when it exits, every other process of the sandbox is killed and the writable folders (the
scratch, /tmp) are emptied before the next request is read.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.profiles import PROBES_MIN
from trainer.specs import EvalReply, EvalRequest

log = logging.getLogger(__name__)
MAX_REPLY = 1 << 20
ROOT = str(Path(__file__).resolve().parent.parent)  # where the locked package is imported from


# --- the server (inside the sandbox) ----------------------------------------------------------

def _no_dump() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(4, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def serve(config_path: str) -> int:
    """The evaluator's main loop. Returns when stdin closes (the runner went away)."""
    _no_dump()
    cfg = json.loads(Path(config_path).read_text())
    import numpy as np
    import torch  # noqa: F401  imported once here, not per evaluation

    import trainer.artifact  # noqa: F401
    import trainer.metric  # noqa: F401

    from trainer.dataloader import TokenDocs
    from trainer.evaluate import SplitRows, score

    d = Path(cfg["dir"])
    tb = np.load(d / "token_bytes.npy")
    shape = (cfg["batch"], cfg["seq_len"], cfg["eval_tokens"])
    val = SplitRows(TokenDocs(d, "val"), *shape)
    cache: list = []

    def confirm():
        if not cache:
            cache.append(SplitRows(TokenDocs(d, "confirm"), *shape))
        return cache[0]

    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        try:
            req = EvalRequest.model_validate_json(line)
        except Exception:
            continue
        if req.confirm_below is not None:
            confirm()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                os.close(r)
                os.dup2(2, 1)
                os.close(0)
                reply = score(req.model_copy(update={"id": ""}), val, confirm, tb, cfg["probes_min"])
                data = reply.model_dump_json().encode()
                while data:
                    data = data[os.write(w, data):]
            finally:
                os._exit(0)
        os.close(w)
        chunks, size = [], 0
        with os.fdopen(r, "rb") as f:
            while size < MAX_REPLY and (c := f.read(65536)):
                chunks.append(c)
                size += len(c)
        _, status = os.waitpid(pid, 0)
        if cfg.get("sweep"):
            sweep()
            wipe([str(Path.home()), "/tmp"])
        try:
            data = json.loads(b"".join(chunks))
            data["id"] = req.id
            reply = EvalReply.model_validate(data)
        except Exception:
            reply = EvalReply(id=req.id, error="evaluation crashed")
        out.write(reply.model_dump_json().encode() + b"\n")
        out.flush()
    return 0


def sweep(rounds: int = 50) -> int:
    """Kill every process of this PID namespace but its init and this server's line of parents
    (run inside the sandbox only: outside it, /proc is the whole machine). Returns how many."""
    keep, pid = {1}, os.getpid()
    while pid > 1 and pid not in keep:
        keep.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    killed = 0
    for _ in range(rounds):
        others = [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) not in keep]
        if not others:
            break
        for p in others:
            try:
                os.kill(p, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        for p in others:  # reap our own children; others are reaped by init
            try:
                os.waitpid(p, os.WNOHANG)
            except OSError:
                pass
        time.sleep(0.01)
    return killed


def wipe(folders: list[str]) -> None:
    """Empty writable folders (what a worker wrote must not meet the next one). Mount points
    inside them (the scratch and the inbox are bound under /tmp) are left; their writable
    contents are this list's other entries."""
    for d in folders:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if os.path.ismount(e.path):
                continue
            if e.is_dir(follow_symlinks=False):
                wipe([e.path])
                try:
                    os.rmdir(e.path)
                except OSError:
                    pass  # holds a mount point
            else:
                try:
                    os.unlink(e.path)
                except OSError:
                    pass


# --- the client (in the runner) ---------------------------------------------------------------

@dataclass(frozen=True)
class EvaluatorKey:
    """What an evaluator is started with; a run with another key gets another evaluator."""
    prepared_dir: str
    batch: int
    seq_len: int
    eval_tokens: int
    device: str
    threads: int | None
    unsafe: bool
    gpu_devices: tuple[int, ...] = ()
    memory_mb: int | None = None
    max_procs: int | None = None
    hidden: tuple[str, ...] = field(default_factory=tuple)
    probes_min: int = PROBES_MIN     # the profile's


class EvaluatorGone(Exception):
    """The evaluator died or did not answer in time."""


class Evaluator:
    """A client for one sandboxed evaluator server. Thread-safe (one request at a time)."""

    def __init__(self, key: EvaluatorKey):
        self.key = key
        self.lock = threading.Lock()
        _sweep_orphans()
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        self._owner = _hold(self.root)
        self.inbox = self.root / "inbox"
        self.scratch = self.root / "scratch"
        self.inbox.mkdir()
        self.scratch.mkdir()
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()
        self.ready_at: float | None = None
        self.spawned_at: float | None = None

    def start(self) -> None:
        """Spawn the server if it is not running (returns at once; it gets ready meanwhile)."""
        from trainer.sandbox import SandboxSpec, wrap

        if self.proc is not None and self.proc.poll() is None:
            return
        self.lines = queue.Queue()
        self.ready_at = None
        k = self.key
        d = Path(k.prepared_dir)
        cfg = {"dir": k.prepared_dir, "batch": k.batch, "seq_len": k.seq_len, "eval_tokens": k.eval_tokens,
               "probes_min": k.probes_min, "sweep": not k.unsafe}
        (self.inbox / "config.json").write_text(json.dumps(cfg))
        readable = [self.inbox, d / "token_bytes.npy"] + [d / f"{s}.{w}.npy" for s in ("val", "confirm")
                                                           for w in ("tokens", "offsets")]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.scratch), "PYTHONUNBUFFERED": "1",
               "LANG": "C.UTF-8"}
        if k.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(k.threads)
        if k.gpu_devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, k.gpu_devices))
        spec = SandboxSpec(scratch=self.scratch, readable=[p for p in readable if p.exists()],
                           hidden=[Path(h) for h in k.hidden], env=env, gpu_devices=list(k.gpu_devices),
                           memory_mb=k.memory_mb, max_procs=k.max_procs, unsafe=k.unsafe)
        code = (f"import sys; sys.path.insert(0, {ROOT!r}); "
                "from trainer.evaluator import serve; sys.exit(serve(sys.argv[1]))")
        argv = wrap([sys.executable, "-I", "-c", code, str(self.inbox / "config.json")], spec)
        with open(self.root / "evaluator.log", "ab") as errf:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf,
                                         cwd=self.scratch, start_new_session=True)
        self.spawned_at = time.monotonic()
        threading.Thread(target=self._pump, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _pump(proc: subprocess.Popen, lines: queue.Queue) -> None:
        try:
            for line in proc.stdout:
                lines.put(line[:MAX_REPLY])
        except (OSError, ValueError):
            pass
        lines.put(None)

    def _next_line(self, deadline: float, cancel: threading.Event | None) -> bytes:
        while True:
            if cancel is not None and cancel.is_set():
                raise EvaluatorGone("cancelled")
            left = deadline - time.monotonic()
            if left <= 0:
                raise EvaluatorGone("timeout")
            try:
                line = self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if line is None:
                raise EvaluatorGone("evaluator exited")
            return line

    def wait_ready(self, deadline: float, cancel: threading.Event | None = None) -> float:
        """Seconds waited for the server to be warm."""
        t = time.monotonic()
        while self.ready_at is None:
            try:
                if json.loads(self._next_line(deadline, cancel)).get("ready"):
                    self.ready_at = time.monotonic()
            except ValueError:
                continue
        return time.monotonic() - t

    def evaluate(self, graph: Path, weights: Path, *, probe_seed: int, confirm_below: float | None,
                 deadline: float, cancel: threading.Event | None = None) -> EvalReply:
        """Score one artifact (graph.json and weights.bin as the data server wrote them). Raises
        EvaluatorGone (the server is then killed; the next call starts a fresh one)."""
        with self.lock:
            nonce = os.urandom(8).hex()
            g, w = self.inbox / f"{nonce}.json", self.inbox / f"{nonce}.bin"
            try:
                self.start()
                self.wait_ready(deadline, cancel)
                _place(graph, g)
                _place(weights, w)
                if confirm_below is not None:  # JSON has no infinity: "always" is a huge finite bound
                    confirm_below = min(float(confirm_below), 1e300) if confirm_below == confirm_below else None
                req = EvalRequest(id=nonce, graph=str(g), weights=str(w), probe_seed=probe_seed,
                                  confirm_below=confirm_below, threads=self.key.threads, device=self.key.device)
                self.proc.stdin.write(req.model_dump_json().encode() + b"\n")
                self.proc.stdin.flush()
                while True:
                    try:
                        reply = EvalReply.model_validate_json(self._next_line(deadline, cancel))
                    except ValueError:
                        continue
                    if reply.id == nonce:
                        return reply
            except (EvaluatorGone, OSError) as e:
                self.close()
                raise EvaluatorGone(str(e)) from None
            finally:
                g.unlink(missing_ok=True)
                w.unlink(missing_ok=True)

    def close(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                p.wait(timeout=2.0)
                break
            except subprocess.TimeoutExpired:
                continue

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None


# An evaluator's folder holds a lock its process keeps while it lives (the kernel drops it when the
# process dies, SIGKILL included): a process killed without its atexit (`ray.kill`, a SIGKILLed
# agent) left its folder, and an artifact of its inbox, in /tmp for good; 250 of them here in a day
# of tests and benches. The next evaluator any process makes removes the folders nobody holds.
ROOT_PREFIX = "swarm-eval-"
OWNER = "owner.lock"


def _hold(root: Path) -> int | None:
    """Lock `root` for this process's lifetime: the lock file is locked before it takes its name,
    so a sweep never sees it unlocked while its owner runs."""
    tmp = root / f".{OWNER}.{os.getpid()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(tmp, root / OWNER)
    except OSError:
        os.close(fd)
        return None   # cannot hold it: the folder is then never swept, only removed by remove()
    return fd


def _sweep_orphans() -> None:
    """Remove the evaluator folders in the temp dir whose owner process is gone (their lock is
    free). A folder without the lock file (an older version's, or one being made) is left, and so
    is anything but a real folder of this user (a link planted in a shared /tmp)."""
    for d in Path(tempfile.gettempdir()).glob(ROOT_PREFIX + "*"):
        try:
            st = d.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            fd = os.open(d / OWNER, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue          # held: its owner runs
        else:
            shutil.rmtree(d, ignore_errors=True)
        finally:
            os.close(fd)


def _place(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


_POOL: dict[EvaluatorKey, Evaluator] = {}
_POOL_LOCK = threading.Lock()


def get_evaluator(key: EvaluatorKey) -> Evaluator:
    """This process's evaluator for `key`, started (not necessarily ready yet)."""
    with _POOL_LOCK:
        ev = _POOL.get(key)
        if ev is None:
            ev = _POOL[key] = Evaluator(key)
    ev.start()
    return ev


@atexit.register
def close_all() -> None:
    """Stop every evaluator this process started."""
    with _POOL_LOCK:
        evs = list(_POOL.values())
        _POOL.clear()
    for ev in evs:
        ev.remove()
