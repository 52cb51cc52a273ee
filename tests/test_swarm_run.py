"""End to end: `swarm run` with the real trainer, Ray, redis and git on CPU, then the
morning-after commands, a `swarm stop` mid-run and a resume (its redis SIGKILLed and brought
back), and the secrets search. The backend is optuna: the resumed swarm says from which state it
goes on, and its studies go on, proposing no point they already held (before, a resumed agent
replayed its first points in the same order). One swarm home for all of it: a swarm each cost
the slow tier minutes.

The environment of the child that runs train.py is captured while it runs, from
/proc/<pid>/environ of every `trainer.harness` process whose spec lies under this SWARM_HOME
(a mutate backend cannot make train.py print its own environment).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

FAKE_KEY = "sk-fake-e2e-4f9c2d7a1b3e5f60"


HOME_PREFIX = "swarm-run-home-"   # the `work` fixture's folders


def _data_dir(work: Path) -> Path:
    """The `work` fixture's data dir is under the user's home (removed with it); any other
    folder given to _env/_swarm (tests/test_attacks_swarm.py passes its tmp_path) keeps its data
    inside itself: a data dir under the home named after a pytest folder would outlive the test
    and hand its noise history to the next session's run of the same test."""
    if work.name.startswith(HOME_PREFIX):
        return Path.home() / f".swarm-run-data-{work.name}"
    return work / "data"


def _env(work):
    return dict(os.environ, SWARM_HOME=str(work / "home"), SWARM_DATA_DIR=str(_data_dir(work)),
                OPENAI_API_KEY=FAKE_KEY, ANTHROPIC_API_KEY=FAKE_KEY + "-anthropic", PYTHONUNBUFFERED="1",
                PYTHONPATH=str(Path(__file__).resolve().parents[1]))   # cwd is outside the checkout


@pytest.fixture
def work():
    """The swarm's folder (its SWARM_HOME inside) under /var/tmp and its data dir under the
    user's home, both outside the temp folder: where users put them, and where every run after
    an agent's first once crashed (a standby's scratch renamed under its sandbox's bind mount;
    tests/test_swarm_home_places.py has the mechanism at each place)."""
    w = Path(tempfile.mkdtemp(prefix=HOME_PREFIX, dir="/var/tmp"))
    yield w
    try:   # a swarm stopped by force leaves its redis
        os.kill(int((w / "home" / "redis" / "redis.pid").read_text().strip()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    shutil.rmtree(w, ignore_errors=True)
    shutil.rmtree(_data_dir(w), ignore_errors=True)


def _swarm(tmp_path, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


class ChildEnvSpy(threading.Thread):
    """Polls /proc for the runner's train.py children under `home` and keeps their environments."""

    def __init__(self, home: Path):
        super().__init__(daemon=True)
        self.home, self.envs, self.done = str(home), {}, threading.Event()

    def run(self):
        while not self.done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid in self.envs:
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    # the sandboxed child is `python -I -c "...trainer.harness..."` (or a standby
                    # that gets its spec over a pipe): it is ours when it runs in our home
                    if (any(b"trainer.harness" in c for c in cmd)
                            and (any(self.home.encode() in c for c in cmd)
                                 or os.readlink(f"/proc/{pid}/cwd").startswith(self.home))):
                        self.envs[pid] = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    pass
            time.sleep(0.2)


def _ledger_counts(home: Path):
    from coordinator.state.home import SwarmHome, ledger_redis
    from coordinator.state.ledger import Ledger

    h = SwarmHome(home)
    with ledger_redis(h) as client:
        led = Ledger(client, h.info()["swarm_id"])
        rows = led.rows()
        return led.counts(), rows


def _trials(home: Path) -> dict[str, list[dict]]:
    """Every trial of the swarm's optuna studies, per study, in order: number, params (as a
    comparable key), user attrs; every trial, those never run (a proposal whose edit failed) too."""
    from agents.backends.optuna_study import journal_storage
    from coordinator.state.home import SwarmHome, ledger_redis

    h = SwarmHome(home)
    with ledger_redis(h) as client:
        storage = journal_storage(client, h.info()["swarm_id"])
        out = {}
        for study in storage.get_all_studies():
            out[study.study_name] = [
                {"number": t.number, "attrs": dict(t.user_attrs),
                 "key": json.dumps({n: round(v, 6) if isinstance(v, float) else v
                                    for n, v in sorted(t.params.items())})}
                for t in storage.get_all_trials(study._study_id)]
        return out


def _started_now(home: Path):
    """Experiments begun so far, read from the running swarm's redis without starting one."""
    import redis

    try:
        pw, port = (home / "redis" / "redis.secret").read_text().split()
        info = json.loads((home / "swarm.json").read_text())
        c = redis.Redis(host="127.0.0.1", port=int(port), password=pw, socket_timeout=2)
        return int(c.hlen(f"swarm:{info['swarm_id']}:started"))
    except (OSError, ValueError, redis.RedisError):
        return None


@pytest.mark.slow
@pytest.mark.timeout(1800)   # three swarms and a stop: 200-546 s measured, over 900 s on a loaded machine
def test_swarm_run_resume_and_secrets(work):
    home = work / "home"
    # optuna explicitly: the fake keys must not make `auto` pick an LLM that cannot be reached
    # few baseline repeats (min_dof 2) and one re-measure of a new best: this test is about
    # resuming and secrets, not the noise estimate (tests/test_judge_best.py covers that); a
    # loaded machine's contended runs measured again twice at most (CI measured 490 s where a
    # quiet machine takes 130: 8 contended repeats of best, up to 15 of each candidate;
    # tests/test_contended.py covers the rule); a candidate confirmed twice at most (the default
    # 15 kept one agent confirming for a minute after the other had stopped: 130-320 s a test)
    # a third program, which two agents leave without one: the start line says so
    (work / "swarm.yaml").write_text("backend: {type: optuna}\nprograms:\n"
                                         "  - {name: baseline}\n  - {name: optimizer}\n  - {name: schedule}\n"
                                         "promotion: {min_dof: 2, best_remeasures: 1, contended_remeasures: 2,\n"
                                         "            confirm_runs: 2}\n"
                                         "profile: cpu-smoke\n")   # 2 eval batches: trainer/profiles.py
    spy = ChildEnvSpy(home)
    spy.start()

    # 1. a full run: baseline round + 1 experiment per agent
    # (a loaded 2-core machine: contended runs are measured again, so allow minutes)
    r1 = _swarm(work, "run", "--agents", "2", "--budget", "5", "--max-experiments", "1", "--plain",
                timeout=900)
    assert r1.returncode == 0, r1.stderr[-2000:]
    # Ray's own start-up lines stay off the terminal without --verbose (its token-auth notice too)
    assert "Token authentication" not in r1.stderr and " INFO " not in r1.stderr, r1.stderr[-2000:]
    # one line at start says whether earlier swarms left noise history (a fresh data dir: none)
    assert "noise history: none for cpu-" in r1.stdout, r1.stdout[-2000:]
    # and that its min_dof 2 makes the first margins wide (coordinator/decide/history.py)
    assert "promotion.min_dof 2: the first decisions judge" in r1.stdout, r1.stdout[-2000:]
    # and that the third program starts with no agent, and how it gets one: the programs take turns
    assert "programs: 1 of 3 start with no agent (2 agents): schedule; too few agents for allocation.min_agents 1" \
        " each, so the programs take turns: each gets 0.33 of an agent" in r1.stdout, r1.stdout[-2000:]
    info = json.loads((home / "swarm.json").read_text())
    counts, rows = _ledger_counts(home)
    assert len(rows) >= 4 and counts["started"] == counts["records"]
    assert len({r["experiment_id"] for r in rows}) == len(rows)
    # nothing crashed: with the home and the data outside the temp folder every run after an
    # agent's first did (FileNotFoundError .standby-*/train.py)
    crashed = [(r.get("status"), r.get("reason")) for r in rows if r.get("status") == "crash"]
    assert crashed == [] and not any("FileNotFoundError" in json.dumps(r) for r in rows), crashed
    assert sum(1 for r in rows if r["agent"] == rows[0]["agent"]) >= 2   # an agent's second run too
    best = subprocess.run(["git", "--git-dir", str(home / "repo.git"), "for-each-ref", "refs/heads/best"],
                          capture_output=True, text=True).stdout
    assert best.strip(), "no best ref"
    lin = _swarm(work, "lineage")
    assert lin.returncode == 0 and "best/" in lin.stdout, lin.stderr
    exp = _swarm(work, "export", "--format", "json", "--output", str(work / "ledger.json"))
    assert exp.returncode == 0, exp.stderr
    assert len(json.loads((work / "ledger.json").read_text())) == len(rows)
    st = _swarm(work, "status", "--json")
    st_data = json.loads(st.stdout) if st.returncode == 0 else {}
    # experiments: the agents' own ideas; runs: every record (baseline, confirm, verify jobs too)
    assert st.returncode == 0 and st_data["runs"] == len(rows)
    assert st_data["experiments"] == sum(1 for r in rows if r["kind"] == "experiment")

    # 2. `swarm stop` (a Ctrl-C) in the middle of a run: in-flight runs are recorded, nothing
    # lost or doubled
    p = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "--agents", "2", "--budget", "5",
                          "--max-experiments", "6", "--plain"], cwd=work, env=_env(work),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    n_before = len(rows)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:
        time.sleep(2)
        # read-only: _ledger_counts would bring the home's redis back itself (and stop it again)
        # while the swarm starts its own from the same AOF, a race that lost the Ctrl-C
        if (_started_now(home) or 0) > n_before + 1:  # this run's agents are mid-training
            break
    assert p.poll() is None, "the second swarm ended before it could be interrupted"
    stop = _swarm(work, "stop", "--timeout", "600")   # SIGINT, then waits for the run to end
    out2, err2 = p.communicate(timeout=240)
    said = (f"swarm stop said:\n{stop.stdout[-1000:]}{stop.stderr[-1000:]}\n"
            f"the swarm said:\n{out2[-2000:]}{err2[-2000:]}")
    assert p.returncode == 130, said
    assert stop.returncode == 0 and "stopped" in stop.stdout, said
    held = _trials(home)
    assert sum(len(t) for t in held.values()) >= 3, held   # the baseline and the first trials
    counts2, rows2 = _ledger_counts(home)
    assert counts2["started"] == counts2["records"], counts2
    ids2 = [r["experiment_id"] for r in rows2]
    assert len(set(ids2)) == len(ids2) and set(r["experiment_id"] for r in rows) <= set(ids2)

    # 3. run again in the same SWARM_HOME: the same swarm resumes; its redis is SIGKILLed
    # mid-run and the swarm brings it back from the AOF, losing and doubling nothing
    p3 = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", "--agents", "2", "--budget", "5",
                           "--max-experiments", "1", "--plain"], cwd=work, env=_env(work),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p3.poll() is None:
        time.sleep(0.5)
        if (_started_now(home) or 0) > len(ids2) + 1:  # this run's agents are training
            break
    assert p3.poll() is None, "the resumed run ended before its agents trained"
    pid = int((home / "redis" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the redis-server this swarm started, by its PID
    try:
        out3, err3 = p3.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        p3.send_signal(signal.SIGINT)   # what it said before it hung is the failure's message
        out3, err3 = p3.communicate(timeout=240)
        pytest.fail(f"the resumed swarm did not end after its redis was killed:\n{out3[-1500:]}\n{err3[-4000:]}")
    r3 = subprocess.CompletedProcess(p3.args, p3.returncode, out3, err3)
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert "restarted from its AOF" in r3.stderr, r3.stderr[-2000:]
    # it said where it goes on from, and its studies went on
    line = next(ln for ln in out3.splitlines() if ln.startswith("swarm run: resuming swarm"))
    assert "experiments" in line and "best " in line, line
    for study, trials in held.items():
        assert f"{study} ({len(trials)} trials" in line, line
    later = [(study, t) for study, trials in _trials(home).items() for t in trials[len(held.get(study, [])):]]
    later = [(study, t) for study, t in later
             if t["attrs"].get("origin") == "optuna" and not t["attrs"].get("not_run") and t["key"] != "{}"]
    assert len(later) >= 2, later
    for study, t in later:
        # a program first visited in this run (the programs take turns) held nothing before it
        ran = {h["key"] for h in held.get(study, []) if h["key"] != "{}" and not h["attrs"].get("not_run")}
        assert t["key"] not in ran, f"{study} trial {t['number']} proposes a point the study already held"
        assert t["attrs"].get("centre"), "a trial proposed around best records its centre"
    assert json.loads((home / "swarm.json").read_text())["swarm_id"] == info["swarm_id"]
    counts3, rows3 = _ledger_counts(home)
    ids3 = [r["experiment_id"] for r in rows3]
    assert len(set(ids3)) == len(ids3) and set(ids2) <= set(ids3) and len(ids3) > len(ids2)
    assert counts3["started"] == counts3["records"]
    spy.done.set()

    # 4. secrets: neither the fake API key nor the redis password anywhere they must not be
    password = (home / "redis" / "redis.secret").read_text().split()[0]
    assert spy.envs, "never saw a train.py child"
    haystacks = {"terminal": "".join([r1.stdout, r1.stderr, out2, err2, r3.stdout, r3.stderr,
                                      lin.stdout, exp.stdout, st.stdout])}
    for f in home.rglob("*"):
        # redis.secret/redis.conf hold the password by design (0600); the AOF is searched
        if f.is_file() and f.name not in ("redis.secret", "redis.conf") and "repo.git" not in f.parts:
            haystacks[str(f)] = f.read_bytes().decode("utf-8", "replace")
    haystacks["export"] = (work / "ledger.json").read_text()
    haystacks["git"] = subprocess.run(["git", "--git-dir", str(home / "repo.git"), "log", "-p", "--all"],
                                      capture_output=True, text=True).stdout
    for pid, env in spy.envs.items():
        haystacks[f"train.py child {pid} environment"] = env.decode("utf-8", "replace")
    for where, text in haystacks.items():
        assert FAKE_KEY not in text, f"API key leaked into {where}"
        assert password not in text, f"redis password leaked into {where}"
    # the search itself works: the secret is where it is supposed to be
    assert password in (home / "redis" / "redis.secret").read_text()
