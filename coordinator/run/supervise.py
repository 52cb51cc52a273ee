"""The running part of `swarm run`: redis, data, Ray, the coordinator actor and the agent actors,
a supervision loop (dead agents are reconciled and restarted) and a clean stop on Ctrl-C.

An agent whose node died is not an agent that keeps crashing: it is restarted without counting
against MAX_RESTARTS, and its new actor waits (pending in Ray, no retry loop) until a node with
a free agent slot joins the cluster.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from coordinator.state import figures
from coordinator.state.home import SwarmError, SwarmHome
from coordinator.run.plan import MAX_RESTARTS, STOP_GRACE_S, Plan

log = logging.getLogger(__name__)

_HUB_SOURCES = ("bundled", "climbmix", "tinystories")
WAITING_SAY_S = 60.0   # how often a swarm without capacity says again that it waits
# An unreachable agent may be on a node that Ray has not yet declared dead (its health check
# takes ~15-30 s): a restart before that lands on the dying node and dies with it.
UNREACHABLE_WAIT_S = 90.0


class Supervisor:
    def __init__(self, plan: Plan):
        self.p = plan
        self.home = SwarmHome(plan.home)
        self.daemon = None
        self.ray_tmp: Path | None = None
        self.coord = None
        self.actors: dict[str, object] = {}
        self.refs: dict[str, object] = {}
        self.configs: dict[str, object] = {}
        self.restarts: dict[str, int] = {}
        self.placed: dict[str, object] = {}     # agent -> status() ref: ready once it is set up
        self.waiting: dict[str, float] = {}     # agent -> when it lost its node
        self._waiting_said = 0.0
        self.results: dict[str, dict] = {}
        self.data_source: str | None = None
        self.history = None   # NoiseHistorySpec: `describe(self.history, hw)` says what it holds
        self._redis_said = 0.0
        self._view = None                       # the live view, open until the summary
        self.trackers = None                    # coordinator/track: MLflow / W&B followers

    # --- bring-up -------------------------------------------------------------------------------

    def _redis(self) -> str:
        if self.p.redis_url:
            return self.p.redis_url
        from coordinator.state.redisd import RedisDaemon
        self.daemon = RedisDaemon(self.home.redis_dir).start()
        return self.daemon.url

    def _data_dir(self) -> Path:
        from trainer.errors import TrainerError
        from trainer.prepare import locate, prepare

        d = self.p.cfg.data
        source = d.source
        if source == "auto":
            try:
                prep = locate(self.p.profile, d.dir)
                # Agents on other nodes prepare the same source there; a local: folder exists
                # only here, so its agents must find it prepared.
                self.data_source = prep.source_id if prep.source_id in _HUB_SOURCES else None
                return prep.dir.parent.parent
            except TrainerError:
                source = "bundled"
        self.data_source = source if source in _HUB_SOURCES else None
        log.info("preparing data (%s) for profile %s", source, self.p.profile)
        return prepare(source, [self.p.profile], d.dir)

    def _history(self):
        """Where the noise measured by earlier swarms lives (beside the prepared data), keyed by
        profile, budget and apparatus fingerprint (coordinator/decide/history.py)."""
        from coordinator.decide.history import history_spec
        try:
            self.history = history_spec(self.data_dir, self.p.profile, self.p.cfg.budget)
        except Exception as e:  # no history is today's behaviour, never a failure
            log.warning("noise history unavailable: %s", e)
            self.history = None
        return self.history

    def _min_dof_note(self) -> str | None:
        """history.min_dof_note, unless noise history gives this machine's class the degrees of
        freedom a low min_dof lacks."""
        from coordinator.decide.history import LOW_DOF, NoiseHistory, min_dof_note
        promo = self.p.cfg.promotion
        hw = self._local_class()
        if self.history is not None and hw is not None and promo.history_dof_max > 0:
            if NoiseHistory(self.history, self.info["swarm_id"], promo.history_dof_max).prior(hw)[1] >= LOW_DOF:
                return None
        return min_dof_note(promo.min_dof, promo.alpha)

    def _history_line(self, resumed: bool = False) -> str:
        """One line at start: noise history found for this swarm's hardware class (its sigma,
        dof, from how many swarms) or not (coordinator/decide/history.py: describe)."""
        from coordinator.decide.history import describe
        promo = self.p.cfg.promotion
        # a resumed swarm goes on with the noise its coordinator counted from the ledger (a new
        # one has none: no status call at its start)
        classes = ((self._coord_status() or {}).get("classes") or {}) if resumed else {}
        own = {hw: int(c.get("noise_dof") or 0) for hw, c in classes.items()
               if isinstance(c, dict) and not c.get("noise_prior")}
        return describe(self.history, self._local_class(), self.info["swarm_id"], promo.history_dof_max,
                        promo.min_dof, own_dof=own)

    def _local_class(self) -> str | None:
        """The agents' hardware class when this machine can tell it (CPU agents, or a GPU here),
        else None (GPUs on other nodes: the line lists every class the history holds)."""
        from trainer.profiles import hardware_class
        try:
            if not self.p.gpus_per_agent:
                return hardware_class(self.p.profile, "cpu", self.p.cfg.agents.cpus_per_agent)
            import torch
            return hardware_class(self.p.profile, "cuda") if torch.cuda.is_available() else None
        except Exception:
            return None

    def _ray(self) -> None:
        from agents.raylocal import start_local_ray

        if self.p.address:
            return  # joined during the checks
        # Ray's unix socket paths must fit in 107 bytes: a short temp dir, removed at the end
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="swr", dir="/tmp"))
        cpus = self.p.n_agents * self.p.cfg.agents.cpus_per_agent
        res = self.p.cfg.agents.resource
        start_local_ray(num_cpus=cpus, num_gpus=self.p.n_agents * self.p.gpus_per_agent or None,
                        temp_dir=self.ray_tmp, resources={res: self.p.n_agents} if res else None,
                        quiet=not self.p.verbose)

    def _agent(self, spec: dict):
        from agents.actor import agent_actor
        from agents.config import AgentConfig

        cfg = AgentConfig(**spec, swarm_id=self.info["swarm_id"], swarm_home=self.home.root,
                          budget=self.p.cfg.budget, profile=self.p.profile,
                          device="cuda" if self.p.gpus_per_agent else "cpu",
                          threads=None if self.p.gpus_per_agent else self.p.cfg.agents.cpus_per_agent,
                          data_dir=self.data_dir, data_source=self.data_source)
        self.configs[cfg.name] = cfg
        res = self.p.cfg.agents.resource
        extra: dict = {"resources": {res: 1}} if res else {}
        if self.p.unsafe:
            from trainer.sandbox import UNSAFE_ENV
            extra["runtime_env"] = {"env_vars": {UNSAFE_ENV: "1"}}
        # The bare handle: the agent builds its port (and its spool dir) on its own node.
        actor = agent_actor(cfg, gpus=self.p.gpus_per_agent, cpus=self.p.cfg.agents.cpus_per_agent,
                            **extra).remote(cfg, self.coord)
        self.actors[cfg.name] = actor
        self.refs[cfg.name] = actor.run.remote(max_experiments=self.p.max_experiments,
                                               deadline=self.p.deadline)
        self.placed[cfg.name] = actor.status.remote()

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        self.info, resumed = self.home.create_or_resume(self.p.redis_url, profile=self.p.profile,
                                                        budget=self.p.cfg.budget, unsafe=self.p.unsafe)
        if self.p.unsafe:
            # the agents' runners read it (trainer.sandbox.unsafe_from_env); set before Ray starts
            # so a local Ray's workers inherit it, and per actor for a joined cluster
            from trainer.sandbox import UNSAFE_ENV
            os.environ[UNSAFE_ENV] = "1"
        log.info("%s swarm %s in %s", "resuming" if resumed else "starting", self.info["swarm_id"],
                 self.home.root)
        self.home.write_pid()
        self.started_at = time.time()
        if threading.current_thread() is threading.main_thread():
            # `ray job stop` sends SIGTERM: stop as on Ctrl-C, in-flight runs recording themselves
            signal.signal(signal.SIGTERM, _interrupt)
        interrupted = False
        verdict = 0
        try:
            url = self._redis()
            if resumed:
                print(self._resume_line(url), flush=True)
            if any(s["backend"].get("type") == "optuna" for s in self.p.agent_specs):
                # The optuna backend keeps its study on this redis; Ray's workers inherit the
                # variable (the runner scrubs SWARM_REDIS* from train.py's environment).
                os.environ["SWARM_REDIS_URL"] = url
            self.data_dir = self._data_dir().resolve()   # absolute: the workers do not start where we did
            os.environ["SWARM_DATA_DIR"] = str(self.data_dir)
            self._ray()
            from coordinator.decide.actor import coordinator_actor
            self.coord = coordinator_actor(self.home.root, url, self.p.cfg.promotion, self.info["swarm_id"],
                                           baseline_train_py=_baseline_text(), history=self._history())
            self._check_coordinator()
            if self.p.allocation is not None:  # kept in redis: a restarted coordinator finds it
                import ray
                ray.get(self.coord.configure_allocation.remote(self.p.allocation))
            print(self._history_line(resumed), flush=True)
            unstaffed = self.p.unstaffed_line()
            if unstaffed:
                print(unstaffed, flush=True)
            note = self._min_dof_note()
            if note:
                print(note, flush=True)
            if self.p.cfg.tracking.enabled():
                # a thread that follows the ledger: a tracker never holds up a decision
                from coordinator.track.follower import start_trackers
                self.trackers = start_trackers(self.p.cfg.tracking, url, self.info, self.home.root)
            try:
                # a Ctrl-C while the agents start stops the ones started (it was lost there: the
                # agents ran on as if no signal had come)
                for spec in self.p.agent_specs:
                    self._agent(spec)
                self._supervise(url)
            except KeyboardInterrupt:
                interrupted = True
                log.warning("interrupted: stopping agents, in-flight runs will be recorded")
                print("\nstopping: waiting for in-flight runs to record themselves...", flush=True)
            self._stop_agents()
            self._watch_redis()  # the snapshot and the summary read it
            self._close_studies(url)
            self._snapshot()
            if self.trackers is not None:
                self.trackers.stop(drain_s=60)   # what is left then, the next swarm run logs
            verdict = self._final_summary(url)
        finally:
            self._teardown()
        return 130 if interrupted else verdict

    def _resume_line(self, url: str) -> str:
        """What a resumed swarm goes on from: experiments, best, and each optuna study's trials
        (its samplers go on from them, they do not start over)."""
        import redis

        from coordinator.run import live

        client = redis.Redis.from_url(url)
        try:
            data = live.gather(client, self.info["swarm_id"], _rows(client, self.info))
            studies = {}
            if any(s["backend"].get("type") == "optuna" for s in self.p.agent_specs):
                from agents.backends.optuna_study import study_sizes
                studies = study_sizes(client, self.info["swarm_id"])
        except Exception as e:  # a view must never stop the swarm
            log.debug("resume summary unavailable: %s", e)
            return f"swarm run: resuming swarm {self.info['swarm_id']} (run {self.info.get('runs')})"
        finally:
            client.close()
        best = ", ".join(f"{hw} {b.get('val_bpb'):.4f}" for hw, b in sorted(data["best"].items())
                         if b.get("val_bpb") is not None) or "none yet"
        line = (f"swarm run: resuming swarm {self.info['swarm_id']} (run {self.info.get('runs')}): "
                f"{figures.plural(data['experiments'], 'experiment')} ({figures.plural(data['runs'], 'run')}) "
                f"so far, best {best}, moved {figures.plural(data['best_moves'], 'time')}")
        if studies:
            line += "; optuna studies go on from " + ", ".join(
                f"{name} ({n} trials, {done} trained)" for name, (n, done) in sorted(studies.items()))
        return line

    def _supervise(self, url: str) -> None:
        import ray
        import redis

        from coordinator.run import live

        client = redis.Redis.from_url(url)
        # Closed by _final_summary after its last frame, drawn from the summary's own data.
        view = self._view = _View(self.p.plain)
        ledger_rows = _LedgerRows(self.info)
        try:
            while self.refs:
                self._watch_redis()
                self._watch_capacity()
                done, _ = ray.wait(list(self.refs.values()), num_returns=1, timeout=0.5)
                for ref in done:
                    name = next(n for n, r in self.refs.items() if r == ref)
                    del self.refs[name]
                    try:
                        self.results[name] = ray.get(ref)
                        log.info("agent %s finished: %s", name, self.results[name])
                        why = str(self.results[name].get("stop_reason") or "")
                        if why.startswith("backend refused"):   # one line in the terminal
                            log.error("agent %s stopped: %s", name, why)
                    except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                        self._agent_died(name, e)
                rows, fresh = ledger_rows.get(client)
                if view.plain and not fresh:
                    continue   # a plain line is drawn only from rows just read (see _LedgerRows)
                t0 = time.monotonic()
                try:
                    view.update(live.gather(client, self.info["swarm_id"], rows))
                except redis.RedisError as e:  # redis restarting: the view waits, the swarm goes on
                    log.debug("live view: %s", e)
                if fresh:   # the figures of rows just read are computed once (live._figures): their cost too
                    ledger_rows.cost += time.monotonic() - t0
        finally:
            client.close()

    def _watch_redis(self) -> None:
        """Bring the embedded redis back from its AOF if it died; the coordinator's client
        retries meanwhile and agents spool what they cannot report. (An external redis is its
        operator's: the coordinator waits for it.)"""
        if self.daemon is None:
            return
        from coordinator.state.redisd import RedisError
        try:
            if self.daemon.revive():
                log.warning("the embedded redis-server had died: restarted from its AOF")
        except RedisError as e:  # tried again on the next pass; said at most every 10 s
            if time.monotonic() - self._redis_said > 10:
                self._redis_said = time.monotonic()
                log.error("the embedded redis-server died and does not start again: %s", e)

    def _check_coordinator(self) -> None:
        import ray
        try:
            ray.get(self.coord.status.remote(), timeout=120)
        except Exception as e:
            raise SwarmError(f"the coordinator did not start: {_last_line(e)}") from None

    def _agent_died(self, name: str, err: Exception) -> None:
        import ray

        err = self._confirm_death(name, err)
        try:
            lost = ray.get(self.coord.reconcile_dead_agent.remote(name), timeout=120)
        except Exception as e:
            raise SwarmError(f"the coordinator is gone: {_last_line(e)}") from None
        n = self.restarts.get(name, 0)
        log.warning("agent %s died (%s); recorded %d lost run(s) as crash", name, _last_line(err), len(lost))
        log.info("agent %s death: %s", name, str(err)[-3000:])
        self._forget(name)
        if _node_lost(err):
            # Not the agent's fault: restart it, uncounted; Ray places it when a node has room.
            self.waiting[name] = time.monotonic()
            self._waiting_said = 0.0
        elif n >= MAX_RESTARTS:
            log.error("agent %s died %d times: not restarting it", name, n + 1)
            return
        else:
            self.restarts[name] = n + 1
        spec = next(s for s in self.p.agent_specs if s["name"] == name)
        self._agent(spec)

    def _confirm_death(self, name: str, err: Exception) -> Exception:
        """For an agent that is only unreachable (ActorUnavailableError), wait until Ray says
        that it died, and why; returns that error (or `err` when it answers or time runs out)."""
        import ray

        actor = self.actors.get(name)
        if actor is None or not isinstance(err, ray.exceptions.ActorUnavailableError):
            return err
        end = time.monotonic() + UNREACHABLE_WAIT_S
        while time.monotonic() < end:
            try:
                ray.get(actor.status.remote(), timeout=5)
                return err  # reachable again: its run was lost all the same; restart it
            except ray.exceptions.ActorDiedError as e:
                return e
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                time.sleep(1)
        return err

    def _watch_capacity(self) -> None:
        """Say when agents that lost their node wait for capacity (at once, then every
        WAITING_SAY_S), and when each is set up again on a node that joined."""
        import ray

        if self.placed:
            done, _ = ray.wait(list(self.placed.values()), num_returns=len(self.placed), timeout=0)
            for ref in done:
                name = next(n for n, r in self.placed.items() if r == ref)
                del self.placed[name]
                since = self.waiting.pop(name, None)
                if since is not None:
                    with contextlib.suppress(Exception):  # died again: its run ref says so
                        ray.get(ref)
                        log.warning("agent %s resumed on a node with capacity after %.1f s",
                                    name, time.monotonic() - since)
        waiting = sorted(n for n in self.waiting if n in self.placed)
        if waiting and time.monotonic() - self._waiting_said >= WAITING_SAY_S:
            self._waiting_said = time.monotonic()
            log.warning("waiting for capacity: %d agent(s) lost their node (%s); each needs %s "
                        "and the cluster has %s free; they resume when a node with room joins",
                        len(waiting), ", ".join(waiting), self._agent_needs(), self._free())

    def _agent_needs(self) -> str:
        need = {"CPU": self.p.cfg.agents.cpus_per_agent}
        if self.p.gpus_per_agent:
            need["GPU"] = self.p.gpus_per_agent
        if self.p.cfg.agents.resource:
            need[self.p.cfg.agents.resource] = 1
        return ", ".join(f"{v:g} {k}" for k, v in need.items())

    def _free(self) -> str:
        import ray
        try:
            free = ray.available_resources()
        except Exception:
            return "unknown"
        keys = ["CPU"] + (["GPU"] if self.p.gpus_per_agent else []) + (
            [self.p.cfg.agents.resource] if self.p.cfg.agents.resource else [])
        return ", ".join(f"{free.get(k, 0):g} {k}" for k in keys)

    def _forget(self, name: str) -> None:
        """Kill what is left of a dead agent and wait until Ray frees its name for the restart."""
        import ray
        actor = self.actors.pop(name, None)
        if actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        for _ in range(100):
            try:
                ray.get_actor(f"agent-{name}")
            except ValueError:
                return
            time.sleep(0.1)

    def _stop_agents(self) -> None:
        import ray

        for name in [n for n in self.waiting if n in self.placed and n in self.refs]:
            # still waiting for a node: nothing runs there that could record itself
            with contextlib.suppress(Exception):
                ray.kill(self.actors[name], no_restart=True)
            del self.refs[name]
        for name, actor in self.actors.items():
            with contextlib.suppress(Exception):
                actor.stop.remote()
        if self.refs:
            # the cancelled runs record themselves (crash "stopped") before run() returns
            ray.wait(list(self.refs.values()), num_returns=len(self.refs), timeout=STOP_GRACE_S)
        for name in list(self.refs):
            with contextlib.suppress(Exception):
                ray.get(self.coord.reconcile_dead_agent.remote(name), timeout=30)

    def _close_studies(self, url: str) -> None:
        """Every agent has stopped: the optuna trials still RUNNING (proposals prepared during
        an agent's last run) will never be told; say so in the study (FAIL, `not_run`)."""
        if not any(s["backend"].get("type") == "optuna" for s in self.p.agent_specs):
            return
        import redis

        from agents.backends.optuna_study import fail_running
        client = redis.Redis.from_url(url)
        try:
            n = fail_running(client, self.info["swarm_id"], "the swarm stopped before it ran")
            if n:
                log.info("optuna: %d prepared trial(s) never ran: told FAIL (not_run)", n)
        except Exception as e:  # the studies are a convenience; stopping must go on
            log.warning("optuna: could not close the studies' running trials: %s", type(e).__name__)
        finally:
            client.close()

    def _snapshot(self) -> None:
        import ray
        with contextlib.suppress(Exception):
            path = ray.get(self.coord.snapshot.remote(), timeout=60)
            log.info("ledger snapshot: %s", path)

    def _final_summary(self, url: str) -> int:
        """The live view's last frame and, from the same figures, what happened in words;
        1 when no proposal of this run was valid (saying why), else 0."""
        import redis

        from coordinator.run import live
        from coordinator.state.home import resolve_home
        client = redis.Redis.from_url(url)
        try:
            rows = _rows(client, self.info)
            data = live.gather(client, self.info["swarm_id"], rows, running=False)
        finally:
            client.close()
        view, self._view = self._view, None
        if view is not None:
            view.update(data)
            view.close()
        here = self.home.root.resolve() == resolve_home(None).resolve()
        print(live.summary(rows, data, history=live.noise_history(self._coord_status()),
                           home_arg="" if here else f" --swarm-home {self.home.root}"), flush=True)
        why = no_valid_proposal(rows, self.results, self.started_at)
        if why:
            print(f"swarm run: {why}", file=sys.stderr, flush=True)
            return 1
        return 0

    def _coord_status(self) -> dict | None:
        """The coordinator's own status() (for where its noise prior came from), or None."""
        import ray
        try:
            return ray.get(self.coord.status.remote(), timeout=30)
        except Exception:
            return None

    def _teardown(self) -> None:
        view, self._view = self._view, None
        if view is not None:  # the run ended before its summary: give the terminal back
            view.close()
        if self.trackers is not None:
            self.trackers.stop(drain_s=0)
        with contextlib.suppress(Exception):
            import ray
            if ray.is_initialized():
                ray.shutdown()
        if self.ray_tmp is not None:
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
        if self.daemon is not None:
            self.daemon.stop()
        self.home.clear_pid()


def no_valid_proposal(rows: list[dict], results: dict[str, dict], since: float) -> str | None:
    """Why no proposal of the run since `since` was valid, or None when one was (or none was
    asked for: a run that ended in its baseline round)."""
    exps = [r for r in rows if r.get("kind") == "experiment" and (r.get("started_at") or 0) >= since]
    if any(r.get("status") != "invalid" for r in exps):
        return None
    refused = [f"{n}: {s['stop_reason']}" for n, s in sorted(results.items())
               if str(s.get("stop_reason") or "").startswith("backend refused")]
    down = sum((s.get("backend_events") or {}).get("down", 0) for s in results.values())
    if not exps and not refused and not down:
        return None
    parts = []
    if exps:
        reasons = collections.Counter(str(r.get("reason") or "?")[:120] for r in exps)
        top, n = reasons.most_common(1)[0]
        parts.append(f"{len(exps)} invalid ({n} x {top!r})")
    if refused:
        parts.append(f"stopped by the backend: {refused[0]}")
    if down:
        parts.append(f"{figures.plural(down, 'proposal')} got no answer from the backend (logs/backend-*.jsonl)")
    return "no valid proposal in this run: " + "; ".join(parts)


def _baseline_text() -> str:
    import importlib.resources
    return (importlib.resources.files("trainer") / "baseline" / "train.py").read_text()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _node_lost(err: Exception) -> bool:
    """Did the agent die with its node (a worker lost, preempted or drained)?"""
    return bool(getattr(err, "preempted", False)) or "its node has died" in str(err)


def _last_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[-1] if lines else e.__class__.__name__)[:300]


def _rows(client, info) -> list[dict]:
    from coordinator.state.ledger import Ledger
    try:
        return Ledger(client, info["swarm_id"]).rows()
    except Exception as e:  # a view must never stop the swarm
        log.debug("ledger rows unavailable: %s", e)
        return []


class _LedgerRows:
    """The ledger's rows for the live view: read again when the ledger grew (one XLEN per
    redraw) or every 5 s, but no sooner after the last read than ten times what that read and
    the figures drawn from it cost (`cost`, which the caller adds the figures to: about 75 ms per
    1,000 records, so a big swarm's view takes about a tenth of a core). It used to be every 5 s
    only, and the plain line printed counts up to 5 s old beside the best just published:
    `0 experiments, 0 runs, best cpu-... 2.4511 (1 samples)` (the quick start of 2026-12-06
    15:41). `get` says whether the rows were just read."""

    EVERY_S = 5.0
    MIN_S = 0.5

    def __init__(self, info: dict):
        self.info = info
        self.rows: list[dict] = []
        self.length = -1
        self.at = -float("inf")
        self.cost = 0.0

    def get(self, client) -> tuple[list[dict], bool]:
        from coordinator.state.ledger import Ledger
        now = time.monotonic()
        if now - self.at < max(self.MIN_S, 10 * self.cost):
            return self.rows, False
        try:
            length = int(client.xlen(Ledger(client, self.info["swarm_id"]).key("ledger")))
        except Exception as e:  # a view must never stop the swarm
            log.debug("ledger length unavailable: %s", e)
            return self.rows, False
        if length == self.length and now - self.at < self.EVERY_S:
            return self.rows, False
        self.rows = _rows(client, self.info)
        self.length, self.at = length, now
        self.cost = time.monotonic() - now
        return self.rows, True


class _View:
    """rich Live on a terminal (~2 redraws/s); otherwise a plain line each time something
    happened (a new record or a move of best), never the same line again."""

    def __init__(self, plain: bool):
        self.plain = plain
        self.live = None
        self.last_plain = ""

    def update(self, data: dict) -> None:
        from coordinator.run import live
        if self.plain:
            line = live.plain_line(data)
            if line != self.last_plain:
                self.last_plain = line
                print(line, flush=True)
            return
        if self.live is None:
            from rich.live import Live
            self.live = Live(live.render(data), refresh_per_second=2)
            self.live.start()
        else:
            self.live.update(live.render(data))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
