"""Attacks on what the training sandbox shows and what it lets a run take, through the real runner
and the real sandbox (round two of the isolation attacks, test_attacks_isolation.py):
- other copies of prepared data (an older cache under the user's home, another data dir), a
  key in the project's .env and in the home's .bashrc, the swarm's home given by --swarm-home
  rather than SWARM_HOME: none of it is there;
- the disk: an 8 GiB fallocate anywhere the run can write fails;
- the CPU: more threads than the run's class get no more CPU;
- compute before the clock: bounded by an allowance measured from the baseline's own start-up;
- an error line copied from the raw log is redacted like the log's tail.
Each asserts the exact outcome and that nothing persisted (no process, no file outside the run).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from busy_children import BUSY_CHILDREN, cpu_share
from test_attacks_isolation import (PLANTED_KEY, World, assert_honest_ok, assert_nothing_persisted,
                                    attack_data_dir, guarded_digests)
from test_runner import TINY, small_eval, write

import trainer

__all__ = ["attack_data_dir", "small_eval"]  # fixtures, imported for this module's tests
pytestmark = [pytest.mark.slow,  # each test runs a train.py through the real runner (5-12 s each)
              pytest.mark.usefixtures("small_eval")]  # 2 eval batches: see test_runner.small_eval

ROOT = Path(trainer.__file__).resolve().parent.parent
DOTENV_KEY = "sk-planted-in-dot-env-51c0"
BASHRC_KEY = "sk-planted-in-bashrc-77ae"
OLD_VAL = b"OLD-CACHE-VAL-TOKENS-9d2e"


@pytest.fixture
def world(attack_data_dir, monkeypatch):
    """A World whose home reaches the runner as its swarm_home argument (as `swarm run
    --swarm-home DIR` passes it to the agents), with SWARM_HOME and SWARM_DATA_DIR unset."""
    root = Path(tempfile.mkdtemp(prefix="swarm-attack2-", dir="/var/tmp"))
    w = World(root, attack_data_dir)
    monkeypatch.delenv("SWARM_HOME", raising=False)
    monkeypatch.delenv("SWARM_DATA_DIR", raising=False)
    monkeypatch.delenv("SWARM_UNSAFE_NO_SANDBOX", raising=False)
    monkeypatch.setenv("FAKE_PROVIDER_API_KEY", PLANTED_KEY)
    monkeypatch.chdir(root)
    w.before = guarded_digests(w)
    yield w
    shutil.rmtree(root, ignore_errors=True)


def run_attack(world: World, code: str, *, src: str = TINY, **kw):
    from trainer.runner import run_experiment

    src = src.replace("model = Bigram()", code.strip("\n") + "\nmodel = Bigram()", 1)
    kw.setdefault("budget", 3)
    kw.setdefault("threads", 1)
    r = run_experiment(write(world.root, src), world.run_dir, data_dir=world.data_dir, swarm_home=world.home, **kw)
    log = Path(r.log_path).read_text(errors="replace") if Path(r.log_path).exists() else ""
    return r, log


@pytest.fixture
def old_caches(world):
    """Older copies of prepared data: one under the user's home, one elsewhere on the machine."""
    made = []
    for parent in (Path.home(), Path("/var/tmp")):
        d = Path(tempfile.mkdtemp(prefix=".swarm-old-cache-", dir=parent))
        (d / "bundled" / "tok1024").mkdir(parents=True)
        (d / "bundled" / "tok1024" / "val.tokens.npy").write_bytes(OLD_VAL)
        made.append(d)
    yield made
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


LOOT = """
import json, os
found = {}
def walk(p, depth=0):
    try:
        names = os.listdir(p)
    except OSError as e:
        return type(e).__name__
    out = {}
    for n in names[:50]:
        q = os.path.join(p, n)
        if os.path.isdir(q) and not os.path.islink(q) and depth < 4:
            out[n] = walk(q, depth + 1)
        else:
            try:
                out[n] = open(q, "rb").read(200).decode("latin1")
            except OSError as e:
                out[n] = type(e).__name__
    return out
for p in PATHS:
    found[p] = walk(p)
print("LOOT " + json.dumps(found), flush=True)
"""


def test_other_data_copies_the_home_and_the_swarm_home_are_not_there(world, old_caches):
    """Read five ways before: an older cache under the user's home, one under /var/tmp, the
    user's .bashrc, the swarm's home given as swarm_home (SWARM_HOME unset), the data dir
    given as an argument. Now none of them is in the sandbox at all."""
    home = Path.home().resolve()
    paths = [str(d) for d in old_caches] + [str(home / ".bashrc"), str(home / ".cache"), str(world.home),
                                           str(world.data_dir), str(world.repo), "/var/tmp", "/etc"]
    r, log = run_attack(world, f"PATHS = {paths!r}\n" + LOOT)
    assert_honest_ok(r)
    loot = json.loads(next(ln for ln in log.splitlines() if ln.startswith("LOOT "))[5:])
    for p in paths[:-1]:
        assert loot[p] == "FileNotFoundError", (p, loot[p])
    assert set(loot["/etc"]) <= {"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf",
                                 "passwd", "group", "alternatives"}, loot["/etc"]
    assert OLD_VAL.decode() not in log and "repo-content-3b7e" not in log
    assert_nothing_persisted(world)


def test_keys_in_the_projects_dot_env_and_the_homes_bashrc_stay_out(tmp_path, attack_data_dir):
    """A user runs `swarm train` from the project's checkout (./.swarm the default home, a .env
    with keys beside it) with a key exported in ~/.bashrc. The checkout is a copy of this one
    under /var/tmp, HOME a folder of this test: the runner is the real one, run from there."""
    base = Path(tempfile.mkdtemp(prefix="swarm-attack-proj-", dir="/var/tmp"))
    try:
        proj, fake_home = base / "project", base / "home"
        shutil.copytree(ROOT / "trainer", proj / "trainer", ignore=shutil.ignore_patterns("__pycache__"))
        (proj / ".env").write_text(f"OPENAI_API_KEY={DOTENV_KEY}\n")
        (proj / ".swarm" / "redis").mkdir(parents=True)
        (proj / ".swarm" / "redis" / "redis.secret").write_text("pw-in-default-home 6399\n")
        fake_home.mkdir()
        (fake_home / ".bashrc").write_text(f"export ANTHROPIC_API_KEY={BASHRC_KEY}\n")
        paths = [str(proj / ".env"), str(proj / ".swarm"), str(fake_home / ".bashrc"), str(proj)]
        train_py = write(base, TINY.replace("model = Bigram()", f"PATHS = {paths!r}\n" + LOOT + "\nmodel = Bigram()"))
        driver = textwrap.dedent(f"""
            import json, sys
            sys.path.insert(0, {str(proj)!r})
            from trainer.runner import run_experiment
            r = run_experiment({str(train_py)!r}, {str(proj / '.swarm' / 'runs' / 'x')!r}, budget=3, threads=1,
                               data_dir={str(attack_data_dir)!r})
            print("RESULT " + r.model_dump_json())
        """)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SWARM_", "PYTHONPATH"))}
        p = subprocess.run([sys.executable, "-c", driver], cwd=proj, env={**env, "HOME": str(fake_home)},
                           capture_output=True, text=True, timeout=600)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        assert line, p.stderr[-3000:]
        res = json.loads(line[0][7:])
        log = (proj / ".swarm" / "runs" / "x" / "run.log").read_text()
        assert res["status"] == "ok", (res["error"], p.stderr[-2000:])
        loot = json.loads(next(ln for ln in log.splitlines() if ln.startswith("LOOT "))[5:])
        assert loot[str(proj)] == {"trainer": loot[str(proj)]["trainer"]}, loot[str(proj)].keys()
        for path in paths[:3]:
            assert loot[path] == "FileNotFoundError", (path, loot[path])
        for key in (DOTENV_KEY, BASHRC_KEY, "pw-in-default-home"):
            assert key not in log + p.stdout + p.stderr, key
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_eight_gib_fallocate_fails_everywhere_the_run_can_write(world):
    """No disk quota before: an 8 GiB fallocate in the scratch succeeded. Now the scratch is a
    private tmpfs of the profile's scratch_mb (like /tmp and /dev/shm, size-capped)."""
    code = """
import os
for d in (api.RUN_DIR, os.environ.get("HOME", "/"), "/tmp", "/dev/shm", "/"):
    try:
        fd = os.open(os.path.join(d, "fill"), os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, 8 << 30)
            print("ALLOCATED", d, flush=True)
        finally:
            os.close(fd)
            os.unlink(os.path.join(d, "fill"))
    except OSError as e:
        print("REFUSED", d, e.errno, flush=True)
"""
    r, log = run_attack(world, code)
    assert_honest_ok(r)
    assert "ALLOCATED" not in log and log.count("REFUSED") == 5, log[-2000:]
    assert_nothing_persisted(world)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: more threads could not take more anyway")
def test_more_threads_than_the_class_take_no_more_cpu(world):
    """A 1-thread run that keeps two processes busy gets one CPU between them, not two."""
    r, log = run_attack(world, BUSY_CHILDREN, threads=1)
    assert_honest_ok(r)
    share = cpu_share(log)
    assert share <= 1.15, share
    assert_nothing_persisted(world)


def test_an_error_line_copied_from_the_log_is_redacted(world):
    """The tail was redacted, the error line the runner copies from the raw log was not."""
    r, _ = run_attack(world, f"raise RuntimeError('cannot reach the provider with {PLANTED_KEY}')")
    assert r.status == "crash" and r.error == "RuntimeError: cannot reach the provider with ***", r.error
    assert PLANTED_KEY not in r.log_tail
    assert_nothing_persisted(world)


@pytest.mark.slow
def test_compute_before_the_clock_is_bounded_by_the_baselines_start_up(world):
    """Before, the clock started at the first real batch or 30 s (300 s on GPU) after ready,
    whichever came first: train.py could compute for free until then (pre-train on text it
    found). Now, once the baseline ran here, the allowance is 2 x its start-up + 2 s: a
    train.py that computes 8 s past it before its first batch pays for it out of its budget
    (with the old 30 s, the same train.py trained its full budget after the computation)."""
    from trainer import baseline_path, startup
    from trainer.runner import run_experiment

    base = run_experiment(baseline_path(), world.home / "runs" / "baseline", budget=3, threads=1,
                          data_dir=world.data_dir, swarm_home=world.home)
    # its start-up is measured whatever its last step did (on a loaded machine a 3 s baseline's
    # last step can overrun the tolerance: timeout)
    assert base.status in ("ok", "timeout"), base.error
    measured = json.loads((world.home / "runs" / startup.FILE).read_text())[base.hardware_class]
    assert len(measured) == 1 and 0 < measured[0] < 30
    world.before = guarded_digests(world)
    allowance = min(30.0, 2 * measured[0] + 2)
    burn = f"""
import time
end = time.monotonic() + {allowance + 8}
while time.monotonic() < end:
    pass
"""
    loop = TINY[TINY.index("#LOOP"):TINY.index("#END")]  # then train on whatever the runner still serves
    r, log = run_attack(world, burn, src=TINY.replace(loop, loop.replace(
        "while not clock.done():\n    x, y = next(loader)", "for x, y in loader:")))
    assert r.timings["startup_allowance"] == pytest.approx(allowance, abs=0.01)
    assert r.status == "timeout" and "over the 3s budget" in r.error, (r.status, r.error)
    assert r.steps is None  # the budget was spent before its first batch: no real batch served
    assert r.timings["ready_to_clock"] == pytest.approx(allowance, abs=0.5)
    assert_nothing_persisted(world)
