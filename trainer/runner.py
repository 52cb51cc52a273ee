"""run_experiment (locked): one train.py in a sandbox under the runner's own clock, fed train
batches by the runner, then scored by the locked evaluator in a second sandbox. Returns an
ExperimentResult and never raises for anything train.py does.

Who measures what (train.py is hostile code, see DESIGN.md "Trust"):
- the clock, steps and tokens: trainer.serve.DataServer (batches served, in this process);
- the weights scored: the bytes train.py sent at submit (later work cannot change them);
- the score: trainer.evaluator, from a checked, pickle-free artifact, over a pipe;
- the log: read from a pipe and capped; its tail is redacted before it leaves the run.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from trainer.errors import BadOption, BadTrainPy
from trainer.events import Evaluating, Progress, Started
from trainer.prepare import Prepared, data_root, locate
from trainer.profiles import Profile, get_profile, gpu_name, hardware_class, peak_flops
from trainer.schema import ExperimentResult
from trainer.serve import DataServer, tolerance
from trainer.specs import HarnessSpec, RunRequest

log = logging.getLogger(__name__)
TAIL_LINES = 40
LOG_CAP = 16 << 20          # bytes of run.log a run may write; the rest is dropped and counted
SUBMIT_GRACE = 30.0         # seconds after budget + tolerance before a run that never submits is killed
                            # (its last step and its exit may be slow on a busy machine)
ROOT = str(Path(__file__).resolve().parent.parent)
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASS", "CREDENTIAL", "AUTH")
_REDIS_PW = re.compile(r"rediss?://[^@\s]*:[^@\s]+@")

__all__ = ["run_experiment", "run_request", "score_kept", "tolerance", "scrubbed_env", "log_tail"]


def export_limit(budget: float) -> float:
    """Seconds train.py has after submit to finish its export and exit. Generous on purpose:
    the weights were fixed at submit, so this time buys nothing but the export."""
    return max(60.0, 0.2 * budget)


def scrubbed_env(cuda_visible_devices: str | None = None, threads: int | None = None) -> dict[str, str]:
    """The parent's environment minus anything that could be a secret (what the unsandboxed
    runner used to pass; the sandbox now gets child_env's few variables only)."""
    env = {}
    for k, v in os.environ.items():
        ku = k.upper()
        if any(w in ku for w in SECRET_WORDS) or ku == "REDIS_URL" or ku.startswith("SWARM_REDIS"):
            continue
        if _REDIS_PW.search(v):
            continue
        env[k] = v
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def child_env(scratch: Path, threads: int | None, cuda_visible: str | None) -> dict[str, str]:
    """The whole environment of a sandboxed process: no secrets because nothing is inherited."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": "/tmp",
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if cuda_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible
    return env


def gpu_devices(device: str, cuda_visible: str | None) -> list[int]:
    """The /dev/nvidiaN indices a run may see: its CUDA_VISIBLE_DEVICES, else every GPU."""
    if not device.startswith("cuda"):
        return []
    present = sorted(int(p.name[6:]) for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit())
    ids = [s.strip() for s in (cuda_visible or "").split(",") if s.strip()]
    if ids and all(i.isdigit() for i in ids):
        return [int(i) for i in ids]
    return present


def hidden_paths(prep: Prepared, data_dir: str | Path | None) -> list[Path]:
    """What a sandbox must not see: the data (raw and prepared), SWARM_HOME (research repo,
    worktrees, other runs, redis), and the raw corpus files. ~/.cache and the credential
    folders are hidden by trainer.sandbox itself."""
    paths = [data_root(data_dir), Path(os.environ.get("SWARM_HOME", ".swarm")), *map(Path, prep.forbidden)]
    out = []
    for p in paths:
        p = p.expanduser().resolve()
        if p.exists() and p not in out:  # a file is shown as /dev/null, a folder as an empty tmpfs
            out.append(p)
    return out


def _die_with_parent() -> None:
    try:  # PR_SET_PDEATHSIG = 1: the sandbox gets SIGKILL when the thread that started it dies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


def kill_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """End the sandbox: its process group (supervisor and bwrap); the PID namespace takes
    every process inside with it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        t = time.monotonic() + wait
        while time.monotonic() < t and proc.poll() is None:
            time.sleep(0.02)


def log_tail(path: Path, n: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64_000))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _last_error(tail: str) -> str:
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln) or ln.startswith("api.submit"):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def _redact(text: str) -> str:
    try:
        from trainer.redact import known_secrets, redact
        return redact(text, known_secrets())
    except ImportError:
        return text


class LogPump(threading.Thread):
    """Copies the sandbox's stdout+stderr into run.log, at most LOG_CAP bytes."""

    def __init__(self, fd: int, path: Path):
        super().__init__(daemon=True, name="swarm-log-pump")
        self.fd, self.path, self.dropped = fd, path, 0

    def run(self) -> None:
        written = 0
        with open(self.path, "ab") as f:
            try:
                while chunk := os.read(self.fd, 1 << 16):
                    keep = chunk[:max(0, LOG_CAP - written)]
                    f.write(keep)
                    f.flush()
                    written += len(keep)
                    self.dropped += len(chunk) - len(keep)
            except OSError:
                pass
            finally:
                os.close(self.fd)
            if self.dropped:
                f.write(f"\n[run.log capped at {LOG_CAP >> 20} MB: {self.dropped} bytes dropped]\n".encode())


def copy_out(src: Path, dst: Path, max_bytes: int) -> str | None:
    """Copy a file the sandbox wrote (after it is dead) without following links; None or why not."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return "not a regular file" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size > max_bytes:
            return f"{st.st_size >> 20} MB, over the {max_bytes >> 20} MB limit"
        with os.fdopen(os.dup(fd), "rb") as f, open(dst, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
    finally:
        os.close(fd)
    return None


class _Run:
    """One run of one train.py. Built from a RunRequest; run() returns the result."""

    def __init__(self, req: RunRequest, cancel: threading.Event | None,
                 on_event: Callable[[dict], None] | None):
        self.t_spawn = time.monotonic()
        self.req, self.cancel, self.on_event = req, cancel, on_event
        self.prof: Profile = get_profile(req.profile)
        self.train_py = Path(req.train_py).resolve()
        if not self.train_py.is_file():
            raise BadTrainPy(f"train.py does not exist: {self.train_py}")
        self.prep = locate(self.prof, req.data_dir)
        self.run_dir = Path(req.run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.scratch = self.run_dir / "scratch"
        self.log_path = self.run_dir / "run.log"
        self.budget = float(req.budget if req.budget is not None else self.prof.budget)
        device = req.device
        if device == "auto":
            import torch
            device = "cuda:0" if (torch.cuda.is_available() and req.cuda_visible_devices != "") else "cpu"
        self.device = device
        self.hard = float(req.hard_limit if req.hard_limit is not None
                          else 2 * self.budget + self.prof.startup_limit + 30)
        from trainer.sandbox import unsafe_from_env
        self.unsafe = unsafe_from_env()
        self.cuda_visible = req.cuda_visible_devices if req.cuda_visible_devices is not None else \
            (os.environ.get("CUDA_VISIBLE_DEVICES") if device.startswith("cuda") else None)
        self.gpus = gpu_devices(device, self.cuda_visible)
        self.hidden = hidden_paths(self.prep, req.data_dir)
        self.key = (ROOT, self.prof.name, device, req.threads, self.cuda_visible, tuple(self.gpus),
                    self.unsafe, tuple(self.hidden))
        self.base = dict(seed=req.seed, budget=self.budget, profile=self.prof.name,
                         hardware_class=hardware_class(self.prof.name, device, req.threads),
                         unigram_bpb=self.prep.unigram_bpb, sandboxed=not self.unsafe)
        self.timings: dict[str, float] = {}
        self.server: DataServer | None = None
        self.pump: LogPump | None = None

    # --- helpers ------------------------------------------------------------------------------
    def emit(self, event) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event.model_dump())
        except Exception:
            log.exception("on_event failed")

    def done(self, status: str, error: str | None = None, **kw) -> ExperimentResult:
        tail = _redact(log_tail(self.log_path))
        s = self.server
        counts = dict(bad_events=s.bad_events if s else 0)
        if s is not None and s.real:
            counts.update(steps=s.real, tokens=s.tokens)
        self.timings["total"] = time.monotonic() - self.t_spawn
        return ExperimentResult(status=status, error=error, log_tail=tail if status != "ok" else tail[-4000:],
                                log_path=str(self.log_path), total_seconds=self.timings["total"],
                                timings={k: round(v, 3) for k, v in self.timings.items()},
                                **self.base, **{**counts, **kw})

    def evaluator(self):
        from trainer.evaluator import EvaluatorKey, get_evaluator
        p = self.prof
        return get_evaluator(EvaluatorKey(
            prepared_dir=str(self.prep.dir), batch=p.eval_batch, seq_len=p.max_seq_len,
            eval_tokens=p.eval_tokens, device=self.device, threads=self.req.threads, unsafe=self.unsafe,
            gpu_devices=tuple(self.gpus), memory_mb=p.memory_mb, max_procs=p.max_procs,
            hidden=tuple(map(str, self.hidden))))

    # --- the training sandbox -----------------------------------------------------------------
    def _stage(self, inside: str, event_fd: int, data_fd: int, fresh: bool) -> bytes:
        """train.py and the tokenizer in the scratch; returns the harness spec (paths as the
        sandbox sees them)."""
        if fresh:
            if self.scratch.exists():
                shutil.rmtree(self.scratch)
            self.scratch.mkdir()
        for stale in ("graph.json", "weights.bin"):
            (self.run_dir / stale).unlink(missing_ok=True)
        shutil.copyfile(self.train_py, self.scratch / "train.py")
        shutil.copyfile(self.prep.tokenizer_path, self.scratch / "tokenizer.pkl")
        p = self.prof
        spec = HarnessSpec(train_py=f"{inside}/train.py", scratch=inside, tokenizer=f"{inside}/tokenizer.pkl",
                           event_fd=event_fd, data_fd=data_fd, budget=self.budget, max_steps=self.req.max_steps,
                           seed=self.req.seed, device=self.device, threads=self.req.threads, profile=p.name,
                           max_seq_len=p.max_seq_len, vocab_size=p.vocab_size, eval_batch=p.eval_batch,
                           warmup_batches=0 if self.req.max_steps else p.warmup_batches)  # no clock, no warm-up
        return spec.model_dump_json().encode()

    def _launch(self, scratch: Path, args: list[str], fds: tuple[int, int]) -> tuple[subprocess.Popen, int]:
        """Spawn the harness in a sandbox whose scratch is `scratch`; (proc, log pipe read end)."""
        from trainer.sandbox import SandboxSpec, wrap

        code = (f"import sys; sys.path.insert(0, {ROOT!r}); from trainer.harness import main; "
                f"sys.exit(main(sys.argv[1:]))")
        p = self.prof
        sbx = SandboxSpec(scratch=scratch, hidden=self.hidden,
                          env=child_env(scratch, self.req.threads, self.cuda_visible),
                          gpu_devices=self.gpus, memory_mb=p.memory_mb, max_procs=p.max_procs,
                          unsafe=self.unsafe)
        argv = wrap([sys.executable, "-I", "-c", code, *args], sbx)
        log_r, log_w = os.pipe()
        try:
            proc = subprocess.Popen(argv, stdout=log_w, stderr=log_w, stdin=subprocess.DEVNULL,
                                    cwd=scratch, env=sbx.env, pass_fds=fds, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        except BaseException:
            os.close(log_r)
            raise
        finally:
            os.close(log_w)
        return proc, log_r

    def _launch_standby(self, scratch: Path, event_w: int, data_r: int) -> tuple[subprocess.Popen, int]:
        return self._launch(scratch, ["--standby", str(event_w), str(data_r), self.device], (event_w, data_r))

    def _spawn(self) -> subprocess.Popen:
        from trainer import standby
        from trainer.dataloader import TokenDocs

        sb = standby.take(self.key, self.run_dir) if self.req.standby else None
        if sb is not None:
            proc, ev_r, dt_w, log_r = sb.proc, sb.ev_r, sb.dt_w, sb.log_r
            spec = self._stage(sb.inside, *sb.child_fds, fresh=False)
            self.timings["standby_age"] = time.monotonic() - sb.spawned
        else:
            ev_r, ev_w = os.pipe()
            dt_r, dt_w = os.pipe()
            try:
                spec = self._stage(str(self.scratch), ev_w, dt_r, fresh=True)
                (self.scratch / "spec.json").write_bytes(spec)
                proc, log_r = self._launch(self.scratch, [str(self.scratch / "spec.json")], (ev_w, dt_r))
            finally:
                os.close(ev_w)
                os.close(dt_r)
        self.emit(Started(pgid=proc.pid, run_dir=str(self.run_dir)))
        self.pump = LogPump(log_r, self.log_path)
        self.pump.start()
        p = self.prof
        self.server = DataServer(
            ev_r, dt_w, train=TokenDocs(self.prep.dir, "train"), vocab=p.vocab_size, seed=self.req.seed,
            budget=self.budget, max_steps=self.req.max_steps, warmup_cap=2 * p.warmup_batches,
            startup_limit=p.startup_limit, max_batch_tokens=p.max_batch_tokens, max_seq_len=p.max_seq_len,
            weights_path=self.run_dir / "weights.bin", max_weights_bytes=p.max_artifact_mb << 20,
            t_spawn=self.t_spawn, on_progress=lambda pr, st, tk: self.emit(Progress(progress=pr, steps=st, tokens=tk)),
            eval_shape=(p.eval_batch, p.max_seq_len))
        if sb is not None:
            sb.send_spec(spec)
        self.server.start()
        return proc

    def _deadline(self, now: float) -> tuple[float, str]:
        """When to kill the sandbox, and what to say then."""
        s = self.server
        hard = (self.t_spawn + self.hard, f"killed at the hard limit ({self.hard:.0f}s)")
        if s.t_submit is not None:
            return min(hard, (s.t_submit + export_limit(self.budget),
                              f"killed {export_limit(self.budget):.0f}s after submit"))
        t0 = s.clock_start(now)
        if t0 is None or self.req.max_steps:
            return hard
        end = t0 + self.budget + tolerance(self.budget, s.median_interval()) + SUBMIT_GRACE
        return min(hard, (end, f"killed at the hard limit ({end - self.t_spawn:.0f}s)"))

    def _supervise(self, proc: subprocess.Popen) -> tuple[str | None, int | None, float | None]:
        """Wait for the sandbox to exit, be cancelled or pass its deadline; kill its group in every
        case. Returns (why it was killed or None, exit code, peak RSS in MB)."""
        why, rc, rss = None, None, None
        evaluator_started = False
        while True:
            if not evaluator_started and self.server.t_submit is not None:
                # Started (if it is not already running) while train.py exports: not earlier,
                # where its imports would take CPU from training.
                self.evaluator()
                evaluator_started = True
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = rc = os.waitstatus_to_exitcode(status)
                rss = ru.ru_maxrss / 1024
                break
            now = time.monotonic()
            if self.cancel is not None and self.cancel.is_set():
                why = "cancelled"
            else:
                at, msg = self._deadline(now)
                if now > at:
                    why = msg
            if why:
                break
            time.sleep(0.02)
        kill_group(proc, grace=0.5 if why is None else 2.0)  # stragglers, or the run itself
        self.server.join(timeout=5.0)
        self.pump.join(timeout=5.0)
        return why, rc, rss

    # --- the verdict on training ----------------------------------------------------------------
    def _train_verdict(self, why: str | None, rc: int | None) -> ExperimentResult | None:
        s = self.server
        if why == "cancelled":
            return self.done("crash", "cancelled")
        if s.submit_error:
            return self.done("crash", s.submit_error)
        if s.t_submit is None:
            err = _last_error(log_tail(self.log_path))
            if why:
                return self.done("timeout", f"{why}: train.py did not submit")
            if s.t_ready is None:
                err = f"harness did not start: {err}"
            return self.done("crash", err if rc != 0 else f"exit 0 without a model: {err}")
        return None

    def _measured(self, rss: float | None) -> dict:
        s = self.server
        t0 = s.t0 if s.t0 is not None else min(s.forced_start(), s.t_submit)
        meta = s.submit_meta
        if self.device.startswith("cuda") and isinstance(meta.get("peak_memory_mb"), (int, float)):
            rss = float(meta["peak_memory_mb"])
        self.timings.update(spawn_to_ready=(s.t_ready or t0) - self.t_spawn,
                            ready_to_clock=t0 - (s.t_ready or t0), training=s.t_submit - t0)
        if s.t_exported:
            self.timings["export"] = s.t_exported - s.t_submit
        return dict(training_seconds=s.t_submit - t0, startup_seconds=t0 - self.t_spawn,
                    peak_memory_mb=rss)

    # --- scoring -------------------------------------------------------------------------------
    def _score(self, why: str | None, rc: int | None, measured: dict) -> ExperimentResult:
        from trainer.evaluator import EvaluatorGone

        # the graph and the tensors came in the submit frame and were checked by the data server
        graph = self.server.graph_path
        self.emit(Evaluating())
        t = time.monotonic()
        ev = self.evaluator()
        try:
            self.timings["eval_wait_ready"] = ev.wait_ready(t + self.prof.eval_limit, self.cancel)
            reply = ev.evaluate(graph, self.run_dir / "weights.bin", probe_seed=secrets.randbits(62),
                                confirm_below=self.req.confirm_below, deadline=t + self.prof.eval_limit,
                                cancel=self.cancel)
        except EvaluatorGone as e:
            if str(e) == "cancelled":
                return self.done("crash", "cancelled", **measured)
            if str(e) == "timeout":
                return self.done("crash", f"evaluation took longer than {self.prof.eval_limit:.0f}s", **measured)
            # not its log: what the evaluator printed may be built from val
            return self.done("crash", f"the evaluator died ({e})", **measured)
        for k, v in reply.seconds.items():
            self.timings[f"eval_{k}"] = v
        self.timings["eval"] = time.monotonic() - t
        if reply.error:
            return self.done("crash", reply.error_text(), num_params=reply.num_params, **measured)
        mfu = None
        training = measured["training_seconds"]
        if self.device.startswith("cuda") and reply.num_params and training > 0:
            peak = peak_flops(gpu_name(self.device))
            if peak:
                mfu = 100.0 * 6 * reply.num_params * self.server.tokens / training / peak
        return self.done("ok", val_bpb=reply.val_bpb, confirm_bpb=reply.confirm_bpb, num_params=reply.num_params,
                         eval_seconds=self.timings["eval"], mfu_percent=mfu, **measured)

    def run(self) -> ExperimentResult:
        proc = self._spawn()
        try:
            why, rc, rss = self._supervise(proc)
            early = self._train_verdict(why, rc)
            if early is not None:
                return early
            measured = self._measured(rss)
            s = self.server
            if not self.req.max_steps and measured["training_seconds"] > \
                    self.budget + tolerance(self.budget, s.median_interval()):
                return self.done("timeout", f"training took {measured['training_seconds']:.1f}s, "
                                 f"over the {self.budget:.0f}s budget", **measured)
            return self._score(why, rc, measured)
        finally:
            kill_group(proc, grace=0.2)
            shutil.rmtree(self.scratch, ignore_errors=True)
            if self.req.standby:
                from trainer import standby
                try:
                    standby.spawn(self.key, self.run_dir.parent, self._launch_standby, self.unsafe)
                except Exception:
                    log.exception("could not start a standby sandbox")


def run_experiment(train_py: str | Path, run_dir: str | Path, *, budget: float | None = None, seed: int = 0,
                   profile: str | None = None, device: str = "auto", cuda_visible_devices: str | None = None,
                   data_dir: str | Path | None = None, max_steps: int | None = None,
                   hard_limit: float | None = None, confirm_below: float | None = None,
                   threads: int | None = None, cancel: threading.Event | None = None,
                   on_event: Callable[[dict], None] | None = None, standby: bool = False) -> ExperimentResult:
    """Train `train_py` for `budget` seconds (default: the profile's) in the sandbox and score it
    with the locked evaluator. Raises TrainerError only for bad apparatus input (missing
    train.py path, unprepared data, bad options, no sandbox); everything train.py does is a
    status. on_event gets trainer.events dicts: started, progress..., evaluating. standby=True
    starts the next run's sandbox when this one ends (see trainer/standby.py): for an agent
    that runs one experiment after another in one runs folder."""
    try:
        req = RunRequest(train_py=train_py, run_dir=run_dir, budget=budget, seed=seed, profile=profile,
                         device=device, cuda_visible_devices=cuda_visible_devices, data_dir=data_dir,
                         max_steps=max_steps, hard_limit=hard_limit, confirm_below=confirm_below,
                         threads=threads, standby=standby)
    except ValidationError as e:
        err = e.errors()[0]
        raise BadOption(f"run_experiment: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return run_request(req, cancel=cancel, on_event=on_event)


def run_request(req: RunRequest, *, cancel: threading.Event | None = None,
                on_event: Callable[[dict], None] | None = None) -> ExperimentResult:
    """run_experiment for a RunRequest."""
    run = _Run(req, cancel, on_event)
    if not run.unsafe:
        from trainer.sandbox import check_sandbox
        check_sandbox()
    try:
        return run.run()
    except Exception as e:  # a bug here must still be a record, not a dead agent
        log.exception("runner failed")
        return run.done("crash", f"runner error: {type(e).__name__}: {' '.join(str(e).split())[:200]}")


def score_kept(run_dir: str | Path, *, confirm: bool = True, profile: str | None = None,
               data_dir: str | Path | None = None, device: str = "cpu", threads: int | None = None,
               timeout: float | None = None) -> tuple[float | None, float | None, str | None]:
    """Score a finished run's kept artifact again (graph.json with the weights it submitted), for
    example on confirm when the coordinator needs it: (val_bpb, confirm_bpb, error). The files
    were written by the runner, not by train.py; they are checked again all the same."""
    from trainer.evaluator import EvaluatorGone, EvaluatorKey, get_evaluator
    from trainer.sandbox import unsafe_from_env

    run_dir = Path(run_dir).resolve()
    prof = get_profile(profile)
    prep = locate(prof, data_dir)
    if not (run_dir / "graph.json").is_file() or not (run_dir / "weights.bin").is_file():
        return None, None, "no kept artifact in this run dir"
    ev = get_evaluator(EvaluatorKey(
        prepared_dir=str(prep.dir), batch=prof.eval_batch, seq_len=prof.max_seq_len,
        eval_tokens=prof.eval_tokens, device=device, threads=threads, unsafe=unsafe_from_env(),
        gpu_devices=tuple(gpu_devices(device, os.environ.get("CUDA_VISIBLE_DEVICES"))),
        memory_mb=prof.memory_mb, max_procs=prof.max_procs, hidden=tuple(map(str, hidden_paths(prep, data_dir)))))
    try:
        reply = ev.evaluate(run_dir / "graph.json", run_dir / "weights.bin", probe_seed=secrets.randbits(62),
                            confirm_below=float("inf") if confirm else None,
                            deadline=time.monotonic() + (timeout or prof.eval_limit))
    except EvaluatorGone as e:
        return None, None, f"the evaluator died ({e})"
    return reply.val_bpb, reply.confirm_bpb, reply.error_text() if reply.error else None
