"""run_experiment (locked): one train.py in a sandbox under the runner's own clock, fed train
batches by the runner, then scored by the locked evaluator in a second sandbox. Returns an
ExperimentResult and never raises for anything train.py does.

Who measures what (train.py is hostile code, see DESIGN.md "Trust"):
- the clock, steps and tokens: trainer.serve.DataServer (batches served, in this process);
- the weights scored: the bytes train.py sent at submit (later work cannot change them);
- the score: trainer.evaluator, from a checked, pickle-free artifact, over a pipe;
- the log: read from a pipe and capped; its tail and every error line are redacted before they
  leave the run;
- the machine's speed during training: trainer.contention, from the kernel's accounting of the
  sandbox's threads (contention, contended);
- compute before the clock: an allowance after the harness is ready, measured from the
  baseline's own start-up (trainer/startup.py).
The sandbox (trainer/sandbox.py) sees an allow-list: the swarm's home, the data dir and the
runs folder are not in it, whichever way they were set; train.py goes into its private,
size-capped scratch through a directory fd the runner holds; nothing comes out of it but the
pipes (the graph and the weights in the submit frame).
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from trainer import startup
from trainer.contention import CONTENDED_ABOVE, ContentionMeter
from trainer.errors import BadOption, BadTrainPy
from trainer.events import Evaluating, Progress, Started
from trainer.prepare import Prepared, data_root, locate
from trainer.profiles import Profile, get_profile, gpu_name, hardware_class, peak_flops
from trainer.runio import LOG_CAP, TAIL_LINES, LogPump, die_with_parent, kill_group, last_error, log_tail
from trainer.runio import put_in
from trainer.schema import ExperimentResult
from trainer.serve import DataServer, tolerance
from trainer.specs import HarnessSpec, RunRequest

log = logging.getLogger(__name__)
EXIT_AFTER_SUBMIT = 3.0     # seconds train.py has to exit once its submit frame arrived: api.submit ends
                            # the process itself (graph and tensors are in the frame, nothing is left to do);
                            # past it, a train.py still running only takes CPU from the evaluation (it was
                            # max(60 s, 0.2 x budget) for torch.export)
SUBMIT_GRACE = 30.0         # seconds after budget + tolerance before a run that never submits is killed
                            # (its last step and its exit may be slow on a busy machine)
ROOT = str(Path(__file__).resolve().parent.parent)
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASS", "CREDENTIAL", "AUTH")
_REDIS_PW = re.compile(r"rediss?://[^@\s]*:[^@\s]+@")

__all__ = ["run_experiment", "run_request", "score_kept", "tolerance", "scrubbed_env", "log_tail", "LOG_CAP",
           "TAIL_LINES", "hidden_paths", "swarm_home"]


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


def child_env(scratch: str, threads: int | None, cuda_visible: str | None) -> dict[str, str]:
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


def swarm_home(home: str | Path | None = None) -> Path:
    """The swarm's home as given (--swarm-home, swarm.yaml, the agent's config), else SWARM_HOME,
    else ./.swarm."""
    return Path(home or os.environ.get("SWARM_HOME") or ".swarm").expanduser().resolve()


def hidden_paths(prep: Prepared, data_dir: str | Path | None, home: str | Path | None = None) -> list[Path]:
    """What a sandbox must never see, should any of it lie inside what it is shown (the Python
    install, site-packages, the trainer package): the swarm's home (research repo, worktrees,
    other runs, redis), the data (raw and prepared), the prepared source's raw files, and the
    bundled corpus (it sits in site-packages, whatever the source). The sandbox is an
    allow-list: elsewhere these are not there at all."""
    from trainer.errors import DataMissing
    from trainer.sources import get_source

    paths = [data_root(data_dir), swarm_home(home), *map(Path, prep.forbidden)]
    try:
        paths += map(Path, get_source("bundled").forbidden_paths(data_root(data_dir)))
    except DataMissing:
        pass
    out = []
    for p in paths:
        p = p.expanduser().resolve()
        if p.exists() and p not in out:  # a file is shown as /dev/null, a folder as an empty tmpfs
            out.append(p)
    return out


def _redact(text: str) -> str:
    try:
        from trainer.redact import known_secrets, redact
        return redact(text, known_secrets())
    except ImportError:
        return text


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
        # absolute: the evaluator's sandbox works in another folder (a relative SWARM_DATA_DIR
        # made every evaluation fail with FileNotFoundError)
        self.data_dir = data_root(req.data_dir).resolve()
        self.prep = locate(self.prof, self.data_dir)
        self.run_dir = Path(req.run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.scratch = self.run_dir / "scratch"  # the sandbox's folder on this side (its scratch when unsafe)
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
        self.hidden = hidden_paths(self.prep, self.data_dir, req.swarm_home)
        self.key = (ROOT, self.prof.name, device, req.threads, self.cuda_visible, tuple(self.gpus),
                    self.unsafe, tuple(self.hidden))
        hw = hardware_class(self.prof.name, device, req.threads)
        self.base = dict(seed=req.seed, budget=self.budget, profile=self.prof.name, hardware_class=hw,
                         unigram_bpb=self.prep.unigram_bpb, sandboxed=not self.unsafe)
        # A baseline run measures the start-up allowance, so it gets the profile's limit itself.
        self.baseline = startup.is_baseline(self.train_py)
        self.allowance, _ = (self.prof.startup_limit, False) if self.baseline else \
            startup.allowance(self.run_dir.parent, hw, self.prof.startup_limit)
        self.timings: dict[str, float] = {"startup_allowance": self.allowance}
        self.server: DataServer | None = None
        self.pump: LogPump | None = None
        self.meter: ContentionMeter | None = None
        self.scratch_fd: int | None = None
        self.fds: list[int] = []   # the event pipe's read end and the data pipe's write end

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
        counts = dict(bad_events=s.bad_events if s else 0, node=socket.gethostname())
        if s is not None and s.real:
            counts.update(steps=s.real, tokens=s.tokens)
        c = self.meter.value() if self.meter is not None else None
        if c is not None:
            counts.update(contention=round(c, 4), contended=c > CONTENDED_ABOVE)
        self.timings["total"] = time.monotonic() - self.t_spawn
        return ExperimentResult(status=status, error=_redact(error) if error else error,
                                log_tail=tail if status != "ok" else tail[-4000:],
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
            hidden=tuple(map(str, self.hidden)), probes_min=p.probes_min))

    # --- the training sandbox -----------------------------------------------------------------
    def _stage(self, inside: str, event_fd: int, data_fd: int) -> bytes:
        """train.py and the tokenizer into the sandbox's scratch (through scratch_fd); returns the
        harness spec (paths as the sandbox sees them)."""
        for stale in ("graph.json", "weights.bin"):
            (self.run_dir / stale).unlink(missing_ok=True)
        put_in(self.scratch_fd, "train.py", self.train_py)
        put_in(self.scratch_fd, "tokenizer.pkl", self.prep.tokenizer_path)
        p = self.prof
        spec = HarnessSpec(train_py=f"{inside}/train.py", scratch=inside, tokenizer=f"{inside}/tokenizer.pkl",
                           event_fd=event_fd, data_fd=data_fd, budget=self.budget, max_steps=self.req.max_steps,
                           seed=self.req.seed, device=self.device, threads=self.req.threads, profile=p.name,
                           max_seq_len=p.max_seq_len, vocab_size=p.vocab_size, eval_batch=p.eval_batch,
                           warmup_batches=0 if self.req.max_steps else p.warmup_batches)  # no clock, no warm-up
        return spec.model_dump_json().encode()

    def _sandbox(self, host: Path):
        from trainer.sandbox import SandboxSpec

        p = self.prof
        sbx = SandboxSpec(scratch=host, hidden=self.hidden, gpu_devices=self.gpus, memory_mb=p.memory_mb,
                          max_procs=p.max_procs, quota_mb=p.scratch_mb, cpus=self.req.threads, unsafe=self.unsafe)
        sbx.env = child_env(sbx.inside, self.req.threads, self.cuda_visible)
        return sbx

    def _launch(self, host: Path, args: list[str], fds: tuple[int, int]) -> tuple[subprocess.Popen, int]:
        """Spawn the harness in a sandbox whose folder on this side is `host`; (proc, log pipe
        read end)."""
        from trainer.sandbox import wrap

        code = (f"import sys; sys.path.insert(0, {ROOT!r}); from trainer.harness import main; "
                f"sys.exit(main(sys.argv[1:]))")
        sbx = self._sandbox(host)
        argv = wrap([sys.executable, "-I", "-c", code, *args], sbx)
        log_r, log_w = os.pipe()
        try:
            proc = subprocess.Popen(argv, stdout=log_w, stderr=log_w, stdin=subprocess.DEVNULL,
                                    cwd=host, env=sbx.env, pass_fds=fds, start_new_session=True,
                                    preexec_fn=die_with_parent)
        except BaseException:
            os.close(log_r)
            raise
        finally:
            os.close(log_w)
        return proc, log_r

    def _launch_standby(self, host: Path, event_w: int, data_r: int) -> tuple[subprocess.Popen, int]:
        return self._launch(host, ["--standby", str(event_w), str(data_r), self.device], (event_w, data_r))

    def _spawn(self) -> subprocess.Popen:
        """Start the sandbox (or take the standby), reach its scratch, put train.py in, send the
        spec. Leaves scratch_fd None when the sandbox never started (run() says so)."""
        from trainer import standby
        from trainer.dataloader import TokenDocs

        sb = standby.take(self.key, self.run_dir) if self.req.standby else None
        if sb is not None:
            proc, ev_r, dt_w, log_r, child_fds, inside = sb.proc, sb.ev_r, sb.dt_w, sb.log_r, sb.child_fds, sb.inside
            self.scratch_fd = sb.scratch_fd
            self.timings["standby_age"] = time.monotonic() - sb.spawned
        else:
            if self.scratch.exists():
                shutil.rmtree(self.scratch)
            self.scratch.mkdir()
            ev_r, ev_w = os.pipe()
            dt_r, dt_w = os.pipe()
            try:
                proc, log_r = self._launch(self.scratch, ["--wait", str(ev_w), str(dt_r), self.device], (ev_w, dt_r))
            except BaseException:
                os.close(ev_r)
                os.close(dt_w)
                raise
            finally:
                os.close(ev_w)
                os.close(dt_r)
            child_fds, inside = (ev_w, dt_r), self._sandbox(self.scratch).inside
        self.fds = [ev_r, dt_w]
        self.emit(Started(pgid=proc.pid, run_dir=str(self.run_dir)))
        self.pump = LogPump(log_r, self.log_path)
        self.pump.start()
        if sb is None:
            self.scratch_fd = standby.open_scratch(proc, self.scratch, self.unsafe, self.prof.scratch_mb)
        if self.scratch_fd is None:
            return proc
        p = self.prof
        self.server = DataServer(
            ev_r, dt_w, train=TokenDocs(self.prep.dir, "train"), vocab=p.vocab_size, seed=self.req.seed,
            budget=self.budget, max_steps=self.req.max_steps, warmup_cap=2 * p.warmup_batches,
            startup_limit=p.startup_limit, max_batch_tokens=p.max_batch_tokens, max_seq_len=p.max_seq_len,
            weights_path=self.run_dir / "weights.bin", max_weights_bytes=p.max_artifact_mb << 20,
            t_spawn=self.t_spawn, on_progress=lambda pr, st, tk: self.emit(Progress(progress=pr, steps=st, tokens=tk)),
            eval_shape=(p.eval_batch, p.max_seq_len))
        standby.send_spec(dt_w, self._stage(inside, *child_fds))
        self.server.start()
        return proc

    def _deadline(self, now: float) -> tuple[float, str]:
        """When to kill the sandbox, and what to say then."""
        s = self.server
        hard = (self.t_spawn + self.hard, f"killed at the hard limit ({self.hard:.0f}s)")
        if s.t_submit is not None:
            return min(hard, (s.t_submit + EXIT_AFTER_SUBMIT,
                              f"killed {EXIT_AFTER_SUBMIT:.0f}s after submit"))
        t0 = s.clock_start(now)
        if t0 is None or self.req.max_steps:
            return hard
        end = t0 + self.budget + tolerance(self.budget, s.median_interval()) + SUBMIT_GRACE
        return min(hard, (end, f"killed at the hard limit ({end - self.t_spawn:.0f}s)"))

    def _supervise(self, proc: subprocess.Popen) -> tuple[str | None, int | None, float | None]:
        """Wait for the sandbox to exit, be cancelled or pass its deadline; kill its group in every
        case. Meanwhile: tighten the clock's start-up limit to the allowance once the harness is
        ready, and sample the machine's speed. Returns (why it was killed or None, exit code,
        peak RSS in MB)."""
        why, rc, rss = None, None, None
        evaluator_started = allowance_set = False
        s = self.server
        self.meter = ContentionMeter(proc.pid, share=self.req.threads or len(os.sched_getaffinity(0)))
        while True:
            if not evaluator_started and s.t_submit is not None:
                # Started (if it is not already running) at submit: not earlier, where its
                # imports would take CPU from training.
                self.evaluator()
                evaluator_started = True
            if not allowance_set and s.t_ready is not None:
                # Before `ready` only the locked harness runs (imports): the profile's limit. From
                # then on train.py's own code runs, and the clock starts at the latest after the
                # allowance (forced_start() is t_ready + startup_limit once t_ready is set).
                s.startup_limit = self.allowance
                allowance_set = True
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = rc = os.waitstatus_to_exitcode(status)
                rss = ru.ru_maxrss / 1024
                break
            now = time.monotonic()
            self.meter.sample(counting=s.clock_start(now) is not None and s.t_submit is None, now=now)
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
            err = last_error(log_tail(self.log_path))
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
        if self.baseline and s.t_ready is not None and s.t0 is not None and s.t0 < s.forced_start() \
                and not self.req.max_steps:
            startup.record(self.run_dir.parent, self.base["hardware_class"], s.t0 - s.t_ready)
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
            if self.scratch_fd is None:
                kill_group(proc, grace=0.5)
                self.pump.join(timeout=5.0)
                return self.done("crash", f"the sandbox did not start: {last_error(log_tail(self.log_path))}")
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
            self._close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            if self.req.standby:
                from trainer import standby
                try:
                    standby.spawn(self.key, self.run_dir.parent, self._launch_standby, self.unsafe,
                                  quota_mb=self.prof.scratch_mb)
                except Exception:
                    log.exception("could not start a standby sandbox")

    def _close(self) -> None:
        """The scratch's fd (its tmpfs goes with it) and the pipes' ends, once the server is done."""
        fds = [self.scratch_fd]
        if self.server is None or not self.server.is_alive():
            fds += self.fds
        self.scratch_fd, self.fds = None, []
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def run_experiment(train_py: str | Path, run_dir: str | Path, *, budget: float | None = None, seed: int = 0,
                   profile: str | None = None, device: str = "auto", cuda_visible_devices: str | None = None,
                   data_dir: str | Path | None = None, max_steps: int | None = None,
                   hard_limit: float | None = None, confirm_below: float | None = None,
                   threads: int | None = None, cancel: threading.Event | None = None,
                   on_event: Callable[[dict], None] | None = None, standby: bool = False,
                   swarm_home: str | Path | None = None) -> ExperimentResult:
    """Train `train_py` for `budget` seconds (default: the profile's) in the sandbox and score it
    with the locked evaluator. Raises TrainerError only for bad apparatus input (missing
    train.py path, unprepared data, bad options, no sandbox); everything train.py does is a
    status. on_event gets trainer.events dicts: started, progress..., evaluating. standby=True
    starts the next run's sandbox when this one ends (see trainer/standby.py): for an agent
    that runs one experiment after another in one runs folder. swarm_home: the swarm's home as
    its owner set it (default SWARM_HOME, else ./.swarm), never shown to the sandbox."""
    try:
        req = RunRequest(train_py=train_py, run_dir=run_dir, budget=budget, seed=seed, profile=profile,
                         device=device, cuda_visible_devices=cuda_visible_devices, data_dir=data_dir,
                         max_steps=max_steps, hard_limit=hard_limit, confirm_below=confirm_below,
                         threads=threads, standby=standby, swarm_home=swarm_home)
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
    data_dir = data_root(data_dir).resolve()
    prep = locate(prof, data_dir)
    if not (run_dir / "graph.json").is_file() or not (run_dir / "weights.bin").is_file():
        return None, None, "no kept artifact in this run dir"
    ev = get_evaluator(EvaluatorKey(
        prepared_dir=str(prep.dir), batch=prof.eval_batch, seq_len=prof.max_seq_len,
        eval_tokens=prof.eval_tokens, device=device, threads=threads, unsafe=unsafe_from_env(),
        gpu_devices=tuple(gpu_devices(device, os.environ.get("CUDA_VISIBLE_DEVICES"))),
        memory_mb=prof.memory_mb, max_procs=prof.max_procs, hidden=tuple(map(str, hidden_paths(prep, data_dir))),
        probes_min=prof.probes_min))
    try:
        reply = ev.evaluate(run_dir / "graph.json", run_dir / "weights.bin", probe_seed=secrets.randbits(62),
                            confirm_below=float("inf") if confirm else None,
                            deadline=time.monotonic() + (timeout or prof.eval_limit))
    except EvaluatorGone as e:
        return None, None, f"the evaluator died ({e})"
    return reply.val_bpb, reply.confirm_bpb, reply.error_text() if reply.error else None
