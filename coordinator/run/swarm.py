"""What `swarm run` does: check every input first (nothing created on a bad one), then bring up
SWARM_HOME, redis, data, Ray, the coordinator and the agents, supervise them, and stop cleanly.

Ctrl-C (or `swarm stop`) stops every agent, lets in-flight runs record themselves, snapshots
the ledger, shuts Ray down and stops the embedded redis; `swarm run` again resumes.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path

from coordinator.run.config import (ConfigError, assign_programs, load_config,
                                resolve_backend, resolve_program)
from coordinator.run.plan import Plan
from coordinator.state.home import SwarmError, SwarmHome, resolve_home

log = logging.getLogger(__name__)


# --- checks (no side effects) ------------------------------------------------------------------

def _gpus_present() -> int:
    try:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def check_redis(url: str) -> None:
    """Ping `url`; a wrong password or a closed port is one line that never shows the password."""
    from coordinator.state.ledger import LedgerError, connect_redis

    try:
        connect_redis(url).close()
    except LedgerError as e:
        raise SwarmError(str(e)) from None


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """A closed port fails here in a second, instead of in Ray's long connect retries."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError):
        raise SwarmError(f"cannot reach Ray at {address!r} (nothing listens there)") from None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (a cpuset or `taskset` narrows it, which
    os.cpu_count() does not see), as the runner's contention meter counts them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_cores(n: int, per: int, src: str) -> None:
    """A local CPU swarm needs a core per agent thread: 3 agents of 1 thread on 2 cores trained
    every run contended (each waited for a core a third of the time: trainer/contention.py), so
    none was judged, and the swarm's end advised a quieter machine. Refused, naming what fits."""
    cores = usable_cpus()
    if per > cores:
        raise SwarmError(f"{src}: agents.cpus_per_agent {per} is more than the {cores} core(s) this machine "
                         f"lets the swarm use: every run would wait for a core (contended) and none would be judged")
    if n * per > cores:
        raise SwarmError(f"{n} agents x {per} CPU{'s' if per != 1 else ''} each need {n * per} cores, but this "
                         f"machine lets the swarm use {cores}: every run would wait for a core (contended) and "
                         f"none would be judged; use --agents {cores // per} or fewer (or a cluster: --address)")


def plan(args) -> Plan:
    """Validate the sandbox, config, flags, programs, GPUs, redis and the Ray address. Raises
    on bad input (SandboxUnavailable where bubblewrap cannot make namespaces)."""
    from agents.program import load_program
    from trainer.profiles import detect_profile, get_profile
    from trainer.sandbox import UNSAFE_ENV, check_sandbox

    unsafe = bool(getattr(args, "unsafe_no_sandbox", False))
    if unsafe:
        log.warning("--unsafe-no-sandbox: train.py runs without the sandbox")
    else:
        os.environ.pop(UNSAFE_ENV, None)  # only the flag turns the sandbox off
        check_sandbox()

    cfg_path = Path(args.config) if args.config else (Path("swarm.yaml") if Path("swarm.yaml").is_file() else None)
    cfg, base = load_config(cfg_path)
    src = str(cfg_path) if cfg_path else "swarm.default.yaml"   # the file actually read, as given
    if args.budget is not None:
        cfg.budget = args.budget
    if args.seed is not None:
        cfg.seed = args.seed
    profile = args.profile or cfg.profile
    profile = detect_profile() if profile == "auto" else profile
    budget = cfg.budget or get_profile(profile).budget
    present = _gpus_present()
    gpus = args.gpus if args.gpus is not None else cfg.agents.gpus
    address = args.address or os.environ.get("RAY_ADDRESS") or cfg.ray.address
    if gpus is not None and gpus < 0:
        raise SwarmError(f"--gpus must be 0 or more, got {gpus}")
    if gpus and not address and gpus > present:
        raise SwarmError(f"asked for {gpus} GPU(s) but this machine has {present}")
    if profile == "gpu" and not address and present == 0:
        raise SwarmError("profile gpu needs a CUDA GPU and this machine has none (use --profile cpu)")
    use_gpus = (gpus if gpus is not None else present) if profile == "gpu" else 0
    count = args.agents if args.agents is not None else cfg.agents.count
    if count == "per-gpu" or (count == "auto" and use_gpus):
        if not use_gpus:
            raise SwarmError(f"{src}: agents.count: per-gpu, but there is no GPU to use")
        n = use_gpus
    elif count == "auto":
        n = max(1, usable_cpus() // cfg.agents.cpus_per_agent)
    else:
        n = int(count)
    if use_gpus and n > use_gpus and not address:
        raise SwarmError(f"{n} agents need {n} GPUs (one each) but {use_gpus} are available")
    if not use_gpus and not address:
        _check_cores(n, cfg.agents.cpus_per_agent, src)

    programs = []
    for i, entry in enumerate(cfg.programs):
        path = resolve_program(entry, base, src, i)
        load_program(path, entry.label())  # parses the search space: a bad one fails now
        programs.append(path)
    specs = []
    for i, j in enumerate(assign_programs(cfg.programs, n)):
        entry = cfg.programs[j]
        backend = resolve_backend(entry.backend or cfg.backend,
                                  program=load_program(programs[j], entry.label()),
                                  local=address is None)
        # name the key the user wrote: the program's own backend, or the top-level one
        base = f"programs.{j}.backend" if entry.backend is not None else "backend"
        for where, b in ((base, backend), (f"{base}.llm", backend.get("llm") or {})):
            key_env = b.get("api_key_env")
            if key_env and not os.environ.get(key_env):
                raise ConfigError(f"{src}: {where}.api_key_env: environment variable "
                                  f"{key_env} is not set")
        if backend["type"] == "optuna":
            from agents.backends.optuna_study import check_space
            check_space(load_program(programs[j], entry.label()))
        # names are stable across runs, so a resumed swarm's agents pick up their own state
        specs.append({"name": f"a{i}-{entry.label()}", "program_name": entry.label(),
                      "program_path": str(programs[j]), "backend": backend,
                      "adopt": entry.adopt, "seed": cfg.seed + i})

    allocation = _allocation_spec(cfg, programs, specs, address)

    redis_url = args.redis_url or cfg.redis.url
    if redis_url:
        check_redis(redis_url)
    if address:
        check_ray_address(address)
    minutes = args.hours * 60 if args.hours else getattr(args, "minutes", None)
    deadline = time.time() + minutes * 60 if minutes else None
    home = resolve_home(args.swarm_home, cfg.swarm_home)
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") and not (
            args.swarm_home or os.environ.get("SWARM_HOME") or cfg.swarm_home):
        # Inside `ray job submit` the working directory may be Ray's temporary copy of
        # --working-dir, gone with the job: the swarm's state goes to the head's home instead.
        home = Path.home() / ".swarm"
    _check_same_budget(SwarmHome(home), profile, budget)
    cfg.budget = budget
    if cfg.promotion.job_lease_s is None:
        cfg.promotion = cfg.promotion.model_copy(update={"job_lease_s": job_lease(budget, get_profile(profile))})
    return Plan(cfg=cfg, home=home, profile=profile,
                n_agents=n, gpus_per_agent=1 if use_gpus else 0, agent_specs=specs,
                redis_url=redis_url, address=address, max_experiments=args.max_experiments,
                deadline=deadline, plain=args.plain or not sys.stdout.isatty(), verbose=args.verbose,
                unsafe=unsafe, allocation=allocation)


def _allocation_spec(cfg, programs: list[Path], specs: list[dict], address: str | None) -> dict:
    """The programs adaptive allocation may move agents between (decide/allocation.py): each
    one's text, backend (as its agents got it, else resolved as theirs would be), adopt rule,
    weight and pin. Static mode has it too (swarm status shows each program's yield); there a
    program without agents keeps its backend unresolved (nobody is ever moved to it)."""
    adaptive = cfg.allocation.mode == "adaptive"
    from agents.program import ProgramSpec, load_program
    from coordinator.decide.allocation import AllocationSpec

    resolved = {s["program_name"]: s["backend"] for s in specs}
    out = []
    for j, entry in enumerate(cfg.programs):
        backend = resolved.get(entry.label()) or (resolve_backend(
            entry.backend or cfg.backend, program=load_program(programs[j], entry.label()),
            local=address is None) if adaptive else {})
        out.append(ProgramSpec(name=entry.label(), text=Path(programs[j]).read_text(encoding="utf-8"),
                               backend=backend, adopt=entry.adopt, weight=entry.weight, pinned=entry.pin))
    return AllocationSpec(config=cfg.allocation, programs=out).model_dump(mode="json")


def job_lease(budget: float, prof) -> float:
    """How long a handed-out job is its agent's: a whole run (start-up, the budget, the locked
    evaluation) with room to spare, so that a slow run is never handed out twice. The
    coordinator raises it further when runs turn out longer."""
    return 1.5 * (prof.startup_limit + budget + prof.eval_limit) + 60.0


def _check_same_budget(home: SwarmHome, profile: str, budget: float) -> None:
    """A resumed swarm keeps its profile and budget: results trained under another budget
    would be compared with its best as if they were the same measurement (invariant 1)."""
    if not home.exists():
        return
    info = home.info()
    was = info.get("budget"), info.get("profile")
    if was[0] is not None and (float(was[0]) != float(budget) or was[1] != profile):
        raise SwarmError(f"{home.root}: this swarm trains with --budget {was[0]:g} on profile {was[1]}; "
                         f"resume it with the same, or use another --swarm-home for budget {budget:g} "
                         f"on {profile}")


def preflight(p: Plan) -> None:
    """Ask each configured backend once before anything starts: a tiny completion for litellm,
    the program exists for command. A backend that cannot work is one line naming the
    program(s) and the model/URL (exit 2); warnings (no price known) are said once here."""
    from agents.backends.base import make_backend
    from agents.errors import BackendError

    seen: dict[str, list[str]] = {}
    specs: dict[str, dict] = {}
    for a in p.agent_specs:
        key = repr(sorted(a["backend"].items()))
        specs[key] = a["backend"]
        if a["program_name"] not in seen.setdefault(key, []):
            seen[key].append(a["program_name"])
    for key, spec in specs.items():
        check = getattr(make_backend(spec), "preflight", None)
        if not callable(check):
            continue
        names = ", ".join(seen[key])
        try:
            for w in check() or []:
                print(f"swarm run: warning: program {names}: {w}", file=sys.stderr, flush=True)
        except BackendError as e:
            raise SwarmError(f"backend check failed for program {names}: {e}") from None


def run_command(args, setup_logging) -> int:
    p = plan(args)
    preflight(p)
    if p.address:
        # joining is part of the checks: an unreachable cluster must not leave a SWARM_HOME
        from agents.raylocal import start_local_ray
        start_local_ray(num_cpus=0, address=p.address, quiet=not p.verbose)
        _check_cluster_gpus(p)
    setup_logging(p.home, p.verbose)
    from coordinator.run.supervise import Supervisor
    return Supervisor(p).run()


def _check_cluster_gpus(p: Plan) -> None:
    import ray

    have = int(ray.cluster_resources().get("GPU", 0))
    need = p.n_agents * p.gpus_per_agent
    if need > have:
        ray.shutdown()
        raise SwarmError(f"asked for {need} GPU(s) but the Ray cluster at {p.address} has {have}")
    res = p.cfg.agents.resource
    if res and p.n_agents > ray.cluster_resources().get(res, 0):
        have = ray.cluster_resources().get(res, 0)
        ray.shutdown()
        raise SwarmError(f"{p.n_agents} agent(s) need one {res!r} each but the Ray cluster at "
                         f"{p.address} has {have:g} (agents.resource)")
