"""run_experiment (locked): one train.py in a child process under the runner's own clock,
then a separate locked evaluation process. Returns an ExperimentResult, never raises for
anything train.py does."""
from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from trainer.errors import BadTrainPy
from trainer.prepare import locate
from trainer.profiles import get_profile, gpu_name, hardware_class, peak_flops
from trainer.schema import ExperimentResult

log = logging.getLogger(__name__)
TAIL_LINES = 40
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASS", "CREDENTIAL", "AUTH")
_REDIS_PW = re.compile(r"rediss?://[^@\s]*:[^@\s]+@")


def tolerance(budget: float, step_seconds: float | None = None) -> float:
    """Seconds a run may overrun its budget: the last step must be allowed to finish, so
    max(2% of the budget, 1 s, 1.5 x the median step time the parent observed), the step
    part capped at 10% of the budget (a train.py slowing its steps gains little)."""
    step = min(1.5 * step_seconds, 0.1 * budget) if step_seconds else 0.0
    return max(0.02 * budget, 1.0, step)


def scrubbed_env(cuda_visible_devices: str | None = None, threads: int | None = None) -> dict[str, str]:
    """The parent's environment minus anything that could be a secret."""
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


def _die_with_parent() -> None:
    try:  # PR_SET_PDEATHSIG = 1: the child gets SIGKILL when the actor that started it dies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


def _kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        t = time.monotonic() + wait
        while time.monotonic() < t and proc.poll() is None:
            time.sleep(0.05)


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


class _Events(threading.Thread):
    """Reads the child's JSON-line events; the parent's receipt time is the only clock."""

    def __init__(self, fd: int, on_event: Callable[[dict], None] | None):
        super().__init__(daemon=True)
        self.fd, self.on_event = fd, on_event
        self.events: list[tuple[float, dict]] = []
        self.first: dict[str, float] = {}
        self.last: dict[str, dict] = {}
        self.step_times: list[float] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        with os.fdopen(self.fd, "rb") as f:
            for raw in f:
                t = time.monotonic()
                try:
                    ev = json.loads(raw)
                    name = str(ev["event"])
                except Exception:
                    continue  # garbage on the pipe is ignored, never trusted
                with self.lock:
                    if name in ("step", "start") and "submit" not in self.first:
                        self.step_times.append(t)
                    self.first.setdefault(name, t)
                    self.last[name] = ev
                if name == "progress" and self.on_event:
                    try:
                        self.on_event({"event": "progress", "progress": float(ev.get("progress", 0)),
                                       "steps": ev.get("steps"), "tokens": ev.get("tokens")})
                    except Exception:
                        log.exception("on_event failed")

    def median_step(self) -> float | None:
        with self.lock:
            ts = self.step_times
            gaps = sorted(b - a for a, b in zip(ts, ts[1:]) if b > a)
        return gaps[len(gaps) // 2] if gaps else None

    def t(self, name: str) -> float | None:
        with self.lock:
            return self.first.get(name)


def run_experiment(train_py: str | Path, run_dir: str | Path, *, budget: float | None = None, seed: int = 0,
                   profile: str | None = None, device: str = "auto", cuda_visible_devices: str | None = None,
                   data_dir: str | Path | None = None, max_steps: int | None = None,
                   hard_limit: float | None = None, confirm_below: float | None = None,
                   threads: int | None = None, cancel: threading.Event | None = None,
                   on_event: Callable[[dict], None] | None = None) -> ExperimentResult:
    """Train `train_py` for `budget` seconds (default: the profile's) in a child process and
    score it with the locked evaluation. Raises TrainerError only for bad apparatus input
    (missing train.py path, unprepared data); everything train.py does is a status."""
    t_spawn = time.monotonic()
    prof = get_profile(profile)
    train_py = Path(train_py).resolve()
    if not train_py.is_file():
        raise BadTrainPy(f"train.py does not exist: {train_py}")
    prep = locate(prof, data_dir)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    budget = float(budget if budget is not None else prof.budget)
    if device == "auto":
        import torch
        device = "cuda:0" if (torch.cuda.is_available() and cuda_visible_devices != "") else "cpu"
    hard = float(hard_limit if hard_limit is not None else 2 * budget + prof.startup_limit + 30)
    hw = hardware_class(prof.name, device, threads)
    base = dict(seed=seed, budget=budget, profile=prof.name, hardware_class=hw, unigram_bpb=prep.unigram_bpb)
    log_path = run_dir / "run.log"
    for stale in ("model.pt2", "eval_result.json"):
        (run_dir / stale).unlink(missing_ok=True)
    spec = {"train_py": str(train_py), "run_dir": str(run_dir), "budget": budget, "max_steps": max_steps,
            "seed": seed, "device": device, "threads": threads, "profile": prof.name,
            "max_seq_len": prof.max_seq_len, "vocab_size": prof.vocab_size, "eval_batch": prof.eval_batch,
            "warmup_steps": prof.warmup_steps, "startup_limit": prof.startup_limit,
            "tolerance": tolerance(budget) / budget, "prepared_dir": str(prep.dir),
            "forbidden": list(prep.forbidden)}
    env = scrubbed_env(cuda_visible_devices, threads)

    def done(status: str, error: str | None = None, **kw) -> ExperimentResult:
        tail = log_tail(log_path)
        return ExperimentResult(status=status, error=error, log_tail=tail if status != "ok" else tail[-4000:],
                                log_path=str(log_path), total_seconds=time.monotonic() - t_spawn, **base, **kw)

    # --- training child ---
    r, w = os.pipe()
    spec["event_fd"] = w
    (run_dir / "spec.json").write_text(json.dumps(spec))
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-I", "-m", "trainer.harness", str(run_dir / "spec.json")],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=run_dir,
                                env=env, pass_fds=(w,), start_new_session=True, preexec_fn=_die_with_parent)
    os.close(w)
    events = _Events(r, on_event)
    events.start()
    post_submit = max(20.0, 0.1 * budget)
    killed = cancelled = False
    rusage = None
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            rusage = ru
            break
        now = time.monotonic()
        ts = events.t("submit")
        if cancel is not None and cancel.is_set():
            cancelled = True
        elif now - t_spawn > hard or (ts is not None and now - ts > post_submit):
            killed = True
        if cancelled or killed:
            _kill_group(proc)
            break
        time.sleep(0.05)
    _kill_group(proc, grace=0.5)  # stragglers train.py may have started
    events.join(timeout=2.0)
    rc = proc.returncode
    peak_mb = rusage.ru_maxrss / 1024 if rusage else None

    if events.t("violation") is not None:
        path = events.last["violation"].get("path", "?")
        return done("crash", f"train.py tried to read the val split ({path})")
    if cancelled:
        return done("crash", "cancelled")
    t_ready, t_start, t_submit = events.t("ready"), events.t("start"), events.t("submit")
    if killed:
        why = "did not exit after submit" if t_submit else "did not submit"
        return done("timeout", f"killed at the hard limit ({hard:.0f}s): train.py {why}")
    if t_submit is None or rc != 0 or not (run_dir / "model.pt2").exists():
        err = _last_error(log_tail(log_path))
        if t_ready is None:
            err = f"harness did not start: {err}"
        return done("crash", err if rc != 0 else f"exit 0 without a model: {err}")
    # The locked clock: warmup is excluded, but never more than the startup limit.
    cap = t_ready + prof.startup_limit
    t0 = min(t_start, cap) if t_start is not None else min(cap, t_submit)
    training = max(0.0, t_submit - t0)
    sub = events.last["submit"]
    steps, tokens = int(sub.get("steps") or 0), int(sub.get("tokens") or 0)
    meta = sub.get("meta") or {}
    if device.startswith("cuda") and isinstance(meta.get("peak_memory_mb"), (int, float)):
        peak_mb = float(meta["peak_memory_mb"])
    measured = dict(training_seconds=training, startup_seconds=t0 - t_spawn, steps=steps, tokens=tokens,
                    peak_memory_mb=peak_mb)
    if not max_steps and training > budget + tolerance(budget, events.median_step()):
        return done("timeout", f"training took {training:.1f}s, over the {budget:.0f}s budget", **measured)

    # --- locked evaluation: a fresh process, no train.py code ---
    espec = {"model_path": str(run_dir / "model.pt2"), "prepared_dir": str(prep.dir), "device": device,
             "eval_batch": prof.eval_batch, "max_seq_len": prof.max_seq_len, "eval_tokens": prof.eval_tokens,
             "confirm_below": confirm_below, "threads": threads, "seed": seed,
             "result_path": str(run_dir / "eval_result.json")}
    (run_dir / "eval_spec.json").write_text(json.dumps(espec))
    with open(log_path, "ab") as logf:
        logf.write(b"\n--- locked evaluation ---\n")
        logf.flush()
        ev = subprocess.Popen([sys.executable, "-I", "-m", "trainer.evaluate", str(run_dir / "eval_spec.json")],
                              stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=run_dir,
                              env=env, start_new_session=True, preexec_fn=_die_with_parent)
    t_eval = time.monotonic()
    while ev.poll() is None:
        if cancel is not None and cancel.is_set():
            _kill_group(ev)
            return done("crash", "cancelled", **measured)
        if time.monotonic() - t_eval > prof.eval_limit:
            _kill_group(ev)
            return done("crash", f"evaluation took longer than {prof.eval_limit:.0f}s", **measured)
        time.sleep(0.05)
    try:
        res = json.loads((run_dir / "eval_result.json").read_text())
    except (OSError, ValueError):
        return done("crash", f"evaluation failed: {_last_error(log_tail(log_path))}", **measured)
    num_params = res.get("num_params")
    if "error" in res:
        return done("crash", res["error"], num_params=num_params, **measured)
    mfu = None
    if device.startswith("cuda") and num_params and training > 0:
        peak = peak_flops(gpu_name(device))
        if peak:
            mfu = 100.0 * 6 * num_params * tokens / training / peak
    return done("ok", val_bpb=res["val_bpb"], confirm_bpb=res.get("confirm_bpb"), num_params=num_params,
                eval_seconds=res.get("eval_seconds"), mfu_percent=mfu, **measured)
